using System;
using System.Linq;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// <see cref="layers.fuse_modules"/>: a fused model trains bit for bit as the unfused one with our layers, keeps its
/// state_dict keys, and refuses groups it cannot fuse with nothing changed.
/// </summary>
[TestFixture]
public class ModuleFusionTests
{
    /// <summary>A small CNN whose layers are fields, as a TorchSharp model class holds them.</summary>
    private sealed class Net : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> conv1 = nn.Conv2d(3, 8, 3, padding: 1);
        private nn.Module<Tensor, Tensor> bn1;
        private nn.Module<Tensor, Tensor> relu1 = nn.ReLU();
        private nn.Module<Tensor, Tensor> drop1;
        private readonly nn.Module<Tensor, Tensor> conv2 = nn.Conv2d(8, 8, 3, padding: 1);
        private nn.Module<Tensor, Tensor> bn2;
        private nn.Module<Tensor, Tensor> relu2 = nn.ReLU();
        private readonly nn.Module<Tensor, Tensor> head = nn.Linear(8, 4);

        public Net(bool ours)
            : base(nameof(Net))
        {
            bn1 = ours ? layers.BatchNorm2d(8) : nn.BatchNorm2d(8);
            drop1 = ours ? layers.Dropout2d(0.3) : nn.Dropout2d(0.3);
            bn2 = ours ? layers.BatchNorm2d(8) : nn.BatchNorm2d(8);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            x = drop1.forward(relu1.forward(bn1.forward(conv1.forward(x))));
            x = relu2.forward(bn2.forward(conv2.forward(x)));
            return head.forward(x.mean([2, 3]));
        }
    }

    /// <summary>A model whose ReLU field is typed ReLU: it cannot hold the Identity that takes its place.</summary>
    private sealed class NarrowFields : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> bn = layers.BatchNorm2d(4);
        private readonly ReLU relu = nn.ReLU();

        public NarrowFields()
            : base(nameof(NarrowFields)) => RegisterComponents();

        public override Tensor forward(Tensor x) => relu.forward(bn.forward(x));
    }

    private static readonly string[][] Groups = [["bn1", "relu1", "drop1"], ["bn2", "relu2"]];

    [Test]
    public void FusedModel_TrainsBitForBitAsOurUnfusedModel_WithAnOptimizerMadeBeforeFusing()
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var unfused = new Net(ours: true);
        manual_seed(1);
        var fused = new Net(ours: true);
        var unfusedOptimizer = optim.SGD(unfused.parameters(), 0.1, momentum: 0.9);
        var fusedOptimizer = optim.SGD(fused.parameters(), 0.1, momentum: 0.9);
        Assert.That(layers.fuse_modules(fused, Groups), Is.SameAs(fused));
        Assert.That(fused.named_children().Select(c => c.module.GetType().Name), Is.EqualTo(new[]
        {
            "Conv2d", nameof(BatchNormReLUDropout2d), "Identity", "Identity", "Conv2d", nameof(BatchNormReLUDropout2d), "Identity", "Linear",
        }));

        for (int step = 0; step < 4; step++)
        {
            bool training = step < 3;
            unfused.train(training);
            fused.train(training);
            manual_seed(10 + step);
            var x = randn(6, 3, 9, 9);
            var target = randint(0, 4, [6]);
            var expected = Step(unfused, unfusedOptimizer, x, target, step);
            var actual = Step(fused, fusedOptimizer, x, target, step);
            Assert.That(BitsEqual(actual, expected), Is.True, $"loss at step {step}: {actual.item<float>():R} vs {expected.item<float>():R}");
            var theirs = unfused.state_dict();
            foreach (var (key, value) in fused.state_dict())
            {
                Assert.That(BitsEqual(value, theirs[key]), Is.True, $"{key} after step {step}");
            }
        }
    }

    [Test]
    public void StateDict_KeepsItsKeys_AndLoadsEitherWay()
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var before = new Net(ours: false);
        var keys = before.state_dict().Keys.ToArray();
        manual_seed(3);
        var model = new Net(ours: false);
        layers.fuse_modules(model, Groups);
        Assert.That(model.state_dict().Keys, Is.EqualTo(keys));

        model.load_state_dict(before.state_dict());
        foreach (var (key, value) in before.state_dict())
        {
            Assert.That(BitsEqual(model.state_dict()[key], value), Is.True, key);
        }

        manual_seed(4);
        var after = new Net(ours: false);
        after.load_state_dict(model.state_dict());
        foreach (var (key, value) in model.state_dict())
        {
            Assert.That(BitsEqual(after.state_dict()[key], value), Is.True, key);
        }
    }

    /// <summary>
    /// TorchSharp's BatchNorm disposes its parameters and buffers from its finalizer: the module a block replaced must
    /// not take the tensors it shares with the block when it is collected.
    /// </summary>
    [Test]
    public void ReplacedTorchSharpBatchNorm_IsNotFinalizedUnderTheBlock()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var model = new Net(ours: false);
        var expected = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        layers.fuse_modules(model, Groups);
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        var state = model.state_dict();
        Assert.That(state.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (key, value) in expected)
        {
            Assert.That(BitsEqual(state[key], value), Is.True, key);
        }

        model.train();
        using var output = model.forward(randn(2, 3, 5, 5));
        Assert.That(output.isfinite().all().item<bool>(), Is.True, "a forward after collection");
    }

    [Test]
    public void TorchSharpLayersInASequential_FuseByDottedName_AndMatchTorchSharpWithinTolerance()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        TorchSharp.Modules.Sequential Build() => nn.Sequential(
            ("features", nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout2d(0.25))),
            ("pool", nn.AdaptiveAvgPool2d(1)));
        var theirs = Build();
        var model = Build();
        model.load_state_dict(theirs.state_dict());
        layers.fuse_modules(model, [["features.1", "features.2", "features.3"]]);
        var features = (TorchSharp.Modules.Sequential)model.named_children().First().module;
        Assert.That(features.named_children().Select(c => c.module.GetType().Name), Is.EqualTo(new[] { "Conv2d", nameof(BatchNormReLUDropout2d), "Identity", "Identity" }));

        foreach (bool training in new[] { true, false })
        {
            theirs.train(training);
            model.train(training);
            var x = randn(4, 3, 8, 8);
            manual_seed(6);
            var expected = theirs.forward(x);
            manual_seed(6);
            var actual = model.forward(x);
            Tolerance.AssertClose(actual, expected, training ? "training output" : "evaluation output");
        }
    }

    [Test]
    public void GroupsItCannotFuse_Throw_AndChangeNothing()
    {
        using var scope = NewDisposeScope();
        var model = new Net(ours: true);
        string[] children = [.. model.named_children().Select(c => c.module.GetType().Name)];

        void Refused<TException>(string[][] groups, string words)
            where TException : Exception
        {
            var error = Assert.Throws<TException>(() => layers.fuse_modules(model, groups));
            Assert.That(error!.Message, Does.Contain(words));
            Assert.That(model.named_children().Select(c => c.module.GetType().Name), Is.EqualTo(children), "the model changed");
        }

        Refused<ArgumentException>([["relu1", "bn1"]], "starts with a BatchNorm2d");
        Refused<ArgumentException>([["bn1"]], "2 or 3 modules");
        Refused<ArgumentException>([["bn1", "drop1", "relu1"]], "in that order");
        Refused<ArgumentException>([["bn1", "conv2"]], "in that order");
        Refused<ArgumentException>([["bn1", "relu9"]], "no child named 'relu9'");
        Refused<ArgumentException>([["bn2", "relu2"], ["bn2", "relu1"]], "more than one place");
        Refused<ArgumentException>([["bn2", "relu2"], ["conv1", "relu1"]], "starts with a BatchNorm2d");

        model.named_children().First(c => c.name == "drop1").module.eval();
        Refused<ArgumentException>([["bn1", "relu1", "drop1"]], "training or all in evaluation");

        var narrow = new NarrowFields();
        var error = Assert.Throws<ArgumentException>(() => layers.fuse_modules(narrow, [["bn", "relu"]]));
        Assert.That(error!.Message, Does.Contain("field 'relu' of type ReLU"));
        Assert.That(narrow.named_children().Select(c => c.module.GetType().Name), Is.EqualTo(new[] { "BatchNorm2d", "ReLU" }));
    }

    private static Tensor Step(Net model, optim.Optimizer optimizer, Tensor x, Tensor target, int step)
    {
        optimizer.zero_grad();
        manual_seed(100 + step);
        var loss = nn.functional.cross_entropy(model.forward(x), target);
        if (model.training)
        {
            loss.backward();
            optimizer.step();
        }

        return loss.detach();
    }

    private static bool BitsEqual(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape))
        {
            return false;
        }

        return a.dtype switch
        {
            ScalarType.Float32 => a.contiguous().flatten().data<float>().Select(BitConverter.SingleToInt32Bits)
                .SequenceEqual(b.contiguous().flatten().data<float>().Select(BitConverter.SingleToInt32Bits)),
            ScalarType.Int64 => a.contiguous().flatten().data<long>().SequenceEqual(b.contiguous().flatten().data<long>()),
            _ => throw new ArgumentOutOfRangeException(nameof(a), a.dtype, "no bit comparison for this dtype"),
        };
    }
}
