using System;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Channel dropout over a 3-D input (N, C, L) or a 2-D input (C, L), a drop-in for TorchSharp's <c>torch.nn.Dropout1d</c> whose forward and backward run
/// MyTorch.Layers' kernels: in training each channel (n, c) is zeroed with probability <see cref="DropoutBase.p"/> and
/// the others are scaled by 1/(1 − p), y = x · mask[n, c], products in the input's dtype.
/// </summary>
/// <remarks>
/// The input is read as <see cref="Dropout2d"/>'s planes, the same memory and the same N·C channels, so the mask is the
/// one TorchSharp draws under the same seed, bit for bit, and the generator ends where TorchSharp's leaves it. A 2-D input (C, L) is one sample, as PyTorch reads it (TorchSharp 0.107 refuses it): its mask is the one drawn for (1, C, L).
/// In evaluation, with p = 0 and for an empty input the input itself is returned, under a new handle.
/// </remarks>
public sealed class Dropout1d : DropoutBase
{
    /// <inheritdoc cref="Dropout2d(double, bool, Generator?)"/>
    public Dropout1d(double p = 0.5, bool inplace = false, Generator? generator = null)
        : base(p, inplace, generator, nameof(Dropout1d))
    {
    }

    /// <summary>
    /// In training, drops whole channels of <paramref name="input"/> and scales the others by 1/(1 − p); otherwise
    /// returns the input. Differentiable: dx = dy · mask, and a gradient taken with <c>create_graph: true</c> can be
    /// differentiated again.
    /// </summary>
    /// <param name="input">(N, C, L) or (C, L), float32, float64, bfloat16 or float16, on the CPU; any memory layout.</param>
    /// <returns>A new tensor of the input's shape and layout; or the input's own tensor under a new handle in evaluation, with p = 0, for an empty input, or in place.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="input"/> has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// The input's rank is not one of the two, or its dtype is not float32, float64, bfloat16 or float16; in place, the refusals of
    /// <see cref="Dropout2d.forward"/>, or strides that cannot be viewed as planes. Nothing is written and nothing is drawn.
    /// </exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public override Tensor forward(Tensor input) => ChannelDropoutAutograd.Forward(input, DropoutRanks.One, p, training, inplace, generator);
}
