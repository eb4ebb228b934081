using System;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary><see cref="layers"/>' factories and functional forms against TorchSharp's nn factories and nn.functional.</summary>
[TestFixture]
public class FactoryAndFunctionalTests
{
    [Test]
    public void BatchNorm2dFactory_PassesEveryArgument()
    {
        using var bn = layers.BatchNorm2d(7, eps: 1e-3, momentum: null, affine: false, track_running_stats: true, device: CPU, dtype: ScalarType.Float64);
        Assert.That(bn, Is.TypeOf<BatchNorm2d>());
        Assert.That(bn.num_features, Is.EqualTo(7));
        Assert.That(bn.eps, Is.EqualTo(1e-3));
        Assert.That(bn.momentum, Is.Null);
        Assert.That(bn.affine, Is.False);
        Assert.That(bn.weight, Is.Null);
        Assert.That(bn.track_running_stats, Is.True);
        Assert.That(bn.running_mean!.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(bn.training, Is.True);
    }

    [TestCase(ScalarType.Float32)]
    [TestCase(ScalarType.Float64)]
    public void BatchNorm2dFactory_TrainsAsTorchSharps(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(41);
        var ours = layers.BatchNorm2d(3, eps: 1e-4, momentum: 0.3, dtype: dtype);
        var theirs = nn.BatchNorm2d(3, eps: 1e-4, momentum: 0.3, dtype: dtype);
        var x = randn([4, 3, 5, 5], dtype).Times(3).Plus(2);
        var xOurs = x.clone().requires_grad_(true);
        var xTheirs = x.clone().requires_grad_(true);
        var dy = randn([4, 3, 5, 5], dtype);
        var y = ours.forward(xOurs);
        var expected = theirs.forward(xTheirs);
        y.backward([dy]);
        expected.backward([dy]);
        Tolerance.AssertClose(y, expected, "output");
        Tolerance.AssertClose(xOurs.grad, xTheirs.grad, "input grad");
        Tolerance.AssertClose(ours.weight!.grad, theirs.weight.grad, "weight grad");
        Tolerance.AssertClose(ours.bias!.grad, theirs.bias!.grad, "bias grad");
        Tolerance.AssertClose(ours.running_mean, theirs.running_mean, "running_mean");
        Tolerance.AssertClose(ours.running_var, theirs.running_var, "running_var");
    }

    [Test]
    public void Dropout2dFactory_DrawsTorchSharpsMasks()
    {
        using var scope = NewDisposeScope();
        var ours = layers.Dropout2d(0.3);
        var theirs = nn.Dropout2d(0.3);
        Assert.That(ours.p, Is.EqualTo(0.3));
        Assert.That(ours.inplace, Is.False);
        Assert.That(layers.Dropout2d().p, Is.EqualTo(0.5));
        var x = randn(6, 8, 3, 3);
        manual_seed(42);
        var expected = theirs.forward(x);
        manual_seed(42);
        var actual = ours.forward(x);
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, "bit for bit under the same seed");
        using Scalar zero = 0;
        Assert.That(actual.flatten(2).eq(zero).all(2).any().item<bool>(), Is.True, "some channel is dropped");
    }

