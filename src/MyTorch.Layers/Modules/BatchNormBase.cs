using System;
using System.Linq;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// What every MyTorch.Layers batch normalisation layer shares: a TorchSharp <see cref="TorchSharp.Modules.BatchNorm"/>
/// (so code written against TorchSharp's <c>BatchNorm</c> or <c>NormBase</c> takes ours: <c>fuse_linear_bn_eval</c>,
/// <c>modules().OfType&lt;BatchNorm&gt;()</c>) whose forward and backward are MyTorch.Layers' kernels, per channel over
/// every other dimension: y = (x − E[x]) / sqrt(Var[x] + eps) · weight + bias. Each layer states only the ranks it takes.
/// </summary>
/// <remarks>
/// In training the batch statistics are used (the biased variance) and, with <c>track_running_stats</c>,
/// <c>running_mean</c> and <c>running_var</c> follow them with <c>momentum</c> (the unbiased variance), or with a
/// cumulative average when <c>momentum</c> is null. In evaluation the running statistics are used, unless there are
/// none. <c>num_batches_tracked</c> is int64 whatever the dtype, as in PyTorch. One instance is not safe to use from
/// several threads at once.
/// </remarks>
public abstract class BatchNormBase : TorchSharp.Modules.BatchNorm
{
    /// <summary>
    /// The module whose tensors this one shares (<see cref="ShareStateOf"/>), held so that it is not finalized while this
    /// one lives: TorchSharp's BatchNorm disposes its parameters and buffers from its finalizer. Typed object, so that it
    /// is not registered as a submodule.
    /// </summary>
    private object? _sharedWith;

    private protected BatchNormBase(long num_features, double eps, double? momentum, bool affine, bool track_running_stats, Device? device, ScalarType? dtype, string name)
        : base(Checked(num_features, eps, device, dtype), eps, momentum ?? 0.1, affine, track_running_stats, device, dtype, name)
    {
        this.momentum = momentum;
        if (track_running_stats)
        {
            num_batches_tracked = tensor(0L, ScalarType.Int64);
        }
    }

    /// <summary>Added to the variance before the square root; zero or positive.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value or NaN.</exception>
    public new double eps
    {
        get => base.eps;
        set
        {
            BatchNormFunctional.CheckEps(value);
            base.eps = value;
        }
    }

    /// <summary>The ranks the layer takes, and TorchSharp's words for any other.</summary>
    private protected abstract BatchNormRanks Ranks { get; }

    /// <summary>
    /// Normalises <paramref name="input"/>; in training, updates the running statistics first. Differentiable:
    /// <c>backward</c> fills the gradients of the input, <c>weight</c> and <c>bias</c> from MyTorch.Layers' backward
    /// kernels, and a gradient taken with <c>create_graph: true</c> can be differentiated again.
    /// </summary>
    /// <param name="input">
    /// (N, C, …) of a rank the layer takes, on the CPU, in any memory layout: of the module's dtype, or bfloat16 or float16
    /// for a float32 or float64 module (mixed precision: the output and the input's gradient in the input's dtype, the
    /// running statistics and the parameters' gradients in the module's).
    /// </param>
    /// <returns>The normalised tensor, in the input's memory layout.</returns>
    /// <exception cref="ArgumentException">
    /// The input's rank is not one the layer takes, its channel count is not <c>num_features</c>, its dtype is not the
    /// module's (nor a 16-bit dtype under a float32 or float64 module), or there is one value per channel when batch
    /// statistics are needed. Nothing is changed.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException"><c>eps</c> was set to a negative value or NaN through TorchSharp's base type. Nothing is changed.</exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU. Nothing is changed.</exception>
    public override Tensor forward(Tensor input)
    {
        Tensor? weight = affine ? this.weight : null;
        long[] shape = BatchNormFunctional.CheckForward(
            input, Ranks, weight, bias, running_mean, running_var, training, base.eps, moduleDtype: weight?.dtype ?? running_mean?.dtype);
        CheckInput(input);

        // Every check has passed: from here on the call changes state.
        double factor = NextBatchFactor();
        CountBatch();
        return Run(input, shape, weight, factor);
    }

    /// <summary>
    /// The weight of the next training batch in the running statistics: momentum, or, when momentum is null,
    /// 1 / the count num_batches_tracked will hold once the batch is counted.
    /// </summary>
    private protected double NextBatchFactor() =>
        momentum ?? (training && num_batches_tracked is { } counter ? 1.0 / (RunningStatistics.Count(counter) + 1) : 0.0);

