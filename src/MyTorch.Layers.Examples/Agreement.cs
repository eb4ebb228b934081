using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;
using OurBatchNorm2d = MyTorch.Layers.BatchNorm2d;
using TorchBatchNorm2d = TorchSharp.Modules.BatchNorm2d;

namespace MyTorch.Layers.Examples;

/// <summary>Element-wise agreement: |ours − theirs| ≤ Absolute + Relative · |theirs|.</summary>
internal readonly record struct Tolerance(double Relative, double Absolute)
{
    public static Tolerance For(ScalarType dtype) =>
        dtype == ScalarType.Float64 ? new Tolerance(1e-9, 1e-9) : new Tolerance(1e-4, 1e-5);

    /// <summary>
    /// The tolerance of a per-channel sum of <paramref name="count"/> values: rounding errors of a sum grow with it, and
    /// TorchSharp's float32 kernels accumulate in float32 (ours in double), so the absolute part grows by sqrt(count).
    /// </summary>
    public Tolerance ForSumOf(long count) => this with { Absolute = Absolute * Math.Sqrt(count) };

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"|ours - TorchSharp| <= atol + {Relative:0e+00} * |TorchSharp|");
}

/// <summary>One compared quantity (say, the training x.grad), with its worst differences over every comparison.</summary>
internal sealed class Quantity(string phase, string name, Tolerance tolerance)
{
    public string Phase { get; } = phase;

    public string Name { get; } = name;

    public Tolerance Tolerance { get; } = tolerance;

    /// <summary>max |ours − theirs|.</summary>
    public double MaxAbsolute { get; private set; }

    /// <summary>max |ours − theirs| / |theirs|; infinite where theirs is 0 and ours is not.</summary>
    public double MaxRelative { get; private set; }

    /// <summary>max |ours − theirs| / (atol + rtol · |theirs|): at most 1 when every element is within tolerance.</summary>
    public double WorstToTolerance { get; private set; }

    /// <summary>A structural problem (missing tensor, other shape), or null.</summary>
    public string? Problem { get; private set; }

    /// <summary>Within tolerance everywhere; a NaN on either side fails.</summary>
    public bool Passed => Problem is null && WorstToTolerance <= 1;

    public void Compare(Tensor? ours, Tensor? theirs)
    {
        if (ours is null || theirs is null)
        {
            Problem ??= ours is null ? "ours is missing" : "TorchSharp's is missing";
            return;
        }

        if (!ours.shape.SequenceEqual(theirs.shape))
        {
            Problem ??= $"shape [{string.Join(", ", ours.shape)}] vs TorchSharp's [{string.Join(", ", theirs.shape)}]";
            return;
        }

        using var scope = NewDisposeScope();
        var a = ours.detach().to(ScalarType.Float64);
        var b = theirs.detach().to(ScalarType.Float64);

        // Equal values (equal infinities too) differ by 0; a NaN on either side gives NaN, which fails.
        var diff = (a - b).abs().where(a.ne(b), 0.0);
        var magnitude = b.abs();
        var relative = (diff / magnitude).where(diff.ne(0), 0.0);
        var toTolerance = diff / ((magnitude * Tolerance.Relative) + Tolerance.Absolute);

        // Math.Max propagates NaN, so a NaN seen once is kept.
        MaxAbsolute = Math.Max(MaxAbsolute, diff.max().item<double>());
        MaxRelative = Math.Max(MaxRelative, relative.max().item<double>());
        WorstToTolerance = Math.Max(WorstToTolerance, toTolerance.max().item<double>());
    }
}

/// <summary>Runs both modules on the same inputs and compares everything they produce.</summary>
internal static class Agreement
{
    public const int TrainingSteps = 3;

    public const int EvalSteps = 1;

    public static IReadOnlyList<Quantity> Run(OurBatchNorm2d ours, TorchBatchNorm2d theirs, ExampleOptions options, Tolerance tolerance)
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(theirs);
        ArgumentNullException.ThrowIfNull(options);

