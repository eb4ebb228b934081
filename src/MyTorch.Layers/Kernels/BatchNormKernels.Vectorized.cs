using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The same math as the reference kernels, vectorised and spread over threads; the tests hold it to the reference.
/// </summary>
/// <remarks>
/// Values are widened to <see cref="double"/>, so float32 and float64 share one path, <see cref="Lanes"/> values a step.
/// The statistics take one read, Σ(x − K) and Σ(x − K)² with K a channel's first value, which keeps the subtraction's
/// loss to log10(M) of double's digits (docs/numerics.md). Partial sums are kept per plane (NCHW) or per block of rows
/// sized by C alone (NHWC) and combined in a fixed order, so no bit depends on the thread count. NHWC is read in place
/// through P-long periodic rows of constants, P = lcm(C, <see cref="Lanes"/>). The loops are
/// <see cref="MethodImplOptions.AggressiveOptimization"/>, since tiered compilation would keep these often-entered loops
/// unoptimised for many steps. Large outputs go through <see cref="StreamingStores"/>, whole cache lines only, each
/// value computed the same way on either path.
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Elements per vector step: two vectors of doubles, one widened vector of floats.</summary>
    private static int Lanes => 2 * Vector<double>.Count;

    /// <summary>
    /// How many periods of channels-last values a sum loop reads per load and store of its accumulators, and an
    /// element-wise loop per load of its constants: as many as fit in <see cref="PassBytes"/>, 1 to 8. Each lane still
    /// adds its values in order, and each value is computed as before, so this changes no bit, only how often the
    /// accumulators and constants go through memory; a pass kept within a few cache lines keeps the reads close together.
    /// </summary>
    /// <remarks>
    /// 512 bytes is where the kernels alone ran fastest on the machines measured: the sums were slower with passes of
    /// 2 KB and again with passes of 256 bytes or less, and the element-wise loops slower one period at a time (see
    /// docs/performance.md). Where a period is 512 bytes or longer nothing changes.
    /// </remarks>
    private static int PeriodsPerPass<T>(int period)
        where T : unmanaged => Math.Clamp(PassBytes / (period * sizeof(T)), 1, 8);

    /// <summary>The bytes of input one pass of a channels-last sum loop reads, at most (unless one period is longer).</summary>
    private const int PassBytes = 512;

    /// <summary>
    /// The length of the scratch buffer the vectorised kernels need for <paramref name="layout"/>: four per-channel
    /// rows, then the partial sums (per plane for NCHW, per block and period position for NHWC) and, for NHWC, four
    /// periodic rows of constants, started on a cache line.
    /// </summary>
    public static int VectorizedScratchLength(PlaneLayout layout)
    {
        int perChannel = 4 * layout.Channels;
        if (!layout.ChannelsLast)
        {
            // The partial sums' place serves the element-wise passes' float32 constants too (see SingleConstants).
            return perChannel + Math.Max(2 * layout.Batch * layout.Channels, SingleScratchLength(layout.Channels));
        }

        var blocks = new RowBlocks(layout);
        return perChannel + CacheLine.Slack<double>() + (2 * blocks.Count * blocks.AccumulatorStride) + (4 * blocks.Period);
    }

    /// <summary>
    /// μ[c] and the biased σ²[c] of each channel in one read of x. Same contract as <see cref="BatchStatistics{T}"/>;
    /// the input must not be empty. <paramref name="side"/>, if present, runs on one of the threads meanwhile.
    /// </summary>
    public static void BatchStatisticsVectorized<T>(
        ReadOnlySpan<T> x, PlaneLayout layout, Span<double> mean, Span<double> variance, Span<double> scratch, int threads, SidePiece side = default)
        where T : unmanaged
    {
        Debug.Assert(layout.Length > 0 && x.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        int channels = layout.Channels;
        Span<double> first = scratch[..channels];
        Span<double> second = scratch.Slice(channels, channels);
        Span<double> reference = scratch.Slice(2 * channels, channels);
        ShiftedSumsVectorized(x, layout, reference, first, second, scratch, threads, side);
        for (int c = 0; c < channels; c++)
        {
            (mean[c], variance[c]) = ShiftedMoments(reference[c], first[c], second[c], layout.ValuesPerChannel);
        }
    }

    /// <summary>
    /// The sums <see cref="BatchStatisticsVectorized{T}"/> takes μ and σ² from: sum[c] = Σ(x − K) and
    /// squares[c] = Σ(x − K)², with K = reference[c] the channel's first value (0 if it is not finite). A batch split across
    /// processes merges these (<see cref="MergeShiftedSums"/>). The input must not be empty; <paramref name="scratch"/>'s
    /// first four channel rows are not used, so the outputs may lie there.
    /// </summary>
    public static void ShiftedSumsVectorized<T>(
        ReadOnlySpan<T> x, PlaneLayout layout, Span<double> reference, Span<double> sum, Span<double> squares, Span<double> scratch, int threads, SidePiece side = default)
        where T : unmanaged
    {
        Debug.Assert(layout.Length > 0 && x.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        int channels = layout.Channels;
        for (int c = 0; c < channels; c++)
        {
            reference[c] = ShiftReference(x[c * layout.ChannelStride]);
        }

        MomentSums(x, default, layout, reference, sum, squares, scratch[(4 * channels)..], threads, side: side);
    }

    /// <summary>K for the shifted sums of a channel whose first value is <paramref name="first"/>.</summary>
    private static double ShiftReference<T>(T first)
        where T : unmanaged
    {
        // An infinite K would turn an infinite mean into NaN; without a finite one, plain sums (K = 0) do.
        double k = Element.ToDouble(first);
        return double.IsFinite(k) ? k : 0;
    }

    /// <summary>μ and σ² from Σ(x − K) and Σ(x − K)² over <paramref name="count"/> values.</summary>
    private static (double Mean, double Variance) ShiftedMoments(double reference, double sum, double squares, double count)
    {
        double shifted = sum / count;
        return (reference + shifted, Math.Max((squares / count) - (shifted * shifted), 0));
    }

    /// <summary>
    /// The sums of <see cref="BackwardReductions{T}"/>, vectorised: Σdy and Σdy·(x − mean[c]) per channel. With an
    /// active <paramref name="tail"/> (float32 and float64 only), <paramref name="gradOutput"/> is the block's output
    /// gradient, and dy is what the tail hands back from it, made chunk by chunk in a buffer that stays in cache (see
    /// <see cref="BlockTail"/>).
    /// </summary>
    public static void BackwardReductionsVectorized<T>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutput,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        Span<double> sumDy,
        Span<double> sumDyXmu,
        Span<double> scratch,
        int threads,
        BlockTail tail = default)
        where T : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && gradOutput.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        if (layout.Length == 0)
        {
            sumDy[..layout.Channels].Clear();
            sumDyXmu[..layout.Channels].Clear();
            return;
        }

        MomentSums(gradOutput, x, layout, mean, sumDy, sumDyXmu, scratch[(4 * layout.Channels)..], threads, tail: tail);
    }

    /// <summary>
    /// y = (x − mean[c]) · invstd[c] · γ[c] + β[c], vectorised. <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    /// <remarks>
    /// y is written with streaming stores if <c>streamingStores</c> says so, and by default when the pass's tensors span at
    /// least <see cref="StreamingStores.MinimumPassBytes"/> and its runs are long enough (<see cref="StreamingStores.For{T}"/>);
    /// that changes no bit of the result. With an active <c>tail</c> (float32 and float64 only), each chunk of y is
    /// written to a buffer that stays in cache, finished by the tail there, then copied out (see <see cref="BlockTail"/>).
    /// </remarks>
    public static void NormalizeVectorized<T, TParam>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> weight,
        ReadOnlySpan<TParam> bias,
        Span<double> scratch,
        int threads,
        bool? streamingStores = null,
        BlockTail tail = default)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        if (layout.Length == 0)
        {
            return;
        }

        // Per channel: y = (x − offset) · scale + shift.
        int channels = layout.Channels;
        Span<double> offset = scratch[..channels];
        Span<double> scale = scratch.Slice(channels, channels);
        Span<double> shift = scratch.Slice(2 * channels, channels);
        for (int c = 0; c < channels; c++)
        {
            offset[c] = mean[c];
            scale[c] = invstd[c] * (weight.IsEmpty ? 1.0 : Element.ToDouble(weight[c]));
            shift[c] = bias.IsEmpty ? 0.0 : Element.ToDouble(bias[c]);
        }

        Elementwise(x, default, y, layout, offset, scale, shift, default, scratch[(4 * channels)..], threads, streamingStores, tail: tail);
    }

    /// <summary>
    /// dx of <see cref="BackwardInputBatchStatistics{T, TParam}"/> (<paramref name="batchStatistics"/>) or
    /// <see cref="BackwardInputFixedStatistics{T, TParam}"/>, vectorised. <paramref name="gradInput"/> may be
    /// <paramref name="gradOutput"/> itself.
    /// </summary>
    /// <remarks>
    /// dx is written with streaming stores if <c>streamingStores</c> says so, and by default when the pass's tensors span at
    /// least <see cref="StreamingStores.MinimumPassBytes"/> and its runs are long enough (<see cref="StreamingStores.For{T}"/>);
    /// that changes no bit of the result. With <c>planarA</c>, <paramref name="gradOutput"/> is in NCHW memory under a
    /// channels-last <paramref name="layout"/> (see <see cref="BackwardInputPlanarGradient{T, TParam}"/>). With an active
    /// <c>tail</c>, <paramref name="gradOutput"/> is a block's output gradient, and dy is made from it as
    /// <see cref="BackwardReductionsVectorized{T}"/> makes it. A positive <c>batchValues</c> is M, the values per channel
    /// of a batch split across processes whose merged sums <paramref name="sumDy"/> and <paramref name="sumDyXmu"/> are;
    /// by default M is this layout's.
    /// </remarks>
    public static void BackwardInputVectorized<T, TParam>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutput,
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
        bool? streamingStores = null,
        bool planarA = false,
        BlockTail tail = default,
        long batchValues = 0)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(gradOutput.Length >= layout.Length && gradInput.Length >= layout.Length && scratch.Length >= VectorizedScratchLength(layout));
        Debug.Assert(!tail.Active || !planarA);
        if (layout.Length == 0)
        {
            return;
        }

        // Per channel, with batch statistics: dx = (dy − shift − (x − offset) · projection) · scale;
        // with fixed ones: dx = (dy − 0) · scale + 0, the affine form with zero offset and shift.
        int channels = layout.Channels;
        double count = batchValues > 0 ? batchValues : layout.ValuesPerChannel;
        Span<double> offset = scratch[..channels];
        Span<double> scale = scratch.Slice(channels, channels);
        Span<double> shift = scratch.Slice(2 * channels, channels);
        Span<double> projection = scratch.Slice(3 * channels, channels);
        for (int c = 0; c < channels; c++)
        {
            (offset[c], scale[c], shift[c], projection[c]) =
                GradientConstants(mean[c], invstd[c], weight.IsEmpty ? 1.0 : Element.ToDouble(weight[c]), sumDy[c], sumDyXmu[c], count, batchStatistics);
        }

        Elementwise(gradOutput, batchStatistics ? x : default, gradInput, layout, offset, scale, shift, projection, scratch[(4 * channels)..], threads, streamingStores, planarA, tail);
    }

    /// <summary>The per-channel constants of dx = (dy − shift − (x − offset) · projection) · scale.</summary>
    private static (double Offset, double Scale, double Shift, double Projection) GradientConstants(
        double mean, double invstd, double weight, double sumDy, double sumDyXmu, double count, bool batchStatistics) =>
        batchStatistics
            ? (mean, invstd * weight, sumDy / count, sumDyXmu * invstd * invstd / count)
            : (0, invstd * weight, 0, 0);

    /// <summary>
    /// Per channel c: first[c] = Σa and second[c] = Σa·(b − reference[c]); without b (empty), first[c] = Σ(a − reference[c])
    /// and second[c] = Σ(a − reference[c])². With <paramref name="planarA"/>, a is in NCHW memory under a channels-last
    /// <paramref name="layout"/> (see <see cref="StagedPeriodicProductSums{T}"/>). <paramref name="side"/>, if present,
    /// runs on one of the threads meanwhile.
    /// </summary>
    private static void MomentSums<T>(
        ReadOnlySpan<T> a,
        ReadOnlySpan<T> b,
        PlaneLayout layout,
        ReadOnlySpan<double> reference,
        Span<double> first,
        Span<double> second,
        Span<double> scratch,
        int threads,
        bool planarA = false,
        BlockTail tail = default,
        SidePiece side = default)
        where T : unmanaged
    {
        Debug.Assert(!planarA || (layout.ChannelsLast && !b.IsEmpty));
        Debug.Assert(!tail.Active || (!planarA && !b.IsEmpty));
        int channels = layout.Channels;
        threads = ChunkScheduler.ThreadsFor(layout.Length, threads);
        fixed (T* pa = a)
        fixed (T* pb = b)
        fixed (double* pr = reference)
        fixed (double* ps = scratch)
        {
            if (!layout.ChannelsLast && SumsSmallPlanesInColumns(layout.Spatial))
            {
                // Partial sums per group of samples and channel: G·C firsts, then G·C seconds, G the groups.
                int groups = SmallPlaneGroups(layout.Batch);
                var job = new SmallPlaneColumnsJob<T>
                {
                    A = pa,
                    B = b.IsEmpty ? null : pb,
                    Reference = pr,
                    First = ps,
                    Second = ps + ((long)groups * channels),
                    Batch = layout.Batch,
                    Channels = channels,
                    Tail = tail,
                };
                ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(job.Units, SmallPlaneColumnsJob<T>.UnitsPerChunk), threads, side);

                // Each channel's group sums added in group order.
                first.Clear();
                second.Clear();
                for (int g = 0; g < groups; g++)
                {
                    AddRow(new ReadOnlySpan<double>(job.First + ((long)g * channels), channels), first);
                    AddRow(new ReadOnlySpan<double>(job.Second + ((long)g * channels), channels), second);
                }
            }
            else if (!layout.ChannelsLast)
            {
                // Partial sums per (n, c) plane: N·C firsts, then N·C seconds.
                int planes = layout.Batch * channels;
                var job = new PlaneMomentsJob<T>
                {
                    A = pa,
                    B = b.IsEmpty ? null : pb,
                    Reference = pr,
                    First = ps,
                    Second = ps + planes,
                    Spatial = layout.Spatial,
                    Channels = channels,
                    Planes = planes,
                    PlanesPerChunk = ChunkScheduler.UnitsPerChunk(layout.Spatial),
                    Tail = tail,
                };
                ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(planes, job.PlanesPerChunk), threads, side);

                // Each channel's partial sums added in sample order, the samples taken in the order they lie in memory.
                first.Clear();
                second.Clear();
                for (int n = 0; n < layout.Batch; n++)
                {
                    AddRow(new ReadOnlySpan<double>(job.First + ((long)n * channels), channels), first);
                    AddRow(new ReadOnlySpan<double>(job.Second + ((long)n * channels), channels), second);
                }
            }
            else
            {
                var blocks = new RowBlocks(layout);
                int period = blocks.Period;
                int stride = blocks.AccumulatorStride;
                double* accumulators = CacheLine.Start(ps);
                double* periodicReference = accumulators + (2 * blocks.Count * stride);
                RepeatOverPeriod(reference[..channels], periodicReference, period);

                var job = new RowMomentsJob<T>
                {
                    A = pa,
                    B = b.IsEmpty ? null : pb,
                    Reference = periodicReference,
                    First = accumulators,
                    Second = accumulators + (blocks.Count * stride),
                    Blocks = blocks,
                    PlanarA = planarA,
                    Tail = tail,
                };
                ChunkScheduler.Run(ref job, blocks.Count, threads, side);

                // Each channel's partial sums added in block order, and within a block in period order: a row of C
                // at a time, so the additions of the C channels go side by side in vectors.
                first[..channels].Clear();
                second[..channels].Clear();
                for (int block = 0; block < blocks.Count; block++)
                {
                    for (int k = 0; k < period; k += channels)
                    {
                        AddRow(new ReadOnlySpan<double>(job.First + (block * stride) + k, channels), first);
                        AddRow(new ReadOnlySpan<double>(job.Second + (block * stride) + k, channels), second);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Per element of channel c: out = (a − shift[c] − (b − offset[c]) · projection[c]) · scale[c], or without b
    /// (empty <paramref name="b"/>, and then <paramref name="projection"/> is not read): out = (a − offset[c]) · scale[c] + shift[c].
    /// With <paramref name="planarA"/>, a is in NCHW memory under a channels-last <paramref name="layout"/> (see
    /// <see cref="StagedElementwise{T}"/>).
    /// </summary>
    private static void Elementwise<T>(
        ReadOnlySpan<T> a,
        ReadOnlySpan<T> b,
        Span<T> output,
        PlaneLayout layout,
        ReadOnlySpan<double> offset,
        ReadOnlySpan<double> scale,
        ReadOnlySpan<double> shift,
        ReadOnlySpan<double> projection,
        Span<double> periodicScratch,
        int threads,
        bool? streamingStores,
        bool planarA = false,
        BlockTail tail = default)
        where T : unmanaged
    {
        Debug.Assert(!planarA || layout.ChannelsLast);
        int channels = layout.Channels;
        threads = ChunkScheduler.ThreadsFor(layout.Length, threads);
        var parameters = new ChannelParameters { Count = channels };
        fixed (T* pa = a)
        fixed (T* pb = b)
        fixed (T* po = output)
        fixed (double* offsetPointer = offset)
        fixed (double* scalePointer = scale)
        fixed (double* shiftPointer = shift)
        fixed (double* projectionPointer = projection)
        fixed (double* periodicScratchPointer = periodicScratch)
        {
            parameters.Offset = offsetPointer;
            parameters.Scale = scalePointer;
            parameters.Shift = shiftPointer;
            parameters.Projection = b.IsEmpty ? null : projectionPointer;
            bool gradient = !b.IsEmpty;
            int run = layout.ChannelsLast ? layout.Length : PlaneBoundaries.RunLength(layout.Spatial, Lanes);
            bool streaming = Vector.IsHardwareAccelerated && (streamingStores ?? StreamingStores.For<T>(layout.Length, run, tensors: gradient ? 3 : 2));
            if (!layout.ChannelsLast)
            {
                if (CheckedSingle<T>(layout.Spatial))
                {
                    parameters.Single = (float*)periodicScratchPointer;
                    SingleConstants(parameters);
                }

                int planes = layout.Batch * channels;
                var job = new PlaneElementwiseJob<T>
                {
                    A = pa,
                    B = pb,
                    Output = po,
                    Parameters = parameters,
                    Gradient = gradient,
                    Streaming = streaming,
                    Spatial = layout.Spatial,
                    Planes = planes,
                    PlanesPerChunk = ChunkScheduler.UnitsPerChunk(layout.Spatial),
                    Tail = tail,
                };
                ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(planes, job.PlanesPerChunk), threads);
            }
            else
            {
                // The same constants repeated over one period, so that a vector of values meets a vector of constants.
                var blocks = new RowBlocks(layout);
                int period = blocks.Period;
                double* periodic = CacheLine.Start(periodicScratchPointer);
                var periodicParameters = new ChannelParameters
                {
                    Count = period,
                    Offset = periodic,
                    Scale = periodic + period,
                    Shift = periodic + (2 * period),
                    Projection = parameters.Projection is null ? null : periodic + (3 * period),
                };
                RepeatOverPeriod(offset[..channels], periodicParameters.Offset, period);
                RepeatOverPeriod(scale[..channels], periodicParameters.Scale, period);
                RepeatOverPeriod(shift[..channels], periodicParameters.Shift, period);
                if (periodicParameters.Projection is not null)
                {
                    RepeatOverPeriod(projection[..channels], periodicParameters.Projection, period);
                }

                var job = new RowElementwiseJob<T>
                {
                    A = pa,
                    B = pb,
                    Output = po,
                    Parameters = periodicParameters,
                    Gradient = gradient,
                    Streaming = streaming,
                    Blocks = blocks,
                    PlanarA = planarA,
                    Tail = tail,
                };
                ChunkScheduler.Run(ref job, blocks.Count, threads);
            }
        }
    }

    /// <summary>
    /// row[k] = perChannel[k mod C] for k &lt; <paramref name="period"/>, a multiple of C: the channels' values copied
    /// period / C times, with no division per value.
    /// </summary>
    /// <remarks>
    /// Value by value and inlined, with no call: the block's loops lay out each sample's factors with it, and across a
    /// call inside their sample loop the JIT would keep the period's constants on the stack and reload them every step.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void RepeatOverPeriod<T>(ReadOnlySpan<T> perChannel, T* row, int period)
        where T : unmanaged
    {
        Debug.Assert(period % perChannel.Length == 0);
        for (int k = 0; k < period; k += perChannel.Length)
        {
            for (int c = 0; c < perChannel.Length; c++)
            {
                row[k + c] = perChannel[c];
            }
        }
    }

    /// <summary>total[c] += row[c] for every c, each an ordinary double addition.</summary>
    private static void AddRow(ReadOnlySpan<double> row, Span<double> total)
    {
        Debug.Assert(total.Length >= row.Length);
        int c = 0;
        if (Vector.IsHardwareAccelerated)
        {
            ref double r = ref MemoryMarshal.GetReference(row);
            ref double t = ref MemoryMarshal.GetReference(total);
            for (; c <= row.Length - Vector<double>.Count; c += Vector<double>.Count)
            {
                (Vector.LoadUnsafe(ref t, (nuint)c) + Vector.LoadUnsafe(ref r, (nuint)c)).StoreUnsafe(ref t, (nuint)c);
            }
        }

        for (; c < row.Length; c++)
        {
            total[c] += row[c];
        }
    }

    private static int GreatestCommonDivisor(int a, int b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }

        return a;
    }

    /// <summary>
    /// Channels-last work split into blocks of whole rows (one row = the C values of one sample and position), the row
    /// count per block a multiple of P / C so that every block starts at a whole period.
    /// </summary>
    private readonly struct RowBlocks
    {
        public RowBlocks(PlaneLayout layout)
        {
            Channels = layout.Channels;
            Spatial = layout.Spatial;
            Period = Channels / GreatestCommonDivisor(Channels, Lanes) * Lanes;
            int rowsPerPeriod = Period / Channels;
            int periods = ChunkScheduler.UnitsPerChunk(Period);
            RowsPerBlock = periods * rowsPerPeriod;
            Rows = layout.ValuesPerChannel;
            Count = Math.Max(1, ChunkScheduler.ChunkCount(Rows, RowsPerBlock));
        }

        public int Channels { get; }

        /// <summary>S = H·W, the rows of one sample.</summary>
        public int Spatial { get; }

        /// <summary>P = lcm(C, Lanes).</summary>
        public int Period { get; }

        /// <summary>
        /// Distance between the accumulator rows of consecutive blocks: P and a 64-byte gap, so that two threads
        /// accumulating neighbouring blocks never write the same cache line.
        /// </summary>
        public int AccumulatorStride => Period + 8;

        public int RowsPerBlock { get; }

        public int Rows { get; }

        public int Count { get; }

        /// <summary>The first element of a block, and how many elements it holds.</summary>
        public (long Start, int Length) Span(int block)
        {
            int firstRow = block * RowsPerBlock;
            int rows = Math.Min(RowsPerBlock, Rows - firstRow);
            return ((long)firstRow * Channels, rows * Channels);
        }
    }

    /// <summary>Per-channel (or per-period-position) constants of an element-wise pass.</summary>
    private struct ChannelParameters
    {
        public int Count;
        public double* Offset;
        public double* Scale;
        public double* Shift;
        public double* Projection;

        /// <summary>The float32 form of the constants for bfloat16 NCHW planes (see <see cref="SingleConstants"/>); null where that is not taken.</summary>
        public float* Single;
    }

    private struct PlaneMomentsJob<T> : IChunkJob
        where T : unmanaged
    {
        public T* A;
        public T* B;
        public double* Reference;
        public double* First;
        public double* Second;
        public int Spatial;
        public int Channels;
        public int Planes;
        public int PlanesPerChunk;
        public BlockTail Tail;

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public readonly void Run(int chunk)
        {
            int end = Math.Min(Planes, (chunk + 1) * PlanesPerChunk);
            if (Tail.Active && SumsGateInLoop<T>(Spatial, Tail))
            {
                RunGated(chunk * PlanesPerChunk, end);
                return;
            }

            if (Tail.Active)
            {
                // The chunk's dy, made by the tail from the block's output gradient in a buffer that stays in cache,
                // is what the sums read: the same sums of the same values.
                int first = chunk * PlanesPerChunk;
                var inner = this;
                inner.A = BlockKernels.ChunkScratch<T>((long)first * Spatial, (end - first) * Spatial);
                inner.Tail = default;
                BlockKernels.GatePlanes(inner.A, Spatial, Channels, first, end, Tail);
                inner.Run(chunk);
                return;
            }

            for (int plane = chunk * PlanesPerChunk; plane < end; plane++)
            {
                long start = (long)plane * Spatial;
                double r = Reference[plane % Channels];
                (First[plane], Second[plane]) = B is null
                    ? ShiftedSums(new ReadOnlySpan<T>(A + start, Spatial), r, (end - plane) * Spatial)
                    : ProductSums(new ReadOnlySpan<T>(A + start, Spatial), new ReadOnlySpan<T>(B + start, Spatial), r, (end - plane) * Spatial);
            }
        }

        /// <summary>
        /// The sums over planes [first, end) of the block's dy, gated in the sums' own loop where the plane's channel
        /// has a threshold, and through the buffer, plane by plane, where it has none: the same values, so the same sums.
        /// </summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private readonly void RunGated(int first, int end)
        {
            T* mask = (T*)Tail.Mask;
            T* dy = (T*)Tail.GradOutput;
            T* source = (T*)Tail.Source;
            for (int plane = first; plane < end; plane++)
            {
                long start = (long)plane * Spatial;
                int c = plane % Channels;
                int readable = (end - plane) * Spatial;
                if (Tail.ChannelGate is null && double.IsNaN(Tail.Threshold[c]))
                {
                    T* g = BlockKernels.ChunkScratch<T>(start, Spatial);
                    BlockKernels.GatePlanes(g, Spatial, Channels, plane, plane + 1, Tail);
                    (First[plane], Second[plane]) = ProductSums(new ReadOnlySpan<T>(g + start, Spatial), new ReadOnlySpan<T>(B + start, Spatial), Reference[c], readable);
                }
                else
                {
                    (First[plane], Second[plane]) = GatedProductSums(
                        dy + start, source + start, B + start, Spatial, Reference[c], readable, GateOf(Tail, mask, plane, c, Channels), mask is not null);
                }
            }
        }
    }

    private struct RowMomentsJob<T> : IChunkJob
        where T : unmanaged
    {
        public T* A;
        public T* B;
        public double* Reference;
        public double* First;
        public double* Second;
        public RowBlocks Blocks;

        /// <summary>Whether A is in NCHW memory, read through channels-last pieces (see <see cref="StagedPeriodicProductSums{T}"/>).</summary>
        public bool PlanarA;

        public BlockTail Tail;

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public readonly void Run(int chunk)
        {
            int period = Blocks.Period;
            (long start, int length) = Blocks.Span(chunk);
            if (Tail.Active && (RowsGateInLoop<T>(Tail, period, Blocks.Channels) || RowsGateInRegisters<T>(Tail, period, Blocks.Channels, Blocks.Spatial)))
            {
                var sums = First + ((long)chunk * Blocks.AccumulatorStride);
                var products = Second + ((long)chunk * Blocks.AccumulatorStride);
                new Span<double>(sums, period).Clear();
                new Span<double>(products, period).Clear();
                GatedRowSums((T*)Tail.GradOutput + start, (T*)Tail.Source + start, B + start, start, length, period, Reference, sums, products, Tail, Blocks.Channels, Blocks.Spatial);
                return;
            }

            if (Tail.Active)
            {
                // As in PlaneMomentsJob: the block's dy for these rows, made in cache, then summed.
                var inner = this;
                inner.A = BlockKernels.ChunkScratch<T>(start, length);
                inner.Tail = default;
                BlockKernels.GateRows(inner.A, start, length, Blocks.Channels, Blocks.Spatial, Tail);
                inner.Run(chunk);
                return;
            }

            var first = new Span<double>(First + ((long)chunk * Blocks.AccumulatorStride), period);
            var second = new Span<double>(Second + ((long)chunk * Blocks.AccumulatorStride), period);
            first.Clear();
            second.Clear();
            var reference = new ReadOnlySpan<double>(Reference, period);
            if (PlanarA)
            {
                StagedPeriodicProductSums(A, B, Blocks, chunk, reference, first, second);
                return;
            }

            var a = new ReadOnlySpan<T>(A + start, length);
            if (B is null)
            {
                PeriodicShiftedSums(a, reference, first, second);
            }
            else
            {
                PeriodicProductSums(a, new ReadOnlySpan<T>(B + start, length), reference, first, second);
            }
        }
    }

    private struct PlaneElementwiseJob<T> : IChunkJob
        where T : unmanaged
    {
        public T* A;
        public T* B;
        public T* Output;
        public ChannelParameters Parameters;
        public bool Gradient;
        public bool Streaming;
        public int Spatial;
        public int Planes;
        public int PlanesPerChunk;
        public BlockTail Tail;

        public readonly void Run(int chunk)
        {
            if (Tail.Active && Tail.GradOutput is null && FinishesInLoop<T>(Spatial))
            {
                RunFinished(chunk);
            }
            else if (Tail.Active && Gradient && GradientGateInLoop<T>(Spatial, Tail, Parameters.Count, chunk * PlanesPerChunk, Math.Min(Planes, (chunk + 1) * PlanesPerChunk)))
            {
                RunGatedGradient(chunk);
            }
            else if (Tail.Active)
            {
                RunWithTail(chunk);
            }
            else if (Streaming)
            {
                Run<StreamingStores>(chunk);
            }
            else
            {
                Run<PlainStores>(chunk);
            }
        }

        /// <summary>
        /// The chunk through a buffer that stays in cache: backward, the tail makes the normalisation's dy (A) there
        /// from the block's output gradient; forward, y is written there, finished by the tail, then copied out.
        /// </summary>
        private readonly void RunWithTail(int chunk)
        {
            int first = chunk * PlanesPerChunk;
            int end = Math.Min(Planes, first + PlanesPerChunk);
            long start = (long)first * Spatial;
            int length = (end - first) * Spatial;
            var inner = this;
            inner.Tail = default;
            T* scratch = BlockKernels.ChunkScratch<T>(start, length);
            if (Tail.GradOutput is not null)
            {
                BlockKernels.GatePlanes(scratch, Spatial, Parameters.Count, first, end, Tail);
                inner.A = scratch;
                inner.Run(chunk);
                return;
            }

            inner.Output = scratch;
            inner.Streaming = false;
            inner.Run(chunk);
            BlockKernels.FinishPlanes(scratch, Spatial, Parameters.Count, first, end, Tail);
            BlockKernels.CopyOut(scratch + start, Output + start, length, Streaming);
        }

        /// <summary>The chunk's dx with the block's gate taken in the loop (see <see cref="GatedGradientPlanes{T, TStore}"/>).</summary>
        private readonly void RunGatedGradient(int chunk)
        {
            int first = chunk * PlanesPerChunk;
            int end = Math.Min(Planes, first + PlanesPerChunk);
            long start = (long)first * Spatial;
            int length = (end - first) * Spatial;
            T* dy = (T*)Tail.GradOutput + start;
            T* source = (T*)Tail.Source + start;
            if (Streaming)
            {
                GatedGradientPlanes<T, StreamingStores>(dy, source, B + start, Output + start, length, Spatial, first, Parameters, Tail);
            }
            else
            {
                GatedGradientPlanes<T, PlainStores>(dy, source, B + start, Output + start, length, Spatial, first, Parameters, Tail);
            }
        }

        /// <summary>The chunk's y finished on its way to memory (see <see cref="AffinePlanesFinished{T, TStore}"/>).</summary>
        private readonly void RunFinished(int chunk)
        {
            int first = chunk * PlanesPerChunk;
            int end = Math.Min(Planes, first + PlanesPerChunk);
            long start = (long)first * Spatial;
            int length = (end - first) * Spatial;
            if (Streaming)
            {
                AffinePlanesFinished<T, StreamingStores>(A + start, Output + start, length, Spatial, first, Parameters, Tail);
            }
            else
            {
                AffinePlanesFinished<T, PlainStores>(A + start, Output + start, length, Spatial, first, Parameters, Tail);
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        private readonly void Run<TStore>(int chunk)
            where TStore : struct, IStoreMode
        {
            int first = chunk * PlanesPerChunk;
            int end = Math.Min(Planes, first + PlanesPerChunk);
            if (PlaneBoundaries.Serve(Spatial, Lanes))
            {
                // The chunk's planes as one run (see PlaneBoundaries).
                long offset = (long)first * Spatial;
                int length = (end - first) * Spatial;
                if (Gradient)
                {
                    GradientPlanes<T, TStore>(A + offset, B + offset, Output + offset, length, Spatial, first % Parameters.Count, Parameters);
                }
                else
                {
                    AffinePlanes<T, TStore>(A + offset, Output + offset, length, Spatial, first % Parameters.Count, Parameters);
                }

                return;
            }

            // Planes shorter than a vector step (or no vectors): value by value.
            for (int plane = first; plane < end; plane++)
            {
                long start = (long)plane * Spatial;
                int c = plane % Parameters.Count;
                for (long i = start; i < start + Spatial; i++)
                {
                    Output[i] = Gradient
                        ? Gradient(A[i], B[i], Parameters.Offset[c], Parameters.Scale[c], Parameters.Shift[c], Parameters.Projection[c])
                        : Affine(A[i], Parameters.Offset[c], Parameters.Scale[c], Parameters.Shift[c]);
                }
            }
        }
    }

    private struct RowElementwiseJob<T> : IChunkJob
        where T : unmanaged
    {
        public T* A;
        public T* B;
        public T* Output;
        public ChannelParameters Parameters;
        public bool Gradient;
        public bool Streaming;
        public RowBlocks Blocks;

        /// <summary>Whether A is in NCHW memory, read through channels-last pieces (see <see cref="StagedElementwise{T}"/>).</summary>
        public bool PlanarA;

        public BlockTail Tail;

        public readonly void Run(int chunk)
        {
            if (PlanarA)
            {
                StagedElementwise(A, B, Output, Blocks, chunk, Parameters, Gradient, Streaming);
                return;
            }

            if (Tail.Active && Gradient && (RowsGateInLoop<T>(Tail, Parameters.Count, Blocks.Channels) || RowsGateInRegisters<T>(Tail, Parameters.Count, Blocks.Channels, Blocks.Spatial)))
            {
                (long start, int length) = Blocks.Span(chunk);
                T* dy = (T*)Tail.GradOutput + start;
                T* source = (T*)Tail.Source + start;
                if (Streaming && StreamingStores.Aligned(Output + start))
                {
                    GatedRowGradient<T, StreamingStores>(dy, source, B + start, Output + start, start, length, Parameters, Tail, Blocks.Channels, Blocks.Spatial);
                }
                else
                {
                    GatedRowGradient<T, PlainStores>(dy, source, B + start, Output + start, start, length, Parameters, Tail, Blocks.Channels, Blocks.Spatial);
                }

                return;
            }

            if (!Gradient && (RowsFinishInLoop<T>(Tail, Parameters.Count, Blocks.Channels) || RowsFinishInRegisters<T>(Tail, Parameters.Count, Blocks.Channels, Blocks.Spatial)))
            {
                (long start, int length) = Blocks.Span(chunk);
                if (Streaming && StreamingStores.Aligned(Output + start))
                {
                    FinishedRowAffine<T, StreamingStores>(A + start, Output + start, start, length, Parameters, Tail, Blocks.Channels, Blocks.Spatial);
                }
                else
                {
                    FinishedRowAffine<T, PlainStores>(A + start, Output + start, start, length, Parameters, Tail, Blocks.Channels, Blocks.Spatial);
                }

                return;
            }

            if (Tail.Active)
            {
                // As PlaneElementwiseJob.RunWithTail, over the block's rows.
                (long start, int length) = Blocks.Span(chunk);
                var inner = this;
                inner.Tail = default;
                T* scratch = BlockKernels.ChunkScratch<T>(start, length);
                if (Tail.GradOutput is not null)
                {
                    BlockKernels.GateRows(scratch, start, length, Blocks.Channels, Blocks.Spatial, Tail);
                    inner.A = scratch;
                    inner.Run(chunk);
                    return;
                }

                inner.Output = scratch;
                inner.Streaming = false;
                inner.Run(chunk);
                BlockKernels.FinishRows(scratch, start, length, Blocks.Channels, Blocks.Spatial, Tail);
                BlockKernels.CopyOut(scratch + start, Output + start, length, Streaming);
                return;
            }

            // Every vector step of a block is a whole number of vectors from its start, so one aligned start aligns them all.
            if (Streaming && StreamingStores.Aligned(Output + Blocks.Span(chunk).Start))
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
            (long start, int length) = Blocks.Span(chunk);
            if (Gradient)
            {
                GradientPeriodic<T, TStore>(A + start, B + start, Output + start, length, Parameters);
            }
            else
            {
                AffinePeriodic<T, TStore>(A + start, Output + start, length, Parameters);
            }
        }
    }

    // ---- Loops over contiguous runs. Each has a vector body of Lanes elements and a scalar tail. ----

    /// <summary>
    /// (Σ(x − r), Σ(x − r)²) over a contiguous run; the <paramref name="readable"/> values from its start, the run and
    /// any that the same piece of work reads right after it, may be prefetched (see <see cref="Prefetch.Ahead"/>).
    /// </summary>
    /// <remarks>
    /// Inlined, with its vector part, into the loop over planes: on planes of a few hundred values the calls, the span
    /// and the returned pair cost about as much as the vector loop, most of all on 16-bit input.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (double Sum, double Squares) ShiftedSums<T>(ReadOnlySpan<T> x, double r, int readable)
        where T : unmanaged
    {
        int i = 0;
        double sum = 0;
        double squares = 0;
        if (Vector.IsHardwareAccelerated && x.Length >= Lanes && WideSums)
        {
            i = ShiftedSumsWide((T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(x)), x.Length, r, readable, out sum, out squares);
        }
        else if (Vector.IsHardwareAccelerated && x.Length >= Lanes)
        {
            // Two sets of accumulators, for two vector steps at a time: one set alone would make every step wait for
            // the previous step's additions.
            var vr = new Vector<double>(r);
            Vector<double> s0 = default, s1 = default, q0 = default, q1 = default;
            Vector<double> s2 = default, s3 = default, q2 = default, q3 = default;
            ref T start = ref MemoryMarshal.GetReference(x);
            T* end = (T*)Unsafe.AsPointer(ref start) + readable;
            for (; i <= x.Length - (2 * Lanes); i += 2 * Lanes)
            {
                Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref start, i)), end);
                AddShifted(ref start, i, vr, ref s0, ref s1, ref q0, ref q1);
                AddShifted(ref start, i + Lanes, vr, ref s2, ref s3, ref q2, ref q3);
            }

            if (i <= x.Length - Lanes)
            {
                AddShifted(ref start, i, vr, ref s0, ref s1, ref q0, ref q1);
                i += Lanes;
            }

            sum = Vector.Sum((s0 + s1) + (s2 + s3));
            squares = Vector.Sum((q0 + q1) + (q2 + q3));
        }

        for (; i < x.Length; i++)
        {
            double d = Element.ToDouble(x[i]) - r;
            sum += d;
            squares += d * d;
        }

        return (sum, squares);
    }

    /// <summary>(Σa, Σa·(b − r)) over a contiguous run, prefetching and inlined as <see cref="ShiftedSums{T}"/> is.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (double Sum, double Products) ProductSums<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, double r, int readable)
        where T : unmanaged
    {
        int i = 0;
        double sum = 0;
        double products = 0;
        if (Vector.IsHardwareAccelerated && a.Length >= Lanes && WideSums)
        {
            i = ProductSumsWide(
                (T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(a)), (T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(b)), a.Length, r, readable, out sum, out products);
        }
        else if (Vector.IsHardwareAccelerated && a.Length >= Lanes)
        {
            // Two sets of accumulators, as in ShiftedSums.
            var vr = new Vector<double>(r);
            Vector<double> s0 = default, s1 = default, p0 = default, p1 = default;
            Vector<double> s2 = default, s3 = default, p2 = default, p3 = default;
            ref T startA = ref MemoryMarshal.GetReference(a);
            ref T startB = ref MemoryMarshal.GetReference(b);
            T* endA = (T*)Unsafe.AsPointer(ref startA) + readable;
            T* endB = (T*)Unsafe.AsPointer(ref startB) + readable;
            for (; i <= a.Length - (2 * Lanes); i += 2 * Lanes)
            {
                Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref startA, i)), endA);
                Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref startB, i)), endB);
                AddProducts(ref startA, ref startB, i, vr, ref s0, ref s1, ref p0, ref p1);
                AddProducts(ref startA, ref startB, i + Lanes, vr, ref s2, ref s3, ref p2, ref p3);
            }

            if (i <= a.Length - Lanes)
            {
                AddProducts(ref startA, ref startB, i, vr, ref s0, ref s1, ref p0, ref p1);
                i += Lanes;
            }

            sum = Vector.Sum((s0 + s1) + (s2 + s3));
            products = Vector.Sum((p0 + p1) + (p2 + p3));
        }

        for (; i < a.Length; i++)
        {
            double value = Element.ToDouble(a[i]);
            sum += value;
            products += value * (Element.ToDouble(b[i]) - r);
        }

        return (sum, products);
    }

    /// <summary>One vector step of <see cref="ShiftedSums{T}"/>: Lanes values from x + i into one set of accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddShifted<T>(
        ref T x, int i, Vector<double> r, ref Vector<double> sumLo, ref Vector<double> sumHi, ref Vector<double> squaresLo, ref Vector<double> squaresHi)
        where T : unmanaged
    {
        LoadForSums(ref x, (nuint)i, out var lo, out var hi);
        lo -= r;
        hi -= r;
        sumLo += lo;
        sumHi += hi;
        squaresLo = Vector.FusedMultiplyAdd(lo, lo, squaresLo);
        squaresHi = Vector.FusedMultiplyAdd(hi, hi, squaresHi);
    }

    /// <summary>One vector step of <see cref="ProductSums{T}"/>: Lanes values from a + i and b + i into one set of accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddProducts<T>(
        ref T a, ref T b, int i, Vector<double> r, ref Vector<double> sumLo, ref Vector<double> sumHi, ref Vector<double> productsLo, ref Vector<double> productsHi)
        where T : unmanaged
    {
        LoadForSums(ref a, (nuint)i, out var alo, out var ahi);
        LoadForSums(ref b, (nuint)i, out var blo, out var bhi);
        sumLo += alo;
        sumHi += ahi;
        productsLo = Vector.FusedMultiplyAdd(alo, blo - r, productsLo);
        productsHi = Vector.FusedMultiplyAdd(ahi, bhi - r, productsHi);
    }

    /// <summary>sum[k] += Σ(x − r[k]), squares[k] += Σ(x − r[k])² over the values at offsets ≡ k modulo the period.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void PeriodicShiftedSums<T>(ReadOnlySpan<T> x, ReadOnlySpan<double> r, Span<double> sum, Span<double> squares)
        where T : unmanaged
    {
        int period = r.Length;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            ref T start = ref MemoryMarshal.GetReference(x);
            ref double rs = ref MemoryMarshal.GetReference(r);
            ref double ss = ref MemoryMarshal.GetReference(sum);
            ref double qs = ref MemoryMarshal.GetReference(squares);
            int half = Vector<double>.Count;
            T* end = (T*)Unsafe.AsPointer(ref start) + x.Length;
            if (period == 3 * Lanes)
            {
                i = ShiftedSumsThreeSteps((T*)Unsafe.AsPointer(ref start), x.Length, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref qs));
            }
            else if (RegisterSteps(period) > 0)
            {
                i = ShiftedSumsInRegisters((T*)Unsafe.AsPointer(ref start), x.Length, period, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref qs));
            }
            else if (PeriodsPerPass<T>(period) == 1)
            {
                i = ShiftedSumsPeriodByPeriod((T*)Unsafe.AsPointer(ref start), x.Length, period, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref qs));
            }

            for (int periods, most = PeriodsPerPass<T>(period); (periods = Math.Min(most, (x.Length - i) / period)) > 0; i += periods * period)
            {
                for (int k = 0; k < period; k += Lanes)
                {
                    var rlo = Vector.LoadUnsafe(ref rs, (nuint)k);
                    var rhi = Vector.LoadUnsafe(ref rs, (nuint)(k + half));
                    var s0 = Vector.LoadUnsafe(ref ss, (nuint)k);
                    var s1 = Vector.LoadUnsafe(ref ss, (nuint)(k + half));
                    var q0 = Vector.LoadUnsafe(ref qs, (nuint)k);
                    var q1 = Vector.LoadUnsafe(ref qs, (nuint)(k + half));
                    for (int at = i + k, last = at + ((periods - 1) * period); at <= last; at += period)
                    {
                        Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref start, at)), end);
                        Load(ref start, (nuint)at, out var lo, out var hi);
                        lo -= rlo;
                        hi -= rhi;
                        s0 += lo;
                        s1 += hi;
                        q0 = Vector.FusedMultiplyAdd(lo, lo, q0);
                        q1 = Vector.FusedMultiplyAdd(hi, hi, q1);
                    }

                    s0.StoreUnsafe(ref ss, (nuint)k);
                    s1.StoreUnsafe(ref ss, (nuint)(k + half));
                    q0.StoreUnsafe(ref qs, (nuint)k);
                    q1.StoreUnsafe(ref qs, (nuint)(k + half));
                }
            }
        }

        for (; i < x.Length; i++)
        {
            int k = i % period;
            double d = Element.ToDouble(x[i]) - r[k];
            sum[k] += d;
            squares[k] += d * d;
        }
    }

    /// <summary>
    /// The whole periods of <see cref="PeriodicShiftedSums{T}"/> when a pass holds one period: each vector step loads its
    /// accumulators, adds one vector of values and stores them, with nothing kept across steps. Each lane adds the same
    /// values in the same order as the general loop. Returns how many values it read.
    /// </summary>
    /// <remarks>
    /// The general loop, run with one period per pass, spends more on setting up each step's inner loop than on the
    /// step; this loop was the faster for the statistics, the backward sums, y and dx, in the cache and from memory.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ShiftedSumsPeriodByPeriod<T>(T* x, int length, int period, double* r, double* sum, double* squares)
        where T : unmanaged
    {
        if (WidePeriods(period))
        {
            return ShiftedSumsPeriodByPeriodWide(x, length, period, r, sum, squares);
        }

        int half = Vector<double>.Count;
        T* end = x + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            T* row = x + i;
            for (int k = 0; k < period; k += Lanes)
            {
                Prefetch.Ahead(row + k, end);
                Load(row + k, out var lo, out var hi);
                lo -= Vector.Load(r + k);
                hi -= Vector.Load(r + k + half);
                Vector.Store(Vector.Load(sum + k) + lo, sum + k);
                Vector.Store(Vector.Load(sum + k + half) + hi, sum + k + half);
                Vector.Store(Vector.FusedMultiplyAdd(lo, lo, Vector.Load(squares + k)), squares + k);
                Vector.Store(Vector.FusedMultiplyAdd(hi, hi, Vector.Load(squares + k + half)), squares + k + half);
            }
        }

        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="PeriodicProductSums{T}"/> when a pass holds one period, as
    /// <see cref="ShiftedSumsPeriodByPeriod{T}"/> does for the shifted sums. Returns how many values it read.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ProductSumsPeriodByPeriod<T>(T* a, T* b, int length, int period, double* r, double* sum, double* products)
        where T : unmanaged
    {
        if (WidePeriods(period))
        {
            return ProductSumsPeriodByPeriodWide(a, b, length, period, r, sum, products);
        }

        int half = Vector<double>.Count;
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            T* rowA = a + i;
            T* rowB = b + i;
            for (int k = 0; k < period; k += Lanes)
            {
                Prefetch.Ahead(rowA + k, endA);
                Prefetch.Ahead(rowB + k, endB);
                Load(rowA + k, out var alo, out var ahi);
                Load(rowB + k, out var blo, out var bhi);
                Vector.Store(Vector.Load(sum + k) + alo, sum + k);
                Vector.Store(Vector.Load(sum + k + half) + ahi, sum + k + half);
                Vector.Store(Vector.FusedMultiplyAdd(alo, blo - Vector.Load(r + k), Vector.Load(products + k)), products + k);
                Vector.Store(Vector.FusedMultiplyAdd(ahi, bhi - Vector.Load(r + k + half), Vector.Load(products + k + half)), products + k + half);
            }
        }

        return i;
    }

    /// <summary>sum[k] += Σa, products[k] += Σa·(b − r[k]) over the values at offsets ≡ k modulo the period.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void PeriodicProductSums<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, ReadOnlySpan<double> r, Span<double> sum, Span<double> products)
        where T : unmanaged
    {
        int period = r.Length;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            ref T startA = ref MemoryMarshal.GetReference(a);
            ref T startB = ref MemoryMarshal.GetReference(b);
            ref double rs = ref MemoryMarshal.GetReference(r);
            ref double ss = ref MemoryMarshal.GetReference(sum);
            ref double ps = ref MemoryMarshal.GetReference(products);
            int half = Vector<double>.Count;
            T* endA = (T*)Unsafe.AsPointer(ref startA) + a.Length;
            T* endB = (T*)Unsafe.AsPointer(ref startB) + a.Length;
            if (period == 3 * Lanes)
            {
                i = ProductSumsThreeSteps(
                    (T*)Unsafe.AsPointer(ref startA), (T*)Unsafe.AsPointer(ref startB), a.Length, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref ps));
            }
            else if (RegisterSteps(period) > 0)
            {
                i = ProductSumsInRegisters(
                    (T*)Unsafe.AsPointer(ref startA), (T*)Unsafe.AsPointer(ref startB), a.Length, period, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref ps));
            }
            else if (PeriodsPerPass<T>(period) == 1)
            {
                i = ProductSumsPeriodByPeriod(
                    (T*)Unsafe.AsPointer(ref startA), (T*)Unsafe.AsPointer(ref startB), a.Length, period, (double*)Unsafe.AsPointer(ref rs), (double*)Unsafe.AsPointer(ref ss), (double*)Unsafe.AsPointer(ref ps));
            }

            for (int periods, most = PeriodsPerPass<T>(period); (periods = Math.Min(most, (a.Length - i) / period)) > 0; i += periods * period)
            {
                for (int k = 0; k < period; k += Lanes)
                {
                    var rlo = Vector.LoadUnsafe(ref rs, (nuint)k);
                    var rhi = Vector.LoadUnsafe(ref rs, (nuint)(k + half));
                    var s0 = Vector.LoadUnsafe(ref ss, (nuint)k);
                    var s1 = Vector.LoadUnsafe(ref ss, (nuint)(k + half));
                    var p0 = Vector.LoadUnsafe(ref ps, (nuint)k);
                    var p1 = Vector.LoadUnsafe(ref ps, (nuint)(k + half));
                    for (int at = i + k, last = at + ((periods - 1) * period); at <= last; at += period)
                    {
                        Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref startA, at)), endA);
                        Prefetch.Ahead(Unsafe.AsPointer(ref Unsafe.Add(ref startB, at)), endB);
                        Load(ref startA, (nuint)at, out var alo, out var ahi);
                        Load(ref startB, (nuint)at, out var blo, out var bhi);
                        s0 += alo;
                        s1 += ahi;
                        p0 = Vector.FusedMultiplyAdd(alo, blo - rlo, p0);
                        p1 = Vector.FusedMultiplyAdd(ahi, bhi - rhi, p1);
                    }

                    s0.StoreUnsafe(ref ss, (nuint)k);
                    s1.StoreUnsafe(ref ss, (nuint)(k + half));
                    p0.StoreUnsafe(ref ps, (nuint)k);
                    p1.StoreUnsafe(ref ps, (nuint)(k + half));
                }
            }
        }

        for (; i < a.Length; i++)
        {
            int k = i % period;
            double value = Element.ToDouble(a[i]);
            sum[k] += value;
            products[k] += value * (Element.ToDouble(b[i]) - r[k]);
        }
    }

    /// <summary>
    /// The whole periods of <see cref="PeriodicShiftedSums{T}"/> when a period is three vector steps: the period's
    /// references and accumulators stay in registers for the whole run instead of a pass of a few periods at a time.
    /// Each lane adds the same values in the same order, so no bit changes. Returns how many values it read.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ShiftedSumsThreeSteps<T>(T* x, int length, double* r, double* sum, double* squares)
        where T : unmanaged
    {
        var (r0, r1, r2, r3, r4, r5) = ThreeSteps(r);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(sum);
        var (q0, q1, q2, q3, q4, q5) = ThreeSteps(squares);
        T* end = x + length;
        int i = 0;
        for (; i <= length - (3 * Lanes); i += 3 * Lanes)
        {
            PrefetchThreeSteps(x + i, end);
            Load(x + i, out var x0, out var x1);
            Load(x + i + Lanes, out var x2, out var x3);
            Load(x + i + (2 * Lanes), out var x4, out var x5);
            x0 -= r0;
            x1 -= r1;
            x2 -= r2;
            x3 -= r3;
            x4 -= r4;
            x5 -= r5;
            s0 += x0;
            s1 += x1;
            s2 += x2;
            s3 += x3;
            s4 += x4;
            s5 += x5;
            q0 = Vector.FusedMultiplyAdd(x0, x0, q0);
            q1 = Vector.FusedMultiplyAdd(x1, x1, q1);
            q2 = Vector.FusedMultiplyAdd(x2, x2, q2);
            q3 = Vector.FusedMultiplyAdd(x3, x3, q3);
            q4 = Vector.FusedMultiplyAdd(x4, x4, q4);
            q5 = Vector.FusedMultiplyAdd(x5, x5, q5);
        }

        StoreThreeSteps(sum, s0, s1, s2, s3, s4, s5);
        StoreThreeSteps(squares, q0, q1, q2, q3, q4, q5);
        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="PeriodicProductSums{T}"/> when a period is three vector steps, as
    /// <see cref="ShiftedSumsThreeSteps{T}"/> does for the statistics. Returns how many values it read.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ProductSumsThreeSteps<T>(T* a, T* b, int length, double* r, double* sum, double* products)
        where T : unmanaged
    {
        var (r0, r1, r2, r3, r4, r5) = ThreeSteps(r);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(sum);
        var (p0, p1, p2, p3, p4, p5) = ThreeSteps(products);
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - (3 * Lanes); i += 3 * Lanes)
        {
            PrefetchThreeSteps(a + i, endA);
            PrefetchThreeSteps(b + i, endB);
            Load(a + i, out var a0, out var a1);
            Load(b + i, out var b0, out var b1);
            s0 += a0;
            s1 += a1;
            p0 = Vector.FusedMultiplyAdd(a0, b0 - r0, p0);
            p1 = Vector.FusedMultiplyAdd(a1, b1 - r1, p1);
            Load(a + i + Lanes, out var a2, out var a3);
            Load(b + i + Lanes, out var b2, out var b3);
            s2 += a2;
            s3 += a3;
            p2 = Vector.FusedMultiplyAdd(a2, b2 - r2, p2);
            p3 = Vector.FusedMultiplyAdd(a3, b3 - r3, p3);
            Load(a + i + (2 * Lanes), out var a4, out var a5);
            Load(b + i + (2 * Lanes), out var b4, out var b5);
            s4 += a4;
            s5 += a5;
            p4 = Vector.FusedMultiplyAdd(a4, b4 - r4, p4);
            p5 = Vector.FusedMultiplyAdd(a5, b5 - r5, p5);
        }

        StoreThreeSteps(sum, s0, s1, s2, s3, s4, s5);
        StoreThreeSteps(products, p0, p1, p2, p3, p4, p5);
        return i;
    }

    /// <summary>Stores six vectors of doubles as a periodic row three vector steps long.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreThreeSteps(double* row, Vector<double> v0, Vector<double> v1, Vector<double> v2, Vector<double> v3, Vector<double> v4, Vector<double> v5)
    {
        int half = Vector<double>.Count;
        v0.Store(row);
        v1.Store(row + half);
        v2.Store(row + Lanes);
        v3.Store(row + Lanes + half);
        v4.Store(row + (2 * Lanes));
        v5.Store(row + (2 * Lanes) + half);
    }

    // The element-wise loops compute each value the same way in the vector body and in the scalar head and tail
    // (Affine and Gradient below), so which values take which path, which depends on alignment, changes no bit.

    /// <summary>out = (a − offset) · scale + shift for one value, as the vector body computes it (one fused multiply-add).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Affine<T>(T a, double offset, double scale, double shift)
        where T : unmanaged => Element.FromDouble<T>(double.FusedMultiplyAdd(Element.ToDouble(a) - offset, scale, shift));

    /// <summary>out = (a − shift − (b − offset) · projection) · scale for one value, as the vector body computes it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T Gradient<T>(T a, T b, double offset, double scale, double shift, double projection)
        where T : unmanaged =>
        Element.FromDouble<T>((Element.ToDouble(a) - shift - ((Element.ToDouble(b) - offset) * projection)) * scale);

    /// <summary>
    /// The part [Start, End) of a run that the vector body writes: all but the tail for plain stores, the whole cache
    /// lines for streaming ones.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int Start, int End) VectorBody<T, TStore>(T* output, int length)
        where T : unmanaged
        where TStore : struct, IStoreMode => TStore.Streaming ? StreamingStores.Body(output, length) : (0, length);

    /// <summary>
    /// out = (a − offset[c]) · scale[c] + shift[c] over a run of whole NCHW planes of <paramref name="spatial"/> values
    /// (at least <see cref="Lanes"/>), c the plane's channel, the first plane's being <paramref name="firstChannel"/>:
    /// one vector loop over the run (see <see cref="PlaneBoundaries"/>), prefetching within it.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AffinePlanes<T, TStore>(T* a, T* output, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        (int start, int end) = VectorBody<T, TStore>(output, length);
        int i = 0;
        for (; i < start; i++)
        {
            int c = (firstChannel + (i / spatial)) % parameters.Count;
            output[i] = Affine(a[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c]);
        }

        if (WidePlanes(spatial))
        {
            i = AffinePlanesWide<T, TStore>(a, output, i, end, length, spatial, firstChannel, parameters);
        }

        var planes = new PlaneBoundaries(spatial, i, Lanes);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var vo = new Vector<double>(parameters.Offset[channel]);
        var vs = new Vector<double>(parameters.Scale[channel]);
        var vt = new Vector<double>(parameters.Shift[channel]);
        for (; i <= end - Lanes; i += Lanes)
        {
            Prefetch.Ahead(a + i, a + length);
            Load(a + i, out var lo, out var hi);
            if (planes.Crosses(i, out int inPlane))
            {
                channel = channel + 1 == parameters.Count ? 0 : channel + 1;
                var no = new Vector<double>(parameters.Offset[channel]);
                var ns = new Vector<double>(parameters.Scale[channel]);
                var nt = new Vector<double>(parameters.Shift[channel]);
                var low = PlaneBoundaries.Leading<double>(inPlane);
                var high = PlaneBoundaries.Leading<double>(inPlane - Vector<double>.Count);
                lo = Vector.FusedMultiplyAdd(lo - Vector.ConditionalSelect(low, vo, no), Vector.ConditionalSelect(low, vs, ns), Vector.ConditionalSelect(low, vt, nt));
                hi = Vector.FusedMultiplyAdd(hi - Vector.ConditionalSelect(high, vo, no), Vector.ConditionalSelect(high, vs, ns), Vector.ConditionalSelect(high, vt, nt));
                (vo, vs, vt) = (no, ns, nt);
            }
            else
            {
                lo = Vector.FusedMultiplyAdd(lo - vo, vs, vt);
                hi = Vector.FusedMultiplyAdd(hi - vo, vs, vt);
            }

            Store<T, TStore>(lo, hi, output + i);
        }

        for (; i < length; i++)
        {
            int c = (firstChannel + (i / spatial)) % parameters.Count;
            output[i] = Affine(a[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c]);
        }
    }

    /// <summary>
    /// out = (a − shift[c] − (b − offset[c]) · projection[c]) · scale[c] over a run of whole NCHW planes, as
    /// <see cref="AffinePlanes{T, TStore}"/> walks them.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GradientPlanes<T, TStore>(T* a, T* b, T* output, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        (int start, int end) = VectorBody<T, TStore>(output, length);
        int i = 0;
        for (; i < start; i++)
        {
            int c = (firstChannel + (i / spatial)) % parameters.Count;
            output[i] = Gradient(a[i], b[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c], parameters.Projection[c]);
        }

        if (WidePlanes(spatial))
        {
            i = GradientPlanesWide<T, TStore>(a, b, output, i, end, length, spatial, firstChannel, parameters);
        }

        var planes = new PlaneBoundaries(spatial, i, Lanes);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var vo = new Vector<double>(parameters.Offset[channel]);
        var vs = new Vector<double>(parameters.Scale[channel]);
        var vt = new Vector<double>(parameters.Shift[channel]);
        var vp = new Vector<double>(parameters.Projection[channel]);
        for (; i <= end - Lanes; i += Lanes)
        {
            Prefetch.Ahead(a + i, a + length);
            Prefetch.Ahead(b + i, b + length);
            Load(a + i, out var alo, out var ahi);
            Load(b + i, out var blo, out var bhi);
            Vector<double> lo, hi;
            if (planes.Crosses(i, out int inPlane))
            {
                channel = channel + 1 == parameters.Count ? 0 : channel + 1;
                var no = new Vector<double>(parameters.Offset[channel]);
                var ns = new Vector<double>(parameters.Scale[channel]);
                var nt = new Vector<double>(parameters.Shift[channel]);
                var np = new Vector<double>(parameters.Projection[channel]);
                var low = PlaneBoundaries.Leading<double>(inPlane);
                var high = PlaneBoundaries.Leading<double>(inPlane - Vector<double>.Count);
                lo = (alo - Vector.ConditionalSelect(low, vt, nt) - ((blo - Vector.ConditionalSelect(low, vo, no)) * Vector.ConditionalSelect(low, vp, np))) * Vector.ConditionalSelect(low, vs, ns);
                hi = (ahi - Vector.ConditionalSelect(high, vt, nt) - ((bhi - Vector.ConditionalSelect(high, vo, no)) * Vector.ConditionalSelect(high, vp, np))) * Vector.ConditionalSelect(high, vs, ns);
                (vo, vs, vt, vp) = (no, ns, nt, np);
            }
            else
            {
                lo = (alo - vt - ((blo - vo) * vp)) * vs;
                hi = (ahi - vt - ((bhi - vo) * vp)) * vs;
            }

            Store<T, TStore>(lo, hi, output + i);
        }

        for (; i < length; i++)
        {
            int c = (firstChannel + (i / spatial)) % parameters.Count;
            output[i] = Gradient(a[i], b[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c], parameters.Projection[c]);
        }
    }

    /// <summary>
    /// out = (a − offset[k]) · scale[k] + shift[k] with k the offset modulo the period; the run starts at a whole period,
    /// and for streaming stores at an aligned address.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AffinePeriodic<T, TStore>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        double* os = parameters.Offset;
        double* ss = parameters.Scale;
        double* ts = parameters.Shift;
        int i = 0;
        if (Vector.IsHardwareAccelerated && period == 3 * Lanes)
        {
            i = AffineThreeSteps<T, TStore>(a, output, length, parameters);
        }
        else if (RegisterSteps(period) > 0)
        {
            i = AffineInRegisters<T, TStore>(a, output, length, parameters);
        }
        else if (Vector.IsHardwareAccelerated && PeriodsPerPass<T>(period) == 1)
        {
            i = AffinePeriodByPeriod<T, TStore>(a, output, length, parameters);
        }
        else if (Vector.IsHardwareAccelerated)
        {
            int half = Vector<double>.Count;
            for (int periods, most = PeriodsPerPass<T>(period); (periods = Math.Min(most, (length - i) / period)) > 0; i += periods * period)
            {
                for (int k = 0; k < period; k += Lanes)
                {
                    var offsetLo = Vector.Load(os + k);
                    var offsetHi = Vector.Load(os + k + half);
                    var scaleLo = Vector.Load(ss + k);
                    var scaleHi = Vector.Load(ss + k + half);
                    var shiftLo = Vector.Load(ts + k);
                    var shiftHi = Vector.Load(ts + k + half);
                    for (int at = i + k, last = at + ((periods - 1) * period); at <= last; at += period)
                    {
                        Prefetch.Ahead(a + at, a + length);
                        Load(a + at, out var lo, out var hi);
                        lo = Vector.FusedMultiplyAdd(lo - offsetLo, scaleLo, shiftLo);
                        hi = Vector.FusedMultiplyAdd(hi - offsetHi, scaleHi, shiftHi);
                        Store<T, TStore>(lo, hi, output + at);
                    }
                }
            }
        }

        for (; i < length; i++)
        {
            int k = i % period;
            output[i] = Affine(a[i], os[k], ss[k], ts[k]);
        }
    }

    /// <summary>
    /// out = (a − shift[k] − (b − offset[k]) · projection[k]) · scale[k] with k the offset modulo the period; the run
    /// starts at a whole period, and for streaming stores at an aligned address.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GradientPeriodic<T, TStore>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        double* os = parameters.Offset;
        double* ss = parameters.Scale;
        double* ts = parameters.Shift;
        double* ps = parameters.Projection;
        int i = 0;
        if (Vector.IsHardwareAccelerated && period == 3 * Lanes)
        {
            i = GradientThreeSteps<T, TStore>(a, b, output, length, parameters);
        }
        else if (RegisterSteps(period) > 0)
        {
            i = GradientInRegisters<T, TStore>(a, b, output, length, parameters);
        }
        else if (Vector.IsHardwareAccelerated && PeriodsPerPass<T>(period) == 1)
        {
            i = GradientPeriodByPeriod<T, TStore>(a, b, output, length, parameters);
        }
        else if (Vector.IsHardwareAccelerated)
        {
            int half = Vector<double>.Count;
            for (int periods, most = PeriodsPerPass<T>(period); (periods = Math.Min(most, (length - i) / period)) > 0; i += periods * period)
            {
                for (int k = 0; k < period; k += Lanes)
                {
                    int k1 = k + half;
                    var shiftLo = Vector.Load(ts + k);
                    var shiftHi = Vector.Load(ts + k1);
                    var offsetLo = Vector.Load(os + k);
                    var offsetHi = Vector.Load(os + k1);
                    var projectionLo = Vector.Load(ps + k);
                    var projectionHi = Vector.Load(ps + k1);
                    var scaleLo = Vector.Load(ss + k);
                    var scaleHi = Vector.Load(ss + k1);
                    for (int at = i + k, last = at + ((periods - 1) * period); at <= last; at += period)
                    {
                        Prefetch.Ahead(a + at, a + length);
                        Prefetch.Ahead(b + at, b + length);
                        Load(a + at, out var alo, out var ahi);
                        Load(b + at, out var blo, out var bhi);
                        var lo = (alo - shiftLo - ((blo - offsetLo) * projectionLo)) * scaleLo;
                        var hi = (ahi - shiftHi - ((bhi - offsetHi) * projectionHi)) * scaleHi;
                        Store<T, TStore>(lo, hi, output + at);
                    }
                }
            }
        }

        for (; i < length; i++)
        {
            int k = i % period;
            output[i] = Gradient(a[i], b[i], os[k], ss[k], ts[k], ps[k]);
        }
    }

    /// <summary>
    /// The whole periods of <see cref="AffinePeriodic{T, TStore}"/> when a pass holds one period: each vector step loads
    /// its constants next to its values, with nothing kept across steps. Each value is computed as in the general loop.
    /// Returns how many values it wrote.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffinePeriodByPeriod<T, TStore>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (WidePeriods(parameters.Count))
        {
            return AffinePeriodByPeriodWide<T, TStore>(a, output, length, parameters);
        }

        int period = parameters.Count;
        int half = Vector<double>.Count;
        double* os = parameters.Offset;
        double* ss = parameters.Scale;
        double* ts = parameters.Shift;
        T* end = a + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            T* row = a + i;
            T* destination = output + i;
            for (int k = 0; k < period; k += Lanes)
            {
                Prefetch.Ahead(row + k, end);
                Load(row + k, out var lo, out var hi);
                lo = Vector.FusedMultiplyAdd(lo - Vector.Load(os + k), Vector.Load(ss + k), Vector.Load(ts + k));
                hi = Vector.FusedMultiplyAdd(hi - Vector.Load(os + k + half), Vector.Load(ss + k + half), Vector.Load(ts + k + half));
                Store<T, TStore>(lo, hi, destination + k);
            }
        }

        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="GradientPeriodic{T, TStore}"/> when a pass holds one period, as
    /// <see cref="AffinePeriodByPeriod{T, TStore}"/> does for y. Returns how many values it wrote.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientPeriodByPeriod<T, TStore>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (WidePeriods(parameters.Count))
        {
            return GradientPeriodByPeriodWide<T, TStore>(a, b, output, length, parameters);
        }

        int period = parameters.Count;
        int half = Vector<double>.Count;
        double* os = parameters.Offset;
        double* ss = parameters.Scale;
        double* ts = parameters.Shift;
        double* ps = parameters.Projection;
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            T* rowA = a + i;
            T* rowB = b + i;
            T* destination = output + i;
            for (int k = 0; k < period; k += Lanes)
            {
                int k1 = k + half;
                Prefetch.Ahead(rowA + k, endA);
                Prefetch.Ahead(rowB + k, endB);
                Load(rowA + k, out var alo, out var ahi);
                Load(rowB + k, out var blo, out var bhi);
                var lo = (alo - Vector.Load(ts + k) - ((blo - Vector.Load(os + k)) * Vector.Load(ps + k))) * Vector.Load(ss + k);
                var hi = (ahi - Vector.Load(ts + k1) - ((bhi - Vector.Load(os + k1)) * Vector.Load(ps + k1))) * Vector.Load(ss + k1);
                Store<T, TStore>(lo, hi, destination + k);
            }
        }

        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="AffinePeriodic{T, TStore}"/> when a period is three vector steps (C = 3, an
    /// image's colours, or 6, 12, 24): the period's constants are loaded once into registers rather than at every step.
    /// Each value is computed as in the general loop. Returns how many values it wrote.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffineThreeSteps<T, TStore>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        var (o0, o1, o2, o3, o4, o5) = ThreeSteps(parameters.Offset);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5) = ThreeSteps(parameters.Shift);
        T* end = a + length;
        int i = 0;
        for (; i <= length - (3 * Lanes); i += 3 * Lanes)
        {
            PrefetchThreeSteps(a + i, end);
            Load(a + i, out var x0, out var x1);
            Load(a + i + Lanes, out var x2, out var x3);
            Load(a + i + (2 * Lanes), out var x4, out var x5);
            Store<T, TStore>(Vector.FusedMultiplyAdd(x0 - o0, s0, t0), Vector.FusedMultiplyAdd(x1 - o1, s1, t1), output + i);
            Store<T, TStore>(Vector.FusedMultiplyAdd(x2 - o2, s2, t2), Vector.FusedMultiplyAdd(x3 - o3, s3, t3), output + i + Lanes);
            Store<T, TStore>(Vector.FusedMultiplyAdd(x4 - o4, s4, t4), Vector.FusedMultiplyAdd(x5 - o5, s5, t5), output + i + (2 * Lanes));
        }

        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="GradientPeriodic{T, TStore}"/> when a period is three vector steps, as
    /// <see cref="AffineThreeSteps{T, TStore}"/> does for the affine pass. Returns how many values it wrote.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientThreeSteps<T, TStore>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        var (o0, o1, o2, o3, o4, o5) = ThreeSteps(parameters.Offset);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5) = ThreeSteps(parameters.Shift);
        var (p0, p1, p2, p3, p4, p5) = ThreeSteps(parameters.Projection);
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - (3 * Lanes); i += 3 * Lanes)
        {
            PrefetchThreeSteps(a + i, endA);
            PrefetchThreeSteps(b + i, endB);
            Load(a + i, out var a0, out var a1);
            Load(b + i, out var b0, out var b1);
            Store<T, TStore>((a0 - t0 - ((b0 - o0) * p0)) * s0, (a1 - t1 - ((b1 - o1) * p1)) * s1, output + i);
            Load(a + i + Lanes, out var a2, out var a3);
            Load(b + i + Lanes, out var b2, out var b3);
            Store<T, TStore>((a2 - t2 - ((b2 - o2) * p2)) * s2, (a3 - t3 - ((b3 - o3) * p3)) * s3, output + i + Lanes);
            Load(a + i + (2 * Lanes), out var a4, out var a5);
            Load(b + i + (2 * Lanes), out var b4, out var b5);
            Store<T, TStore>((a4 - t4 - ((b4 - o4) * p4)) * s4, (a5 - t5 - ((b5 - o5) * p5)) * s5, output + i + (2 * Lanes));
        }

        return i;
    }

    /// <summary>The six vectors of doubles of a periodic row three vector steps long.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector<double>, Vector<double>, Vector<double>, Vector<double>, Vector<double>, Vector<double>) ThreeSteps(double* row)
    {
        int half = Vector<double>.Count;
        return (Vector.Load(row), Vector.Load(row + half), Vector.Load(row + Lanes), Vector.Load(row + Lanes + half),
            Vector.Load(row + (2 * Lanes)), Vector.Load(row + (2 * Lanes) + half));
    }

    /// <summary>
    /// Prefetches ahead of three vector steps from <paramref name="current"/>: every cache line they start in (for
    /// float32, 96 bytes a period, the first and the third step's lines; for float64 each step's own).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchThreeSteps<T>(T* current, T* end)
        where T : unmanaged
    {
        Prefetch.Ahead(current, end);
        if (sizeof(T) == sizeof(double))
        {
            Prefetch.Ahead(current + Lanes, end);
        }

        Prefetch.Ahead(current + (2 * Lanes), end);
    }

    /// <summary>Lanes values from <paramref name="source"/>, widened to two vectors of doubles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Load<T>(T* source, out Vector<double> lo, out Vector<double> hi)
        where T : unmanaged => Load(ref *source, 0, out lo, out hi);

    /// <summary>Stores two vectors of doubles as Lanes values of T (rounded as <see cref="Element.FromDouble{T}"/> rounds), plainly or streaming.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store<T, TStore>(Vector<double> lo, Vector<double> hi, T* destination)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(float))
        {
            StreamingStores.Store<float, TStore>(Vector.Narrow(lo, hi), (float*)destination);
        }
        else if ((typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half)) && Vector<float>.Count == Vector256<float>.Count)
        {
            var values = Vector.Narrow(lo, hi).AsVector256();
            var bits = typeof(T) == typeof(BFloat16) ? BFloat16Bits.Narrow(values) : Float16Bits.Narrow(values);
            if (TStore.Streaming)
            {
                Sse2.StoreAlignedNonTemporal((ushort*)destination, bits);
            }
            else
            {
                bits.Store((ushort*)destination);
            }
        }
        else if (typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half))
        {
            // Vectors of another width: lane by lane, as the scalar paths do.
            for (int k = 0; k < Vector<double>.Count; k++)
            {
                destination[k] = Element.FromDouble<T>(lo[k]);
                destination[k + Vector<double>.Count] = Element.FromDouble<T>(hi[k]);
            }
        }
        else
        {
            StreamingStores.Store<double, TStore>(lo, (double*)destination);
            StreamingStores.Store<double, TStore>(hi, (double*)destination + Vector<double>.Count);
        }
    }

    /// <summary>
    /// Lanes values from <paramref name="source"/> + <paramref name="index"/> as two vectors of doubles, for a sum in which
    /// a value's lane does not matter: bfloat16 with 256-bit vectors as its values at even places and at odd places (a
    /// shift and a mask, with no widening shuffle or extraction), any other type as <see cref="Load{T}(ref T, nuint, out Vector{double}, out Vector{double})"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadForSums<T>(ref T source, nuint index, out Vector<double> lo, out Vector<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(BFloat16) && Avx.IsSupported && Vector<double>.Count == Vector256<double>.Count)
        {
            var bits = Vector128.LoadUnsafe(ref Unsafe.As<T, ushort>(ref source), index).AsUInt32();
            lo = Avx.ConvertToVector256Double((bits << 16).AsSingle()).AsVector();
            hi = Avx.ConvertToVector256Double((bits & Vector128.Create(0xFFFF0000u)).AsSingle()).AsVector();
        }
        else
        {
            Load(ref source, index, out lo, out hi);
        }
    }

    /// <summary>Lanes values from <paramref name="source"/> + <paramref name="index"/>, widened to two vectors of doubles.</summary>
    /// <remarks>
    /// With 256-bit vectors on AVX, each half of the float32 values is converted straight from memory (one
    /// <c>vcvtps2pd ymm, m128</c> each) rather than loaded whole and split, which <see cref="Vector.Widen(Vector{float}, out Vector{double}, out Vector{double})"/>
    /// does with an extraction of its upper half: the same conversion of the same values, so the same bits, in fewer
    /// instructions, which made the sums and the element-wise passes faster both in the cache and from memory.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Load<T>(ref T source, nuint index, out Vector<double> lo, out Vector<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float) && Avx.IsSupported && Vector<double>.Count == Vector256<double>.Count)
        {
            ref float start = ref Unsafe.As<T, float>(ref source);
            lo = Avx.ConvertToVector256Double(Vector128.LoadUnsafe(ref start, index)).AsVector();
            hi = Avx.ConvertToVector256Double(Vector128.LoadUnsafe(ref start, index + (nuint)Vector128<float>.Count)).AsVector();
        }
        else if (typeof(T) == typeof(float))
        {
            Vector.Widen(Vector.LoadUnsafe(ref Unsafe.As<T, float>(ref source), index), out lo, out hi);
        }
        else if ((typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half)) && Vector<float>.Count == Vector256<float>.Count)
        {
            var bits = Vector128.LoadUnsafe(ref Unsafe.As<T, ushort>(ref source), index);
            var values = typeof(T) == typeof(BFloat16) ? BFloat16Bits.Widen(bits) : Float16Bits.Widen(bits);
            Vector.Widen(values.AsVector(), out lo, out hi);
        }
        else if (typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half))
        {
            LoadLaneByLane(ref Unsafe.Add(ref source, index), out lo, out hi);
        }
        else
        {
            ref double start = ref Unsafe.As<T, double>(ref source);
            lo = Vector.LoadUnsafe(ref start, index);
            hi = Vector.LoadUnsafe(ref start, index + (nuint)Vector<double>.Count);
        }
    }

    /// <summary>Lanes values of a 16-bit type where vectors have another width than 256 bits, widened one by one.</summary>
    private static void LoadLaneByLane<T>(ref T source, out Vector<double> lo, out Vector<double> hi)
        where T : unmanaged
    {
        Span<double> widened = stackalloc double[2 * Vector<double>.Count];
        for (int k = 0; k < widened.Length; k++)
        {
            widened[k] = Element.ToDouble(Unsafe.Add(ref source, k));
        }

        lo = new Vector<double>(widened);
        hi = new Vector<double>(widened[Vector<double>.Count..]);
    }
}
