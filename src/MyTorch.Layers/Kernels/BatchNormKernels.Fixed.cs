using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Normalisation with fixed statistics (the running mean and variance of evaluation), vectorised in the input's own
/// precision.
/// </summary>
/// <remarks>
/// With fixed statistics the mean and the bias are tensors of the input's dtype, so x − μ is one correctly rounded
/// subtraction of two values of T (exact when they are within a factor of 2 of each other) and the rest is one fused
/// multiply-add with s = invstd · γ rounded once to T. No value is widened to double, so a vector step handles a whole
/// <see cref="Vector{T}"/> with one subtraction and one multiply-add. The centred form keeps what the batch-statistics
/// kernels keep: x − μ is formed before anything large is multiplied, so a large mean costs no digits of the output.
/// Where x − μ overflows float32 (values beyond half its range) or is NaN, that value is computed as before in double
/// (<see cref="FixedValue{T}"/>, as in the reference), so the range of the output is what the double computation
/// gives. The vector loops only note whether that happened, and a run in which it did is computed again value by value.
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>
    /// <see cref="NormalizeFixed{T}"/>, vectorised: the same formula, value for value, so the same bits.
    /// <paramref name="y"/> must not overlap <paramref name="x"/>: a run in which some x − μ is not finite is computed
    /// again from x.
    /// </summary>
    /// <remarks>
    /// y is written with streaming stores if <c>streamingStores</c> says so, and by default when the pass's tensors span at
    /// least <see cref="StreamingStores.MinimumPassBytes"/> and its runs are long enough (<see cref="StreamingStores.For{T}"/>);
    /// that changes no bit of the result. With an active <c>tail</c>, each chunk of y is written to a buffer that stays
    /// in cache, finished by the tail there, then copied out (see <see cref="BlockTail"/>).
    /// </remarks>
    public static void NormalizeFixedVectorized<T>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        ReadOnlySpan<T> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<T> weight,
        ReadOnlySpan<T> bias,
        Span<double> scratch,
        int threads,
        bool? streamingStores = null,
        BlockTail tail = default)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        Debug.Assert(!x[..layout.Length].Overlaps(y[..layout.Length]));
        if (layout.Length == 0)
        {
            return;
        }

        // Per channel, in T: y = (x − offset) · scale + shift, the scratch's first 4·C doubles holding 3·C values of T.
        int channels = layout.Channels;
        Span<T> constants = MemoryMarshal.Cast<double, T>(scratch[..(4 * channels)]);
        Span<T> offset = constants[..channels];
        Span<T> scale = constants.Slice(channels, channels);
        Span<T> shift = constants.Slice(2 * channels, channels);
        for (int c = 0; c < channels; c++)
        {
            (offset[c], scale[c], shift[c]) = FixedConstants(mean[c], invstd[c], weight.IsEmpty ? T.One : weight[c], bias.IsEmpty ? T.Zero : bias[c]);
        }

        threads = ChunkScheduler.ThreadsFor(layout.Length, threads);
        int run = layout.ChannelsLast ? layout.Length : PlaneBoundaries.RunLength(layout.Spatial, Vector<T>.Count);
        bool streaming = Vector.IsHardwareAccelerated && (streamingStores ?? StreamingStores.For<T>(layout.Length, run, tensors: 2));
        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pc = constants)
        fixed (double* periodic = scratch[(4 * channels)..])
        {
            var job = new FixedElementwiseJob<T>
            {
                X = px,
                Y = py,
                Streaming = streaming,
                Spatial = layout.Spatial,
                Planes = layout.Batch * channels,
                PlanesPerChunk = ChunkScheduler.UnitsPerChunk(layout.Spatial),
                // A tail of only a ReLU is applied in the stores themselves; one with factors goes through a buffer.
                Tail = tail.Active && (tail.Mask is not null || !tail.Rectify) ? tail : default,
                Rectify = tail.Active && tail.Mask is null && tail.Rectify,
                Channels = channels,
            };
            if (!layout.ChannelsLast)
            {
                job.Count = channels;
                job.Offset = pc;
                job.Scale = pc + channels;
                job.Shift = pc + (2 * channels);
                ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(job.Planes, job.PlanesPerChunk), threads);
            }
            else
            {
                // The constants repeated over one period, as the double kernels keep them (see RowBlocks).
                var blocks = new RowBlocks(layout);
                int period = blocks.Period;
                T* rows = (T*)CacheLine.Start(periodic);
                RepeatOverPeriod<T>(offset, rows, period);
                RepeatOverPeriod<T>(scale, rows + period, period);
                RepeatOverPeriod<T>(shift, rows + (2 * period), period);

                job.ChannelsLast = true;
                job.Blocks = blocks;
                job.Count = period;
                job.Offset = rows;
                job.Scale = rows + period;
                job.Shift = rows + (2 * period);
                ChunkScheduler.Run(ref job, blocks.Count, threads);
            }
        }
    }

    /// <summary>(offset, scale, shift) of y = (x − offset) · scale + shift in T for one channel: μ, invstd · γ rounded once, β.</summary>
    private static (T Offset, T Scale, T Shift) FixedConstants<T>(T mean, double invstd, T weight, T bias)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        (mean, T.CreateTruncating(invstd * double.CreateTruncating(weight)), bias);

    private struct FixedElementwiseJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* X;
        public T* Y;
        public T* Offset;
        public T* Scale;
        public T* Shift;
        public int Count;
        public bool Streaming;
        public bool ChannelsLast;
        public RowBlocks Blocks;
        public int Spatial;
        public int Planes;
        public int PlanesPerChunk;
        public BlockTail Tail;
        public int Channels;

        /// <summary>A ReLU applied on the way to memory (a block's evaluation, which has no dropout).</summary>
        public bool Rectify;

        public readonly void Run(int chunk)
        {
            if (Tail.Active)
            {
                // y written to a buffer that stays in cache, finished by the tail there, then copied out.
                (long start, int length) = ChannelsLast
                    ? Blocks.Span(chunk)
                    : ((long)chunk * PlanesPerChunk * Spatial, (Math.Min(Planes, (chunk + 1) * PlanesPerChunk) - (chunk * PlanesPerChunk)) * Spatial);
                var inner = this;
                inner.Tail = default;
                inner.Streaming = false;
                inner.Y = BlockKernels.ChunkScratch<T>(start, length);
                inner.Run(chunk);
                if (ChannelsLast)
                {
                    BlockKernels.FinishRows(inner.Y, start, length, Channels, Blocks.Spatial, Tail);
                }
                else
                {
                    BlockKernels.FinishPlanes(inner.Y, Spatial, Channels, chunk * PlanesPerChunk, Math.Min(Planes, (chunk + 1) * PlanesPerChunk), Tail);
                }

                BlockKernels.CopyOut(inner.Y + start, Y + start, length, Streaming);
                return;
            }

            // A block of rows starts at a whole period, so one aligned start aligns every vector step of it.
            bool streaming = Streaming && (!ChannelsLast || StreamingStores.Aligned(Y + Blocks.Span(chunk).Start));
            if (Rectify)
            {
                if (streaming)
                {
                    Run<RectifiedStreamingStores>(chunk);
                }
                else
                {
                    Run<RectifiedPlainStores>(chunk);
                }
            }
            else if (streaming)
            {
                Run<StreamingStores>(chunk);
            }
            else
            {
                Run<PlainStores>(chunk);
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private readonly void Run<TStore>(int chunk)
            where TStore : struct, IStoreMode
        {
            if (ChannelsLast)
            {
                (long start, int length) = Blocks.Span(chunk);
                FixedPeriodic<T, TStore>(X + start, Y + start, length, Count, Offset, Scale, Shift);
                return;
            }

            int first = chunk * PlanesPerChunk;
            int end = Math.Min(Planes, first + PlanesPerChunk);
            int c = first % Count;
            int spatial = Spatial;
            if (PlaneBoundaries.Serve(spatial, Vector<T>.Count))
            {
                // The chunk's planes as one run (see PlaneBoundaries).
                long offset = (long)first * spatial;
                if (!FixedPlanes<T, TStore>(X + offset, Y + offset, (end - first) * spatial, spatial, c, Count, Offset, Scale, Shift))
                {
                    // Some x − offset was not finite: the chunk again, value by value.
                    StreamingStores.Fence();
                    for (int plane = first; plane < end; plane++)
                    {
                        long start = (long)plane * spatial;
                        for (int k = 0; k < spatial; k++)
                        {
                            Y[start + k] = StreamingStores.Stored<T, TStore>(FixedValue(X[start + k], Offset[c], Scale[c], Shift[c]));
                        }

                        c = c + 1 == Count ? 0 : c + 1;
                    }
                }

                return;
            }

            // Planes shorter than a vector (or no vectors): value by value.
            for (int plane = first; plane < end; plane++)
            {
                long start = (long)plane * spatial;
                for (int k = 0; k < spatial; k++)
                {
                    Y[start + k] = StreamingStores.Stored<T, TStore>(FixedValue(X[start + k], Offset[c], Scale[c], Shift[c]));
                }

                c = c + 1 == Count ? 0 : c + 1;
            }
        }
    }

    /// <summary>
    /// y = (x − offset[c]) · scale[c] + shift[c] in T over a run of whole NCHW planes of <paramref name="spatial"/> values
    /// (at least a vector), c the plane's channel modulo <paramref name="channels"/>, the first plane's being
    /// <paramref name="firstChannel"/>: one vector loop over the run (see <see cref="PlaneBoundaries"/>), prefetching
    /// within it. Returns false if some x − offset in the vector loop was not finite, and then the run must be computed
    /// again value by value (<see cref="FixedValue{T}"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static bool FixedPlanes<T, TStore>(T* x, T* y, int length, int spatial, int firstChannel, int channels, T* offset, T* scale, T* shift)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode
    {
        int lanes = Vector<T>.Count;
        (int start, int end) = VectorBody<T, TStore>(y, length);
        int i = 0;
        for (; i < start; i++)
        {
            int c = (firstChannel + (i / spatial)) % channels;
            y[i] = StreamingStores.Stored<T, TStore>(FixedValue(x[i], offset[c], scale[c], shift[c]));
        }

        var planes = new PlaneBoundaries(spatial, i, lanes);
        int channel = (firstChannel + planes.Plane) % channels;
        var vo = new Vector<T>(offset[channel]);
        var vs = new Vector<T>(scale[channel]);
        var vt = new Vector<T>(shift[channel]);
        var nonFinite = Vector<T>.Zero;
        for (; i <= end - lanes; i += lanes)
        {
            Prefetch.Ahead(x + i, x + length);
            var value = Vector.Load(x + i);
            Vector<T> difference, result;
            if (planes.Crosses(i, out int inPlane))
            {
                channel = channel + 1 == channels ? 0 : channel + 1;
                var no = new Vector<T>(offset[channel]);
                var ns = new Vector<T>(scale[channel]);
                var nt = new Vector<T>(shift[channel]);
                var mask = PlaneBoundaries.Leading<T>(inPlane);
                difference = value - Vector.ConditionalSelect(mask, vo, no);
                result = FusedMultiplyAdd(difference, Vector.ConditionalSelect(mask, vs, ns), Vector.ConditionalSelect(mask, vt, nt));
                (vo, vs, vt) = (no, ns, nt);
            }
            else
            {
                difference = value - vo;
                result = FusedMultiplyAdd(difference, vs, vt);
            }

            nonFinite = TrackNonFinite(nonFinite, difference);
            StreamingStores.Store<T, TStore>(result, y + i);
        }

        for (; i < length; i++)
        {
            int c = (firstChannel + (i / spatial)) % channels;
            y[i] = StreamingStores.Stored<T, TStore>(FixedValue(x[i], offset[c], scale[c], shift[c]));
        }

        return Vector.EqualsAll(nonFinite, Vector<T>.Zero);
    }

    /// <summary>
    /// y = (x − offset[k]) · scale[k] + shift[k] in T with k the offset modulo the period; the run starts at a whole
    /// period, and for streaming stores at an aligned address.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void FixedPeriodic<T, TStore>(T* x, T* y, int length, int period, T* offset, T* scale, T* shift)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int lanes = Vector<T>.Count;
            var nonFinite = Vector<T>.Zero;
            if (WideFixed<T>() && period % Vector512<T>.Count == 0)
            {
                var tracked = Vector512<T>.Zero;
                i = FixedPeriodicWide<T, TStore>(x, y, length, period, offset, scale, shift, ref tracked);
                nonFinite = Vector512.EqualsAll(tracked, Vector512<T>.Zero) ? Vector<T>.Zero : Vector<T>.AllBitsSet;
            }

            for (; i <= length - period; i += period)
            {
                for (int k = 0; k < period; k += lanes)
                {
                    Prefetch.Ahead(x + i + k, x + length);
                    var difference = Vector.Load(x + i + k) - Vector.Load(offset + k);
                    nonFinite = TrackNonFinite(nonFinite, difference);
                    StreamingStores.Store<T, TStore>(FusedMultiplyAdd(difference, Vector.Load(scale + k), Vector.Load(shift + k)), y + i + k);
                }
            }

            if (!Vector.EqualsAll(nonFinite, Vector<T>.Zero))
            {
                // Some x − offset was not finite: the vector body again, value by value.
                StreamingStores.Fence();
                for (int j = 0; j < i; j++)
                {
                    int k = j % period;
                    y[j] = StreamingStores.Stored<T, TStore>(FixedValue(x[j], offset[k], scale[k], shift[k]));
                }
            }
        }

        for (; i < length; i++)
        {
            int k = i % period;
            y[i] = StreamingStores.Stored<T, TStore>(FixedValue(x[i], offset[k], scale[k], shift[k]));
        }
    }

    /// <summary>
    /// <paramref name="tracked"/> with the bits of d − d or-ed in: it stays +0 while every difference is finite and turns
    /// NaN once one is not. Float64 is not tracked (its x − offset is the double one), so it stays 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> TrackNonFinite<T>(Vector<T> tracked, Vector<T> difference)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? tracked | (difference - difference) : tracked;

    /// <summary>a · b + c with one rounding, lane by lane, for the two dtypes the kernels take.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> FusedMultiplyAdd<T>(Vector<T> a, Vector<T> b, Vector<T> c)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return Vector.FusedMultiplyAdd(a.As<T, float>(), b.As<T, float>(), c.As<T, float>()).As<float, T>();
        }

        return Vector.FusedMultiplyAdd(a.As<T, double>(), b.As<T, double>(), c.As<T, double>()).As<double, T>();
    }
}
