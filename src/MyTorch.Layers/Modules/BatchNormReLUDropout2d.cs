using System;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// BatchNorm2d, then ReLU, then Dropout2d, as one layer: y = Dropout2d(ReLU(BatchNorm2d(x))), ReLU and Dropout2d each
/// optional, computed with one pass fewer over memory than the three layers take forward and backward, and bit for bit
/// what <see cref="BatchNorm2d"/>, TorchSharp's <c>nn.ReLU</c> and <see cref="Dropout2d"/> give one after another under
/// the same seed: the output, every gradient, the running statistics, <c>num_batches_tracked</c> and the generator's state.
/// </summary>
/// <remarks>
/// It is a batch normalisation layer (<see cref="BatchNormBase"/>) with the parameters, buffers and <c>state_dict</c>
/// keys of <see cref="BatchNorm2d"/>, so a model saved with a BatchNorm2d in its place loads into it and the other way
/// round; <c>layers.fuse_modules</c> puts one in a model's BatchNorm2d's place. ReLU keeps −0.0 and NaN as they are,
/// as libtorch's does. In evaluation the dropout is off; the ReLU stays. Inputs are float32 or float64: for bfloat16 or
/// float16 input use the three layers. One instance is not safe to use from several threads at once.
/// </remarks>
public sealed class BatchNormReLUDropout2d : BatchNormBase
{
    private double _p;

    /// <summary>Creates the block with BatchNorm2d's parameter names, order and defaults, then the ReLU's and the dropout's.</summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel weight (ones) and bias (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="relu">Whether the ReLU is applied.</param>
    /// <param name="p">Dropout2d's probability of zeroing a channel, in [0, 1]; 0 for no dropout.</param>
    /// <param name="generator">Where the dropout's draws come from; null for TorchSharp's default CPU generator. Not owned.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default) or Float64.</param>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="num_features"/> is below 1, <paramref name="eps"/> is negative or NaN, or <paramref name="p"/> is
    /// outside [0, 1] or NaN.
    /// </exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not Float32 or Float64.</exception>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public BatchNormReLUDropout2d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        bool relu = true,
        double p = 0.5,
        Generator? generator = null,
        Device? device = null,
        ScalarType? dtype = null)
        : base(num_features, eps, momentum, affine, track_running_stats, device, Checked(p, dtype), nameof(BatchNormReLUDropout2d))
    {
        _p = p;
        this.relu = relu;
        this.generator = generator;
    }

    /// <summary>Whether the ReLU is applied.</summary>
    public bool relu { get; set; }

    /// <summary>Dropout2d's probability of zeroing a channel in training, in [0, 1]; 0 for no dropout.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set outside [0, 1] or to NaN.</exception>
    public double p
    {
        get => _p;
        set
        {
            Dropout2dFunctional.CheckProbability(value);
            _p = value;
        }
    }

    /// <summary>Where the dropout's draws come from; <see langword="null"/> for TorchSharp's default CPU generator. Not owned.</summary>
    public Generator? generator { get; set; }

    /// <summary>(N, C, H, W).</summary>
    private protected override BatchNormRanks Ranks => BatchNormRanks.Two;

    /// <summary>
    /// A block that shares <paramref name="norm"/>'s parameters and buffers (the same tensors, so an optimizer holding
    /// them keeps training them) and copies its settings and training mode.
    /// </summary>
    internal static BatchNormReLUDropout2d Sharing(TorchSharp.Modules.BatchNorm norm, bool relu, double p, Generator? generator)
    {
        var source = norm.weight ?? norm.running_mean;
        var block = new BatchNormReLUDropout2d(
            norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats, relu, p, generator, dtype: source?.dtype);
        block.ShareStateOf(norm);
        return block;
    }

    /// <inheritdoc/>
    private protected override void CheckInput(Tensor input) => BatchNormBlockFunctional.CheckDtype(input, nameof(BatchNormReLUDropout2d));

    /// <inheritdoc/>
    private protected override Tensor Run(Tensor input, long[] shape, Tensor? weight, double momentum) =>
        BatchNormBlockAutograd.Forward(
            input, weight, bias, new BatchNormBlockCall(new BatchNormCall(shape, running_mean, running_var, training, momentum, eps), relu, training ? p : 0, generator));

    /// <summary>The constructor's checks of its own arguments, before batch normalisation's; returns the dtype.</summary>
    private static ScalarType? Checked(double p, ScalarType? dtype)
    {
        Dropout2dFunctional.CheckProbability(p);
        if (dtype is ScalarType.BFloat16 or ScalarType.Float16)
        {
            throw new ArgumentException($"dtype must be Float32 or Float64, got {dtype}; for 16-bit use BatchNorm2d, ReLU and Dropout2d.", nameof(dtype));
        }

        return dtype;
    }
}
