using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Training forward and backward for NCHW a block of whole channels at a time, each pass over a block's values done
/// while they are still in the cache.
/// </summary>
/// <remarks>
/// <para>
/// The vectorised kernels make two passes over memory for each direction: the forward reads x for the statistics and
/// again to normalise it; the backward reads dy and x for its sums and again for dx. A thread that takes a block of
/// channels (their N planes each) through both passes reads the values the second time from its own cache, as long as
/// the block fits (<see cref="ChannelwiseMaximumBlockBytes"/>). Memory then sees x read once and y written in the
/// forward, dy and x read once and dx written in the backward: 5 passes instead of 8.
/// </para>
/// <para>
/// A block's planes lie side by side in each sample, C·H·W values from the next sample's. Small planes are therefore
/// taken several channels to a block, so that each sample's part of the block is a run of
/// <see cref="ChannelwiseTargetRunBytes"/> that the hardware prefetcher follows; runs shorter than a page, scattered
/// over many pages, would not be (see <see cref="ChannelwiseBlock{T}"/> and <see cref="UsesChannelwise{T}"/>).
/// </para>
/// <para>
/// Each channel's sums are the same per-plane partial sums added in the same order (sample 0 to N − 1) as in
/// <see cref="BatchStatisticsVectorized{T}"/> and <see cref="BackwardReductionsVectorized{T}"/>, and each value goes
/// through the same formula, so the results are the same bits as theirs, whatever the block size or thread count.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNorm2dKernels
{
    /// <summary>Fewer blocks per thread than this would leave threads idle at the end of a call.</summary>
    public const int ChannelwiseBlocksPerThread = 4;

    /// <summary>The length a block's run in each sample should have (several small planes side by side).</summary>
    public const int ChannelwiseTargetRunBytes = 16 << 10;

    /// <summary>The length a block's run in each sample must reach (one memory page), or the plane-wise kernels serve.</summary>
    public const int ChannelwiseMinimumRunBytes = 4 << 10;

    /// <summary>
    /// The most bytes of one tensor a block of several channels holds, so that the block is still in the cache for its
    /// second read. A single channel may hold more: it is the unit of work, and its second read still comes from some cache.
    /// </summary>
    public const int ChannelwiseMaximumBlockBytes = 1 << 20;

    /// <summary>A block holds at most this many channels (its per-channel constants live on the stack).</summary>
    public const int ChannelwiseMaximumBlockChannels = 256;

    /// <summary>
    /// Channels per block for <paramref name="threads"/> threads: enough for runs of <see cref="ChannelwiseTargetRunBytes"/>
    /// in each sample, but no more than fit in <see cref="ChannelwiseMaximumBlockBytes"/> (though always one), than a
    /// number that gives each thread <see cref="ChannelwiseBlocksPerThread"/> blocks, or than
    /// <see cref="ChannelwiseMaximumBlockChannels"/>; 0 when there are too few channels for that many blocks.
    /// </summary>
    public static int ChannelwiseBlock<T>(PlaneLayout layout, int threads)
        where T : unmanaged
    {
        long planeBytes = Math.Max(1L, (long)layout.Spatial * sizeof(T));
        long wanted = (ChannelwiseTargetRunBytes + planeBytes - 1) / planeBytes;
        long byBytes = Math.Max(1L, ChannelwiseMaximumBlockBytes / Math.Max(1L, layout.Batch * planeBytes));
        long byBlocks = layout.Channels / (ChannelwiseBlocksPerThread * (long)ChunkScheduler.ThreadsFor(layout.Length, threads));
        return (int)Math.Min(Math.Min(wanted, ChannelwiseMaximumBlockChannels), Math.Min(byBytes, byBlocks));
    }

    /// <summary>
    /// Bytes from the end of a block's run of <paramref name="channels"/> planes in one sample to the start of its run
    /// in the next: what the first read of a block skips, and so where its prefetch continues (<see cref="Prefetch.Ahead"/>).
    /// Runs of blocks this file chooses are at least <see cref="ChannelwiseMinimumRunBytes"/>, as long as the prefetch
    /// distance, so that continuation stays within the next run.
    /// </summary>
    private static nint NextRunGapBytes<T>(PlaneLayout layout, int channels)
        where T : unmanaged => (nint)(layout.Channels - channels) * layout.Spatial * sizeof(T);

    /// <summary>Whether <see cref="TrainingForwardChannelwise{T}"/> and <see cref="BackwardChannelwise{T}"/> serve this layout.</summary>
    public static bool UsesChannelwise<T>(PlaneLayout layout, int threads)
        where T : unmanaged =>
        !layout.ChannelsLast && layout.Length > 0
        && (long)ChannelwiseBlock<T>(layout, threads) * layout.Spatial * sizeof(T) >= ChannelwiseMinimumRunBytes;

    /// <summary>
    /// The training forward in one call: μ, σ² and invstd of each channel from x, then
    /// y = (x − μ[c]) · invstd[c] · γ[c] + β[c]; the same results as <see cref="BatchStatisticsVectorized{T}"/>,
    /// <see cref="InverseStandardDeviation(ReadOnlySpan{double}, double, Span{double})"/> and
    /// <see cref="NormalizeVectorized{T}"/> in turn. NCHW only, not empty; <paramref name="y"/> may be <paramref name="x"/>.
    /// </summary>
    /// <remarks>
    /// y is written with streaming stores if <c>streamingStores</c> says so, and by default when it is at least
    /// <see cref="StreamingStores.MinimumBytes"/> in long enough runs (<see cref="StreamingStores.For{T}"/>); that changes no
    /// bit of the result.
    /// <c>channelsPerBlock</c> replaces <see cref="ChannelwiseBlock{T}"/>'s choice (at most
    /// <see cref="ChannelwiseMaximumBlockChannels"/>); that changes no bit either.
    /// </remarks>
    public static void TrainingForwardChannelwise<T>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        ReadOnlySpan<T> weight,
        ReadOnlySpan<T> bias,
        double eps,
        Span<double> mean,
        Span<double> variance,
        Span<double> invstd,
        int threads,
        bool? streamingStores = null,
        int? channelsPerBlock = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(!layout.ChannelsLast && layout.Length > 0 && x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mean.Length >= layout.Channels && variance.Length >= layout.Channels && invstd.Length >= layout.Channels);
        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pw = weight)
        fixed (T* pb = bias)
        fixed (double* pm = mean)
        fixed (double* pv = variance)
        fixed (double* pi = invstd)
        {
            var job = new ChannelForwardJob<T>
            {
                X = px,
                Y = py,
                Weight = weight.IsEmpty ? null : pw,
                Bias = bias.IsEmpty ? null : pb,
                Eps = eps,
                Mean = pm,
                Variance = pv,
                Invstd = pi,
                Layout = layout,
                Streaming = Vector.IsHardwareAccelerated && (streamingStores ?? StreamingStores.For<T>(layout.Length, layout.Spatial)),
                Block = Math.Clamp(channelsPerBlock ?? ChannelwiseBlock<T>(layout, threads), 1, ChannelwiseMaximumBlockChannels),
            };
            ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(layout.Channels, job.Block), ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>
    /// The backward in one call: Σdy and Σdy·(x − μ[c]) of each channel, then dx as
    /// <see cref="BackwardInputVectorized{T}"/> computes it; the same results as
    /// <see cref="BackwardReductionsVectorized{T}"/> and <see cref="BackwardInputVectorized{T}"/> in turn.
    /// NCHW only, not empty; <paramref name="gradInput"/> may be <paramref name="gradOutput"/>.
    /// </summary>
    /// <remarks>
    /// dx is written with streaming stores if <c>streamingStores</c> says so, and by default when it is at least
    /// <see cref="StreamingStores.MinimumBytes"/> in long enough runs (<see cref="StreamingStores.For{T}"/>); that changes no
    /// bit of the result.
    /// <c>channelsPerBlock</c> replaces <see cref="ChannelwiseBlock{T}"/>'s choice (at most
    /// <see cref="ChannelwiseMaximumBlockChannels"/>); that changes no bit either.
    /// </remarks>
    public static void BackwardChannelwise<T>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutput,
        Span<T> gradInput,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<T> weight,
        bool batchStatistics,
        Span<double> sumDy,
        Span<double> sumDyXmu,
        int threads,
        bool? streamingStores = null,
        int? channelsPerBlock = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(!layout.ChannelsLast && layout.Length > 0 && x.Length >= layout.Length);
        Debug.Assert(gradOutput.Length >= layout.Length && gradInput.Length >= layout.Length);
        Debug.Assert(sumDy.Length >= layout.Channels && sumDyXmu.Length >= layout.Channels);
        fixed (T* px = x)
        fixed (T* pdy = gradOutput)
        fixed (T* pdx = gradInput)
        fixed (double* pm = mean)
        fixed (double* pi = invstd)
        fixed (T* pw = weight)
        fixed (double* ps = sumDy)
        fixed (double* pp = sumDyXmu)
        {
            var job = new ChannelBackwardJob<T>
            {
                X = px,
                GradOutput = pdy,
                GradInput = pdx,
                Mean = pm,
                Invstd = pi,
                Weight = weight.IsEmpty ? null : pw,
                BatchStatistics = batchStatistics,
                SumDy = ps,
                SumDyXmu = pp,
                Layout = layout,
                Streaming = Vector.IsHardwareAccelerated && (streamingStores ?? StreamingStores.For<T>(layout.Length, layout.Spatial)),
                Block = Math.Clamp(channelsPerBlock ?? ChannelwiseBlock<T>(layout, threads), 1, ChannelwiseMaximumBlockChannels),
            };
            ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(layout.Channels, job.Block), ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>Block of channels <c>chunk</c> of <see cref="TrainingForwardChannelwise{T}"/>.</summary>
    private struct ChannelForwardJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* X;
        public T* Y;
        public T* Weight;
        public T* Bias;
        public double Eps;
        public double* Mean;
        public double* Variance;
        public double* Invstd;
        public PlaneLayout Layout;
        public bool Streaming;
        public int Block;

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

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private readonly void Run<TStore>(int chunk)
            where TStore : struct, IStoreMode
        {
            // Sample by sample over the block's planes, which lie side by side: Mean and Variance hold the running
            // Σ(x − K) and Σ(x − K)² until the block is read, Invstd the reference K.
            int spatial = Layout.Spatial;
            long planeStride = (long)Layout.Channels * spatial;
            int first = chunk * Block;
            int end = Math.Min(Layout.Channels, first + Block);
            for (int c = first; c < end; c++)
            {
                Invstd[c] = ShiftReference(X[(long)c * spatial]);
                Mean[c] = 0;
                Variance[c] = 0;
            }

            nint gapBytes = NextRunGapBytes<T>(Layout, end - first);
            for (int n = 0; n < Layout.Batch; n++)
            {
                nint nextGap = n + 1 < Layout.Batch ? gapBytes : -1;
                for (int c = first; c < end; c++)
                {
                    var plane = new ReadOnlySpan<T>(X + (n * planeStride) + ((long)c * spatial), spatial);
                    (double planeSum, double planeSquares) = ShiftedSums(plane, Invstd[c], (end - c) * spatial, nextGap);
                    Mean[c] += planeSum;
                    Variance[c] += planeSquares;
                }
            }

            Span<double> scale = stackalloc double[end - first];
            Span<double> shift = stackalloc double[end - first];
            for (int c = first; c < end; c++)
            {
                (Mean[c], Variance[c]) = ShiftedMoments(Invstd[c], Mean[c], Variance[c], Layout.ValuesPerChannel);
                Invstd[c] = InverseStandardDeviation(Variance[c], Eps);
                scale[c - first] = Invstd[c] * (Weight is null ? 1.0 : double.CreateTruncating(Weight[c]));
                shift[c - first] = Bias is null ? 0.0 : double.CreateTruncating(Bias[c]);
            }

            for (int n = 0; n < Layout.Batch; n++)
            {
                for (int c = first; c < end; c++)
                {
                    long start = (n * planeStride) + ((long)c * spatial);
                    AffineBroadcast<T, TStore>(X + start, Y + start, spatial, 0, Mean[c], scale[c - first], shift[c - first]);
                }
            }
        }
    }

    /// <summary>Block of channels <c>chunk</c> of <see cref="BackwardChannelwise{T}"/>.</summary>
    private struct ChannelBackwardJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* X;
        public T* GradOutput;
        public T* GradInput;
        public double* Mean;
        public double* Invstd;
        public T* Weight;
        public bool BatchStatistics;
        public double* SumDy;
        public double* SumDyXmu;
        public PlaneLayout Layout;
        public bool Streaming;
        public int Block;

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

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private readonly void Run<TStore>(int chunk)
            where TStore : struct, IStoreMode
        {
            int spatial = Layout.Spatial;
            long planeStride = (long)Layout.Channels * spatial;
            int first = chunk * Block;
            int end = Math.Min(Layout.Channels, first + Block);
            for (int c = first; c < end; c++)
            {
                SumDy[c] = 0;
                SumDyXmu[c] = 0;
            }

            nint gapBytes = NextRunGapBytes<T>(Layout, end - first);
            for (int n = 0; n < Layout.Batch; n++)
            {
                nint nextGap = n + 1 < Layout.Batch ? gapBytes : -1;
                for (int c = first; c < end; c++)
                {
                    long start = (n * planeStride) + ((long)c * spatial);
                    (double planeSum, double planeProducts) = ProductSums(
                        new ReadOnlySpan<T>(GradOutput + start, spatial), new ReadOnlySpan<T>(X + start, spatial), Mean[c], (end - c) * spatial, nextGap);
                    SumDy[c] += planeSum;
                    SumDyXmu[c] += planeProducts;
                }
            }

            int count = end - first;
            Span<double> constants = stackalloc double[4 * count];
            for (int c = first; c < end; c++)
            {
                int k = c - first;
                (constants[k], constants[count + k], constants[(2 * count) + k], constants[(3 * count) + k]) = GradientConstants(
                    Mean[c], Invstd[c], Weight is null ? 1.0 : double.CreateTruncating(Weight[c]), SumDy[c], SumDyXmu[c], Layout.ValuesPerChannel, BatchStatistics);
            }

            for (int n = 0; n < Layout.Batch; n++)
            {
                for (int k = 0; k < count; k++)
                {
                    long start = (n * planeStride) + ((long)(first + k) * spatial);
                    double offset = constants[k], scale = constants[count + k], shift = constants[(2 * count) + k];
                    if (BatchStatistics)
                    {
                        GradientBroadcast<T, TStore>(GradOutput + start, X + start, GradInput + start, spatial, 0, offset, scale, shift, constants[(3 * count) + k]);
                    }
                    else
                    {
                        AffineBroadcast<T, TStore>(GradOutput + start, GradInput + start, spatial, 0, offset, scale, shift);
                    }
                }
            }
        }
    }
}
