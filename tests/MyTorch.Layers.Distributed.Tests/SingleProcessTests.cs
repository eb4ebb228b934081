using System;
using System.Collections.Generic;
using System.Linq;
using MyTorch.Layers.Distributed.Tests.Worker;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed.Tests;

/// <summary>SyncBatchNorm in one process: plain batch normalisation bit for bit, and convert_sync_batchnorm's model surgery.</summary>
[TestFixture]
public sealed class SingleProcessTests
{
    private static IEnumerable<TestCaseData> Ranks()
    {
        yield return new TestCaseData(new long[] { 6, 5 }).SetArgDisplayNames("2d");
        yield return new TestCaseData(new long[] { 4, 3, 5, 6 }).SetArgDisplayNames("4d");
        yield return new TestCaseData(new long[] { 2, 3, 3, 4, 5 }).SetArgDisplayNames("5d");
    }

    [TestCaseSource(nameof(Ranks))]
    public void SyncBatchNorm_WorldOfOne_IsOurBatchNorm_BitForBit(long[] shape)
    {
        MpiRun.RequireMpi();
        AssertSameAsBatchNorm(shape, ProcessGroup.World);
    }

    [TestCaseSource(nameof(Ranks))]
    public void SyncBatchNorm_OneProcessGroupOrNone_IsOurBatchNorm_BitForBit(long[] shape)
    {
        // Without a group and before ProcessGroup.World is used, MPI is not needed, as PyTorch's SyncBatchNorm before
        // init_process_group; when another test has started the world of one, the same holds through it.
        AssertSameAsBatchNorm(shape, null);
    }

    [Test]
    public void ConvertSyncBatchnorm_ReplacesEveryBatchNorm_SharingItsTensors_WithTheSameStateDict()
    {
        var inner = nn.Sequential(("norm", nn.BatchNorm1d(4)), ("relu", nn.ReLU()));
        var model = nn.Sequential(
            ("ours", new BatchNorm2d(3)),
            ("theirs", nn.BatchNorm2d(3)),
            ("volume", nn.BatchNorm3d(2)),
            ("inner", inner));
        model.eval();
        ((TorchSharp.Modules.BatchNorm)model.named_modules().Single(m => m.name == "theirs").module).running_mean!.fill_(0.25);
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var parameters = model.parameters().Select(p => p.Handle).ToList();

        var converted = SyncBatchNorm.convert_sync_batchnorm(model);

        Assert.Multiple(() =>
        {
            Assert.That(converted, Is.SameAs(model));
            Assert.That(model.modules().OfType<SyncBatchNorm>().Count(), Is.EqualTo(4));
            Assert.That(model.modules().OfType<TorchSharp.Modules.BatchNorm>().All(m => m is SyncBatchNorm), Is.True);
            Assert.That(model.modules().OfType<SyncBatchNorm>().All(m => !m.training), Is.True, "training mode kept");
            Assert.That(model.state_dict().Keys, Is.EqualTo(before.Keys), "state_dict keys in order");
            Assert.That(model.state_dict().All(kv => Compare.Identical(kv.Value, before[kv.Key])), Is.True, "state_dict values");
            Assert.That(model.parameters().Select(p => p.Handle), Is.EqualTo(parameters), "the same parameter tensors");
        });

        // Each replaced module's forward must run the new layer: its output equals our BatchNorm's on the same state.
        using var noGrad = no_grad();
        var x = randn(2, 4, 3);
        var expected = new BatchNorm1d(4);
        expected.load_state_dict(inner.named_modules().Single(m => m.name == "norm").module.state_dict());
        expected.eval();
        Assert.That(Compare.Identical(((nn.Module<Tensor, Tensor>)inner).forward(x), ((nn.Module<Tensor, Tensor>)expected).forward(x).relu()), Is.True);
    }

    [Test]
    public void ConvertSyncBatchnorm_OfABatchNorm_ReturnsItsReplacement()
    {
        var norm = nn.BatchNorm2d(5, momentum: 0.3, affine: false);
        var converted = SyncBatchNorm.convert_sync_batchnorm(norm);
        Assert.That(converted, Is.TypeOf<SyncBatchNorm>());
        var sync = (SyncBatchNorm)converted;
        Assert.Multiple(() =>
        {
            Assert.That(sync.num_features, Is.EqualTo(5));
            Assert.That(sync.momentum, Is.EqualTo(0.3));
            Assert.That(sync.affine, Is.False);
            Assert.That(sync.running_mean!.Handle, Is.EqualTo(norm.running_mean!.Handle));
        });
    }

    [Test]
    public void ConvertSyncBatchnorm_AFusedBlock_Throws_AndChangesNothing()
    {
        var model = nn.Sequential(("bn", new BatchNorm2d(3)), ("block", new BatchNormReLUDropout2d(3)));
        var ex = Assert.Throws<NotSupportedException>(() => SyncBatchNorm.convert_sync_batchnorm(model));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Message, Does.Contain("'block' is a BatchNormReLUDropout2d"));
            Assert.That(model.modules().OfType<SyncBatchNorm>(), Is.Empty, "the other BatchNorm was not converted either");
        });
    }

    [Test]
    public void SyncBatchNorm_Constructor_RefusesBadArguments()
    {
        Assert.Multiple(() =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => _ = new SyncBatchNorm(0));
            Assert.Throws<ArgumentOutOfRangeException>(() => _ = new SyncBatchNorm(3, eps: -1));
            Assert.Throws<ArgumentException>(() => _ = new SyncBatchNorm(3, dtype: ScalarType.Int32));
        });
    }

    /// <summary>Two training steps with backward and one evaluation step, SyncBatchNorm against our BatchNorm of that rank.</summary>
    private static void AssertSameAsBatchNorm(long[] shape, ProcessGroup? group)
    {
        manual_seed(5);
        BatchNormBase reference = shape.Length switch
        {
            2 => new BatchNorm1d(shape[1]),
            4 => new BatchNorm2d(shape[1]),
            _ => new BatchNorm3d(shape[1]),
        };
        var sync = new SyncBatchNorm(shape[1], process_group: group);
        using (no_grad())
        {
            var w = rand(shape[1]) + 0.5;
            reference.weight!.copy_(w);
            sync.weight!.copy_(w);
        }

        for (int step = 0; step < 3; step++)
        {
            if (step == 2)
            {
                reference.eval();
                sync.eval();
            }

            var x = (randn(shape) * 3) + 1;
            var dy = randn(shape);
            var xr = x.clone().requires_grad_();
            var xs = x.clone().requires_grad_();
            var yr = reference.forward(xr);
            var ys = sync.forward(xs);
            var gr = autograd.grad([yr], [xr, reference.weight!, reference.bias!], [dy]);
            var gs = autograd.grad([ys], [xs, sync.weight!, sync.bias!], [dy]);
            Assert.Multiple(() =>
            {
                Assert.That(Compare.Identical(ys, yr), Is.True, $"step {step}: output");
                for (int i = 0; i < 3; i++)
                {
                    Assert.That(Compare.Identical(gs[i], gr[i]), Is.True, $"step {step}: gradient {i}");
                }

                Assert.That(Compare.Identical(sync.running_var!, reference.running_var!), Is.True, $"step {step}: running_var");
                Assert.That(Compare.Identical(sync.num_batches_tracked!, reference.num_batches_tracked!), Is.True, $"step {step}: num_batches_tracked");
            });
        }
    }
}