    [TestCase(ScalarType.Float32, true, true)]
    [TestCase(ScalarType.Float32, false, true)]
    [TestCase(ScalarType.Float64, true, true)]
    [TestCase(ScalarType.Float64, false, true)]
    [TestCase(ScalarType.Float32, true, false)]
    public void BatchNormFunctional_MatchesTorchSharps_ValuesGradientsAndRunningStats(ScalarType dtype, bool training, bool affine)
    {
        using var scope = NewDisposeScope();
        manual_seed(43);
        const int C = 5;
        var x = randn([6, C, 4, 3], dtype).Times(2).Minus(1);
        var weight = rand(C, dtype).Plus(0.5);
        var bias = randn(C, dtype);
        var mean = randn(C, dtype);
        var variance = rand(C, dtype).Plus(0.5);
        var dy = randn([6, C, 4, 3], dtype);

        var (ourX, ourW, ourB) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true), bias.clone().requires_grad_(true));
        var (theirX, theirW, theirB) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true), bias.clone().requires_grad_(true));
        var (ourMean, ourVar, theirMean, theirVar) = (mean.clone(), variance.clone(), mean.clone(), variance.clone());

        var actual = layers.functional.batch_norm(ourX, ourMean, ourVar, affine ? ourW : null, affine ? ourB : null, training, 0.2, 1e-3);
        var expected = nn.functional.batch_norm(theirX, theirMean, theirVar, affine ? theirW : null, affine ? theirB : null, training, 0.2, 1e-3);
        Assert.That(actual.requires_grad, Is.True, "the output is part of a graph");
        actual.backward([dy]);
        expected.backward([dy]);

        Tolerance.AssertClose(actual, expected, "output");
        Tolerance.AssertClose(ourMean, theirMean, "running_mean");
        Tolerance.AssertClose(ourVar, theirVar, "running_var");
        Tolerance.AssertClose(ourX.grad, theirX.grad, "input grad");
        if (affine)
        {
            Tolerance.AssertClose(ourW.grad, theirW.grad, "weight grad");
            Tolerance.AssertClose(ourB.grad, theirB.grad, "bias grad");
        }
    }

    [TestCase(true, false)]
    [TestCase(false, true)]
    public void BatchNormFunctional_OnlyWeightOrOnlyBias_NoRunningStats_MatchesTorchSharps(bool withWeight, bool withBias)
    {
        using var scope = NewDisposeScope();
        manual_seed(49);
        var x = randn(3, 4, 2, 5);
        var dy = randn(3, 4, 2, 5);
        var weight = rand(4).Plus(0.5);
        var bias = randn(4);
        var (ourX, ourW, ourB) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true), bias.clone().requires_grad_(true));
        var (theirX, theirW, theirB) = (x.clone().requires_grad_(true), weight.clone().requires_grad_(true), bias.clone().requires_grad_(true));
        var actual = layers.functional.batch_norm(ourX, null, null, withWeight ? ourW : null, withBias ? ourB : null, training: true);
        var expected = nn.functional.batch_norm(theirX, null, null, withWeight ? theirW : null, withBias ? theirB : null, training: true);
        actual.backward([dy]);
        expected.backward([dy]);
        Tolerance.AssertClose(actual, expected, "output");
        Tolerance.AssertClose(ourX.grad, theirX.grad, "input grad");
        if (withWeight)
        {
            Tolerance.AssertClose(ourW.grad, theirW.grad, "weight grad");
        }

        if (withBias)
        {
            Tolerance.AssertClose(ourB.grad, theirB.grad, "bias grad");
        }
    }

    [Test]
    public void BatchNormFunctional_DefaultsAreTorchSharps_EvaluationWithRunningStats()
    {
        using var scope = NewDisposeScope();
        manual_seed(44);
        var x = randn(2, 3, 4, 4);
        var mean = randn(3);
        var variance = rand(3).Plus(0.5);
        var ourMean = mean.clone();
        var expected = nn.functional.batch_norm(x, mean, variance);
        var actual = layers.functional.batch_norm(x, ourMean, variance);
        Tolerance.AssertClose(actual, expected, "evaluation output with defaults");
        Tolerance.AssertClose(ourMean, mean, "running_mean untouched in evaluation");
    }

    [Test]
    public void BatchNormFunctional_BadInput_Throws_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var x = randn(1, 3, 1, 1);
        var mean = randn(3);
        var variance = rand(3).Plus(0.5);
        using var snapshot = new Snapshot();
        snapshot.Add("x", x);
        snapshot.Add("running_mean", mean);
        snapshot.Add("running_var", variance);
        var e = Assert.Throws<ArgumentException>(() => layers.functional.batch_norm(x, mean, variance, training: true));
        Assert.That(e!.Message, Does.StartWith("Expected more than 1 value per channel when training"));
        Assert.Throws<ArgumentException>(() => layers.functional.batch_norm(randn(2, 4, 2, 2), mean, variance, training: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => layers.functional.batch_norm(randn(2, 3, 2, 2), mean, variance, training: true, eps: -1));
        snapshot.AssertUnchanged();
    }

    [TestCase(ScalarType.Float32, 0.4)]
    [TestCase(ScalarType.Float64, 0.7)]
    public void Dropout2dFunctional_MatchesTorchSharpsBitForBit_WithGradients(ScalarType dtype, double p)
    {
        using var scope = NewDisposeScope();
        var x = randn([5, 6, 3, 4], dtype);
        var dy = randn([5, 6, 3, 4], dtype);
        var ourX = x.clone().requires_grad_(true);
        var theirX = x.clone().requires_grad_(true);
        manual_seed(45);
        var expected = nn.functional.dropout2d(theirX, p, training: true);
        manual_seed(45);
        var actual = layers.functional.dropout2d(ourX, p, training: true);
        Assert.That(actual.requires_grad, Is.True, "the output is part of a graph");
        actual.backward([dy]);
        expected.backward([dy]);
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, "output, bit for bit");
        Assert.That(ourX.grad!.eq(theirX.grad!).all().item<bool>(), Is.True, "input grad, bit for bit");
    }

    [Test]
    public void Dropout2dFunctional_DefaultsAndEvaluation_AreTorchSharps()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 8, 2, 2);
        manual_seed(46);
        var expected = nn.functional.dropout2d(x);
        manual_seed(46);
        var actual = layers.functional.dropout2d(x);
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, "p = 0.5, training by default");
        var evaluated = layers.functional.dropout2d(x, 0.5, training: false);
        Assert.That(evaluated.eq(x).all().item<bool>(), Is.True, "not training: the input");
    }

    [Test]
    public void Dropout2dFunctional_InPlace_MatchesTorchSharps()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 8, 2, 2);
        var ours = x.clone();
        var theirs = x.clone();
        manual_seed(47);
        nn.functional.dropout2d(theirs, 0.5, training: true, inplace: true);
        manual_seed(47);
        layers.functional.dropout2d(ours, 0.5, training: true, inplace: true);
        Assert.That(ours.eq(theirs).all().item<bool>(), Is.True, "written in place, bit for bit");
    }

    [Test]
    public void Dropout2dFunctional_BadProbability_Throws_AndDrawsNothing()
    {
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 2, 2);
        using var snapshot = new Snapshot();
        snapshot.Add("x", x);
        manual_seed(48);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => layers.functional.dropout2d(x, 1.5, inplace: true));
        Assert.That(e!.Message, Does.StartWith("dropout probability has to be between 0 and 1, but got 1.5"));
        snapshot.AssertUnchanged();
        var next = rand(1).item<float>();
        manual_seed(48);
        Assert.That(next, Is.EqualTo(rand(1).item<float>()), "nothing drawn from the generator");
    }
}
