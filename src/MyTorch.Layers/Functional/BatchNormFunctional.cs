using System;
using System.Buffers;
using System.Globalization;
using System.Linq;
using System.Numerics;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using BFloat16 = MyTorch.Layers.Kernels.BFloat16;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The explicit forward and backward of batch normalisation of any rank, mirroring ATen's <c>native_batch_norm</c>
/// and <c>native_batch_norm_backward</c>: for people who drive the layers by hand. No autograd graph is built;
/// <see cref="BatchNorm1d"/>, <see cref="BatchNorm2d"/> and <see cref="BatchNorm3d"/> wire these into autograd.
/// </summary>
/// <remarks>
/// An input (N, C, d₂, …, dₖ) is read as the 4-D planes (N, C, d₂·…·dₖ₋₁, dₖ) the kernels take, a view of the same
/// memory: (N, C) as (N, C, 1, 1), whose rows of C values the channels-last kernels sum down their columns;
/// (N, C, L) as (N, C, 1, L); (N, C, D, H, W) as (N, C, D·H, W), channels-last-3d memory as channels-last.
/// </remarks>
public static class BatchNormFunctional
{
    /// <summary>
    /// Normalises each channel of an input of rank 2 or more, (N, C, …).
    /// With <paramref name="training"/> (or without running statistics) the batch statistics are used:
    /// y = (x − μ) / sqrt(σ² + eps) · γ + β, σ² the biased variance over every value of a channel, and the running statistics,
    /// when given, are updated in place: running = (1 − momentum) · running + momentum · batch, with the unbiased
    /// variance. Otherwise the running statistics are used and nothing is updated.
    /// </summary>
    /// <param name="input">(N, C, …) of rank 2 or more, float32, float64, bfloat16 or float16, on the CPU, in any memory layout.</param>
    /// <param name="weight">
    /// γ, C elements of the input's dtype, or <see langword="null"/> for none. For a bfloat16 or float16 input the
    /// per-channel tensors may all be float32 or all float64 instead (mixed precision): the output keeps the input's
    /// dtype, the running statistics theirs, and the mean and 1/σ come back in float32.
    /// </param>
    /// <param name="bias">β, C elements of γ's dtype, or <see langword="null"/> for none.</param>
    /// <param name="runningMean">Running mean, C elements, updated in place in training; or null, with <paramref name="runningVar"/>, for none.</param>
    /// <param name="runningVar">Running variance, C elements, updated in place in training; or null, with <paramref name="runningMean"/>, for none.</param>
    /// <param name="training">Use (and track) batch statistics rather than the running ones. Without running statistics,
    /// batch statistics are used either way, as in <c>native_batch_norm</c>.</param>
    /// <param name="momentum">Weight of the new batch in the running statistics.</param>
    /// <param name="eps">Added to the variance before the square root; not negative.</param>
    /// <returns>
    /// The output, in the input's memory layout (contiguous or channels-last; other strides give a contiguous output),
    /// and the per-channel mean and 1/sqrt(var + eps) that were used, as the backward expects them.
    /// Unlike ATen, which returns empty tensors in evaluation mode, these are then the running statistics' values.
    /// </returns>
    /// <exception cref="ArgumentNullException">A required tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// The input has fewer than 2 dimensions; a dtype is not one the kernels take or differs between tensors (beyond
    /// mixed precision); a per-channel tensor does not have C elements; only one of the running statistics is given; one
    /// value per channel when batch statistics are used.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="eps"/> is negative or NaN.</exception>
    /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static (Tensor Output, Tensor SaveMean, Tensor SaveInvstd) Forward(
        Tensor input,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double momentum,
        double eps)
        => Forward(input, weight, bias, runningMean, runningVar, training, momentum, eps, BatchNormRanks.Any);

    /// <summary><see cref="Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)"/> for the ranks <paramref name="ranks"/> allows.</summary>
    internal static (Tensor Output, Tensor SaveMean, Tensor SaveInvstd) Forward(
        Tensor input,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double momentum,
        double eps,
        BatchNormRanks ranks)
    {
        long[] shape = CheckForward(input, ranks, weight, bias, runningMean, runningVar, training, eps);
        long[] planes = BatchNormRanks.Planes(shape);
        var x = BatchNormRanks.AsPlanes(input, shape, planes);
        try
        {
            var (output, mean, invstd) = Compute(x, planes, weight, bias, runningMean, runningVar, training, momentum, eps);
            return (BatchNormRanks.FromPlanes(output, shape), mean, invstd);
        }
        finally
        {
            if (!ReferenceEquals(x, input))
            {
                x.Dispose();
            }
        }
    }

