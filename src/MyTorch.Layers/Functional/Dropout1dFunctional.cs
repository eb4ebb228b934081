using System;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The explicit forward and backward of 1-d (channel) dropout, for people who drive the layer by hand:
/// <see cref="Dropout2dFunctional"/>'s, for (N, C, L) input, or (C, L) as one sample, as <see cref="Dropout1d"/> takes it.
/// No autograd graph is built.
/// </summary>
/// <remarks>
/// The input is read as Dropout2d's planes, (N, C, L) as (N, C, 1, L): the same memory and the same N·C mask draws, so
/// after the same <c>torch.manual_seed(s)</c> the result is bit for bit TorchSharp's <c>nn.functional.dropout1d</c>,
/// and the generator ends in the same state. A 2-D input (C, L) is one sample, as PyTorch reads it (TorchSharp 0.107
/// refuses it): its mask is the one drawn for (1, C, L). How the mask is drawn: <see cref="Dropout2dFunctional"/>.
/// </remarks>
public static class Dropout1dFunctional
{
    /// <summary>
    /// Zeroes each channel (n, c) of the input with probability <paramref name="p"/> and scales the others by 1/(1 − p):
    /// output = input · mask, mask[n, c] = 0 for a dropped channel and T(1) / T(1 − p) for a kept one, both products
    /// taken in the input's dtype T. A 2-D input (C, L) is one sample: whole rows of L values are dropped.
    /// p = 1 gives input · 0 (NaN and ±∞ become NaN, negative values −0.0) and draws nothing, as libtorch does.
    /// Not training, p = 0 or an empty input: nothing is drawn or computed and the output is the input itself.
    /// </summary>
    /// <param name="input">(N, C, L) or (C, L), float32, float64, bfloat16 or float16, on the CPU, in any memory layout.</param>
    /// <param name="p">Probability of dropping a channel, in [0, 1].</param>
    /// <param name="training">Drop channels; when false the input is returned as it is.</param>
    /// <param name="inplace">Write the output into <paramref name="input"/>'s memory.</param>
    /// <param name="generator">Where the Bernoulli draws come from; <see langword="null"/> for TorchSharp's default CPU generator.</param>
    /// <returns>
    /// The output and the mask. The output is in the input's memory layout ((N, C, L) or (N, L, C) in memory; other
    /// strides give a contiguous output). When nothing is dropped, or with <paramref name="inplace"/>, it is the input's
    /// own tensor under a new handle, as TorchSharp returns it. The mask has shape (N, C, 1), or (C, 1) for a 2-D input,
    /// and the input's dtype, so that output = input · mask broadcasts; it is all ones when nothing is dropped and all
    /// zeros when p = 1.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="input"/> has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="p"/> is outside [0, 1] or NaN: "dropout probability has to be between 0 and 1, but got 1.5", PyTorch's text.
    /// </exception>
    /// <exception cref="ArgumentException">
    /// The input is not 2-D or 3-D ("Dropout1d expects a 2-D (C, L) or 3-D (N, C, L) input, got …"), or not
    /// float32/float64; or, with <paramref name="inplace"/>, several of its elements share memory (an expanded tensor),
    /// or it requires grad while grad mode is on (a leaf gets libtorch's message). Nothing is written or drawn.
    /// </exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static (Tensor Output, Tensor Mask) Forward(
        Tensor input,
        double p = 0.5,
        bool training = true,
        bool inplace = false,
        Generator? generator = null)
        => Dropout2dFunctional.Forward(input, p, training, inplace, generator, DropoutRanks.One);

    /// <summary>
    /// Gradient of <see cref="Forward"/> with respect to its input: gradInput = gradOutput · mask, per channel, in the
    /// dtype of both (what libtorch's MulBackward computes, so the result is bit for bit libtorch's).
    /// </summary>
    /// <param name="gradOutput">dy, (N, C, L) or (C, L), float32, float64, bfloat16 or float16, on the CPU, any memory layout.</param>
    /// <param name="mask">The mask <see cref="Forward"/> returned: (N, C, 1), or (C, 1) for 2-D, contiguous, dy's dtype.</param>
    /// <returns>dx, a new tensor in gradOutput's memory layout ((N, C, L) or (N, L, C) in memory; other strides give a contiguous one).</returns>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// <paramref name="gradOutput"/> is not 2-D or 3-D or not float32, float64, bfloat16 or float16; the mask's dtype differs from it, its
    /// shape is not the one above, or it is not contiguous.
    /// </exception>
    /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static Tensor Backward(Tensor gradOutput, Tensor mask) => Dropout2dFunctional.Backward(gradOutput, mask, DropoutRanks.One);
}
