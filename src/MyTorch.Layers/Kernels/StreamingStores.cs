using System;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>How a vector loop writes its results: see <see cref="PlainStores"/> and <see cref="StreamingStores"/>.</summary>
internal interface IStoreMode
{
    /// <summary>Whether vector stores bypass the caches (and so must go to aligned addresses).</summary>
    static abstract bool Streaming { get; }

    /// <summary>
    /// Whether values go through a ReLU on their way to memory (0 where v &lt; 0, v elsewhere, −0.0 and NaN unchanged):
    /// a BatchNorm2d → ReLU block's evaluation, float32 and float64 only.
    /// </summary>
    static virtual bool Rectify => false;
}

/// <summary>Ordinary vector stores of rectified values (see <see cref="IStoreMode.Rectify"/>).</summary>
internal readonly struct RectifiedPlainStores : IStoreMode
{
    public static bool Streaming => false;

    public static bool Rectify => true;
}

/// <summary>Streaming stores of rectified values (see <see cref="IStoreMode.Rectify"/>).</summary>
internal readonly struct RectifiedStreamingStores : IStoreMode
{
    public static bool Streaming => true;

    public static bool Rectify => true;
}

/// <summary>Ordinary vector stores, to any address.</summary>
internal readonly struct PlainStores : IStoreMode
{
    public static bool Streaming => false;
}

/// <summary>
/// Streaming (non-temporal) vector stores, for outputs too large to stay in the caches.
/// </summary>
/// <remarks>
/// An ordinary store to a line that is not in the cache first reads the line from memory ("read for ownership"), so
/// writing an output costs a read and a write of it; a streaming store writes the line without reading it. These
/// kernels do a few operations per byte, so their time is their memory traffic, and a large output written this way
/// saves a third of a pass such as y = x · m. The price is that the output is not left in the cache for whatever reads
/// it next, which matters for outputs small enough to have stayed there: hence <see cref="MinimumPassBytes"/>.
/// Streaming stores are kept to whole cache lines (<see cref="Body{T}"/>): a line written partly by them and partly by
/// plain stores costs more than plain stores alone.
/// </remarks>
internal readonly struct StreamingStores : IStoreMode
{
    /// <summary>
    /// A pass whose tensors, read and written, span at least this many bytes writes its output with streaming stores.
    /// </summary>
    /// <remarks>
    /// Below this, the pass's tensors (x and y, or dy, x and dx) fit together in a last-level cache of a few tens of
    /// megabytes, and an output written into memory that an earlier output just used is usually still there: its reads
    /// for ownership hit the cache and the next reader finds it in the cache too, so plain stores are the cheaper ones.
    /// The size is where streaming stores became the faster on the machines measured, whose last-level cache was
    /// 32 MiB (see docs/performance.md).
    /// </remarks>
    public const long MinimumPassBytes = 24L << 20;

    public static bool Streaming => true;

    /// <summary>
    /// Contiguous runs of the output shorter than this, unless made of whole cache lines, are written with plain stores:
    /// their partial lines at both ends, which take plain stores, would be too much of them.
    /// </summary>
    public const int MinimumRunBytes = 512;

    /// <summary>
    /// Whether an output of <paramref name="elements"/> values of <typeparamref name="T"/>, written in contiguous runs
    /// of <paramref name="run"/> values (a plane, a row) by a pass over <paramref name="tensors"/> tensors of that size
    /// (the output included), is written with streaming stores.
    /// </summary>
    public static unsafe bool For<T>(long elements, long run, int tensors)
        where T : unmanaged
    {
        long runBytes = run * sizeof(T);
        return Vector.IsHardwareAccelerated && elements * sizeof(T) * tensors >= MinimumPassBytes && (runBytes % LineBytes == 0 || runBytes >= MinimumRunBytes);
    }

    /// <summary>Bytes of a cache line, the unit streaming stores should fill.</summary>
    public const int LineBytes = CacheLine.Bytes;

    /// <summary>
    /// The part [Start, End) of the <paramref name="length"/> values from <paramref name="destination"/> that fills whole
    /// cache lines: what a loop writes with streaming stores, the values before and after it going through plain ones.
    /// Empty if no value is aligned.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe (int Start, int End) Body<T>(T* destination, int length)
        where T : unmanaged
    {
        nuint misalignment = (nuint)destination % LineBytes;
        if (misalignment % (nuint)sizeof(T) != 0)
        {
            return (length, length);
        }

        int start = (int)Math.Min((nuint)length, (LineBytes - misalignment) % LineBytes / (nuint)sizeof(T));
        int lineValues = LineBytes / sizeof(T);
        return (start, start + ((length - start) / lineValues * lineValues));
    }

    /// <summary>Whether <paramref name="destination"/> starts a cache line (and so is aligned for any vector store).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe bool Aligned<T>(T* destination)
        where T : unmanaged => (nuint)destination % (nuint)Math.Max(LineBytes, Vector<byte>.Count) == 0;

    /// <summary>
    /// Orders this thread's streaming stores before its later stores (on x86 they are weakly ordered), so that the
    /// signal that a chunk is done cannot be seen before the chunk's values. <see cref="ChunkScheduler"/> calls it on
    /// every thread when that thread's share of a job is done.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Fence()
    {
        if (Sse.IsSupported)
        {
            Sse.StoreFence();
        }
    }

    /// <summary>
    /// destination[i] = source[i] for i &lt; <paramref name="length"/> (float32 or float64), the whole cache lines of the
    /// destination written with streaming stores and the values before and after them with plain ones.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Copy<T>(T* source, T* destination, int length)
        where T : unmanaged
    {
        (int start, int end) = Vector.IsHardwareAccelerated ? Body(destination, length) : (length, length);
        int i = 0;
        for (; i < start; i++)
        {
            destination[i] = source[i];
        }

        for (; i < end; i += Vector<T>.Count)
        {
            Vector.StoreAlignedNonTemporal(Vector.Load(source + i), destination + i);
        }

        for (; i < length; i++)
        {
            destination[i] = source[i];
        }
    }

    /// <summary>
    /// Stores <paramref name="value"/> at <paramref name="destination"/> plainly or streaming, rectified or not, as
    /// <typeparamref name="TStore"/> says.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void Store<T, TStore>(Vector<T> value, T* destination)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (TStore.Rectify)
        {
            value = Vector.ConditionalSelect(Vector.LessThan(value, Vector<T>.Zero), Vector<T>.Zero, value);
        }

        if (TStore.Streaming)
        {
            Vector.StoreAlignedNonTemporal(value, destination);
        }
        else
        {
            Vector.Store(value, destination);
        }
    }

    /// <summary>One value as <typeparamref name="TStore"/> stores it: rectified where it says so.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Stored<T, TStore>(T value)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode => TStore.Rectify && value < T.Zero ? T.Zero : value;
}
