using System;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// What every MyTorch.Layers channel dropout layer shares: the drop probability, in-place writing and the generator,
/// with TorchSharp's names and defaults. In training each channel is zeroed with probability <see cref="p"/> and the
/// others are scaled by 1/(1 − p), the mask drawn exactly as TorchSharp draws it. (TorchSharp's own dropout modules are
/// sealed, so these are modules of their own.)
/// </summary>
public abstract class DropoutBase : nn.Module<Tensor, Tensor>
{
    private double _p;

    private protected DropoutBase(double p, bool inplace, Generator? generator, string name)
        : base(name)
    {
        Dropout2dFunctional.CheckProbability(p);
        _p = p;
        this.inplace = inplace;
        this.generator = generator;
    }

    /// <summary>Probability of zeroing a channel, in [0, 1].</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set outside [0, 1] or to NaN (PyTorch's message).</exception>
    public double p
    {
        get => _p;
        set
        {
            Dropout2dFunctional.CheckProbability(value);
            _p = value;
        }
    }

    /// <summary>Whether the forward writes into its input and returns it.</summary>
    public bool inplace { get; set; }

    /// <summary>Where the Bernoulli draws come from; <see langword="null"/> for TorchSharp's default CPU generator. Not owned.</summary>
    public Generator? generator { get; set; }
}
