using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The backward of a channels-last input whose output gradient comes in NCHW (a channels-last network whose loss, or
/// a reshape after the layer, hands back a contiguous gradient), reading the gradient where it lies.
/// </summary>
/// <remarks>
/// <para>
/// Moving the gradient into channels-last memory first reads it, writes the copy, and then reads the copy twice, once
/// for the sums and once for dx. Here each block of rows moves its piece of the gradient a few kilobytes at a time
/// into a buffer on the stack, which stays in the L1 cache, and the sums or dx read it there. Both passes do so, so
/// the gradient is transposed twice, in the cache, and no copy is written or read.
/// </para>
/// <para>
/// The buffer holds the values a moved copy holds, in the same order, and a block's work runs over it piece after
/// piece with the block's accumulators carried on: a piece is a whole number of periods, so each starts at period
/// position 0 as the block does, and each lane adds the same values in the same order. dx is computed value by value
/// by the same formula. So sums and dx are the same bits as with the gradient moved first.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>About this many bytes of gradient are moved at a time: a third of an L1 data cache.</summary>
    /// <remarks>
    /// Pieces of 8 KB or 32 KB were no better for the sums and dx on the machine measured, pieces of 4 KB or of 64 KB
    /// and more slower.
    /// </remarks>
    private const int StagingBytes = 16 * 1024;

    /// <summary>A period longer than this (C in the thousands) is not staged: the gradient is moved first instead.</summary>
    private const int MaxStagedPeriodBytes = 64 * 1024;

    /// <summary>
    /// Whether <see cref="BackwardReductionsPlanarGradient{T}"/> and <see cref="BackwardInputPlanarGradient{T, TParam}"/> can
    /// serve an input in <paramref name="layout"/>: a channels-last one whose period is short enough to stage, with at
    /// least 8 channels and planes of at least 64 values.
    /// </summary>
    /// <remarks>
    /// With small planes (256×512×4×4) a sample's pieces are too short to move well, and a few channels (8×3×224×224)
    /// move through lane permutations; taking the gradient piece by piece was slower than moving it first for those, so
    /// they move first.
    /// </remarks>
    public static bool CanReadPlanarGradient<T>(PlaneLayout layout)
        where T : unmanaged =>
        !Element.IsHalfPrecision<T>() && layout.ChannelsLast && layout.Channels >= 8 && layout.Spatial >= 64
        && (long)new RowBlocks(layout).Period * sizeof(T) <= MaxStagedPeriodBytes;

    /// <summary>
    /// Whether the backward reads an NCHW gradient under an input in <paramref name="layout"/> where it lies
    /// (<see cref="BackwardReductionsPlanarGradient{T}"/>, <see cref="BackwardInputPlanarGradient{T, TParam}"/>) rather than
    /// moving it first: where it can, and where dy, x and a copy together would span at least
    /// <see cref="StreamingStores.MinimumPassBytes"/>, as a pass that writes with streaming stores.
    /// </summary>
    /// <remarks>
    /// Below that, a copy moved first is still in the last-level cache when the two passes read it, and reading it there
    /// costs less than transposing the gradient a second time. From that size on, reading in place made the float32
    /// training step faster on the shapes measured, and float64 no slower (see docs/performance.md).
    /// </remarks>
    public static bool ReadsPlanarGradient<T>(PlaneLayout layout)
        where T : unmanaged =>
        CanReadPlanarGradient<T>(layout) && (long)layout.Length * sizeof(T) * 3 >= StreamingStores.MinimumPassBytes;

    /// <summary>
    /// The sums of <see cref="BackwardReductionsVectorized{T}"/> for a channels-last <paramref name="layout"/> whose
    /// gradient <paramref name="gradOutputPlanes"/> is in NCHW memory. Only where <see cref="CanReadPlanarGradient{T}"/>
    /// allows it.
    /// </summary>
    public static void BackwardReductionsPlanarGradient<T>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutputPlanes,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        Span<double> sumDy,
        Span<double> sumDyXmu,
        Span<double> scratch,
        int threads)
        where T : unmanaged
    {
        Debug.Assert(CanReadPlanarGradient<T>(layout) && x.Length >= layout.Length && gradOutputPlanes.Length >= layout.Length);
        Debug.Assert(scratch.Length >= VectorizedScratchLength(layout));
        if (layout.Length == 0)
        {
            sumDy[..layout.Channels].Clear();
            sumDyXmu[..layout.Channels].Clear();
            return;
        }

        MomentSums(gradOutputPlanes, x, layout, mean, sumDy, sumDyXmu, scratch[(4 * layout.Channels)..], threads, planarA: true);
    }

    /// <summary>
    /// <see cref="BackwardInputVectorized{T, TParam}"/> for a channels-last <paramref name="layout"/> whose gradient
    /// <paramref name="gradOutputPlanes"/> is in NCHW memory; dx is written in channels-last memory, which must not
    /// overlap the gradient (a block's pieces are read after earlier blocks have written). Only where
    /// <see cref="CanReadPlanarGradient{T}"/> allows it.
    /// </summary>
    public static void BackwardInputPlanarGradient<T, TParam>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutputPlanes,
        Span<T> gradInput,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> weight,
        ReadOnlySpan<double> sumDy,
        ReadOnlySpan<double> sumDyXmu,
        bool batchStatistics,
        Span<double> scratch,
        int threads,
        bool? streamingStores = null)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(CanReadPlanarGradient<T>(layout) && x.Length >= layout.Length && !gradInput.Overlaps(gradOutputPlanes));
        BackwardInputVectorized(x, gradOutputPlanes, gradInput, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics, scratch, threads, streamingStores, planarA: true);
    }

    /// <summary>How many rows a piece of a staged block holds: a whole number of periods, an even number where more than one fits.</summary>
    private static int StagedRows<T>(in RowBlocks blocks)
        where T : unmanaged
    {
        // An even number of periods keeps float32 pieces to whole cache lines, which streaming stores write best.
        int periods = Math.Max(1, StagingBytes / (blocks.Period * sizeof(T)));
        if (periods > 1)
        {
            periods &= ~1;
        }

        return Math.Min(periods * (blocks.Period / blocks.Channels), blocks.RowsPerBlock);
    }

    /// <summary>
    /// Rows [<paramref name="firstRow"/>, <paramref name="firstRow"/> + <paramref name="rows"/>) of the NCHW tensor at
    /// <paramref name="planes"/> as channels-last rows in <paramref name="staging"/>: one sample's piece at a time.
    /// </summary>
    private static void StageRows<T>(T* planes, in RowBlocks blocks, int firstRow, int rows, T* staging)
        where T : unmanaged
    {
        int channels = blocks.Channels;
        int spatial = blocks.Spatial;
        T* end = planes + ((long)blocks.Rows * channels);
        while (rows > 0)
        {
            int sample = firstRow / spatial;
            int position = firstRow - (sample * spatial);
            int take = Math.Min(rows, spatial - position);
            LayoutKernels.PlanesToRows(planes + ((long)sample * channels * spatial) + position, spatial, channels, take, staging, end);
            staging += (long)take * channels;
            firstRow += take;
            rows -= take;
        }
    }

    /// <summary>
    /// The sums of <see cref="RowMomentsJob{T}"/> for one block whose a is NCHW, piece by piece through a buffer on the
    /// stack.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void StagedPeriodicProductSums<T>(T* a, T* b, in RowBlocks blocks, int block, ReadOnlySpan<double> reference, Span<double> sum, Span<double> products)
        where T : unmanaged
    {
        T* buffer = stackalloc T[(StagedRows<T>(blocks) * blocks.Channels) + CacheLine.Slack<T>()];
        T* staging = CacheLine.Start(buffer);
        var pieces = new StagedPieces<T>(a, blocks, block, staging);
        while (pieces.Next(out long at, out int values))
        {
            PeriodicProductSums(new ReadOnlySpan<T>(staging, values), new ReadOnlySpan<T>(b + at, values), reference, sum, products);
        }
    }

    /// <summary>
    /// One block of <see cref="RowElementwiseJob{T}"/> whose a is NCHW, piece by piece through a buffer on the stack;
    /// with <paramref name="streaming"/>, each piece whose output starts on a cache line is written with streaming stores.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void StagedElementwise<T>(T* a, T* b, T* output, in RowBlocks blocks, int block, ChannelParameters parameters, bool gradient, bool streaming)
        where T : unmanaged
    {
        T* buffer = stackalloc T[(StagedRows<T>(blocks) * blocks.Channels) + CacheLine.Slack<T>()];
        T* staging = CacheLine.Start(buffer);
        var pieces = new StagedPieces<T>(a, blocks, block, staging);
        while (pieces.Next(out long at, out int values))
        {
            bool stream = streaming && StreamingStores.Aligned(output + at);
            if (gradient && stream)
            {
                GradientPeriodic<T, StreamingStores>(staging, b + at, output + at, values, parameters);
            }
            else if (gradient)
            {
                GradientPeriodic<T, PlainStores>(staging, b + at, output + at, values, parameters);
            }
            else if (stream)
            {
                AffinePeriodic<T, StreamingStores>(staging, output + at, values, parameters);
            }
            else
            {
                AffinePeriodic<T, PlainStores>(staging, output + at, values, parameters);
            }
        }
    }

    /// <summary>
    /// The pieces of one block of rows whose values lie in NCHW memory, in order: each is moved into the caller's
    /// staging buffer (<see cref="StagedRows{T}"/> rows of C values) as channels-last rows before it is handed out.
    /// </summary>
    private struct StagedPieces<T>
        where T : unmanaged
    {
        private readonly T* planes;
        private readonly T* staging;
        private readonly RowBlocks blocks;
        private readonly long start;
        private readonly int firstRow;
        private readonly int rows;
        private readonly int pieceRows;
        private int done;

        public StagedPieces(T* planes, in RowBlocks blocks, int block, T* staging)
        {
            this.planes = planes;
            this.staging = staging;
            this.blocks = blocks;
            (start, int length) = blocks.Span(block);
            firstRow = (int)(start / blocks.Channels);
            rows = length / blocks.Channels;
            pieceRows = StagedRows<T>(blocks);
        }

        /// <summary>
        /// Moves the next piece into the staging buffer: false when the block is done, otherwise the piece's first
        /// element in channels-last order and its number of values.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Next(out long at, out int values)
        {
            int take = Math.Min(pieceRows, rows - done);
            at = start + ((long)done * blocks.Channels);
            values = take * blocks.Channels;
            if (take <= 0)
            {
                return false;
            }

            StageRows(planes, blocks, firstRow + done, take, staging);
            done += take;
            return true;
        }
    }
}
