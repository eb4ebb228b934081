using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;
using RankLayout = MyTorch.Layers.Tests.Oracle.BatchNormFamilyOracleTests.RankLayout;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// Every BatchNorm layer on bfloat16 and float16 input: with float32 parameters (mixed precision) against TorchSharp's
/// layer given the same input, and against TorchSharp's layer in float64 on the same values, the exact result for these
/// purposes; and built in the 16-bit dtype against TorchSharp's built so.
/// </summary>
/// <remarks>
/// Against float64: the output and x.grad within one ulp of the 16-bit dtype (ours rounds its float64 value once, through
/// float32 for bfloat16); weight.grad, bias.grad and the running statistics within the suite's float32 tolerance. Against
/// TorchSharp's 16-bit results, which it computes in float32 and rounds: within one ulp plus the suite's float32 tolerance,
/// TorchSharp's own arithmetic error where a value cancels.
/// </remarks>
[TestFixture]
public class BatchNormHalfPrecisionOracleTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        (string Layer, long[] Shape, RankLayout[] Layouts)[] shapes =
        [
            ("BatchNorm1d", [16, 12], [RankLayout.Contiguous, RankLayout.Strided]),
            ("BatchNorm1d", [6, 5, 33], [RankLayout.Contiguous, RankLayout.Strided]),
            ("BatchNorm2d", [4, 6, 7, 9], Enum.GetValues<RankLayout>()),
            ("BatchNorm2d", [3, 16, 8, 8], [RankLayout.Contiguous, RankLayout.ChannelsLast]),
            ("BatchNorm3d", [2, 4, 3, 5, 6], Enum.GetValues<RankLayout>()),
        ];
        foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float16 })
        {
            foreach (bool affine in new[] { true, false })
            {
                foreach (var (layer, shape, layouts) in shapes)
                {
                    foreach (var layout in layouts)
                    {
                        yield return new TestCaseData(layer, dtype, affine, shape, layout).SetArgDisplayNames(
                            layer, dtype.ToString(), affine ? "affine" : "no-affine", string.Join('x', shape), layout.ToString());
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MixedPrecision_TrainingThenEval_MatchesFloat64AndTorchSharp(string layer, ScalarType dtype, bool affine, long[] shape, RankLayout layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(91);
        long channels = shape[1];
        var (ours, theirs) = BatchNormFamilyOracleTests.Pair(layer, channels, affine, track: true, momentum: 0.1, ScalarType.Float32);
        var (_, exact) = BatchNormFamilyOracleTests.Pair(layer, channels, affine, track: true, momentum: 0.1, ScalarType.Float64);
        if (affine)
        {
            using var noGrad = no_grad();
            var gamma = rand(channels).Times(1.5).Plus(0.25);
            var beta = randn(channels);
            foreach (var module in new[] { ours, theirs })
            {
                module.weight.copy_(gamma);
                module.bias!.copy_(beta);
            }

            exact.weight.copy_(gamma.to(ScalarType.Float64));
            exact.bias!.copy_(beta.to(ScalarType.Float64));
        }

        for (int step = 0; step < 5; step++)
        {
            bool training = step < 3;
            foreach (var module in new[] { ours, theirs, exact })
            {
                module.train(training);
            }

            string at = $"{(training ? "training" : "eval")} step {step}";
            var scale = rand(BatchNormFamilyOracleTests.ChannelShape(shape)).Times(3).Plus(0.5);
            var values = ((randn(shape) * scale) + randn(BatchNormFamilyOracleTests.ChannelShape(shape))).to(dtype);
            var gradOutput = randn(shape).to(dtype);
            var (ourLeaf, ourView) = BatchNormFamilyOracleTests.InLayout(values, layout);
            var (theirLeaf, theirView) = BatchNormFamilyOracleTests.InLayout(values, layout);
            var (exactLeaf, exactView) = BatchNormFamilyOracleTests.InLayout(values.to(ScalarType.Float64), layout);

            if (!training)
            {
                // The exact evaluation of our module's state: its float32 running statistics, not the float64 module's.
                using var noGrad = no_grad();
                exact.running_mean!.copy_(ours.running_mean!);
                exact.running_var!.copy_(ours.running_var!);
            }

            var actual = ours.forward(ourView);
            var expected = exact.forward(exactView);
            var witness = theirs.forward(theirView);
            Assert.That(actual.dtype, Is.EqualTo(dtype), $"output dtype, {at}");
            HalfPrecision.AssertWithinUlp(actual, expected, $"output against float64, {at}");
            HalfPrecision.AssertAgreesWithTorchSharp(actual, witness, expected, $"output against TorchSharp, {at}");

            actual.backward([gradOutput]);
            expected.backward([gradOutput.to(ScalarType.Float64)]);
            witness.backward([gradOutput]);
            Assert.That(ourLeaf.grad!.dtype, Is.EqualTo(dtype), $"x.grad dtype, {at}");
            HalfPrecision.AssertWithinUlp(ourLeaf.grad, exactLeaf.grad!, $"x.grad against float64, {at}");
            HalfPrecision.AssertAgreesWithTorchSharp(ourLeaf.grad, theirLeaf.grad!, exactLeaf.grad!, $"x.grad against TorchSharp, {at}");
            if (affine)
            {
                Tolerance.AssertClose(ours.weight.grad, exact.weight.grad!.to(ScalarType.Float32), $"weight.grad, {at}");
                Tolerance.AssertClose(ours.bias!.grad, exact.bias!.grad!.to(ScalarType.Float32), $"bias.grad, {at}");
                foreach (var module in new[] { ours, theirs, exact })
                {
                    module.zero_grad();
                }
            }

            Tolerance.AssertClose(ours.running_mean, exact.running_mean!.to(ScalarType.Float32), $"running_mean, {at}");
            Tolerance.AssertClose(ours.running_var, exact.running_var!.to(ScalarType.Float32), $"running_var, {at}");
            Tolerance.AssertClose(ours.running_var, theirs.running_var!, $"running_var against TorchSharp, {at}");
            Assert.That(ours.num_batches_tracked!.dtype, Is.EqualTo(ScalarType.Int64));
            Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(theirs.num_batches_tracked!.to(ScalarType.Int64).item<long>()), $"num_batches_tracked, {at}");
        }
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void Float64Parameters_WithA16BitInput_MatchFloat64(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var ours = layers.BatchNorm2d(6, dtype: ScalarType.Float64);
        var exact = nn.BatchNorm2d(6, dtype: ScalarType.Float64);
        var values = (randn(4, 6, 5, 7) * 2).Plus(1).to(dtype);
        var gradOutput = randn(4, 6, 5, 7).to(dtype);
        var leaf = values.detach().requires_grad_(true);
        var exactLeaf = values.to(ScalarType.Float64).requires_grad_(true);
        var actual = ours.forward(leaf);
        var expected = exact.forward(exactLeaf);
        HalfPrecision.AssertWithinUlp(actual, expected, "output");
        actual.backward([gradOutput]);
        expected.backward([gradOutput.to(ScalarType.Float64)]);
        HalfPrecision.AssertWithinUlp(leaf.grad, exactLeaf.grad!, "x.grad");
        Tolerance.AssertClose(ours.weight.grad, exact.weight.grad, "weight.grad");
        Tolerance.AssertClose(ours.running_var, exact.running_var, "running_var");
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void ExplicitForwardAndBackward_TakeFloat32Parameters(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(6);
        var values = randn(5, 3, 4, 4).to(dtype);
        var gradOutput = randn(5, 3, 4, 4).to(dtype);
        var weight = rand(3).Plus(0.5);
        var bias = randn(3);
        var runningMean = zeros(3);
        var runningVar = ones(3);
        var (output, saveMean, saveInvstd) = BatchNormFunctional.Forward(values, weight, bias, runningMean, runningVar, training: true, momentum: 0.1, eps: 1e-5);
        Assert.That((output.dtype, saveMean.dtype, saveInvstd.dtype), Is.EqualTo((dtype, ScalarType.Float32, ScalarType.Float32)));
        var (gradInput, gradWeight, gradBias) = BatchNormFunctional.Backward(gradOutput, values, weight, saveMean, saveInvstd, training: true);
        Assert.That((gradInput.dtype, gradWeight.dtype, gradBias.dtype), Is.EqualTo((dtype, ScalarType.Float32, ScalarType.Float32)));

        var exactLeaf = values.to(ScalarType.Float64).requires_grad_(true);
        var exactWeight = weight.to(ScalarType.Float64).requires_grad_(true);
        var exactBias = bias.to(ScalarType.Float64).requires_grad_(true);
        var exactMean = zeros(3, ScalarType.Float64);
        var exactVar = ones(3, ScalarType.Float64);
        var expected = nn.functional.batch_norm(exactLeaf, exactMean, exactVar, exactWeight, exactBias, training: true, momentum: 0.1, eps: 1e-5);
        expected.backward([gradOutput.to(ScalarType.Float64)]);
        HalfPrecision.AssertWithinUlp(output, expected, "explicit forward");
        HalfPrecision.AssertWithinUlp(gradInput, exactLeaf.grad!, "explicit backward, dx");
        Tolerance.AssertClose(gradWeight, exactWeight.grad!.to(ScalarType.Float32), "explicit backward, dγ");
        Tolerance.AssertClose(gradBias, exactBias.grad!.to(ScalarType.Float32), "explicit backward, dβ");
        Tolerance.AssertClose(runningVar, exactVar.to(ScalarType.Float32), "running_var");

        var functional = layers.functional.batch_norm(values, zeros(3), ones(3), weight, bias, training: true);
        HalfPrecision.AssertWithinUlp(functional, expected, "layers.functional.batch_norm");
    }

    [Test]
    public void BFloat16Module_KeepsCountingPast256_AndItsStatisticsAtLeastAsAccurateAsTorchSharps()
    {
        // Built with dtype BFloat16, TorchSharp's num_batches_tracked is bfloat16 too and stops at 256; ours stays int64.
        using var scope = NewDisposeScope();
        manual_seed(8);
        var ours = layers.BatchNorm2d(4, momentum: null, dtype: ScalarType.BFloat16);
        var theirs = nn.BatchNorm2d(4, momentum: 0.1, dtype: ScalarType.BFloat16);
        theirs.momentum = null;
        var exact = nn.BatchNorm2d(4, momentum: 0.1, dtype: ScalarType.Float64);
        exact.momentum = null;
        for (int step = 0; step < 300; step++)
        {
            var values = ((randn(8, 4, 6, 6) * 3) + 40).to(ScalarType.BFloat16);
            using var noGrad = no_grad();
            ours.forward(values);
            theirs.forward(values);
            exact.forward(values.to(ScalarType.Float64));
        }

        Assert.That(ours.num_batches_tracked!.dtype, Is.EqualTo(ScalarType.Int64));
        Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(300));
        Assert.That(theirs.num_batches_tracked!.to(ScalarType.Float64).item<double>(), Is.EqualTo(256), "TorchSharp's bfloat16 counter (if this changes, the comparison above still holds)");
        Assert.That(ours.running_mean!.dtype, Is.EqualTo(ScalarType.BFloat16));
        foreach (var name in new[] { "running_mean", "running_var" })
        {
            var truth = name == "running_mean" ? exact.running_mean! : exact.running_var!;
            var ourError = ((name == "running_mean" ? ours.running_mean! : ours.running_var!).to(ScalarType.Float64) - truth).abs().max().item<double>();
            var theirError = ((name == "running_mean" ? theirs.running_mean! : theirs.running_var!).to(ScalarType.Float64) - truth).abs().max().item<double>();
            var halfUlp = truth.abs().max().item<double>() * Math.Pow(2, -8);
            Assert.That(ourError, Is.LessThanOrEqualTo(Math.Max(theirError, halfUlp)), string.Create(CultureInfo.InvariantCulture, $"{name}: ours {ourError:G3} off float64's, TorchSharp's {theirError:G3}"));
        }
    }

    [Test]
    public void Float16Input_ToABFloat16Module_IsRefused_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var ours = layers.BatchNorm2d(3, dtype: ScalarType.BFloat16);
        using var snapshot = Snapshot.Of(ours);
        var thrown = Assert.Throws<ArgumentException>(() => ours.forward(randn(2, 3, 4, 4).to(ScalarType.Float16)));
        Assert.That(thrown!.Message, Does.Contain("Float16").And.Contain("BFloat16"));
        Assert.Throws<ArgumentException>(() => ours.forward(randn(2, 3, 4, 4)));
        snapshot.AssertUnchanged();
    }
}
