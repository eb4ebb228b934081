using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The backward sums of a channels-last input whose output gradient comes in NCHW (a channels-last network whose
/// loss, or a reshape after the layer, hands back a contiguous gradient), moving the gradient into channels-last
/// memory on the way for the pass that computes dx.
/// </summary>
/// <remarks>
/// <para>
/// Moving the gradient first and summing afterwards reads it, writes the copy and reads the copy back. Here each block
/// of rows moves its piece of the gradient a few kilobytes at a time into a buffer on the stack, which stays in the L1
/// cache; the block's sums read it there, and the copy is written from it, with streaming stores where the pass's
/// tensors would not stay in the cache. That saves the second read of the copy and, where the stores stream, the
/// read of each of its lines that an ordinary store makes first.
/// </para>
/// <para>
/// The buffer holds the values the copy holds, in the same order, and the sums run over it piece after piece with the
/// block's accumulators carried on: a piece is a whole number of periods, so each starts at period position 0 as the
/// block does, and each lane adds the same values in the same order. So the sums are the same bits as with the
/// gradient moved first, and the copy the same bits as <see cref="LayoutKernels.ToOtherLayout{T}"/> makes.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNorm2dKernels
{
    /// <summary>About this many bytes of gradient are moved at a time: a third of an L1 data cache.</summary>
    private const int StagingBytes = 16 * 1024;

    /// <summary>A period longer than this (C in the thousands) is not staged: the gradient is moved first instead.</summary>
    private const int MaxStagedPeriodBytes = 64 * 1024;

    /// <summary>
    /// Whether <see cref="BackwardReductionsMovingGradient{T}"/> can serve an input in <paramref name="layout"/>: a
    /// channels-last one whose period is short enough to stage, with at least 8 channels and planes of at least 64
    /// values.
    /// </summary>
    /// <remarks>
    /// Against moving first (float32, 2 threads, inputs not in the cache, medians of 60, moves and sums together):
    /// 32×64×56×56 took 5.0–5.1 ms against 6.2–7.4, 128×32×32×32 2.4–2.9 against 3.0–3.3, 32×256×14×14 1.4 against 1.6;
    /// but 256×512×4×4, whose pieces of a sample are too short to move well, 1.5–2.3 against 1.3–1.6, and 8×3×224×224
    /// 0.58–0.67 against 0.49–0.62: those move first.
    /// </remarks>
    public static bool CanMovePlanarGradient<T>(PlaneLayout layout)
        where T : unmanaged =>
        layout.ChannelsLast && layout.Channels >= 8 && layout.Spatial >= 64
        && (long)new RowBlocks(layout).Period * sizeof(T) <= MaxStagedPeriodBytes;

    /// <summary>
    /// Whether the backward moves an NCHW gradient under an input in <paramref name="layout"/> while summing
    /// (<see cref="BackwardReductionsMovingGradient{T}"/>) rather than first: where it can, and where dy, x and the copy
    /// together span at least <see cref="StreamingStores.MinimumPassBytes"/>, as a pass that writes with streaming stores.
    /// </summary>
    /// <remarks>
    /// Below that, a copy moved first is still in the last-level cache when the sums read it. Training step, the two
    /// ways taken in turn (float32, medians of 150, 2-core AMD EPYC with 32 MiB of L3): moving first took 32×256×14×14
    /// (6.4 MB per tensor) from 5.29 to 4.64 ms, 8×64×28×28 from 1.07 to 0.95, 16×512×7×7 from 1.80 to 1.71 and 8×64×56×56
    /// from 5.26 to 5.08, but 32×256×28×28 (25.7 MB) from 16.1 to 17.4, 64×64×28×28 from 8.13 to 9.01 and 32×128×28×28
    /// from 7.76 to 8.10.
    /// </remarks>
    public static bool MovesPlanarGradient<T>(PlaneLayout layout)
        where T : unmanaged =>
        CanMovePlanarGradient<T>(layout) && (long)layout.Length * sizeof(T) * 3 >= StreamingStores.MinimumPassBytes;

    /// <summary>
    /// The sums of <see cref="BackwardReductionsVectorized{T}"/> for a channels-last <paramref name="layout"/> whose
    /// gradient <paramref name="gradOutputPlanes"/> is in NCHW memory; <paramref name="gradOutputMoved"/> receives that
    /// gradient in channels-last memory, as <see cref="LayoutKernels.ToOtherLayout{T}"/> would write it, for
    /// <see cref="BackwardInputVectorized{T}"/> to read. Only where <see cref="CanMovePlanarGradient{T}"/> allows it.
    /// </summary>
    public static void BackwardReductionsMovingGradient<T>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutputPlanes,
        Span<T> gradOutputMoved,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        Span<double> sumDy,
        Span<double> sumDyXmu,
        Span<double> scratch,
        int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(CanMovePlanarGradient<T>(layout) && x.Length >= layout.Length && gradOutputPlanes.Length >= layout.Length);
        Debug.Assert(gradOutputMoved.Length >= layout.Length && !gradOutputMoved.Overlaps(gradOutputPlanes) && scratch.Length >= VectorizedScratchLength(layout));
        if (layout.Length == 0)
        {
            sumDy[..layout.Channels].Clear();
            sumDyXmu[..layout.Channels].Clear();
            return;
        }

        fixed (T* moved = gradOutputMoved)
        {
            MomentSums(gradOutputPlanes, x, layout, mean, sumDy, sumDyXmu, scratch[(4 * layout.Channels)..], threads, moved);
        }
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
    /// stack, each piece then copied to <paramref name="moved"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StagedPeriodicProductSums<T>(T* a, T* b, T* moved, in RowBlocks blocks, int block, ReadOnlySpan<double> reference, Span<double> sum, Span<double> products)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int channels = blocks.Channels;
        int pieceRows = StagedRows<T>(blocks);
        T* staging = stackalloc T[pieceRows * channels];
        (long start, int length) = blocks.Span(block);
        int firstRow = (int)(start / channels);
        int rows = length / channels;
        // The copy as the kernels' outputs are written: streamed where the pass's tensors (dy, x and the copy) would not stay in the cache.
        long total = (long)blocks.Rows * channels;
        bool streaming = StreamingStores.For<T>(total, total, tensors: 3) && StreamingStores.Aligned(moved + start);
        for (int done = 0; done < rows; done += pieceRows)
        {
            int take = Math.Min(pieceRows, rows - done);
            int values = take * channels;
            long at = start + ((long)done * channels);
            StageRows(a, blocks, firstRow + done, take, staging);
            PeriodicProductSums(new ReadOnlySpan<T>(staging, values), new ReadOnlySpan<T>(b + at, values), reference, sum, products);
            if (streaming)
            {
                StreamingStores.Copy(staging, moved + at, values);
            }
            else
            {
                new ReadOnlySpan<T>(staging, values).CopyTo(new Span<T>(moved + at, values));
            }
        }
    }
}
