using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The math of 2-d (channel) dropout over raw buffers. Every product is one multiplication in the element type,
/// as libtorch's <c>input * noise</c> is, so the results are bit for bit libtorch's.
/// Callers validate; these functions only assert.
/// </summary>
/// <remarks>
/// Notation: x is the input, p the drop probability, mask[n·C + c] the factor of channel (n, c): 0 for a dropped
/// channel, 1/(1 − p) for a kept one. A mask of zeros gives y = x · 0, which is libtorch's p = 1: NaN and ±∞
/// become NaN, negative values −0.0.
/// </remarks>
internal static partial class ChannelDropoutKernels
{
    /// <summary>
    /// Turns Bernoulli draws (each exactly 0 or 1) into channel factors: mask[i] = mask[i] / T(1 − p), the division
    /// done in T as libtorch's <c>noise.div_(1 - p)</c> does it, so that a kept channel's factor is T(1) / T(1 − p).
    /// </summary>
    /// <param name="mask">The draws, scaled in place.</param>
    /// <param name="keepProbability">1 − p, computed in <see cref="double"/> as libtorch does; in (0, 1].</param>
    public static void ScaleMask<T>(Span<T> mask, double keepProbability)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(keepProbability > 0 && keepProbability <= 1);
        T keep = T.CreateTruncating(keepProbability);
        int i = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported)
        {
            // The same division in every lane, so the same bits as one value at a time.
            var divisor = new Vector<T>(keep);
            ref T m = ref MemoryMarshal.GetReference(mask);
            for (; i <= mask.Length - Vector<T>.Count; i += Vector<T>.Count)
            {
                (Vector.LoadUnsafe(ref m, (nuint)i) / divisor).StoreUnsafe(ref m, (nuint)i);
            }
        }

        for (; i < mask.Length; i++)
        {
            mask[i] /= keep;
        }
    }

    /// <summary>
    /// y[n, c, s] = x[n, c, s] · mask[n·C + c], on up to <paramref name="threads"/> threads (each product is independent,
    /// so the thread count cannot change a bit). <paramref name="y"/> may be <paramref name="x"/> itself (in-place dropout).
    /// </summary>
    /// <remarks>
    /// y is written with streaming stores if <c>streamingStores</c> says so, and by default when the pass's tensors span at
    /// least <see cref="StreamingStores.MinimumPassBytes"/> and its runs are long enough (<see cref="StreamingStores.For{T}"/>);
    /// that changes no bit of the result.
    /// </remarks>
    public static unsafe void ApplyMask<T>(ReadOnlySpan<T> x, Span<T> y, PlaneLayout layout, ReadOnlySpan<T> mask, int threads = 1, bool? streamingStores = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels);
        if (layout.Length == 0)
        {
            return;
        }

        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pm = mask)
        {
            var job = ApplyMaskJob<T>.For(px, py, pm, layout, streamingStores);
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>
    /// Input gradient: dx[n, c, s] = dy[n, c, s] · mask[n·C + c], the derivative of <see cref="ApplyMask{T}"/>
    /// (and what libtorch's MulBackward computes). <paramref name="gradInput"/> may be <paramref name="gradOutput"/> itself.
    /// </summary>
    public static void Backward<T>(ReadOnlySpan<T> gradOutput, Span<T> gradInput, PlaneLayout layout, ReadOnlySpan<T> mask, int threads = 1, bool? streamingStores = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> => ApplyMask(gradOutput, gradInput, layout, mask, threads, streamingStores);

    /// <summary>Units [chunk · UnitsPerChunk, …) of <see cref="ApplyMask{T}"/>.</summary>
    private unsafe struct ApplyMaskJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* X;
        public T* Y;
        public T* Mask;
        public PlaneLayout Layout;
        public int Units;
        public int UnitsPerChunk;
        public bool Streaming;

        /// <summary>The chunks of the job: <see cref="Run"/> takes 0 to Chunks − 1.</summary>
        public readonly int Chunks => Units == 0 ? 0 : ChunkScheduler.ChunkCount(Units, UnitsPerChunk);

        /// <summary>
        /// y = x · mask over <paramref name="layout"/>. A unit is a plane (n, c) of S values in NCHW, a row (n, s) of C
        /// values in NHWC; a chunk's planes are written as one run when they are at least a vector long, its rows one by one.
        /// </summary>
        public static ApplyMaskJob<T> For(T* x, T* y, T* mask, PlaneLayout layout, bool? streamingStores)
        {
            int unitLength = layout.ChannelsLast ? layout.Channels : layout.Spatial;
            int run = layout.ChannelsLast ? unitLength : PlaneBoundaries.RunLength(unitLength, Vector<T>.Count);
            return new ApplyMaskJob<T>
            {
                X = x,
                Y = y,
                Mask = mask,
                Layout = layout,
                Units = layout.Length == 0 ? 0 : layout.Length / unitLength,
                UnitsPerChunk = ChunkScheduler.UnitsPerChunk(unitLength),
                Streaming = Vector.IsHardwareAccelerated && (streamingStores ?? StreamingStores.For<T>(layout.Length, run, tensors: 2)),
            };
        }

        public readonly void Run(int chunk)
        {
            if (Streaming)
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
            int first = chunk * UnitsPerChunk;
            int end = Math.Min(Units, first + UnitsPerChunk);
            if (!Layout.ChannelsLast)
            {
                // NCHW: plane (n, c) is S contiguous values starting at (n·C + c)·S, all scaled by one factor.
                int spatial = Layout.Spatial;
                if (PlaneBoundaries.Serve(spatial, Vector<T>.Count))
                {
                    ScalePlanes<T, TStore>(X + ((long)first * spatial), Mask + first, Y + ((long)first * spatial), spatial, (end - first) * spatial);
                    return;
                }

                // Planes shorter than a vector (or no vectors): value by value.
                for (int plane = first; plane < end; plane++)
                {
                    long offset = (long)plane * spatial;
                    for (int k = 0; k < spatial; k++)
                    {
                        Y[offset + k] = X[offset + k] * Mask[plane];
                    }
                }

                return;
            }

            // NHWC: row (n, s) holds C contiguous values, multiplied element-wise by sample n's C factors.
            int channels = Layout.Channels;
            for (int row = first; row < end; row++)
            {
                long offset = (long)row * channels;
                Multiply<T, TStore>(X + offset, Mask + ((long)(row / Layout.Spatial) * channels), Y + offset, channels, (end - row) * channels);
            }
        }
    }

    /// <summary>
    /// y = x · factors[p] over a run of whole planes of <paramref name="spatial"/> values (at least one vector), p the
    /// plane: one vector loop over the whole run (see <see cref="PlaneBoundaries"/>), scalar only at its two ends.
    /// <paramref name="y"/> may be <paramref name="x"/>; they must not partly overlap.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ScalePlanes<T, TStore>(T* x, T* factors, T* y, int spatial, int length)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode
    {
        int lanes = Vector<T>.Count;
        (int start, int end) = TStore.Streaming ? StreamingStores.Body(y, length) : (0, length);
        int i = 0;
        for (; i < start; i++)
        {
            y[i] = x[i] * factors[i / spatial];
        }

        // A run too short for a whole aligned step starts its (empty) vector loop past its last plane: read no factor there.
        var planes = new PlaneBoundaries(spatial, i, lanes);
        var factor = new Vector<T>(factors[Math.Min(planes.Plane, (length - 1) / spatial)]);
        for (; i <= end - lanes; i += lanes)
        {
            Prefetch.Ahead(x + i, x + length);
            var step = factor;
            if (planes.Crosses(i, out int inPlane))
            {
                factor = new Vector<T>(factors[planes.Plane]);
                step = Vector.ConditionalSelect(PlaneBoundaries.Leading<T>(inPlane), step, factor);
            }

            StreamingStores.Store<T, TStore>(Vector.Load(x + i) * step, y + i);
        }

        for (; i < length; i++)
        {
            y[i] = x[i] * factors[i / spatial];
        }
    }

    /// <summary>
    /// y[i] = x[i] · factors[i]. <paramref name="y"/> may be <paramref name="x"/>; they must not partly overlap. The
    /// <paramref name="readable"/> values from <paramref name="x"/>, the run and what the same chunk reads right after
    /// it, may be prefetched.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Multiply<T, TStore>(T* x, T* factors, T* y, int length, int readable)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported && length >= Vector<T>.Count)
        {
            (int start, int end) = TStore.Streaming ? StreamingStores.Body(y, length) : (0, length);
            for (; i < start; i++)
            {
                y[i] = x[i] * factors[i];
            }

            for (; i <= end - Vector<T>.Count; i += Vector<T>.Count)
            {
                Prefetch.Ahead(x + i, x + readable);
                StreamingStores.Store<T, TStore>(Vector.Load(x + i) * Vector.Load(factors + i), y + i);
            }
        }

        for (; i < length; i++)
        {
            y[i] = x[i] * factors[i];
        }
    }
}