    /// <summary>In training, counts one more batch in num_batches_tracked.</summary>
    private protected void CountBatch()
    {
        if (training && num_batches_tracked is { } counter)
        {
            RunningStatistics.Advance(counter);
        }
    }

    /// <summary>
    /// Takes <paramref name="norm"/>'s parameters and buffers as its own, the same tensors (so an optimizer made before
    /// keeps training them), and its training mode, in place of those it made; the module made to replace
    /// <paramref name="norm"/> calls it, with the same options and dtype.
    /// </summary>
    private protected void ShareStateOf(TorchSharp.Modules.BatchNorm norm)
    {
        using (no_grad())
        {
            Tensor?[] made = [weight, bias, running_mean, running_var, num_batches_tracked];
            if (norm.affine)
            {
                weight = norm.weight!;
                bias = norm.bias!;
            }

            if (norm.track_running_stats)
            {
                running_mean = norm.running_mean!;
                running_var = norm.running_var!;
                num_batches_tracked = norm.num_batches_tracked!;
            }

            Tensor?[] kept = [weight, bias, running_mean, running_var, num_batches_tracked];
            foreach (var replaced in made)
            {
                if (replaced is not null && !kept.Any(k => ReferenceEquals(k, replaced)))
                {
                    replaced.Dispose();
                }
            }
        }

        train(norm.training);
        _sharedWith = norm;
    }

    /// <summary>Checks a layer makes beyond batch normalisation's, before anything changes; none by default.</summary>
    private protected virtual void CheckInput(Tensor input)
    {
    }

    /// <summary>The forward on checked input, <paramref name="momentum"/> being the weight of this batch in the running statistics.</summary>
    private protected virtual Tensor Run(Tensor input, long[] shape, Tensor? weight, double momentum) =>
        BatchNormAutograd.Forward(input, shape, weight, bias, running_mean, running_var, training, momentum, base.eps);

    /// <inheritdoc/>
    protected override void ValidateInputDimensions(Tensor input) => Ranks.Check(input.shape, nameof(input));

    /// <summary>
    /// Disposes the parameters and buffers only when the module is disposed: TorchSharp's base disposes them from the
    /// finalizer too, which would invalidate a buffer or gradient that code still holds after dropping the module. Each
    /// tensor's native memory is released by its own handle's finalizer.
    /// </summary>
    /// <param name="disposing">Whether <c>Dispose()</c> was called, rather than the finalizer.</param>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            base.Dispose(disposing);
        }
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

    /// <summary>The constructor's checks, made before TorchSharp's base allocates anything; returns num_features.</summary>
    private static long Checked(long numFeatures, double eps, Device? device, ScalarType? dtype)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numFeatures, 1, "num_features");
        BatchNormFunctional.CheckEps(eps);
        CheckDtype(dtype);
        CheckDevice(device);
        return numFeatures;
    }

    private static void CheckDtype(ScalarType? dtype)
    {
        if (dtype is { } d && d is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.BFloat16 or ScalarType.Float16))
        {
            throw new ArgumentException($"dtype must be Float32, Float64, BFloat16 or Float16, got {d}.", nameof(dtype));
        }
    }

    private static void CheckDevice(Device? device)
    {
        if (device is not null && device.type != DeviceType.CPU)
        {
            throw new NotSupportedException($"device {device} is not supported; MyTorch.Layers kernels run on the CPU only.");
        }
    }

    /// <summary>Moves parameters and buffers, all checks first; num_batches_tracked keeps its dtype.</summary>
    private void ReplaceAll(ScalarType? dtype, Device? device)
    {
        CheckDtype(dtype);
        CheckDevice(device);
        var weight = affine ? this.weight : null;
        if (weight is not null && ReplaceParameter(dtype ?? weight.dtype, device ?? weight.device, weight, out var w))
        {
            this.weight = w!;
        }

        if (bias is { } b && ReplaceParameter(dtype ?? b.dtype, device ?? b.device, b, out var nb))
        {
            bias = nb;
        }

        if (running_mean is { } rm && ReplaceBuffer(dtype ?? rm.dtype, device ?? rm.device, rm, out var nrm))
        {
            running_mean = nrm;
        }

        if (running_var is { } rv && ReplaceBuffer(dtype ?? rv.dtype, device ?? rv.device, rv, out var nrv))
        {
            running_var = nrv;
        }

        if (num_batches_tracked is { } n && ReplaceBuffer(n.dtype, device ?? n.device, n, out var counter))
        {
            num_batches_tracked = counter;
        }
    }
}