        // weight.grad and bias.grad are sums over the N*H*W values of a channel.
        var sums = tolerance.ForSumOf(options.ValuesPerChannel);
        var trainOutput = new Quantity("training", "output", tolerance);
        var trainInputGrad = new Quantity("training", "x.grad", tolerance);
        var trainWeightGrad = new Quantity("training", "weight.grad", sums);
        var trainBiasGrad = new Quantity("training", "bias.grad", sums);
        var runningMean = new Quantity("training", "running_mean", tolerance);
        var runningVar = new Quantity("training", "running_var", tolerance);
        var batchesTracked = new Quantity("training", "num_batches_tracked", tolerance);
        var evalOutput = new Quantity("eval", "output", tolerance);
        var evalInputGrad = new Quantity("eval", "x.grad", tolerance);
        var evalWeightGrad = new Quantity("eval", "weight.grad", sums);
        var evalBiasGrad = new Quantity("eval", "bias.grad", sums);

        ours.train();
        theirs.train();
        for (int step = 0; step < TrainingSteps; step++)
        {
            using var scope = NewDisposeScope();
            var result = Step(ours, theirs, options);
            trainOutput.Compare(result.Ours.Output, result.Theirs.Output);
            trainInputGrad.Compare(result.Ours.InputGrad, result.Theirs.InputGrad);
            trainWeightGrad.Compare(ours.weight?.grad, theirs.weight?.grad);
            trainBiasGrad.Compare(ours.bias?.grad, theirs.bias?.grad);
            runningMean.Compare(ours.running_mean, theirs.running_mean);
            runningVar.Compare(ours.running_var, theirs.running_var);
            batchesTracked.Compare(ours.num_batches_tracked, theirs.num_batches_tracked);
        }

        ours.eval();
        theirs.eval();
        for (int step = 0; step < EvalSteps; step++)
        {
            using var scope = NewDisposeScope();
            var result = Step(ours, theirs, options);
            evalOutput.Compare(result.Ours.Output, result.Theirs.Output);
            evalInputGrad.Compare(result.Ours.InputGrad, result.Theirs.InputGrad);
            evalWeightGrad.Compare(ours.weight?.grad, theirs.weight?.grad);
            evalBiasGrad.Compare(ours.bias?.grad, theirs.bias?.grad);
        }

        return
        [
            trainOutput, trainInputGrad, trainWeightGrad, trainBiasGrad, runningMean, runningVar, batchesTracked,
            evalOutput, evalInputGrad, evalWeightGrad, evalBiasGrad,
        ];
    }

    /// <summary>
    /// A batch shaped like <paramref name="shape"/> whose channels have different means (about ±3) and spreads
    /// (0.5 to 2.5), so that the statistics are not all 0 and 1.
    /// </summary>
    public static Tensor RandomInput(long[] shape, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long channels = shape[1];
        using var spread = (rand(channels, dtype) * 2) + 0.5;
        using var center = randn(channels, dtype) * 3;
        using var noise = randn(shape, dtype);
        return noise.mul(spread.view(1, channels, 1, 1)).add_(center.view(1, channels, 1, 1));
    }

    /// <summary>One step: the same fresh input (requiring grad) and grad_output through both modules; forward, then backward.</summary>
    private static (Outcome Ours, Outcome Theirs) Step(OurBatchNorm2d ours, TorchBatchNorm2d theirs, ExampleOptions options)
    {
        var x = RandomInput(options.Shape, options.Dtype);
        var gradOutput = randn(options.Shape, options.Dtype);
        return (Run(ours, x, gradOutput), Run(theirs, x, gradOutput));
    }

    private static Outcome Run(nn.Module<Tensor, Tensor> module, Tensor x, Tensor gradOutput)
    {
        module.zero_grad();
        var input = x.detach().clone().requires_grad_(true);
        var output = module.call(input);
        output.backward([gradOutput]);
        return new Outcome(output, input.grad);
    }

    private readonly record struct Outcome(Tensor Output, Tensor? InputGrad);
}
