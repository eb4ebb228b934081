using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>The 64-byte cache line, and buffers started on one.</summary>
/// <remarks>
/// A 512-bit load from an address that is not a multiple of 64 reads two lines. The channels-last loops load a row of
/// per-channel constants or accumulators at every step, so rows that start off a line make every one of those loads a
/// split one, and the loop falls well behind memory speed. The buffers such rows live in (the kernels' scratch, the
/// per-thread chunk buffers, the staging buffers) are therefore started on a line, whatever the caller's alignment.
/// </remarks>
internal static unsafe class CacheLine
{
    /// <summary>Bytes of a cache line.</summary>
    public const int Bytes = 64;

    /// <summary>How many more values of <typeparamref name="T"/> a buffer needs so that it can start on a line.</summary>
    public static int Slack<T>()
        where T : unmanaged => Bytes / sizeof(T);

    /// <summary>The first address at or after <paramref name="pointer"/> that starts a line.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T* Start<T>(T* pointer)
        where T : unmanaged => (T*)(((nuint)pointer + (Bytes - 1)) & ~(nuint)(Bytes - 1));
}
