using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using MyTorch.Layers.Examples;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// The examples app's step-by-step check (<see cref="StepCheck"/>): it passes with our layers, it fails at the first
/// step with a faulty one, and the app run as a user runs it exits 0 over hundreds of steps in two settings.
/// </summary>
[TestFixture]
[NonParallelizable]
public class StepCheckTests
{
    private const int Seed = 2024;
    private const int BatchSize = 64;

    [Test]
    public void OurLayers_AgreeWithTorchSharp_AtEveryStepAndEvaluation()
    {
        var summary = Check(LayerSet.MyTorchLayers, trainImages: 512, epochs: 2);

        Report(summary);
        Assert.That(summary.Steps, Is.EqualTo(16));
        Assert.That(summary.Evaluations, Is.EqualTo(2));
        Assert.That(summary.FirstFailure?.Failure(), Is.Null);
        Assert.That(summary.Passed, Is.True);
    }

    [Test]
    public void BackwardWithoutItsProjectionTerm_FailsAtTheFirstStep_OnTheGradients()
    {
        var faulty = new LayerSet("faulty", c => new FaultyBatchNorm2d(c, BatchNormFault.ProjectionTermDropped), p => layers.Dropout2d(p));
        var summary = Check(faulty, trainImages: 128, epochs: 1);

        Report(summary);
        var failure = summary.FirstFailure;
        Assert.That(failure, Is.Not.Null);
        Assert.That(failure!.Step, Is.EqualTo(1));
        Assert.That(failure.Gradient.Value, Is.GreaterThan(StepCheck.GradientTolerance), "the gradients give it away");
        Assert.That(failure.Loss.Value, Is.LessThanOrEqualTo(StepCheck.LossTolerance), "the forward is right");
        Assert.That(failure.Statistic.Value, Is.LessThanOrEqualTo(StepCheck.StatisticTolerance), "the running statistics are right");
    }

    [Test]
    public void RunningVarianceWithSwappedMomentumWeights_FailsAtTheFirstStep_OnTheRunningVariance()
    {
        var faulty = new LayerSet("faulty", c => new FaultyBatchNorm2d(c, BatchNormFault.RunningVarianceWeightsSwapped), p => layers.Dropout2d(p));
        var summary = Check(faulty, trainImages: 128, epochs: 1);

        Report(summary);
        var failure = summary.FirstFailure;
        Assert.That(failure, Is.Not.Null);
        Assert.That(failure!.Step, Is.EqualTo(1));
        Assert.That(failure.Statistic.Value, Is.GreaterThan(StepCheck.StatisticTolerance));
        Assert.That(failure.Statistic.Name, Does.EndWith("running_var"));
        Assert.That(failure.Gradient.Value, Is.LessThanOrEqualTo(StepCheck.GradientTolerance), "the gradients are right");
    }

    /// <summary>
    /// The app as a user runs it, 4 epochs of 64 checked steps: once on one thread with oneDNN kept to AVX, once on two
    /// threads with oneDNN's own choice (the app keeps it to AVX itself on AMD Zen 5, whose AVX2 and AVX-512 Conv2d
    /// gradients are wrong; see docs/compatibility.md).
    /// </summary>
    [TestCase(1, "AVX")]
    [TestCase(2, null)]
    public void ExamplesApp_ExitsZero_OverTwoHundredFiftySixCheckedSteps(int threads, string? isa)
    {
        string output = Path.Combine(Path.GetTempPath(), "mytorch-layers-examples-" + Guid.NewGuid().ToString("N"));
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(typeof(StepCheck).Assembly.Location);
        foreach (string arg in new[] { "--epochs", "4", "--threads", threads.ToString(CultureInfo.InvariantCulture), "--output", output })
        {
            start.ArgumentList.Add(arg);
        }

        // The test run's settings keep oneDNN to AVX; the second case takes that away, as a user's shell would not have it.
        start.Environment.Remove("DNNL_MAX_CPU_ISA");
        if (isa is not null)
        {
            start.Environment["DNNL_MAX_CPU_ISA"] = isa;
        }

        try
        {
            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync();
            string text = process.StandardOutput.ReadToEnd();
            Assert.That(process.WaitForExit(TimeSpan.FromMinutes(10)), Is.True, "the app finishes");
            TestContext.Out.WriteLine(text);
            TestContext.Out.WriteLine(error.Result);
            Assert.That(process.ExitCode, Is.Zero, "exit code");
            Assert.That(text, Does.Contain("Step-by-step check on identical inputs (256 steps"));
            Assert.That(text, Does.Contain($"torch.get_num_threads() = {threads},"));
            Assert.That(File.Exists(Path.Combine(output, "training-loss.png")), Is.True, "the chart");
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    private static CheckSummary Check(LayerSet candidate, int trainImages, int epochs)
    {
        using var scope = NewDisposeScope();
        using var train = ShapesDataset.Generate(trainImages, Seed);
        using var test = ShapesDataset.Generate(trainImages / 4, Seed + 1);
        manual_seed(Seed);
        using var initial = SmallCnn.Create(LayerSet.TorchSharp, ShapesDataset.ClassNames.Length);
        var state = initial.state_dict();
        return StepCheck.Run(candidate, state, train, test, epochs, BatchSize, Seed, new ProgressBar());
    }

    private static void Report(CheckSummary summary) => TestContext.Out.WriteLine(string.Create(
        CultureInfo.InvariantCulture,
        $"loss {summary.Loss.Value:G3}, gradient {summary.Gradient.Value:G3} ({summary.Gradient.Name}, step {summary.Gradient.Step}), statistic {summary.Statistic.Value:G3} ({summary.Statistic.Name}), output {summary.Output.Value:G3}; first failure: {summary.FirstFailure?.Failure() ?? "none"}"));
}
