using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// BatchNorm1d and BatchNorm3d against TorchSharp's, and what every BatchNorm layer shares: TorchSharp's base types,
/// state dicts both ways, the refusals with nothing changed, and the functional form on any rank.
/// </summary>
[TestFixture]
public class BatchNormFamilyOracleTests
{
    /// <summary>The memory layouts a rank has in PyTorch, plus a strided view.</summary>
    public enum RankLayout
    {
        Contiguous,

        /// <summary>Channels fastest: channels_last for 4-D input, channels_last_3d for 5-D ((N, D, H, W, C) memory).</summary>
        ChannelsLast,

        /// <summary>Every other element of the last dimension of a wider tensor.</summary>
        Strided,
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        long[][] oneD = [[8, 5], [2, 3], [16, 300], [4, 3, 7], [1, 6, 9], [3, 1, 2]];
        long[][] threeD = [[2, 3, 4, 5, 6], [1, 2, 3, 3, 3], [3, 5, 2, 1, 4]];
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            foreach (bool affine in new[] { true, false })
            {
                foreach (bool track in new[] { true, false })
                {
                    foreach (double? momentum in new double?[] { 0.1, null })
                    {
                        foreach (var shape in oneD)
                        {
                            foreach (var layout in new[] { RankLayout.Contiguous, RankLayout.Strided })
                            {
                                yield return Case("BatchNorm1d", dtype, affine, track, momentum, shape, layout);
                            }
                        }

                        foreach (var shape in threeD)
                        {
                            foreach (var layout in Enum.GetValues<RankLayout>())
                            {
                                yield return Case("BatchNorm3d", dtype, affine, track, momentum, shape, layout);
                            }
                        }
                    }
                }
            }
        }

