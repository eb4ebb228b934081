using System;
using System.Collections.Generic;
using MyTorch.Layers.Functional;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Batch normalisation over a 4-D input (N, C, H, W), a drop-in for TorchSharp's <c>torch.nn.BatchNorm2d</c>
/// whose forward and backward run MyTorch.Layers' own kernels:
/// y = (x − E[x]) / sqrt(Var[x] + eps) · weight + bias, per channel.
/// </summary>
/// <remarks>
/// In training the batch statistics are used (the biased variance) and, with <see cref="track_running_stats"/>,
/// <see cref="running_mean"/> and <see cref="running_var"/> follow them with <see cref="momentum"/> (the unbiased
/// variance), or with a cumulative average when <see cref="momentum"/> is null. In evaluation the running statistics
/// are used, unless there are none. One instance is not safe to use from several threads at once.
/// </remarks>
public sealed class BatchNorm2d : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = nameof(weight))]
    private Parameter? _weight;

    [ComponentName(Name = nameof(bias))]
    private Parameter? _bias;

    [ComponentName(Name = nameof(running_mean))]
    private Tensor? _running_mean;

    [ComponentName(Name = nameof(running_var))]
    private Tensor? _running_var;

    [ComponentName(Name = nameof(num_batches_tracked))]
    private Tensor? _num_batches_tracked;

    private double _eps;

    /// <summary>
    /// Creates the module with TorchSharp's parameter names, order and defaults.
    /// </summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel <see cref="weight"/> (ones) and <see cref="bias"/> (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default) or Float64.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="num_features"/> is below 1, or <paramref name="eps"/> is negative or NaN.</exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not Float32 or Float64.</exception>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public BatchNorm2d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null)
        : base(nameof(BatchNorm2d))
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(num_features, 1);
        BatchNorm2dFunctional.CheckEps(eps);
        if (dtype is { } d && d is not (ScalarType.Float32 or ScalarType.Float64))
        {
            throw new ArgumentException($"dtype must be Float32 or Float64, got {d}.", nameof(dtype));
        }

        if (device is not null && device.type != DeviceType.CPU)
        {
            throw new NotSupportedException($"device {device} is not supported; MyTorch.Layers kernels run on the CPU only.");
        }

        this.num_features = num_features;
        _eps = eps;
        this.momentum = momentum;
        this.affine = affine;
        this.track_running_stats = track_running_stats;
        var type = dtype ?? get_default_dtype();

        if (affine)
        {
            weight = new Parameter(ones(num_features, type));
            bias = new Parameter(zeros(num_features, type));
        }

        if (track_running_stats)
        {
            running_mean = zeros(num_features, type);
            running_var = ones(num_features, type);
            num_batches_tracked = tensor(0L, ScalarType.Int64);
        }
    }

    /// <summary>C, the number of channels the module normalises.</summary>
    public long num_features { get; }

    /// <summary>Added to the variance before the square root; zero or positive.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value or NaN.</exception>
    public double eps
    {
        get => _eps;
        set
        {
            BatchNorm2dFunctional.CheckEps(value);
            _eps = value;
        }
    }

    /// <summary>Weight of each new batch in the running statistics; null means a cumulative average, 1 / num_batches_tracked.</summary>
    public double? momentum { get; set; }

    /// <summary>Whether the module has a learnable <see cref="weight"/> and <see cref="bias"/>.</summary>
    public bool affine { get; }

    /// <summary>Whether the module keeps running statistics.</summary>
    public bool track_running_stats { get; }

    /// <summary>γ, C elements, initialised to ones; null when not <see cref="affine"/>.</summary>
    public Parameter? weight
    {
        get => _weight;
        set
        {
            if (!ReferenceEquals(value, _weight))
            {
                _weight?.Dispose();
                _weight = value?.DetachFromDisposeScope() as Parameter;
                ConditionallyRegisterParameter(nameof(weight), _weight);
            }
        }
    }

    /// <summary>β, C elements, initialised to zeros; null when not <see cref="affine"/>.</summary>
    public Parameter? bias
    {
        get => _bias;
        set
        {
            if (!ReferenceEquals(value, _bias))
            {
                _bias?.Dispose();
                _bias = value?.DetachFromDisposeScope() as Parameter;
                ConditionallyRegisterParameter(nameof(bias), _bias);
            }
        }
    }

    /// <summary>Running mean, C elements, initialised to zeros; null without <see cref="track_running_stats"/>.</summary>
    public Tensor? running_mean
    {
        get => _running_mean;
        set
        {
            if (!ReferenceEquals(value, _running_mean))
            {
                _running_mean?.Dispose();
                _running_mean = value?.DetachFromDisposeScope();
                ConditionallyRegisterBuffer(nameof(running_mean), _running_mean);
            }
        }
    }

    /// <summary>Running (unbiased) variance, C elements, initialised to ones; null without <see cref="track_running_stats"/>.</summary>
    public Tensor? running_var
    {
        get => _running_var;
        set
        {
            if (!ReferenceEquals(value, _running_var))
            {
                _running_var?.Dispose();
                _running_var = value?.DetachFromDisposeScope();
                ConditionallyRegisterBuffer(nameof(running_var), _running_var);
            }
        }
    }

    /// <summary>The number of training batches seen, an int64 scalar; null without <see cref="track_running_stats"/>.</summary>
    public Tensor? num_batches_tracked
    {
        get => _num_batches_tracked;
        set
        {
            if (!ReferenceEquals(value, _num_batches_tracked))
            {
                _num_batches_tracked?.Dispose();
                _num_batches_tracked = value?.DetachFromDisposeScope();
                ConditionallyRegisterBuffer(nameof(num_batches_tracked), _num_batches_tracked);
            }
        }
    }

    /// <summary>Sets the running mean to zeros, the running variance to ones and num_batches_tracked to 0.</summary>
    public void reset_running_stats()
    {
        using var noGrad = no_grad();
        using Scalar one = 1; // held: a temporary Scalar may be finalized during the native call
        _running_mean?.zero_();
        _running_var?.fill_(one);
        _num_batches_tracked?.zero_();
    }

    /// <summary>Resets the running statistics, and the weight to ones and the bias to zeros.</summary>
    public void reset_parameters()
    {
        reset_running_stats();
        using var noGrad = no_grad();
        using Scalar one = 1;
        _weight?.fill_(one);
        _bias?.zero_();
    }

    /// <summary>
    /// Normalises <paramref name="input"/>; in training, updates the running statistics first. Differentiable:
    /// <c>backward</c> fills the gradients of the input, <see cref="weight"/> and <see cref="bias"/> from
    /// MyTorch.Layers' backward kernel.
    /// </summary>
    /// <param name="input">(N, C, H, W), float32 or float64 as the module, on the CPU; any memory layout.</param>
    /// <returns>The normalised tensor, in the input's memory layout.</returns>
    /// <exception cref="ArgumentException">
    /// The input is not 4-D, its channel count is not <see cref="num_features"/>, its dtype is not the module's,
    /// or there is one value per channel when batch statistics are needed. Nothing is changed.
    /// </exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU. Nothing is changed.</exception>
    public override Tensor forward(Tensor input)
    {
        long[] shape = BatchNorm2dFunctional.CheckForward(input, _weight, _bias, _running_mean, _running_var, training, _eps, moduleDtype: _weight?.dtype ?? _running_mean?.dtype);

        // Every check has passed: from here on the call changes state.
        double factor = momentum ?? 0.0;
        if (training && _num_batches_tracked is not null)
        {
            long count = RunningStatistics.Advance(_num_batches_tracked);
            factor = momentum ?? 1.0 / count;
        }

        return BatchNorm2dAutograd.Run(input, _weight, _bias, new BatchNorm2dCall(shape, _running_mean, _running_var, training, factor, _eps));
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _weight?.Dispose();
            _bias?.Dispose();
            _running_mean?.Dispose();
            _running_var?.Dispose();
            _num_batches_tracked?.Dispose();
        }

        base.Dispose(disposing);
    }

    /// <inheritdoc/>
    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking)
    {
        ReplaceAll(dtype, device);
        return this;
    }

    /// <inheritdoc/>
    protected override nn.Module _to(DeviceType deviceType, int deviceIndex, bool non_blocking)
    {
        ReplaceAll(null, new Device(deviceType, deviceIndex));
        return this;
    }

    /// <inheritdoc/>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking)
    {
        ReplaceAll(dtype, null);
        return this;
    }

    private void ReplaceAll(ScalarType? dtype, Device? device)
    {
        if (dtype is { } d && d is not (ScalarType.Float32 or ScalarType.Float64))
        {
            throw new ArgumentException($"dtype must be Float32 or Float64, got {d}.", nameof(dtype));
        }

        if (device is not null && device.type != DeviceType.CPU)
        {
            throw new NotSupportedException($"device {device} is not supported; MyTorch.Layers kernels run on the CPU only.");
        }

        if (_weight is not null && ReplaceParameter(dtype ?? _weight.dtype, device ?? _weight.device, _weight, out var w))
        {
            weight = w;
        }

        if (_bias is not null && ReplaceParameter(dtype ?? _bias.dtype, device ?? _bias.device, _bias, out var b))
        {
            bias = b;
        }

        if (_running_mean is not null && ReplaceBuffer(dtype ?? _running_mean.dtype, device ?? _running_mean.device, _running_mean, out var rm))
        {
            running_mean = rm;
        }

        if (_running_var is not null && ReplaceBuffer(dtype ?? _running_var.dtype, device ?? _running_var.device, _running_var, out var rv))
        {
            running_var = rv;
        }

        if (_num_batches_tracked is not null && ReplaceBuffer(_num_batches_tracked.dtype, device ?? _num_batches_tracked.device, _num_batches_tracked, out var nbt))
        {
            num_batches_tracked = nbt;
        }
    }
}

