using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Training forward and backward for NCHW one whole channel at a time, each pass over a channel's values done while
/// they are still in the cache.
/// </summary>
/// <remarks>
/// <para>
/// The vectorised kernels make two passes over memory for each direction: the forward reads x for the statistics and
/// again to normalise it; the backward reads dy and x for its sums and again for dx. A thread that takes one channel
/// (its N planes) through both passes reads the values the second time from its own cache, as long as a channel fits
/// (N·H·W values: 0.4 MB of float32 for 32×64×56×56, 16 KB for 256×512×4×4). Memory then sees x read once and y
/// written in the forward, dy and x read once and dx written in the backward: 5 passes instead of 8.
/// </para>
/// <para>
/// Each channel's sums are the same per-plane partial sums added in the same order as in
/// <see cref="BatchStatisticsVectorized{T}"/> and <see cref="BackwardReductionsVectorized{T}"/>, and each value goes
/// through the same formula, so the results are the same bits as theirs, on any number of threads.
/// </para>
/// <para>
/// It does not always pay (see <see cref="UsesChannelwise{T}"/>). A channel is the unit of work, so it needs a few
/// channels per thread. And a channel's planes lie C·H·W values apart: small planes are short runs scattered over
/// many memory pages, which the hardware prefetcher does not follow, so planes under a page go plane-wise, where the
/// whole tensor is one sequential run. (Probes on 2 threads found the channel-at-a-time kernels ahead with 12.5 KB and
/// 4 KB planes and behind with 784 B and 64 B ones.)
/// </para>
/// </remarks>
internal static unsafe partial class BatchNorm2dKernels
{
    /// <summary>With fewer channels per thread than this, whole channels leave threads idle, and the plane-wise kernels serve.</summary>
    public const int ChannelwiseChannelsPerThread = 4;

    /// <summary>With planes smaller than this (one memory page), the plane-wise kernels serve.</summary>
    public const int ChannelwiseMinimumPlaneBytes = 4096;

    /// <summary>Whether <see cref="TrainingForwardChannelwise{T}"/> and <see cref="BackwardChannelwise{T}"/> serve this layout.</summary>
    public static bool UsesChannelwise<T>(PlaneLayout layout, int threads)
        where T : unmanaged =>
        !layout.ChannelsLast && layout.Length > 0
        && (long)layout.Spatial * sizeof(T) >= ChannelwiseMinimumPlaneBytes
        && layout.Channels >= ChannelwiseChannelsPerThread * ChunkScheduler.ThreadsFor(layout.Length, threads);

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
        bool? streamingStores = null)
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
            };
            ChunkScheduler.Run(ref job, layout.Channels, ChunkScheduler.ThreadsFor(layout.Length, threads));
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
        bool? streamingStores = null)
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
            };
            ChunkScheduler.Run(ref job, layout.Channels, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>Channel <c>chunk</c> of <see cref="TrainingForwardChannelwise{T}"/>.</summary>
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
        private readonly void Run<TStore>(int c)
            where TStore : struct, IStoreMode
        {
            int spatial = Layout.Spatial;
            long planeStride = (long)Layout.Channels * spatial;
            T* channel = X + ((long)c * spatial);
            double reference = ShiftReference(channel[0]);
            double sum = 0;
            double squares = 0;
            for (int n = 0; n < Layout.Batch; n++)
            {
                (double planeSum, double planeSquares) = ShiftedSums(new ReadOnlySpan<T>(channel + (n * planeStride), spatial), reference);
                sum += planeSum;
                squares += planeSquares;
            }

            (double mean, double variance) = ShiftedMoments(reference, sum, squares, Layout.ValuesPerChannel);
            double invstd = InverseStandardDeviation(variance, Eps);
            double scale = invstd * (Weight is null ? 1.0 : double.CreateTruncating(Weight[c]));
            double shift = Bias is null ? 0.0 : double.CreateTruncating(Bias[c]);
            for (int n = 0; n < Layout.Batch; n++)
            {
                long start = (n * planeStride) + ((long)c * spatial);
                AffineBroadcast<T, TStore>(X + start, Y + start, spatial, mean, scale, shift);
            }

            Mean[c] = mean;
            Variance[c] = variance;
            Invstd[c] = invstd;
        }
    }

    /// <summary>Channel <c>chunk</c> of <see cref="BackwardChannelwise{T}"/>.</summary>
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
        private readonly void Run<TStore>(int c)
            where TStore : struct, IStoreMode
        {
            int spatial = Layout.Spatial;
            long planeStride = (long)Layout.Channels * spatial;
            long channelStart = (long)c * spatial;
            double sum = 0;
            double products = 0;
            for (int n = 0; n < Layout.Batch; n++)
            {
                long start = (n * planeStride) + channelStart;
                (double planeSum, double planeProducts) = ProductSums(
                    new ReadOnlySpan<T>(GradOutput + start, spatial), new ReadOnlySpan<T>(X + start, spatial), Mean[c]);
                sum += planeSum;
                products += planeProducts;
            }

            var (offset, scale, shift, projection) = GradientConstants(
                Mean[c], Invstd[c], Weight is null ? 1.0 : double.CreateTruncating(Weight[c]), sum, products, Layout.ValuesPerChannel, BatchStatistics);
            for (int n = 0; n < Layout.Batch; n++)
            {
                long start = (n * planeStride) + channelStart;
                if (BatchStatistics)
                {
                    GradientBroadcast<T, TStore>(GradOutput + start, X + start, GradInput + start, spatial, offset, scale, shift, projection);
                }
                else
                {
                    AffineBroadcast<T, TStore>(GradOutput + start, GradInput + start, spatial, offset, scale, shift);
                }
            }

            SumDy[c] = sum;
            SumDyXmu[c] = products;
        }
    }
}