    /// <summary>
    /// Every check <see cref="Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)"/> makes, in
    /// libtorch's order, before anything is written, with the ranks <paramref name="ranks"/> allows. The modules run it
    /// before they advance num_batches_tracked, naming their own dtype as <paramref name="moduleDtype"/>. Returns the
    /// input's shape, for the caller to pass on rather than read again.
    /// </summary>
    internal static long[] CheckForward(
        Tensor input,
        BatchNormRanks ranks,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double eps,
        ScalarType? moduleDtype = null,
        bool wholeBatch = true)
    {
        long[] shape = CheckInput(input, nameof(input), ranks);
        // A float32 or float64 module takes 16-bit inputs too (mixed precision); otherwise the dtypes match.
        if (moduleDtype is { } expected && !(Check.IsHalfPrecision(input.dtype) && expected is ScalarType.Float32 or ScalarType.Float64))
        {
            Check.SameDtype(input, nameof(input), expected, "the module");
        }

        CheckParameters(shape[1], input.dtype, weight, bias, runningMean, runningVar);
        CheckEps(eps);
        if ((runningMean is null) != (runningVar is null))
        {
            throw new ArgumentException("running_mean and running_var must either both be null or neither be null.", runningMean is null ? nameof(runningMean) : nameof(runningVar));
        }

        // A part of a split batch may hold one value per channel, or none: the whole batch is checked by its caller.
        if (wholeBatch && (training || runningMean is null))
        {
            CheckMoreThanOneValuePerChannel(shape);
        }

        return shape;
    }