/// <summary>The input's shape as the checks read it, and the non-tensor arguments of one forward, passed through autograd to the kernels.</summary>
internal sealed record BatchNorm2dCall(long[] Shape, Tensor? RunningMean, Tensor? RunningVar, bool Training, double Momentum, double Eps);

/// <summary>
/// Autograd node of <see cref="BatchNorm2d"/>: forward and backward both run MyTorch.Layers' kernels. It keeps the
/// mean and 1/σ between them in float64, as the kernels compute them, so that a float32 backward is not limited by
/// statistics rounded to float32 (a mean of 1e4 would be off by up to 5e-4). Asked for a graph of the gradients, it
/// returns the kernels' gradients carrying <see cref="GradientGraph.BatchNorm2d"/>'s graph.
/// </summary>
internal sealed class BatchNorm2dAutograd : autograd.SingleTensorFunction<BatchNorm2dAutograd>
{
    private const string UsedBatchStatistics = "batch";
    private const string HasBias = "bias";
    private const string Eps = "eps";

    public override string Name => "MyTorchBatchNorm2dBackward";

    /// <summary>
    /// The forward on checked arguments: through this autograd node when a gradient is wanted, otherwise (inference,
    /// or frozen parameters on an input without history) straight to the kernels, with no node to record.
    /// </summary>
    public static Tensor Run(Tensor input, Tensor? weight, Tensor? bias, BatchNorm2dCall call)
    {
        bool tracked = is_grad_enabled() && (input.requires_grad || (weight?.requires_grad ?? false) || (bias?.requires_grad ?? false));
        if (tracked)
        {
            return apply(input, weight, bias, call);
        }

        var (output, mean, invstd) = BatchNorm2dFunctional.Compute(
            input, call.Shape, weight, bias, call.RunningMean, call.RunningVar, call.Training, call.Momentum, call.Eps);
        mean.Dispose();
        invstd.Dispose();
        return output;
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var weight = vars[1] as Tensor;
        var bias = vars[2] as Tensor;
        var call = (BatchNorm2dCall)vars[3];
        var (output, mean, invstd) = BatchNorm2dFunctional.Compute(
            input, call.Shape, weight, bias, call.RunningMean, call.RunningVar, call.Training, call.Momentum, call.Eps, ScalarType.Float64);
        ctx.save_for_backward([input, weight!, mean, invstd]);
        ctx.save_data(UsedBatchStatistics, call.Training || call.RunningMean is null);
        ctx.save_data(HasBias, bias is not null);
        ctx.save_data(Eps, call.Eps);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        try
        {
            Tensor input = saved[0];
            Tensor? weight = saved[1];
            bool batch = (bool)ctx.get_data(UsedBatchStatistics);
            var (gradInput, gradWeight, gradBias) = BatchNorm2dFunctional.Backward(grad_output, input, weight, saved[2], saved[3], batch, statisticsInDouble: true);

            // Grad mode is on in a backward exactly when autograd was asked to build a graph of the gradients.
            if (is_grad_enabled())
            {
                var (graphInput, graphWeight, graphBias) = GradientGraph.BatchNorm2d(grad_output, input, weight, saved[2], saved[3], batch, (double)ctx.get_data(Eps));
                gradInput = GradientGraph.WithGraphOf(gradInput, graphInput);
                gradWeight = GradientGraph.WithGraphOf(gradWeight, graphWeight);
                gradBias = GradientGraph.WithGraphOf(gradBias, graphBias);
            }

            // Weight and bias are each optional: a gradient only for an input that was given.
            if (weight is null)
            {
                gradWeight.Dispose();
                gradWeight = null!;
            }

            if (!(bool)ctx.get_data(HasBias))
            {
                gradBias.Dispose();
                gradBias = null!;
            }

            return [gradInput, gradWeight, gradBias, null!];
        }
        finally
        {
            foreach (var t in saved)
            {
                t?.Dispose();
            }
        }
    }
}
