using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The explicit forward and backward of 2-d batch normalisation: <see cref="BatchNormFunctional"/>'s, for 4-D
/// (N, C, H, W) input only, as <see cref="BatchNorm2d"/> takes it.
/// </summary>
public static class BatchNorm2dFunctional
{
    /// <summary>
    /// <see cref="BatchNormFunctional.Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)"/> on a
    /// 4-D input.
    /// </summary>
    /// <param name="input">(N, C, H, W), float32 or float64, on the CPU, in any memory layout.</param>
    /// <param name="weight">γ, C elements of the input's dtype, or <see langword="null"/> for none.</param>
    /// <param name="bias">β, C elements of the input's dtype, or <see langword="null"/> for none.</param>
    /// <param name="runningMean">Running mean, C elements, updated in place in training; or null, with <paramref name="runningVar"/>, for none.</param>
    /// <param name="runningVar">Running variance, C elements, updated in place in training; or null, with <paramref name="runningMean"/>, for none.</param>
    /// <param name="training">Use (and track) batch statistics rather than the running ones.</param>
    /// <param name="momentum">Weight of the new batch in the running statistics.</param>
    /// <param name="eps">Added to the variance before the square root; not negative.</param>
    /// <returns>The output in the input's memory layout, and the per-channel mean and 1/sqrt(var + eps) that were used.</returns>
    /// <exception cref="ArgumentNullException">A required tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// The input is not 4-D; a dtype is not float32/float64 or differs between tensors; a per-channel tensor does not
    /// have C elements; only one of the running statistics is given; one value per channel when batch statistics are used.
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
        => BatchNormFunctional.Forward(input, weight, bias, runningMean, runningVar, training, momentum, eps, BatchNormRanks.Two);

    /// <summary>
    /// <see cref="BatchNormFunctional.Backward(Tensor, Tensor, Tensor?, Tensor, Tensor, bool)"/> on a 4-D input.
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
    /// <exception cref="ArgumentException">Shapes or dtypes do not match the input, or the input is not 4-D.</exception>
    /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static (Tensor GradInput, Tensor GradWeight, Tensor GradBias) Backward(
        Tensor gradOutput,
        Tensor input,
        Tensor? weight,
        Tensor saveMean,
        Tensor saveInvstd,
        bool training)
        => BatchNormFunctional.Backward(gradOutput, input, weight, saveMean, saveInvstd, training, statisticsInDouble: false, BatchNormRanks.Two);
}
