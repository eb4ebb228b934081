using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Software prefetch for loops that stream through memory: asks for the line <see cref="DistanceBytes"/> ahead of the
/// one being read, into the core's L2 cache.
/// </summary>
/// <remarks>
/// One core reading a single sequential run keeps only as many misses in flight as the hardware prefetcher starts
/// for it, which falls well short of what memory can deliver; asking for lines a few kilobytes ahead keeps more reads
/// in flight. The request stops at the end of the run the loop reads: beyond it lie values that another part of the
/// work reads at another time. A prefetch changes no value and cannot fault; without SSE it does nothing.
/// </remarks>
internal static unsafe class Prefetch
{
    /// <summary>How far ahead of the current read a line is asked for.</summary>
    public const int DistanceBytes = 4096;

    /// <summary>
    /// Asks for the line <see cref="DistanceBytes"/> past <paramref name="current"/> if that lies before <paramref name="end"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Ahead(void* current, void* end)
    {
        if (Sse.IsSupported)
        {
            byte* line = (byte*)current + DistanceBytes;
            if (line < end)
            {
                Sse.Prefetch1(line);
            }
        }
    }

    /// <summary>
    /// Asks for the line at <paramref name="line"/> into the core's L2 cache if it lies before <paramref name="end"/>:
    /// for loops that read several runs side by side and prefetch each at its own distance.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void IntoL2(void* line, void* end)
    {
        if (Sse.IsSupported && line < end)
        {
            Sse.Prefetch1(line);
        }
    }

    /// <summary>
    /// Asks for the line at <paramref name="line"/> into the core's L1 cache if it lies before <paramref name="end"/>:
    /// for loops that read many runs at once and know where each goes on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void IntoL1(void* line, void* end)
    {
        if (Sse.IsSupported && line < end)
        {
            Sse.Prefetch0(line);
        }
    }
}
