using System;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Channel dropout over a 4-D input (N, C, H, W) or a 3-D input (C, H, W), a drop-in for TorchSharp's
/// <c>torch.nn.Dropout2d</c> whose forward and backward run MyTorch.Layers' own kernels. In training each channel
/// (n, c) is zeroed with probability <see cref="DropoutBase.p"/> and the others are scaled by 1/(1 − p):
/// y = x · mask[n, c], mask[n, c] = 0 or T(1) / T(1 − p), products in the input's dtype T.
/// </summary>
/// <remarks>
/// The mask is drawn as libtorch draws it (<c>bernoulli_(1 − p)</c> over N·C elements of the input's dtype), from
/// <see cref="DropoutBase.generator"/> or TorchSharp's default CPU generator, by MyTorch.Layers' own kernel from the generator's state
/// (see <see cref="Functional.Dropout2dFunctional"/>), so after the same <c>torch.manual_seed(s)</c> outputs, gradients
/// and the generator's state afterwards are bit for bit those of TorchSharp's <c>nn.Dropout2d</c>. A 3-D input is one sample, as in TorchSharp
/// (Python PyTorch would read it as (N, C, L)). In evaluation, with p = 0 and for an empty input the input itself is
/// returned, under a new handle; p = 1 gives x · 0 (NaN and ±∞ become NaN, negative values −0.0).
/// One instance is not safe to use from several threads at once.
/// </remarks>
public sealed class Dropout2d : DropoutBase
{
    /// <summary>
    /// Creates the module with TorchSharp's parameter names and defaults.
    /// </summary>
    /// <param name="p">Probability of zeroing a channel, in [0, 1].</param>
    /// <param name="inplace">Write the output into the input's memory and return the input.</param>
    /// <param name="generator">
    /// Where the Bernoulli draws come from; <see langword="null"/> (the default) for TorchSharp's default CPU generator.
    /// The module does not own it.
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="p"/> is outside [0, 1] or NaN, with PyTorch's message "dropout probability has to be between 0 and 1,
    /// but got 1.5". (TorchSharp's factory accepts it and fails at the first forward.)
    /// </exception>
    public Dropout2d(double p = 0.5, bool inplace = false, Generator? generator = null)
        : base(p, inplace, generator, nameof(Dropout2d))
    {
    }

    /// <summary>
    /// In training, drops whole channels of <paramref name="input"/> and scales the others by 1/(1 − <see cref="DropoutBase.p"/>);
    /// otherwise returns the input. Differentiable: <c>backward</c> fills the input's gradient, dx = dy · mask, from
    /// MyTorch.Layers' backward kernel.
    /// </summary>
    /// <param name="input">(N, C, H, W) or (C, H, W), float32, float64, bfloat16 or float16, on the CPU; any memory layout.</param>
    /// <returns>
    /// A new tensor in the input's memory layout (contiguous or channels-last; other strides give a contiguous one);
    /// or, in evaluation, with p = 0, for an empty input, or with <see cref="DropoutBase.inplace"/>, the input's own tensor under a
    /// new handle, as TorchSharp returns it (disposing it does not dispose <paramref name="input"/>).
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="input"/> has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// The input is not 3-D or 4-D (TorchSharp accepts other ranks, which PyTorch has deprecated), or its dtype is not
    /// float32/float64. With <see cref="DropoutBase.inplace"/> in training: several of the input's elements share memory (an expanded
    /// tensor), or, with grad mode on, the input is a leaf that requires grad or a view that libtorch does not let an
    /// in-place operation change (a view of such a leaf, a view made in no-grad mode, an output of a multi-output view
    /// function), with libtorch's messages. Nothing is written and nothing is drawn from the generator.
    /// </exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public override Tensor forward(Tensor input) => ChannelDropoutAutograd.Forward(input, p, training, inplace, generator);
}
