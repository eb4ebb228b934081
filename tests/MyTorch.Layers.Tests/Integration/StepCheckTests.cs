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
/// The examples app's step-by-step check (<see cref="StepCheck"/>): it passes with our layers and with them fused, it
/// fails at the first step with a faulty one, its bit-for-bit comparison of the fused model sees a fault below the
/// tolerances, and the app run as a user runs it exits 0 over hundreds of steps in two settings.
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
    public void FusedModel_AgreesWithTorchSharp_AndIsOurUnfusedModelBitForBit_AtEveryStepAndEvaluation()
    {
        var summary = Check(LayerSet.MyTorchLayersFused, trainImages: 512, epochs: 2);

        Report(summary);
        Assert.That(summary.BitForBit, Is.True, "compared with our unfused model");
        Assert.That(summary.Steps, Is.EqualTo(16));
        Assert.That(summary.Evaluations, Is.EqualTo(2));
        Assert.That(summary.FirstBitDifference, Is.Null);
        Assert.That(summary.FirstFailure?.Failure(), Is.Null);
        Assert.That(summary.Passed, Is.True);

        // TorchSharp's model replayed the fused model's choices, its ReLUs' included: slots 0 and 2, each (64, C, 28 or 14, 28 or 14)
        // a step, less the planes of dropped channels.
        long perStep = 64 * ((16 * 28 * 28) + (16 * 14 * 14) + (32 * 14 * 14) + (32 * 7 * 7) + 64);
        Assert.That(summary.DecisionsReplayed, Is.InRange(16 * perStep * 8 / 10, 16 * perStep));
    }

    [Test]
    public void OurUnfusedCheck_ComparesNothingBitForBit()
    {
        var summary = Check(LayerSet.MyTorchLayers, trainImages: 64, epochs: 1);

        Assert.That(summary.BitForBit, Is.False);
        Assert.That(summary.FirstBitDifference, Is.Null);
        Assert.That(summary.Passed, Is.True);
    }

    /// <summary>Dropout at p + 0.1 in the fused blocks: another loss than TorchSharp's, and other bits than our unfused model's.</summary>
    [Test]
    public void FusedModelWithAnotherDropoutProbability_FailsAtTheFirstStep_OnTheLoss_AndBitForBit()
    {
        var faulty = LayerSet.MyTorchLayersFused with { Name = "faulty", Dropout2d = p => layers.Dropout2d(p + 0.1) };
        var summary = Check(faulty, trainImages: 128, epochs: 1);

        Report(summary);
        var failure = summary.FirstFailure;
        Assert.That(failure, Is.Not.Null);
        Assert.That(failure!.Step, Is.EqualTo(1));
        Assert.That(failure.Loss.Value, Is.GreaterThan(StepCheck.LossTolerance));
        Assert.That(failure.NotBitForBit, Does.StartWith("loss (1 of 1 values)"));
        Assert.That(failure.NotBitForBit, Does.Contain("conv1.weight.grad"));
        Assert.That(summary.FirstBitDifference, Is.SameAs(failure));
    }

    /// <summary>
    /// eps 1.001e-5 in the fused blocks instead of 1e-5 moves every normalised value by about 1e-7 relative: within every
    /// tolerance against TorchSharp, as a rounding difference would be, but not our unfused model's bits.
    /// </summary>
    [Test]
    public void FusedModelWithEpsOffByOnePartInAThousand_PassesTheTolerances_ButNotBitForBit()
    {
        var faulty = LayerSet.MyTorchLayersFused with { Name = "faulty", BatchNorm2d = c => layers.BatchNorm2d(c, eps: 1.001e-5) };
        var summary = Check(faulty, trainImages: 128, epochs: 1);

        Report(summary);
        var failure = summary.FirstFailure;
        Assert.That(failure, Is.Not.Null);
        Assert.That(failure!.Step, Is.EqualTo(1));
        Assert.That(failure.NotBitForBit, Does.Contain("bn1.weight.grad ("));
        Assert.That(failure.NotBitForBit, Does.Contain("conv1.weight.grad ("));
        Assert.That(failure.Mismatch, Is.Null);
        Assert.That(summary.Loss.Value, Is.LessThanOrEqualTo(StepCheck.LossTolerance), "the loss is within rounding of TorchSharp's");
        Assert.That(summary.Gradient.Value, Is.LessThanOrEqualTo(StepCheck.GradientTolerance), "so are the gradients");
        Assert.That(summary.Statistic.Value, Is.LessThanOrEqualTo(StepCheck.StatisticTolerance), "and the running statistics");
        Assert.That(summary.Output.Value, Is.LessThanOrEqualTo(StepCheck.LossTolerance), "and the evaluation logits");
    }

    [Test]
    public void BitsDiffering_CountsElements_TellsSignedZerosApart_AndRefusesOtherShapes()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new[] { 1f, 0f, float.NaN, 2f });
        Assert.That(StepCheck.BitsDiffering(a, a.clone()), Is.Zero, "a NaN equals the same NaN");
        Assert.That(StepCheck.BitsDiffering(a, tensor(new[] { 1f, -0f, float.NaN, 2f })), Is.EqualTo(1), "-0.0 is not 0.0");
        Assert.That(StepCheck.BitsDiffering(a, tensor(new[] { 1f, 0f, 3f, BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(2f) + 1) })), Is.EqualTo(2), "one ulp counts");
        Assert.That(StepCheck.BitsDiffering(a, a.to(ScalarType.Float64)), Is.EqualTo(-1));
        Assert.That(StepCheck.BitsDiffering(a, a.view(2, 2)), Is.EqualTo(-1));
        Assert.That(StepCheck.BitsDiffering(a.view(2, 2).t(), a.view(2, 2).t().contiguous()), Is.Zero, "a transposed view is compared by its elements");
    }

    /// <summary>
    /// A fused block's recorded choices leave a dropped channel's plane (all zeros) to the replaying model, count only the
    /// rest, and cannot be replayed by the block.
    /// </summary>
    [Test]
    public void FusedReLUChoice_LeavesDroppedPlanesToTheReplayingModel_AndCountsTheRest()
    {
        using var scope = NewDisposeScope();
        using var decisions = new Decisions(1);
        var choice = new FusedReLUChoice(decisions, 0);

        // Channel 0 kept: positive where the block's ReLU passed; channel 1 dropped: all zeros.
        var blockOutput = tensor(new[] { 0f, 2f, 0f, 3f, 0f, 0f, 0f, 0f }).view(1, 2, 2, 2);
        Assert.That(StepCheck.BitsDiffering(choice.forward(blockOutput), blockOutput), Is.Zero, "the output passes unchanged");

        decisions.Recording = false;
        var own = tensor(new[] { true, false, false, true, true, false, true, false }).view(1, 2, 2, 2);
        var replayed = decisions.Replay(0, own);
        Assert.That(replayed.data<bool>().ToArray(), Is.EqualTo(new[] { false, true, false, true, true, false, true, false }));
        Assert.That(decisions.Differing, Is.EqualTo(2), "the kept channel's first two");
        Assert.That(decisions.Replayed, Is.EqualTo(4), "the kept channel's four");

        var e = Assert.Throws<InvalidOperationException>(() => choice.forward(blockOutput));
        Assert.That(e!.Message, Does.Contain("cannot replay"));
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
        string[] arguments = [typeof(StepCheck).Assembly.Location, "--epochs", "4", "--threads", threads.ToString(CultureInfo.InvariantCulture), "--output", output];

        try
        {
            var (exitCode, text) = ChildProcess.Run("dotnet", arguments, TimeSpan.FromMinutes(10), start =>
            {
                // The test run's settings keep oneDNN to AVX; the second case takes that away, as a user's shell would not have it.
                start.Environment.Remove("DNNL_MAX_CPU_ISA");
                if (isa is not null)
                {
                    start.Environment["DNNL_MAX_CPU_ISA"] = isa;
                }
            });
            Assert.That(exitCode, Is.Zero, "exit code");
            Assert.That(text, Does.Contain("Step-by-step check on identical inputs (256 steps"));
            Assert.That(text, Does.Contain("The same check of the fused model (256 steps, 4 evaluations"));
            Assert.That(text, Does.Contain("Bit for bit our unfused model's: yes"));
            Assert.That(text, Does.Contain("|           MyTorch.Layers fused          |"));
            Assert.That(text, Does.Match(@"Test accuracy: TorchSharp \d+\.\d%, MyTorch\.Layers \d+\.\d%, fused \d+\.\d%\."));
            Assert.That(text, Does.Contain($"torch.get_num_threads() = {threads},"));
            Assert.That(File.Exists(Path.Combine(output, "training-loss.png")), Is.True, "the chart");

            // The fused run's columns come after the others, which keep their places.
            string[] curves = File.ReadAllLines(Path.Combine(output, "training-curves.csv"));
            Assert.That(curves[0], Does.EndWith(",torchsharp_seconds,ours_seconds,fused_loss,fused_train_accuracy,fused_test_loss,fused_test_accuracy,fused_seconds"));
            Assert.That(curves, Has.Length.EqualTo(5));
            Assert.That(File.ReadAllLines(Path.Combine(output, "training-steps.csv"))[0], Is.EqualTo("step,epoch,torchsharp_loss,ours_loss,abs_difference,fused_loss"));
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
