using System.IO;
using System.Linq;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>Parameters, buffers and state dicts of our BatchNorm2d against TorchSharp's, and the explicit functional API.</summary>
[TestFixture]
public class BatchNorm2dStateTests
{
    [Test]
    public void StateDict_HasTorchSharpsKeysOrderAndDtypes()
    {
        using var ours = new BatchNorm2d(5);
        using var theirs = nn.BatchNorm2d(5);
        var a = ours.state_dict();
        var e = theirs.state_dict();
        Assert.That(a.Keys, Is.EqualTo(new[] { "weight", "bias", "running_mean", "running_var", "num_batches_tracked" }));
        Assert.That(a.Keys, Is.EqualTo(e.Keys));
        foreach (var key in e.Keys)
        {
            Assert.That(a[key].dtype, Is.EqualTo(e[key].dtype), key);
            Tolerance.AssertClose(a[key], e[key], key);
        }

        Assert.That(ours.parameters().Count(), Is.EqualTo(2));
        Assert.That(ours.named_buffers().Select(b => b.name), Is.EqualTo(new[] { "running_mean", "running_var", "num_batches_tracked" }));
    }

    [Test]
    public void StateDict_WithoutAffineOrTracking_IsEmpty()
    {
        using var ours = new BatchNorm2d(5, affine: false, track_running_stats: false);
        Assert.That(ours.state_dict(), Is.Empty);
        Assert.That(ours.parameters(), Is.Empty);
    }

    [Test]
    public void StateDict_FromTorchSharpIntoOursAndBack_GivesTheSameBehaviour()
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var theirs = nn.BatchNorm2d(4);
        using (no_grad())
        {
            theirs.weight.copy_(rand(4).Plus(0.5));
            theirs.bias!.copy_(randn(4));
        }

        for (int i = 0; i < 3; i++)
        {
            theirs.forward(randn(8, 4, 5, 5).Times(2).Plus(1));
        }

        var ours = new BatchNorm2d(4);
        ours.load_state_dict(theirs.state_dict());
        foreach (var (key, value) in theirs.state_dict())
        {
            Tolerance.AssertClose(ours.state_dict()[key], value, key);
        }

        var x = randn(8, 4, 5, 5);
        theirs.eval();
        ours.eval();
        Tolerance.AssertClose(ours.forward(x), theirs.forward(x), "eval output after loading TorchSharp's state");

        // Train ours further, then carry its state back into a fresh TorchSharp module.
        ours.train();
        theirs.train();
        var step = randn(8, 4, 5, 5).Minus(1);
        ours.forward(step);
        theirs.forward(step);
        var back = nn.BatchNorm2d(4);
        back.load_state_dict(ours.state_dict());
        foreach (var (key, value) in theirs.state_dict())
        {
            Tolerance.AssertClose(back.state_dict()[key], value, key);
        }