    /// <summary>
    /// The forward on 4-D planes whose input <see cref="CheckForward"/> accepted, with their shape. The mean
    /// and 1/σ come back in <paramref name="statisticsDtype"/>: the input's dtype, as ATen has them, unless asked for
    /// in float64, in which the kernels compute them, so that a backward from them loses nothing (the module's
    /// autograd node keeps them so).
    /// </summary>
    internal static (Tensor Output, Tensor SaveMean, Tensor SaveInvstd) Compute(
        Tensor input,
        long[] shape,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double momentum,
        double eps,
        ScalarType? statisticsDtype = null,
        BlockTailTensors? tail = null,
        SplitBatch? split = null)
    {
        long channels = shape[1];
        using var scope = NewDisposeScope();
        var saveMean = empty(channels, statisticsDtype ?? StatisticsDtype(input.dtype));
        var saveInvstd = empty(channels, statisticsDtype ?? StatisticsDtype(input.dtype));
        var output = Run(input, shape, weight, bias, runningMean, runningVar, training, momentum, eps, saveMean, saveInvstd, tail, split);
        return (output.MoveToOuterDisposeScope(), saveMean.MoveToOuterDisposeScope(), saveInvstd.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="Compute"/>'s output alone, for a forward no backward will follow (inference, or no gradient wanted):
    /// the statistics stay in the kernels' scratch, with no tensors made for them.
    /// </summary>
    internal static Tensor ComputeOutput(
        Tensor input,
        long[] shape,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double momentum,
        double eps,
        BlockTailTensors? tail = null,
        SplitBatch? split = null) =>
        Run(input, shape, weight, bias, runningMean, runningVar, training, momentum, eps, saveMean: null, saveInvstd: null, tail, split);

    /// <summary>The forward on checked 4-D planes, writing the statistics it used into the tensors given, if any.</summary>
    private static Tensor Run(
        Tensor input,
        long[] shape,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool training,
        double momentum,
        double eps,
        Tensor? saveMean,
        Tensor? saveInvstd,
        BlockTailTensors? tail,
        SplitBatch? split)
    {
        bool useBatchStatistics = training || runningMean is null;
        using var source = new Borrowed(Layouts.ReadablePlanes(input, shape, out var layout), input);
        var output = Layouts.EmptyPlanes(shape, input.dtype, layout);
        var plane = Layouts.Plane(shape, layout);
        var call = new ForwardCall(source.Tensor, output, plane, weight, bias, runningMean, runningVar, useBatchStatistics, momentum, eps, saveMean, saveInvstd, tail, split);
        Dispatch(ref call, input.dtype, ParameterDtype(input.dtype, runningMean, runningVar, weight, bias));
        return output;
    }

    /// <summary>
    /// Gradients of <see cref="Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)"/> with respect
    /// to the input, γ and β, given the gradient of its output.
    /// With batch statistics: dx = (dy − mean(dy) − (x − μ) · invstd² · mean(dy · (x − μ))) · invstd · γ;
    /// with fixed statistics: dx = dy · invstd · γ. In both, dγ = Σ dy · (x − μ) · invstd and dβ = Σ dy, per channel.
    /// </summary>
    /// <param name="gradOutput">dy, the input's shape and dtype, any memory layout.</param>
    /// <param name="input">The forward's input.</param>
    /// <param name="weight">γ as given to the forward, or <see langword="null"/>.</param>
    /// <param name="saveMean">The mean the forward returned.</param>
    /// <param name="saveInvstd">The 1/sqrt(var + eps) the forward returned.</param>
    /// <param name="training">Whether the forward used batch statistics.</param>
    /// <returns>dx in the input's memory layout, and dγ and dβ (C elements each, computed even when γ is null).</returns>
    /// <exception cref="ArgumentNullException">A required tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">Shapes or dtypes do not match the input, or the input has fewer than 2 dimensions.</exception>
    /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static (Tensor GradInput, Tensor GradWeight, Tensor GradBias) Backward(
        Tensor gradOutput,
        Tensor input,
        Tensor? weight,
        Tensor saveMean,
        Tensor saveInvstd,
        bool training)
        => Backward(gradOutput, input, weight, saveMean, saveInvstd, training, statisticsInDouble: false, BatchNormRanks.Any);

    /// <summary>
    /// <see cref="Backward(Tensor, Tensor, Tensor?, Tensor, Tensor, bool)"/> for the ranks <paramref name="ranks"/> allows,
    /// with the mean and 1/σ either of the input's dtype or, with <paramref name="statisticsInDouble"/>, float64 as
    /// <see cref="Compute"/> gives them when asked: the modules' autograd node passes those.
    /// </summary>
    internal static (Tensor GradInput, Tensor GradWeight, Tensor GradBias) Backward(
        Tensor gradOutput,
        Tensor input,
        Tensor? weight,
        Tensor saveMean,
        Tensor saveInvstd,
        bool training,
        bool statisticsInDouble,
        BatchNormRanks ranks,
        BlockTailTensors? tail = null,
        SplitBatch? split = null)
    {
        long[] shape = CheckInput(input, nameof(input), ranks);
        Check.Alive(gradOutput, nameof(gradOutput));
        Check.OnCpu(gradOutput, nameof(gradOutput));
        Check.SameDtype(gradOutput, nameof(gradOutput), input.dtype, nameof(input));
        Check.SameShape(gradOutput, nameof(gradOutput), shape, nameof(input));
        long channels = shape[1];
        Check.Alive(saveMean, nameof(saveMean));
        Check.Alive(saveInvstd, nameof(saveInvstd));
        var statistics = statisticsInDouble ? ScalarType.Float64 : StatisticsDtype(input.dtype);
        string statisticsFrom = statisticsInDouble ? "the autograd node" : Check.IsHalfPrecision(input.dtype) ? "the forward on a 16-bit input" : nameof(input);
        Check.PerChannel(saveMean, "save_mean", channels, statistics, statisticsFrom);
        Check.PerChannel(saveInvstd, "save_invstd", channels, statistics, statisticsFrom);
        var (parameterDtype, parameterFrom) = ExpectedParameterDtype(input.dtype, ("weight", weight));
        Check.PerChannel(weight, "weight", channels, parameterDtype, parameterFrom);
        if (shape.Length != 4)
        {
            // The same backward on the 4-D planes of input and gradient, its dx given the input's shape again.
            long[] planes = BatchNormRanks.Planes(shape);
            using var x4 = BatchNormRanks.AsPlanes(input, shape, planes);
            using var dy4 = BatchNormRanks.AsPlanes(gradOutput, shape, planes);
            var (dx4, dw, db) = Backward(dy4, x4, weight, saveMean, saveInvstd, training, statisticsInDouble, BatchNormRanks.Any, tail, split);
            return (BatchNormRanks.FromPlanes(dx4, shape), dw, db);
        }

        using var scope = NewDisposeScope();
        // dγ and dβ in γ's dtype; without γ, in the dtype the statistics come in.
        var gradientDtype = weight?.dtype ?? StatisticsDtype(input.dtype);
        var gradWeight = empty(channels, gradientDtype);
        var gradBias = empty(channels, gradientDtype);
        Tensor gradInput;
        using (var x = new Borrowed(Layouts.ReadablePlanes(input, shape, out var layout), input))
        {
            // dy in another layout than x's is read through a copy in x's, except that an NCHW dy under a channels-last x
            // is read where it lies where that is faster (see BatchNormKernels.ReadsPlanarGradient).
            var plane = Layouts.Plane(shape, layout);
            bool planar = input.dtype switch
            {
                ScalarType.Float32 => BatchNormKernels.ReadsPlanarGradient<float>(plane),
                ScalarType.Float64 => BatchNormKernels.ReadsPlanarGradient<double>(plane),
                _ => false,
            } && tail is null && split is null && Layouts.ClassifyPlanes(gradOutput, shape) == MemoryLayout.Contiguous;
            using var dy = new Borrowed(planar ? gradOutput : Layouts.PlanesInLayout(gradOutput, shape, layout), gradOutput);
            using var rectified = new Borrowed(tail?.Rectified is { } r ? Layouts.PlanesInLayout(r, shape, layout) : null!, tail?.Rectified!);
            gradInput = Layouts.EmptyPlanes(shape, input.dtype, layout);
            var call = new BackwardCall(dy.Tensor, planar, x.Tensor, gradInput, plane, weight, saveMean, saveInvstd, training, gradWeight, gradBias, tail, rectified.Tensor, split);
            Dispatch(ref call, input.dtype, gradientDtype);
        }

        return (gradInput.MoveToOuterDisposeScope(), gradWeight.MoveToOuterDisposeScope(), gradBias.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Input checks shared with the modules: a live float CPU tensor of a rank <paramref name="ranks"/> allows, that a
    /// span can index. Returns its shape (reading a tensor's shape through TorchSharp costs about as much as a small
    /// kernel call).
    /// </summary>
    private static long[] CheckInput(Tensor input, string name, BatchNormRanks ranks)
    {
        Check.Alive(input, name);
        long[] shape = input.shape;
        ranks.Check(shape, name);

        Check.KernelReadable(input, name, shape);
        return shape;
    }

    /// <summary>Checks of the per-channel tensors against the input's channel count and dtype.</summary>
    private static void CheckParameters(long channels, ScalarType dtype, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar)
    {
        // libtorch checks in this order, so the first complaint is the same.
        var (expected, from) = ExpectedParameterDtype(dtype, ("running_mean", runningMean), ("running_var", runningVar), ("weight", weight), ("bias", bias));
        Check.PerChannel(runningMean, "running_mean", channels, expected, from);
        Check.PerChannel(runningVar, "running_var", channels, expected, from);
        Check.PerChannel(weight, "weight", channels, expected, from);
        Check.PerChannel(bias, "bias", channels, expected, from);
    }

    /// <summary>
    /// The dtype the per-channel tensors must share, and what it comes from: the input's; or, for a bfloat16 or float16
    /// input, float32 or float64 where the first of them given has that dtype (mixed precision, as libtorch allows it
    /// with float32 parameters).
    /// </summary>
    private static (ScalarType Dtype, string From) ExpectedParameterDtype(ScalarType inputDtype, params (string Name, Tensor? Tensor)[] perChannel)
    {
        if (Check.IsHalfPrecision(inputDtype))
        {
            foreach (var (name, tensor) in perChannel)
            {
                if (tensor is not null && !tensor.IsInvalid && tensor.dtype is ScalarType.Float32 or ScalarType.Float64)
                {
                    return (tensor.dtype, name);
                }
            }
        }

        return (inputDtype, "input");
    }

    /// <summary>The dtype the kernels' parameter spans take for these (checked) per-channel tensors.</summary>
    private static ScalarType ParameterDtype(ScalarType inputDtype, params Tensor?[] perChannel) =>
        perChannel.FirstOrDefault(t => t is not null)?.dtype ?? StatisticsDtype(inputDtype);

    /// <summary>
    /// The dtype of the mean and 1/σ the forward returns: the input's, or float32 for a 16-bit input, as ATen's
    /// mixed-precision batch norm returns them.
    /// </summary>
    private static ScalarType StatisticsDtype(ScalarType inputDtype) => Check.IsHalfPrecision(inputDtype) ? ScalarType.Float32 : inputDtype;

    /// <summary>Refuses a negative or NaN eps.</summary>
    internal static void CheckEps(double eps)
    {
        if (!(eps >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be zero or positive.");
        }
    }

    /// <summary>Batch statistics need more than one value per channel: one is refused, as PyTorch does.</summary>
    private static void CheckMoreThanOneValuePerChannel(long[] shape)
    {
        long values = shape[0];
        for (int d = 2; d < shape.Length; d++)
        {
            values *= shape[d];
        }

        if (values == 1)
        {
            throw new ArgumentException(
                $"Expected more than 1 value per channel when training, got input size {Check.Format(shape)}", "input");
        }
    }

    /// <summary>The batch statistics of a forward, as work a side piece can run beside (<see cref="Dropout2dFunctional.DrawMaskBeside{T, TWork}"/>).</summary>
    private readonly ref struct StatisticsWork<T>(ReadOnlySpan<T> x, PlaneLayout plane, Span<double> mean, Span<double> variance, Span<double> scratch, int threads)
        : Dropout2dFunctional.IWorkBeside
        where T : unmanaged
    {
        private readonly ReadOnlySpan<T> _x = x;
        private readonly Span<double> _mean = mean;
        private readonly Span<double> _variance = variance;
        private readonly Span<double> _scratch = scratch;

        public void Run(SidePiece side) => BatchNormKernels.BatchStatisticsVectorized(_x, plane, _mean, _variance, _scratch, threads, side);
    }

    private static unsafe void Forward<T, TParam>(
        Tensor input,
        Tensor output,
        PlaneLayout plane,
        Tensor? weight,
        Tensor? bias,
        Tensor? runningMean,
        Tensor? runningVar,
        bool useBatchStatistics,
        double momentum,
        double eps,
        Tensor? saveMean,
        Tensor? saveInvstd,
        BlockTailTensors? tailTensors,
        SplitBatch? split)
        where T : unmanaged
        where TParam : unmanaged
    {
        int channels = plane.Channels;
        int threads = KernelThreads.Count;
        double[] scratch = ArrayPool<double>.Shared.Rent((3 * channels) + BatchNormKernels.VectorizedScratchLength(plane));
        try
        {
            var mean = scratch.AsSpan(0, channels);
            var variance = scratch.AsSpan(channels, channels);
            var invstd = scratch.AsSpan(2 * channels, channels);
            var kernelScratch = scratch.AsSpan(3 * channels);
            ReadOnlySpan<T> x = TensorMemory.Span<T>(input, plane);
            var y = TensorMemory.Span<T>(output, plane);
            fixed (T* mask = TensorMemory.Vector<T>(tailTensors?.Mask))
            {
            var tail = tailTensors is null ? default : new BlockTail { Active = true, Rectify = tailTensors.Rectify, Mask = mask };
            if (useBatchStatistics)
            {
                if (split is not null)
                {
                    System.Diagnostics.Debug.Assert(!tail.Active, "a block is not split across processes");
                    SplitBatchStatistics(x, plane, split, mean, variance, kernelScratch, threads);
                    BatchNormKernels.InverseStandardDeviation(variance, eps, invstd);
                    if (runningMean is not null && runningVar is not null)
                    {
                        BatchNormKernels.UpdateRunningStatistics(
                            TensorMemory.Vector<TParam>(runningMean), TensorMemory.Vector<TParam>(runningVar), mean, variance, split.Values, momentum);
                    }
                }
                else if (plane.Length == 0)
                {
                    // An empty batch has no statistics: libtorch returns an empty output and leaves the running ones alone.
                    mean.Clear();
                    invstd.Clear();
                }
                else
                {
                    var statistics = new StatisticsWork<T>(x, plane, mean, variance, kernelScratch, threads);
                    if (tailTensors?.Draw is { } draw)
                    {
                        // The block's dropout mask, which only the normalisation needs, drawn on one thread while the others sum.
                        var factors = tailTensors.Mask!;
                        if (typeof(T) == typeof(float))
                        {
                            Dropout2dFunctional.DrawMaskBeside(factors, TensorMemory.Vector<float>(factors), draw.Keep, draw.Generator, statistics);
                        }
                        else
                        {
                            Dropout2dFunctional.DrawMaskBeside(factors, TensorMemory.Vector<double>(factors), draw.Keep, draw.Generator, statistics);
                        }
                    }
                    else
                    {
                        statistics.Run(default);
                    }

                    BatchNormKernels.InverseStandardDeviation(variance, eps, invstd);

                    if (runningMean is not null && runningVar is not null)
                    {
                        BatchNormKernels.UpdateRunningStatistics(
                            TensorMemory.Vector<TParam>(runningMean), TensorMemory.Vector<TParam>(runningVar), mean, variance, plane.ValuesPerChannel, momentum);
                    }
                }

                BatchNormKernels.NormalizeVectorized(x, y, plane, mean, invstd, Parameter<TParam>(weight), Parameter<TParam>(bias), kernelScratch, threads, tail: tail);
            }
            else
            {
                ReadOnlySpan<TParam> fixedMean = TensorMemory.Vector<TParam>(runningMean);
                Widen(fixedMean, mean);
                Widen<TParam>(TensorMemory.Vector<TParam>(runningVar), variance);
                BatchNormKernels.InverseStandardDeviation(variance, eps, invstd);
                // float32 and float64 take (x − mean) in their dtype, as libtorch computes it (see NormalizeFixedVectorized);
                // 16-bit inputs the float64 arithmetic of batch statistics, rounded once to the dtype.
                if (typeof(T) == typeof(float))
                {
                    BatchNormKernels.NormalizeFixedVectorized(
                        MemoryMarshal.Cast<T, float>(x), MemoryMarshal.Cast<T, float>(y), plane, MemoryMarshal.Cast<TParam, float>(fixedMean), invstd, Parameter<float>(weight), Parameter<float>(bias), kernelScratch, threads, tail: tail);
                }
                else if (typeof(T) == typeof(double))
                {
                    BatchNormKernels.NormalizeFixedVectorized(
                        MemoryMarshal.Cast<T, double>(x), MemoryMarshal.Cast<T, double>(y), plane, MemoryMarshal.Cast<TParam, double>(fixedMean), invstd, Parameter<double>(weight), Parameter<double>(bias), kernelScratch, threads, tail: tail);
                }
                else
                {
                    System.Diagnostics.Debug.Assert(!tail.Active, "a block takes float32 and float64 only");
                    BatchNormKernels.NormalizeVectorized(x, y, plane, mean, invstd, Parameter<TParam>(weight), Parameter<TParam>(bias), kernelScratch, threads);
                }
            }
            }

            if (saveMean is not null && saveInvstd is not null)
            {
                Store(mean, saveMean);
                Store(invstd, saveInvstd);
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// The backward kernels. <paramref name="gradOutput"/> is in the layout <paramref name="plane"/> describes, or with
    /// <paramref name="gradOutputPlanar"/> in NCHW memory under a channels-last input.
    /// </summary>
    private static unsafe void Backward<T, TParam>(
        Tensor gradOutput,
        bool gradOutputPlanar,
        Tensor input,
        Tensor gradInput,
        PlaneLayout plane,
        Tensor? weight,
        Tensor saveMean,
        Tensor saveInvstd,
        bool useBatchStatistics,
        Tensor gradWeight,
        Tensor gradBias,
        BlockTailTensors? tail,
        Tensor? rectified,
        SplitBatch? split)
        where T : unmanaged
        where TParam : unmanaged
    {
        int channels = plane.Channels;
        int threads = KernelThreads.Count;
        double[] scratch = ArrayPool<double>.Shared.Rent((6 * channels) + BatchNormKernels.VectorizedScratchLength(plane));
        try
        {
            var mean = scratch.AsSpan(0, channels);
            var invstd = scratch.AsSpan(channels, channels);
            var sumDy = scratch.AsSpan(2 * channels, channels);
            var sumDyXmu = scratch.AsSpan(3 * channels, channels);
            var whole = scratch.AsSpan(4 * channels, 2 * channels);
            var kernelScratch = scratch.AsSpan(6 * channels);
            Load(saveMean, mean);
            Load(saveInvstd, invstd);
            ReadOnlySpan<T> x = TensorMemory.Span<T>(input, plane);
            Span<T> dy = TensorMemory.Span<T>(gradOutput, plane);
            var dx = TensorMemory.Span<T>(gradInput, plane);
            ReadOnlySpan<TParam> gamma = Parameter<TParam>(weight);

            if (tail is not null)
            {
                // The block's ReLU and dropout make the normalisation's dy chunk by chunk in cache, for the sums and for dx.
                BackwardThroughTail(x, dy, dx, plane, mean, invstd, gamma, Parameter<TParam>(tail.Bias), rectified is null ? default : TensorMemory.Span<T>(rectified, plane), tail, sumDy, sumDyXmu, useBatchStatistics, kernelScratch, threads);
            }
            else if (gradOutputPlanar)
            {
                BatchNormKernels.BackwardReductionsPlanarGradient(x, dy, plane, mean, sumDy, sumDyXmu, kernelScratch, threads);
                BatchNormKernels.BackwardInputPlanarGradient(
                    x, dy, dx, plane, mean, invstd, gamma, sumDy, sumDyXmu, useBatchStatistics, kernelScratch, threads);
            }
            else if (split is not null && useBatchStatistics)
            {
                // dx takes the whole batch's sums; dγ and dβ stay this part's, for the caller to reduce as any gradient.
                BatchNormKernels.BackwardReductionsVectorized(x, dy, plane, mean, sumDy, sumDyXmu, kernelScratch, threads);
                SplitBatchGradientSums(scratch.AsSpan(2 * channels, 2 * channels), split, whole);
                BatchNormKernels.BackwardInputVectorized(
                    x, dy, dx, plane, mean, invstd, gamma, whole[..channels], whole[channels..], useBatchStatistics, kernelScratch, threads, batchValues: split.Values);
            }
            else
            {
                BatchNormKernels.BackwardReductionsVectorized(x, dy, plane, mean, sumDy, sumDyXmu, kernelScratch, threads);
                BatchNormKernels.BackwardInputVectorized(
                    x, dy, dx, plane, mean, invstd, gamma, sumDy, sumDyXmu, useBatchStatistics, kernelScratch, threads);
            }

            for (int c = 0; c < channels; c++)
            {
                sumDyXmu[c] *= invstd[c];
            }

            Store(sumDyXmu, gradWeight);
            Store(sumDy, gradBias);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(scratch);
        }
    }

    /// <summary>
    /// The backward of a block: the normalisation's dy made from the block's output gradient
    /// <paramref name="blockGradOutput"/> chunk by chunk in cache, by the sums and again by dx, never written to memory.
    /// The ReLU's input is recomputed from x as the forward computed it (offset μ, scale invstd · γ, shift β), or, given
    /// <paramref name="rectified"/>, its output read.
    /// </summary>
    private static unsafe void BackwardThroughTail<T, TParam>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> blockGradOutput,
        Span<T> gradInput,
        PlaneLayout plane,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> gamma,
        ReadOnlySpan<TParam> beta,
        ReadOnlySpan<T> rectified,
        BlockTailTensors tail,
        Span<double> sumDy,
        Span<double> sumDyXmu,
        bool useBatchStatistics,
        Span<double> scratch,
        int threads)
        where T : unmanaged
        where TParam : unmanaged
    {
        int channels = plane.Channels;
        double[] constants = ArrayPool<double>.Shared.Rent(4 * channels);
        T[] gates = ArrayPool<T>.Shared.Rent(2 * channels);
        try
        {
            var offset = constants.AsSpan(0, channels);
            var scale = constants.AsSpan(channels, channels);
            var shift = constants.AsSpan(2 * channels, channels);
            var thresholds = constants.AsSpan(3 * channels, channels);
            for (int c = 0; c < channels; c++)
            {
                // As BatchNormKernels.NormalizeVectorized forms them, so that y is recomputed bit for bit.
                (offset[c], scale[c], shift[c]) = rectified.IsEmpty
                    ? (mean[c], invstd[c] * (gamma.IsEmpty ? 1.0 : Element.ToDouble(gamma[c])), beta.IsEmpty ? 0.0 : Element.ToDouble(beta[c]))
                    : (0.0, 1.0, 0.0);
            }

            if (tail.Rectify && typeof(T) == typeof(float))
            {
                BlockKernels.GateThresholds<float>(offset, scale, shift, thresholds);
            }
            else if (tail.Rectify)
            {
                BlockKernels.GateThresholds<double>(offset, scale, shift, thresholds);
            }

            // The loops take each channel's gate ready in T, where every channel has a threshold.
            bool everyThreshold = tail.Rectify;
            for (int c = 0; everyThreshold && c < channels; c++)
            {
                everyThreshold = !double.IsNaN(thresholds[c]);
            }

            // Without the ReLU, a gate that never closes, so that the loops take the dropout's factors alone.
            Span<T> channelGate = everyThreshold || !tail.Rectify ? gates.AsSpan(0, 2 * channels) : default;
            if (everyThreshold)
            {
                BlockKernels.ChannelGate(thresholds, scale, channelGate);
            }
            else if (!tail.Rectify)
            {
                BlockKernels.OpenChannelGate(channelGate);
            }

            fixed (T* dy = blockGradOutput)
            fixed (T* source = rectified.IsEmpty ? x : rectified)
            fixed (T* mask = TensorMemory.Vector<T>(tail.Mask))
            fixed (double* o = offset)
            fixed (double* s = scale)
            fixed (double* t = shift)
            fixed (double* closing = thresholds)
            fixed (T* gate = channelGate)
            {
                var blockTail = new BlockTail
                {
                    Active = true, Rectify = tail.Rectify, Mask = mask, GradOutput = dy, Source = source, Offset = o, Scale = s, Shift = t, Threshold = tail.Rectify ? closing : null,
                    ChannelGate = channelGate.IsEmpty ? null : gate,
                };
                BatchNormKernels.BackwardReductionsVectorized(x, blockGradOutput, plane, mean, sumDy, sumDyXmu, scratch, threads, blockTail);
                BatchNormKernels.BackwardInputVectorized(
                    x, blockGradOutput, gradInput, plane, mean, invstd, gamma, sumDy, sumDyXmu, useBatchStatistics, scratch, threads, tail: blockTail);
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(constants);
            ArrayPool<T>.Shared.Return(gates);
        }
    }

    /// <summary>
    /// μ and σ² of a split batch: this part's shifted sums (none if it is empty), every part's gathered, and merged in
    /// part order, so that each process gets the same bits; records the whole batch's M in <paramref name="split"/>.
    /// </summary>
    private static void SplitBatchStatistics<T>(
        ReadOnlySpan<T> x, PlaneLayout plane, SplitBatch split, Span<double> mean, Span<double> variance, Span<double> scratch, int threads)
        where T : unmanaged
    {
        int channels = plane.Channels;
        int length = BatchNormKernels.ShiftedSumsRecordLength(channels);
        double[] records = ArrayPool<double>.Shared.Rent(length * (split.Exchange.Parts + 1));
        try
        {
            var local = records.AsSpan(0, length);
            local.Clear();
            if (plane.Length > 0)
            {
                local[0] = plane.ValuesPerChannel;
                BatchNormKernels.ShiftedSumsVectorized(
                    x, plane, local.Slice(1, channels), local.Slice(1 + channels, channels), local.Slice(1 + (2 * channels), channels), scratch, threads);
            }

            var all = records.AsSpan(length, length * split.Exchange.Parts);
            split.Exchange.AllGather(local, all);
            split.Values = BatchNormKernels.MergeShiftedSums(all, channels, mean, variance);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(records);
        }
    }

    /// <summary>
    /// The whole split batch's Σdy then Σdy·(x − μ) into <paramref name="whole"/>, from this part's in
    /// <paramref name="local"/> (the same order), gathered and summed in part order.
    /// </summary>
    private static void SplitBatchGradientSums(ReadOnlySpan<double> local, SplitBatch split, Span<double> whole)
    {
        int length = local.Length * split.Exchange.Parts;
        double[] all = ArrayPool<double>.Shared.Rent(length);
        try
        {
            split.Exchange.AllGather(local, all.AsSpan(0, length));
            BatchNormKernels.SumParts(all.AsSpan(0, length), whole);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(all);
        }
    }

    private static ReadOnlySpan<T> Parameter<T>(Tensor? tensor)
        where T : unmanaged => TensorMemory.Vector<T>(tensor);

    private static void Widen<T>(ReadOnlySpan<T> source, Span<double> destination)
        where T : unmanaged
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = Element.ToDouble(source[i]);
        }
    }

    private static void Narrow<T>(ReadOnlySpan<double> source, Span<T> destination)
        where T : unmanaged
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = Element.FromDouble<T>(source[i]);
        }
    }

    /// <summary>Per-channel values rounded to the tensor's dtype (float64 as they are).</summary>
    private static void Store(ReadOnlySpan<double> source, Tensor destination)
    {
        switch (destination.dtype)
        {
            case ScalarType.Float64:
                source.CopyTo(TensorMemory.Vector<double>(destination));
                break;
            case ScalarType.Float32:
                Narrow(source, TensorMemory.Vector<float>(destination));
                break;
            case ScalarType.BFloat16:
                Narrow(source, TensorMemory.Vector<BFloat16>(destination));
                break;
            default:
                Narrow(source, TensorMemory.Vector<Half>(destination));
                break;
        }
    }

    /// <summary>Per-channel values from a tensor of any of the kernels' dtypes, as <see cref="Store"/> wrote them.</summary>
    private static void Load(Tensor source, Span<double> destination)
    {
        switch (source.dtype)
        {
            case ScalarType.Float64:
                TensorMemory.Vector<double>(source).CopyTo(destination);
                break;
            case ScalarType.Float32:
                Widen<float>(TensorMemory.Vector<float>(source), destination);
                break;
            case ScalarType.BFloat16:
                Widen<BFloat16>(TensorMemory.Vector<BFloat16>(source), destination);
                break;
            default:
                Widen<Half>(TensorMemory.Vector<Half>(source), destination);
                break;
        }
    }

    /// <summary>A kernel call for one pair of element and parameter types.</summary>
    private interface IKernelCall
    {
        void Run<T, TParam>()
            where T : unmanaged
            where TParam : unmanaged;
    }

    /// <summary>
    /// Runs <paramref name="call"/> with the element type of <paramref name="input"/> and the parameter type of
    /// <paramref name="parameters"/>, which the checks have made the input's, or float32 or float64 for a 16-bit input.
    /// </summary>
    private static void Dispatch<TCall>(ref TCall call, ScalarType input, ScalarType parameters)
        where TCall : struct, IKernelCall
    {
        switch (input)
        {
            case ScalarType.Float32:
                call.Run<float, float>();
                break;
            case ScalarType.Float64:
                call.Run<double, double>();
                break;
            case ScalarType.BFloat16:
                WithParameters<TCall, BFloat16>(ref call, parameters);
                break;
            default:
                WithParameters<TCall, Half>(ref call, parameters);
                break;
        }
    }

    private static void WithParameters<TCall, T>(ref TCall call, ScalarType parameters)
        where TCall : struct, IKernelCall
        where T : unmanaged
    {
        switch (parameters)
        {
            case ScalarType.Float32:
                call.Run<T, float>();
                break;
            case ScalarType.Float64:
                call.Run<T, double>();
                break;
            default:
                call.Run<T, T>();
                break;
        }
    }

    private readonly struct ForwardCall(
        Tensor input, Tensor output, PlaneLayout plane, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar,
        bool useBatchStatistics, double momentum, double eps, Tensor? saveMean, Tensor? saveInvstd, BlockTailTensors? tail, SplitBatch? split) : IKernelCall
    {
        public void Run<T, TParam>()
            where T : unmanaged
            where TParam : unmanaged =>
            Forward<T, TParam>(input, output, plane, weight, bias, runningMean, runningVar, useBatchStatistics, momentum, eps, saveMean, saveInvstd, tail, split);
    }

    private readonly struct BackwardCall(
        Tensor gradOutput, bool gradOutputPlanar, Tensor input, Tensor gradInput, PlaneLayout plane, Tensor? weight, Tensor saveMean,
        Tensor saveInvstd, bool useBatchStatistics, Tensor gradWeight, Tensor gradBias, BlockTailTensors? tail, Tensor? rectified, SplitBatch? split) : IKernelCall
    {
        public void Run<T, TParam>()
            where T : unmanaged
            where TParam : unmanaged =>
            Backward<T, TParam>(gradOutput, gradOutputPlanar, input, gradInput, plane, weight, saveMean, saveInvstd, useBatchStatistics, gradWeight, gradBias, tail, rectified, split);
    }

    /// <summary>A tensor that may be a temporary copy of another: disposed only if it is not the original.</summary>
    private readonly struct Borrowed(Tensor tensor, Tensor original) : IDisposable
    {
        public Tensor Tensor { get; } = tensor;

        public void Dispose()
        {
            if (!ReferenceEquals(Tensor, original))
            {
                Tensor.Dispose();
            }
        }
    }
}
