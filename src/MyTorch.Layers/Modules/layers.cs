using System;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

// Lower-case on purpose, as TorchSharp's torch, nn and functional are: user code reads the same with either library.
#pragma warning disable CS8981

/// <summary>
/// Factories and functional forms in TorchSharp's style: where a model says <c>nn.BatchNorm2d(64)</c> or
/// <c>nn.functional.dropout2d(x, 0.2, training)</c>, it can say <c>layers.BatchNorm2d(64)</c> or
/// <c>layers.functional.dropout2d(x, 0.2, training)</c> with the same arguments and get MyTorch.Layers' kernels.
/// </summary>
/// <remarks>
/// The class is not called <c>nn</c>, so that <c>using static TorchSharp.torch;</c> and
/// <c>using static MyTorch.Layers.layers;</c> can sit in the same file: <c>nn.Conv2d(...)</c> stays TorchSharp's and
/// <c>BatchNorm2d(...)</c> is ours.
/// </remarks>
public static partial class layers
{
    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.BatchNorm2d"/>, with the parameters, order and defaults of TorchSharp's
    /// <c>torch.nn.BatchNorm2d</c> (momentum may be null for a cumulative average, as in PyTorch).
    /// </summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel weight (ones) and bias (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default), Float64, BFloat16 or Float16. A float32 module also takes bfloat16 and float16 input.</param>
    /// <returns>A new module in training mode.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="num_features"/> is below 1, or <paramref name="eps"/> is negative or NaN.</exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not Float32, Float64, BFloat16 or Float16.</exception>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public static BatchNorm2d BatchNorm2d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null) =>
        new(num_features, eps, momentum, affine, track_running_stats, device, dtype);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.BatchNorm1d"/> for (N, C) or (N, C, L) input, with the parameters, order and
    /// defaults of TorchSharp's <c>torch.nn.BatchNorm1d</c> (momentum may be null for a cumulative average).
    /// </summary>
    /// <inheritdoc cref="BatchNorm2d(long, double, double?, bool, bool, Device?, ScalarType?)"/>
    public static BatchNorm1d BatchNorm1d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null) =>
        new(num_features, eps, momentum, affine, track_running_stats, device, dtype);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.BatchNorm3d"/> for (N, C, D, H, W) input, with the parameters, order and
    /// defaults of TorchSharp's <c>torch.nn.BatchNorm3d</c> (momentum may be null for a cumulative average).
    /// </summary>
    /// <inheritdoc cref="BatchNorm2d(long, double, double?, bool, bool, Device?, ScalarType?)"/>
    public static BatchNorm3d BatchNorm3d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null) =>
        new(num_features, eps, momentum, affine, track_running_stats, device, dtype);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.BatchNormReLUDropout2d"/>: BatchNorm2d, then ReLU, then Dropout2d as one layer,
    /// with BatchNorm2d's parameters, order and defaults, then whether to apply the ReLU and the dropout's probability.
    /// </summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel weight (ones) and bias (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="relu">Whether the ReLU is applied.</param>
    /// <param name="p">Dropout2d's probability of zeroing a channel, in [0, 1]; 0 for no dropout.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default) or Float64.</param>
    /// <returns>A new module in training mode.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="num_features"/> is below 1, <paramref name="eps"/> is negative or NaN, or <paramref name="p"/> is outside [0, 1] or NaN.</exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not Float32 or Float64.</exception>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public static BatchNormReLUDropout2d BatchNormReLUDropout2d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        bool relu = true,
        double p = 0.5,
        Device? device = null,
        ScalarType? dtype = null) =>
        new(num_features, eps, momentum, affine, track_running_stats, relu, p, null, device, dtype);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.Dropout2d"/>, with the parameters and defaults of TorchSharp's
    /// <c>torch.nn.Dropout2d</c>; the mask comes from TorchSharp's default CPU generator.
    /// </summary>
    /// <param name="p">Probability of zeroing a channel, in [0, 1].</param>
    /// <param name="inplace">Write the output into the input's memory and return the input.</param>
    /// <returns>A new module in training mode.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="p"/> is outside [0, 1] or NaN (PyTorch's message).</exception>
    public static Dropout2d Dropout2d(double p = 0.5, bool inplace = false) => new(p, inplace);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.Dropout1d"/> for (N, C, L) or (C, L) input, with the parameters and defaults of
    /// TorchSharp's <c>torch.nn.Dropout1d</c>; the mask comes from TorchSharp's default CPU generator.
    /// </summary>
    /// <inheritdoc cref="Dropout2d(double, bool)"/>
    public static Dropout1d Dropout1d(double p = 0.5, bool inplace = false) => new(p, inplace);

    /// <summary>
    /// Creates a <see cref="MyTorch.Layers.Dropout3d"/> for (N, C, D, H, W) or (C, D, H, W) input, with the parameters and
    /// defaults of TorchSharp's <c>torch.nn.Dropout3d</c>; the mask comes from TorchSharp's default CPU generator.
    /// </summary>
    /// <inheritdoc cref="Dropout2d(double, bool)"/>
    public static Dropout3d Dropout3d(double p = 0.5, bool inplace = false) => new(p, inplace);

    /// <summary>
    /// The functional forms, with the names, parameters, order and defaults of TorchSharp's
    /// <c>torch.nn.functional.batch_norm</c> and <c>torch.nn.functional.dropout2d</c>. They build an autograd graph
    /// through the same nodes as the modules, so <c>backward</c> runs MyTorch.Layers' backward kernels.
    /// </summary>
    public static class functional
    {
        /// <summary>
        /// Batch normalisation of an input (N, C, …) of rank 2 or more, per channel over every other dimension:
        /// y = (x − μ) / sqrt(σ² + eps) · weight + bias.
        /// With <paramref name="training"/> (or without running statistics), μ and σ² are the batch mean and biased
        /// variance, and the running statistics, when given, are updated in place:
        /// running = (1 − momentum) · running + momentum · batch, with the unbiased variance.
        /// Otherwise the running statistics are used and nothing is updated.
        /// Differentiable with respect to <paramref name="input"/>, <paramref name="weight"/> and <paramref name="bias"/>.
        /// </summary>
        /// <param name="input">(N, C, …) of rank 2 or more, float32, float64, bfloat16 or float16, on the CPU, in any memory layout.</param>
        /// <param name="running_mean">Running mean, C elements of the input's dtype (or float32 or float64 for a 16-bit input); or null, with <paramref name="running_var"/>, for none.</param>
        /// <param name="running_var">Running variance, C elements of the running mean's dtype; or null, with <paramref name="running_mean"/>, for none.</param>
        /// <param name="weight">γ, C elements, or null for none.</param>
        /// <param name="bias">β, C elements, or null for none.</param>
        /// <param name="training">Use (and track) batch statistics rather than the running ones.</param>
        /// <param name="momentum">Weight of the batch in the running statistics.</param>
        /// <param name="eps">Added to the variance before the square root; not negative.</param>
        /// <returns>The normalised tensor, in the input's memory layout (other strides than contiguous or channels-last give a contiguous one).</returns>
        /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
        /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
        /// <exception cref="ArgumentException">
        /// The input has fewer than 2 dimensions; a dtype is not one the kernels take or differs from the input's (a 16-bit input takes per-channel tensors of float32 or float64 too); a per-channel tensor does
        /// not have C elements; only one of the running statistics is given; one value per channel when batch statistics
        /// are used. Nothing is changed.
        /// </exception>
        /// <exception cref="ArgumentOutOfRangeException"><paramref name="eps"/> is negative or NaN. Nothing is changed.</exception>
        /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements. Nothing is changed.</exception>
        public static Tensor batch_norm(
            Tensor input,
            Tensor? running_mean,
            Tensor? running_var,
            Tensor? weight = null,
            Tensor? bias = null,
            bool training = false,
            double momentum = 0.1,
            double eps = 1e-05)
        {
            long[] shape = BatchNormFunctional.CheckForward(input, BatchNormRanks.Any, weight, bias, running_mean, running_var, training, eps);
            return BatchNormAutograd.Forward(input, shape, weight, bias, running_mean, running_var, training, momentum, eps);
        }

        /// <summary>
        /// Channel dropout: in training, each channel (n, c) is zeroed with probability <paramref name="p"/> and the
        /// others are scaled by 1/(1 − p), the mask drawn from TorchSharp's default CPU generator exactly as
        /// TorchSharp's <c>dropout2d</c> draws it (so the same <c>torch.manual_seed</c> gives the same result, bit for bit).
        /// A 3-D input (C, H, W) is one sample. Differentiable: dx = dy · mask.
        /// </summary>
        /// <param name="input">(N, C, H, W) or (C, H, W), float32, float64, bfloat16 or float16, on the CPU; any memory layout.</param>
        /// <param name="p">Probability of zeroing a channel, in [0, 1].</param>
        /// <param name="training">Drop channels; when false the input is returned (under a new handle).</param>
        /// <param name="inplace">Write the output into the input's memory and return it.</param>
        /// <returns>
        /// A new tensor in the input's memory layout; or, when nothing is dropped or with <paramref name="inplace"/>,
        /// the input's own tensor under a new handle, as TorchSharp returns it.
        /// </returns>
        /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
        /// <exception cref="ObjectDisposedException"><paramref name="input"/> has been disposed.</exception>
        /// <exception cref="ArgumentOutOfRangeException"><paramref name="p"/> is outside [0, 1] or NaN (PyTorch's message).</exception>
        /// <exception cref="ArgumentException">
        /// The input is not 3-D or 4-D or not float32, float64, bfloat16 or float16; or, in place in training, its elements share memory or
        /// libtorch does not allow an in-place operation on it (a leaf that requires grad, with libtorch's message).
        /// Nothing is written and nothing is drawn.
        /// </exception>
        /// <exception cref="NotSupportedException">The input is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
        public static Tensor dropout2d(Tensor input, double p = 0.5, bool training = true, bool inplace = false)
        {
            Check.Alive(input, nameof(input));
            Dropout2dFunctional.CheckProbability(p);
            return ChannelDropoutAutograd.Forward(input, p, training, inplace, generator: null);
        }

        /// <summary>
        /// Channel dropout of a 3-D input (N, C, L), or a 2-D input (C, L) as one sample, as
        /// <see cref="dropout2d"/> does for 4-D input: each channel zeroed with probability <paramref name="p"/>, the
        /// others scaled by 1/(1 − p), the mask bit for bit TorchSharp's <c>dropout1d</c>'s under the same seed.
        /// </summary>
        /// <inheritdoc cref="dropout2d(Tensor, double, bool, bool)"/>
        /// <param name="input">(N, C, L) or (C, L), float32, float64, bfloat16 or float16, on the CPU; any memory layout.</param>
        /// <param name="p">Probability of zeroing a channel, in [0, 1].</param>
        /// <param name="training">Drop channels; when false the input is returned (under a new handle).</param>
        /// <param name="inplace">Write the output into the input's memory and return it.</param>
        public static Tensor dropout1d(Tensor input, double p = 0.5, bool training = true, bool inplace = false)
        {
            Check.Alive(input, nameof(input));
            Dropout2dFunctional.CheckProbability(p);
            return ChannelDropoutAutograd.Forward(input, DropoutRanks.One, p, training, inplace, generator: null);
        }

        /// <summary>
        /// Channel dropout of a 5-D input (N, C, D, H, W), or a 4-D input (C, D, H, W) as one sample, as
        /// <see cref="dropout2d"/> does for 4-D input: each channel zeroed with probability <paramref name="p"/>, the
        /// others scaled by 1/(1 − p), the mask bit for bit TorchSharp's <c>dropout3d</c>'s under the same seed.
        /// </summary>
        /// <inheritdoc cref="dropout2d(Tensor, double, bool, bool)"/>
        /// <param name="input">(N, C, D, H, W) or (C, D, H, W), float32, float64, bfloat16 or float16, on the CPU; any memory layout.</param>
        /// <param name="p">Probability of zeroing a channel, in [0, 1].</param>
        /// <param name="training">Drop channels; when false the input is returned (under a new handle).</param>
        /// <param name="inplace">Write the output into the input's memory and return it.</param>
        public static Tensor dropout3d(Tensor input, double p = 0.5, bool training = true, bool inplace = false)
        {
            Check.Alive(input, nameof(input));
            Dropout2dFunctional.CheckProbability(p);
            return ChannelDropoutAutograd.Forward(input, DropoutRanks.Three, p, training, inplace, generator: null);
        }
    }
}
#pragma warning restore CS8981