        back.eval();
        ours.eval();
        Tolerance.AssertClose(ours.forward(x), back.forward(x), "eval output after loading our state into TorchSharp's");
    }

    [Test]
    public void SaveAndLoad_ThroughAFile_RoundTrips()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var ours = new BatchNorm2d(3, momentum: null);
        ours.forward(randn(4, 3, 2, 2).Plus(3));
        string path = Path.GetTempFileName();
        try
        {
            ours.save(path);
            var theirs = nn.BatchNorm2d(3);
            theirs.load(path);
            var again = new BatchNorm2d(3);
            again.load(path);
            foreach (var (key, value) in ours.state_dict())
            {
                Tolerance.AssertClose(theirs.state_dict()[key], value, "TorchSharp's " + key);
                Tolerance.AssertClose(again.state_dict()[key], value, "ours " + key);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void ToFloat64_ConvertsParametersAndBuffers_ButKeepsTheCountAnInteger()
    {
        using var ours = new BatchNorm2d(3);
        ours.to(ScalarType.Float64);
        Assert.That(ours.weight!.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(ours.bias!.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(ours.running_mean!.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(ours.running_var!.dtype, Is.EqualTo(ScalarType.Float64));
        Assert.That(ours.num_batches_tracked!.dtype, Is.EqualTo(ScalarType.Int64));
        Assert.That(ours.state_dict()["weight"].dtype, Is.EqualTo(ScalarType.Float64));
        using var x = randn(2, 3, 2, 2, ScalarType.Float64);
        using var theirs = nn.BatchNorm2d(3, dtype: ScalarType.Float64);
        Tolerance.AssertClose(ours.forward(x), theirs.forward(x), "float64 output after .to(Float64)");
    }

    [Test]
    public void ResetRunningStatsAndParameters_RestoreTheInitialValues()
    {
        using var scope = NewDisposeScope();
        var ours = new BatchNorm2d(3);
        using (no_grad())
        {
            using Scalar three = 3, two = 2, one = 1;
            ours.weight!.mul_(three);
            ours.bias!.add_(two, one);
        }

        ours.forward(randn(4, 3, 2, 2).Plus(5));
        ours.reset_running_stats();
        var fresh = nn.BatchNorm2d(3);
        Tolerance.AssertClose(ours.running_mean, fresh.running_mean, "running_mean");
        Tolerance.AssertClose(ours.running_var, fresh.running_var, "running_var");
        Assert.That(ours.num_batches_tracked!.item<long>(), Is.Zero);
        Assert.That(ours.weight!.mean().item<float>(), Is.EqualTo(3f));
        ours.reset_parameters();
        Tolerance.AssertClose(ours.weight, fresh.weight, "weight");
        Tolerance.AssertClose(ours.bias, fresh.bias, "bias");
    }

    [TestCase(ScalarType.Float32, true)]
    [TestCase(ScalarType.Float32, false)]
    [TestCase(ScalarType.Float64, true)]
    [TestCase(ScalarType.Float64, false)]
    public void ExplicitForwardAndBackward_MatchTorchSharpsBatchNormAndAutograd(ScalarType dtype, bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(99);
        const int C = 6;
        var x = randn([5, C, 4, 3], dtype).Times(2).Plus(1);
        var weight = rand(C, dtype).Plus(0.5);
        var bias = randn(C, dtype);
        var ourMean = rand(C, dtype);
        var ourVar = rand(C, dtype).Plus(0.5);
        var theirMean = ourMean.clone();
        var theirVar = ourVar.clone();
        var dy = randn([5, C, 4, 3], dtype);

        var (output, saveMean, saveInvstd) = BatchNorm2dFunctional.Forward(x, weight, bias, ourMean, ourVar, training, momentum: 0.3, eps: 1e-4);
        var (dx, dWeight, dBias) = BatchNorm2dFunctional.Backward(dy, x, weight, saveMean, saveInvstd, training);

        var xLeaf = x.clone().requires_grad_(true);
        var wLeaf = weight.clone().requires_grad_(true);
        var bLeaf = bias.clone().requires_grad_(true);
        var expected = nn.functional.batch_norm(xLeaf, theirMean, theirVar, wLeaf, bLeaf, training, 0.3, 1e-4);
        expected.backward([dy]);

        Tolerance.AssertClose(output, expected, "output");
        Tolerance.AssertClose(ourMean, theirMean, "running_mean");
        Tolerance.AssertClose(ourVar, theirVar, "running_var");
        Tolerance.AssertClose(dx, xLeaf.grad, "grad_input");
        Tolerance.AssertClose(dWeight, wLeaf.grad, "grad_weight");
        Tolerance.AssertClose(dBias, bLeaf.grad, "grad_bias");
        if (training)
        {
            var (variance, mean) = var_mean(x, [0, 2, 3], unbiased: false);
            Tolerance.AssertClose(saveMean, mean, "save_mean");
            Tolerance.AssertClose(saveInvstd, variance.Plus(1e-4).rsqrt(), "save_invstd");
        }
    }
}
