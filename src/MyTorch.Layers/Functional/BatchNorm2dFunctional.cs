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
    /// <inheritdoc cref="BatchNormFunctional.Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)" path="/param"/>
    /// <inheritdoc cref="BatchNormFunctional.Forward(Tensor, Tensor?, Tensor?, Tensor?, Tensor?, bool, double, double)" path="/returns"/>
    /// <exception cref="ArgumentNullException">A required tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// The input is not 4-D; a dtype is not one the kernels take or differs between tensors (beyond mixed precision); a per-channel tensor does not
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
    /// <inheritdoc cref="BatchNormFunctional.Backward(Tensor, Tensor, Tensor?, Tensor, Tensor, bool)" path="/param"/>
    /// <inheritdoc cref="BatchNormFunctional.Backward(Tensor, Tensor, Tensor?, Tensor, Tensor, bool)" path="/returns"/>
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
