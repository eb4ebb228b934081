using System;
using MyTorch.Layers.Kernels;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The tensors of a block's ReLU and dropout for batch normalisation's kernels (see <see cref="BlockTail"/>): the N·C
/// channel factors (or none) and whether the ReLU is applied; for the backward, the bias with which the ReLU's input is
/// recomputed from x, or the ReLU's output itself (<paramref name="Rectified"/>) where the statistics were fixed; for a
/// forward, <paramref name="Draw"/> if the mask is yet to be drawn.
/// </summary>
internal sealed record BlockTailTensors(Tensor? Mask, bool Rectify, Tensor? Bias = null, Tensor? Rectified = null, MaskDraw? Draw = null);

/// <summary>
/// A block's mask, allocated but not drawn, for its forward to draw as <see cref="Dropout2dFunctional"/> would have
/// drawn it before the forward: Bernoulli(<paramref name="Keep"/>) from <paramref name="Generator"/> (TorchSharp's
/// default when null), then divided by keep. The forward draws it while it sums the batch statistics.
/// </summary>
internal sealed record MaskDraw(double Keep, Generator? Generator);

/// <summary>
/// What a BatchNorm2d → ReLU → Dropout2d block adds to batch normalisation's functional layer: its dtype check, and the
/// gradient its ReLU and dropout hand back as a tensor of its own, which the graph of a second-order gradient needs. The
/// forward and backward themselves run in <see cref="BatchNormFunctional"/>'s kernels, given a <see cref="BlockTailTensors"/>.
/// </summary>
internal static class BatchNormBlockFunctional
{
    /// <summary>The block takes float32 and float64: refuses any other dtype, naming it.</summary>
    public static void CheckDtype(Tensor input, string layer)
    {
        if (input.dtype is not (ScalarType.Float32 or ScalarType.Float64))
        {
            throw new ArgumentException(
                $"'input' has dtype {input.dtype}; {layer} takes Float32 or Float64 (for 16-bit input use BatchNorm2d, ReLU and Dropout2d).", nameof(input));
        }
    }

    /// <summary>
    /// The gradient of batch normalisation's output, from the block's output gradient dy: dy · mask, zero where the ReLU's
    /// output was ≤ 0. The ReLU's input is recomputed from <paramref name="source"/> as batch normalisation computed it
    /// with batch statistics, from the float64 <paramref name="mean"/> and <paramref name="invstd"/> and the affine
    /// parameters; or, when <paramref name="mean"/> is null, <paramref name="source"/> is the ReLU's output itself.
    /// Returns a new tensor in <paramref name="source"/>'s layout (<paramref name="gradOutput"/> itself when there is
    /// neither a ReLU nor a mask).
    /// </summary>
    public static Tensor Gradient(
        Tensor gradOutput, Tensor source, long[] shape, Tensor? mean, Tensor? invstd, Tensor? weight, Tensor? bias, Tensor? mask, bool rectify)
    {
        if (!rectify && mask is null)
        {
            return gradOutput;
        }

        using var scope = NewDisposeScope();
        var a = Layouts.ReadablePlanes(source, shape, out var layout);
        var dy = Layouts.PlanesInLayout(gradOutput, shape, layout);
        var gradient = Layouts.EmptyPlanes(shape, source.dtype, layout);
        var plane = Layouts.Plane(shape, layout);
        int channels = plane.Channels;
        double[] constants = new double[3 * channels];
        var offset = constants.AsSpan(0, channels);
        var scale = constants.AsSpan(channels, channels);
        var shift = constants.AsSpan(2 * channels, channels);
        if (rectify && mean is not null && invstd is not null)
        {
            // As BatchNormKernels.NormalizeVectorized forms them, so that y is recomputed bit for bit.
            ReadOnlySpan<double> mu = TensorMemory.Vector<double>(mean);
            ReadOnlySpan<double> istd = TensorMemory.Vector<double>(invstd);
            for (int c = 0; c < channels; c++)
            {
                offset[c] = mu[c];
                scale[c] = istd[c] * (weight is null ? 1.0 : Value(weight, c));
                shift[c] = bias is null ? 0.0 : Value(bias, c);
            }
        }
        else
        {
            scale.Fill(1.0);
        }

        if (source.dtype == ScalarType.Float32)
        {
            BlockKernels.GradientVectorized(
                TensorMemory.Span<float>(a, plane), TensorMemory.Span<float>(dy, plane), TensorMemory.Span<float>(gradient, plane), plane, offset, scale, shift, TensorMemory.Vector<float>(mask), rectify, KernelThreads.Count);
        }
        else
        {
            BlockKernels.GradientVectorized(
                TensorMemory.Span<double>(a, plane), TensorMemory.Span<double>(dy, plane), TensorMemory.Span<double>(gradient, plane), plane, offset, scale, shift, TensorMemory.Vector<double>(mask), rectify, KernelThreads.Count);
        }

        return gradient.MoveToOuterDisposeScope();
    }

    /// <summary>Element <paramref name="c"/> of a float32 or float64 per-channel tensor, as a double.</summary>
    private static double Value(Tensor perChannel, int c) =>
        perChannel.dtype == ScalarType.Float32 ? TensorMemory.Vector<float>(perChannel)[c] : TensorMemory.Vector<double>(perChannel)[c];
}
