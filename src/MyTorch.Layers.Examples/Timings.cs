using System;
using System.Collections.Generic;
using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>Median milliseconds of one pass, TorchSharp's and ours.</summary>
internal sealed record Timing(string Pass, double TheirsMilliseconds, double OursMilliseconds);

/// <summary>Indicative wall-clock times of both modules: medians of a few repetitions after warm-ups.</summary>
internal static class Timings
{
    public const int WarmUps = 2;

    public const int Repetitions = 10;

    public static IReadOnlyList<Timing> Run(nn.Module<Tensor, Tensor> ours, nn.Module<Tensor, Tensor> theirs, ExampleOptions options)
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(theirs);
        ArgumentNullException.ThrowIfNull(options);

        using var scope = NewDisposeScope();
        var x = Agreement.RandomInput(options.Shape, options.Dtype);
        var gradOutput = randn(options.Shape, options.Dtype);

        ours.train();
        theirs.train();
        var trainingForward = Measure("training forward", ours, theirs, m => TrainingPass(m, x, null));
        var trainingBoth = Measure("training forward+backward", ours, theirs, m => TrainingPass(m, x, gradOutput));

        ours.eval();
        theirs.eval();
        var evalForward = Measure("eval forward (no_grad)", ours, theirs, m => EvalForward(m, x));
        return [trainingForward, trainingBoth, evalForward];
    }

    /// <summary>Dropout2d's training forward+backward, measured as the BatchNorm2d rows are.</summary>
    public static Timing RunDropout2d(nn.Module<Tensor, Tensor> ours, nn.Module<Tensor, Tensor> theirs, ExampleOptions options)
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(theirs);
        ArgumentNullException.ThrowIfNull(options);

        using var scope = NewDisposeScope();
        var x = Agreement.RandomInput(options.Shape, options.Dtype);
        var gradOutput = randn(options.Shape, options.Dtype);

        ours.train();
        theirs.train();
        return Measure("Dropout2d training forward+backward", ours, theirs, m => TrainingPass(m, x, gradOutput));
    }

    /// <summary>Warms both up, then alternates them so that neither always runs on a warmer machine.</summary>
    private static Timing Measure(string pass, nn.Module<Tensor, Tensor> ours, nn.Module<Tensor, Tensor> theirs, Func<nn.Module<Tensor, Tensor>, TimeSpan> once)
    {
        for (int i = 0; i < WarmUps; i++)
        {
            once(theirs);
            once(ours);
        }

        var theirsMs = new double[Repetitions];
        var oursMs = new double[Repetitions];
        for (int i = 0; i < Repetitions; i++)
        {
            theirsMs[i] = once(theirs).TotalMilliseconds;
            oursMs[i] = once(ours).TotalMilliseconds;
        }

        return new Timing(pass, Median(theirsMs), Median(oursMs));
    }

    /// <summary>A training forward on a fresh leaf input, and its backward when <paramref name="gradOutput"/> is given.</summary>
    private static TimeSpan TrainingPass(nn.Module<Tensor, Tensor> module, Tensor x, Tensor? gradOutput)
    {
        using var scope = NewDisposeScope();
        module.zero_grad();
        var input = x.detach().requires_grad_(true);
        long start = Stopwatch.GetTimestamp();
        var output = module.call(input);
        if (gradOutput is not null)
        {
            output.backward([gradOutput]);
        }

        return Stopwatch.GetElapsedTime(start);
    }

    private static TimeSpan EvalForward(nn.Module<Tensor, Tensor> module, Tensor x)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long start = Stopwatch.GetTimestamp();
        module.call(x);
        return Stopwatch.GetElapsedTime(start);
    }

    private static double Median(double[] values)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        int middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
