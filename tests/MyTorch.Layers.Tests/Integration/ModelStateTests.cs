using System.IO;
using System.Linq;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>Whole models moving between TorchSharp's layers and ours through state dicts and files.</summary>
[TestFixture]
public class ModelStateTests
{
    [TestCase(false)]
    [TestCase(true)]
    public void StateDict_TrainedWithTorchSharp_LoadsIntoOurs_AndBack(bool throughFile)
    {
        using var scope = NewDisposeScope();
        var (theirs, _) = SmallModels.SamePair(seed: 31);
        TrainAFewSteps(theirs);
        var ours = SmallModels.Cnn(ours: true);
        Move(theirs, ours, throughFile);
        AssertSameState(ours, theirs);
        AssertSameEvalOutput(ours, theirs);

        // Ours trains further, then goes back into a fresh TorchSharp model.
        TrainAFewSteps(ours);
        var back = SmallModels.Cnn(ours: false);
        Move(ours, back, throughFile);
        AssertSameState(back, ours);
        AssertSameEvalOutput(ours, back);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void StateDict_OfTorchSharpsBatchNormGivenADtype_WithAFloatCounter_LoadsIntoOurs_AndBack(bool throughFile)
    {
        using var scope = NewDisposeScope();
        manual_seed(32);
        var theirs = SmallModels.Cnn(ours: false, dtype: ScalarType.Float32);
        TrainAFewSteps(theirs);
        var counter = theirs.state_dict()["bn1.num_batches_tracked"];
        Assert.That(counter.dtype, Is.EqualTo(ScalarType.Float32), "TorchSharp keeps the counter in the given dtype");
        Assert.That(counter.item<float>(), Is.EqualTo(3f));

        var ours = SmallModels.Cnn(ours: true);
        if (throughFile)
        {
            // TorchSharp's load requires every stored dtype to match the model's (its own BatchNorm2d built without a
            // dtype refuses this file too), so the counters are made float first, which ours accepts.
            foreach (var bn in ours.modules().OfType<BatchNorm2d>())
            {
                bn.num_batches_tracked = tensor(0f);
            }
        }

        Move(theirs, ours, throughFile);
        AssertSameState(ours, theirs);
        AssertSameEvalOutput(ours, theirs);

        // The count goes on from where TorchSharp left it, in ours and, after the way back, in TorchSharp's.
        TrainAFewSteps(ours);
        Assert.That(CountOf(ours), Is.EqualTo(6));
        var back = SmallModels.Cnn(ours: false, dtype: ScalarType.Float32);
        Move(ours, back, throughFile);
        Assert.That(CountOf(back), Is.EqualTo(6));
        AssertSameEvalOutput(ours, back);
    }

    private static double CountOf(nn.Module model) =>
        model.state_dict()["bn2.num_batches_tracked"].to(ScalarType.Float64).item<double>();

    private static void TrainAFewSteps(nn.Module<Tensor, Tensor> model)
    {
        using var scope = NewDisposeScope();
        var optimizer = optim.SGD(model.parameters(), 0.1, momentum: 0.9);
        model.train();
        for (int step = 0; step < 3; step++)
        {
            optimizer.zero_grad();
            var x = randn(8, 1, 8, 8).Times(2).Plus(1);
            var loss = nn.functional.cross_entropy(model.forward(x), randint(SmallModels.Classes, [8]));
            loss.backward();
            optimizer.step();
        }
    }

    private static void Move(nn.Module from, nn.Module to, bool throughFile)
    {
        if (!throughFile)
        {
            to.load_state_dict(from.state_dict());
            return;
        }

        string path = Path.GetTempFileName();
        try
        {
            from.save(path);
            to.load(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void AssertSameState(nn.Module actual, nn.Module expected)
    {
        var a = actual.state_dict();
        var e = expected.state_dict();
        Assert.That(a.Keys, Is.EqualTo(e.Keys));
        foreach (var key in e.Keys)
        {
            // Counters compare by value whatever their dtype (TorchSharp's may be float); everything else exactly as stored.
            if (key.EndsWith("num_batches_tracked", System.StringComparison.Ordinal))
            {
                Assert.That(a[key].to(ScalarType.Float64).item<double>(), Is.EqualTo(e[key].to(ScalarType.Float64).item<double>()), key);
            }
            else
            {
                Assert.That(a[key].eq(e[key]).all().item<bool>(), Is.True, key + ": bitwise after loading");
            }
        }
    }

    private static void AssertSameEvalOutput(nn.Module<Tensor, Tensor> actual, nn.Module<Tensor, Tensor> expected)
    {
        using var scope = NewDisposeScope();
        actual.eval();
        expected.eval();
        var x = randn(4, 1, 8, 8);
        using (no_grad())
        {
            Tolerance.AssertClose(actual.forward(x), expected.forward(x), "eval output");
        }

        actual.train();
        expected.train();
        Assert.That(actual.modules().Concat(expected.modules()).Select(m => m.training), Is.All.True);
    }
}