        static TestCaseData Case(string layer, ScalarType dtype, bool affine, bool track, double? momentum, long[] shape, RankLayout layout) =>
            new TestCaseData(layer, dtype, affine, track, momentum, shape, layout).SetArgDisplayNames(
                layer,
                dtype.ToString(),
                affine ? "affine" : "no-affine",
                track ? "tracking" : "no-tracking",
                momentum is null ? "momentum=null" : string.Create(CultureInfo.InvariantCulture, $"momentum={momentum}"),
                string.Join('x', shape),
                layout.ToString());
    }

    [TestCaseSource(nameof(Cases))]
    public void TrainingThenEval_MatchesTorchSharp(string layer, ScalarType dtype, bool affine, bool track, double? momentum, long[] shape, RankLayout layout)
    {
        // The oracle is TorchSharp in float64 on the same values: ours rounds the float64 result once, where TorchSharp's
        // float32 result may be further off than the suite's tolerance (a channel of two values cancels).
        using var scope = NewDisposeScope();
        manual_seed(77);
        long channels = shape[1];
        var (ours, _) = Pair(layer, channels, affine, track, momentum, dtype);
        var (_, theirs) = Pair(layer, channels, affine, track, momentum, ScalarType.Float64);
        if (affine)
        {
            using var noGrad = no_grad();
            var gamma = rand(channels, dtype).Times(1.5).Plus(0.25);
            var beta = randn(channels, dtype);
            theirs.weight.copy_(gamma.to(ScalarType.Float64));
            theirs.bias!.copy_(beta.to(ScalarType.Float64));
            ours.weight.copy_(gamma);
            ours.bias!.copy_(beta);
        }

        for (int step = 0; step < 5; step++)
        {
            bool training = step < 3;
            theirs.train(training);
            ours.train(training);
            string at = $"{(training ? "training" : "eval")} step {step}";
            var scale = rand(ChannelShape(shape), dtype).Times(3).Plus(0.5);
            var values = (randn(shape, dtype) * scale) + randn(ChannelShape(shape), dtype);
            var gradOutput = randn(shape, dtype);
            var (theirLeaf, theirView) = InLayout(values.to(ScalarType.Float64), layout);
            var (ourLeaf, ourView) = InLayout(values, layout);

            var expected = theirs.forward(theirView);
            var actual = ours.forward(ourView);
            Tolerance.AssertClose(actual, expected.to(dtype), $"output, {at}");
            if (layout == RankLayout.ChannelsLast)
            {
                // Strides of dimensions of size 1 do not matter.
                var kept = Enumerable.Range(0, shape.Length).Where(d => shape[d] > 1).ToArray();
                Assert.That(kept.Select(d => actual.stride(d)), Is.EqualTo(kept.Select(d => ourView.stride(d))), $"the output keeps the input's memory layout, {at}");
            }

            expected.backward([gradOutput.to(ScalarType.Float64)]);
            actual.backward([gradOutput]);
            Tolerance.AssertClose(ourLeaf.grad, theirLeaf.grad!.to(dtype), $"x.grad, {at}");
            if (affine)
            {
                Tolerance.AssertClose(ours.weight.grad, theirs.weight.grad!.to(dtype), $"weight.grad, {at}");
                Tolerance.AssertClose(ours.bias!.grad, theirs.bias!.grad!.to(dtype), $"bias.grad, {at}");
                ours.zero_grad();
                theirs.zero_grad();
            }

            if (track)
            {
                Tolerance.AssertClose(ours.running_mean, theirs.running_mean!.to(dtype), $"running_mean, {at}");
                Tolerance.AssertClose(ours.running_var, theirs.running_var!.to(dtype), $"running_var, {at}");
                Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(theirs.num_batches_tracked!.to(ScalarType.Int64).item<long>()), $"num_batches_tracked, {at}");
            }
        }
    }

    [TestCase("BatchNorm1d", new long[] { 2, 3, 4, 5 }, "expected 2D or 3D input, but got 4D input.")]
    [TestCase("BatchNorm1d", new long[] { 3 }, "expected 2D or 3D input, but got 1D input.")]
    [TestCase("BatchNorm3d", new long[] { 2, 3, 4, 5 }, "expected 5D input, but got 4D input.")]
    [TestCase("BatchNorm3d", new long[] { 1, 2, 3, 4, 5, 6 }, "expected 5D input, but got 6D input.")]
    public void WrongRank_IsRefusedInTorchSharpsWords_AndChangesNothing(string layer, long[] shape, string message)
    {
        using var scope = NewDisposeScope();
        var (ours, _) = Pair(layer, 3, affine: true, track: true, momentum: 0.1, ScalarType.Float32);
        var input = randn(shape);
        using var snapshot = Snapshot.Of(ours);
        var thrown = Assert.Throws<ArgumentException>(() => ours.forward(input));
        Assert.That(thrown!.Message, Does.StartWith(message));
        snapshot.AssertUnchanged();
    }

    [TestCase("BatchNorm1d", new long[] { 1, 3 }, "[1, 3]")]
    [TestCase("BatchNorm1d", new long[] { 1, 3, 1 }, "[1, 3, 1]")]
    [TestCase("BatchNorm3d", new long[] { 1, 3, 1, 1, 1 }, "[1, 3, 1, 1, 1]")]
    public void OneValuePerChannelInTraining_IsRefused_AndChangesNothing(string layer, long[] shape, string size)
    {
        using var scope = NewDisposeScope();
        var (ours, _) = Pair(layer, 3, affine: true, track: true, momentum: 0.1, ScalarType.Float32);
        using var snapshot = Snapshot.Of(ours);
        var thrown = Assert.Throws<ArgumentException>(() => ours.forward(randn(shape)));
        Assert.That(thrown!.Message, Does.StartWith($"Expected more than 1 value per channel when training, got input size {size}"));
        snapshot.AssertUnchanged();

        ours.eval();
        Assert.That(ours.forward(randn(shape)).shape, Is.EqualTo(shape), "evaluation uses the running statistics");
    }

    [Test]
    public void EveryBatchNormLayer_IsTorchSharpsBatchNorm_AndFoundAsOne()
    {
        using var scope = NewDisposeScope();
        var model = nn.Sequential(
            ("bn1", layers.BatchNorm1d(4)),
            ("bn2", layers.BatchNorm2d(4)),
            ("bn3", layers.BatchNorm3d(4)),
            ("theirs", nn.BatchNorm1d(4)));
        var found = model.modules().OfType<TorchSharp.Modules.BatchNorm>().ToList();
        Assert.That(found, Has.Count.EqualTo(4));
        Assert.That(found.OfType<BatchNormBase>().Count(), Is.EqualTo(3));
        Assert.That(model.modules().OfType<TorchSharp.Modules.NormBase>().Count(), Is.EqualTo(4));

        // Through TorchSharp's base type, the forward is still ours: it refuses one value per channel, TorchSharp's accepts it.
        TorchSharp.Modules.BatchNorm asBase = layers.BatchNorm1d(3);
        Assert.Throws<ArgumentException>(() => asBase.forward(randn(1, 3)));
    }

    [Test]
    public void BuffersAndParameters_StayValid_AfterTheModuleIsCollected_AndGoWithDispose()
    {
        var (runningMean, weight) = Held();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.That(runningMean.IsInvalid, Is.False, "a buffer held after the module was dropped");
        Assert.That(runningMean.sum().item<float>(), Is.Zero);
        Assert.That(weight.sum().item<float>(), Is.EqualTo(3f));

        var bn = layers.BatchNorm2d(3);
        var held = bn.running_var!;
        bn.Dispose();
        Assert.That(held.IsInvalid, Is.True, "Dispose() still disposes the buffers, as TorchSharp's does");

        static (Tensor RunningMean, Tensor Weight) Held()
        {
            var module = layers.BatchNorm1d(3);
            return (module.running_mean!, module.weight);
        }
    }

    [Test]
    public void FuseLinearBnEval_TakesOurBatchNorm1d_AsItTakesTorchSharps()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var linear = nn.Linear(6, 4);
        var ours = layers.BatchNorm1d(4);
        var theirs = nn.BatchNorm1d(4);
        using (no_grad())
        {
            foreach (var bn in new TorchSharp.Modules.BatchNorm[] { ours, theirs })
            {
                bn.weight.copy_(tensor(new[] { 0.5f, 1.5f, -1f, 2f }));
                bn.bias!.copy_(tensor(new[] { 0.1f, -0.2f, 0.3f, 0f }));
                bn.running_mean!.copy_(tensor(new[] { 0.2f, -1f, 0.5f, 3f }));
                bn.running_var!.copy_(tensor(new[] { 1.5f, 0.25f, 2f, 0.7f }));
            }
        }

        ours.eval();
        theirs.eval();
        linear.eval();
        var x = randn(5, 6);
        var expected = theirs.forward(linear.forward(x));
        var fusedWithOurs = nn.utils.fuse_linear_bn_eval(linear, ours);
        var fusedWithTheirs = nn.utils.fuse_linear_bn_eval(linear, theirs);
        Tolerance.AssertClose(fusedWithOurs.forward(x), expected, "fused with ours");
        Tolerance.AssertClose(fusedWithOurs.weight, fusedWithTheirs.weight, "fused weight");
        Tolerance.AssertClose(ours.forward(linear.forward(x)), expected, "ours unfused");
    }

    [TestCase("BatchNorm1d")]
    [TestCase("BatchNorm3d")]
    public void StateDict_MovesBetweenTorchSharpsLayerAndOurs_InBothDirections(string layer)
    {
        using var scope = NewDisposeScope();
        manual_seed(6);
        var (ours, theirs) = Pair(layer, 3, affine: true, track: true, momentum: 0.1, ScalarType.Float32);
        var shape = layer == "BatchNorm1d" ? new long[] { 4, 3, 5 } : [2, 3, 2, 3, 2];
        theirs.forward(randn(shape).Times(2).Plus(1));
        using (no_grad())
        {
            theirs.weight.add_(0.5);
        }

        Assert.That(ours.state_dict().Keys, Is.EqualTo(theirs.state_dict().Keys), "keys, in order");
        ours.load_state_dict(theirs.state_dict());
        foreach (var (key, value) in theirs.state_dict())
        {
            Assert.That(ours.state_dict()[key].to(value.dtype).eq(value).all().item<bool>(), Is.True, key);
        }

        ours.forward(randn(shape));
        var back = Pair(layer, 3, affine: true, track: true, momentum: 0.1, ScalarType.Float32).Theirs;
        back.load_state_dict(ours.state_dict());
        Assert.That(back.running_mean!.eq(ours.running_mean!).all().item<bool>(), Is.True, "running_mean back in TorchSharp's");
        Assert.That(back.num_batches_tracked!.to(ScalarType.Int64).item<long>(), Is.EqualTo(2));
    }

    [TestCase(new long[] { 6, 4 })]
    [TestCase(new long[] { 3, 4, 5 })]
    [TestCase(new long[] { 2, 4, 3, 5 })]
    [TestCase(new long[] { 2, 4, 2, 3, 2 })]
    [TestCase(new long[] { 2, 4, 2, 1, 2, 3 })]
    public void FunctionalBatchNorm_AnyRank_MatchesTorchSharp(long[] shape)
    {
        using var scope = NewDisposeScope();
        manual_seed(8);
        var values = randn(shape, ScalarType.Float64).Times(2).Plus(0.3);
        var dy = randn(shape, ScalarType.Float64);
        var weight = rand(4, ScalarType.Float64).Plus(0.5);
        var bias = randn(4, ScalarType.Float64);
        Tensor[] Run(Func<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> batchNorm)
        {
            var x = values.detach().clone().requires_grad_();
            var w = weight.detach().clone().requires_grad_();
            var b = bias.detach().clone().requires_grad_();
            var runningMean = zeros(4, ScalarType.Float64);
            var runningVar = ones(4, ScalarType.Float64);
            var y = batchNorm(x, runningMean, runningVar, w, b);
            var grads = torch.autograd.grad([y], [x, w, b], [dy]);
            return [y, .. grads, runningMean, runningVar];
        }

        var expected = Run((x, rm, rv, w, b) => nn.functional.batch_norm(x, rm, rv, w, b, training: true, momentum: 0.2, eps: 1e-4));
        var actual = Run((x, rm, rv, w, b) => layers.functional.batch_norm(x, rm, rv, w, b, training: true, momentum: 0.2, eps: 1e-4));
        string[] names = ["output", "x.grad", "weight.grad", "bias.grad", "running_mean", "running_var"];
        for (int i = 0; i < names.Length; i++)
        {
            Tolerance.AssertClose(actual[i], expected[i], names[i]);
        }

        var (output, _, _) = BatchNormFunctional.Forward(values, weight, bias, null, null, training: true, momentum: 0.1, eps: 1e-4);
        Tolerance.AssertClose(output, expected[0], "explicit forward");
    }

    /// <summary>Our layer and TorchSharp's of the name <paramref name="layer"/>, built with the same arguments.</summary>
    internal static (BatchNormBase Ours, TorchSharp.Modules.BatchNorm Theirs) Pair(string layer, long channels, bool affine, bool track, double? momentum, ScalarType dtype)
    {
        TorchSharp.Modules.BatchNorm theirs = layer switch
        {
            "BatchNorm1d" => nn.BatchNorm1d(channels, 1e-5, momentum ?? 0.1, affine, track, dtype: dtype),
            "BatchNorm2d" => nn.BatchNorm2d(channels, 1e-5, momentum ?? 0.1, affine, track, dtype: dtype),
            _ => nn.BatchNorm3d(channels, 1e-5, momentum ?? 0.1, affine, track, dtype: dtype),
        };
        theirs.momentum = momentum;
        BatchNormBase ours = layer switch
        {
            "BatchNorm1d" => new BatchNorm1d(channels, 1e-5, momentum, affine, track, dtype: dtype),
            "BatchNorm2d" => new BatchNorm2d(channels, 1e-5, momentum, affine, track, dtype: dtype),
            _ => new BatchNorm3d(channels, 1e-5, momentum, affine, track, dtype: dtype),
        };
        return (ours, theirs);
    }

    /// <summary>(1, C, 1, …, 1): one value per channel, broadcast over the others.</summary>
    internal static long[] ChannelShape(long[] shape) => [1, shape[1], .. Enumerable.Repeat(1L, shape.Length - 2)];

    /// <summary>The same values as a leaf that requires grad and the view of it in <paramref name="layout"/> given to the layer.</summary>
    internal static (Tensor Leaf, Tensor View) InLayout(Tensor values, RankLayout layout)
    {
        switch (layout)
        {
            case RankLayout.ChannelsLast:
                {
                    int rank = values.shape.Length;
                    long[] channelLast = [0, .. Enumerable.Range(2, rank - 2).Select(d => (long)d), 1];
                    long[] back = [0, rank - 1, .. Enumerable.Range(1, rank - 2).Select(d => (long)d)];
                    var leaf = values.detach().permute(channelLast).contiguous().permute(back).requires_grad_(true);
                    return (leaf, leaf);
                }

            case RankLayout.Strided:
                {
                    long[] wideShape = [.. values.shape[..^1], 2 * values.shape[^1]];
                    var wide = zeros(wideShape, values.dtype);
                    int last = values.shape.Length - 1;
                    wide.slice(last, 0, wideShape[^1], 2).copy_(values);
                    var leaf = wide.detach().clone().requires_grad_(true);
                    return (leaf, leaf.slice(last, 0, wideShape[^1], 2));
                }

            default:
                {
                    var leaf = values.detach().clone().requires_grad_(true);
                    return (leaf, leaf);
                }
        }
    }
}
