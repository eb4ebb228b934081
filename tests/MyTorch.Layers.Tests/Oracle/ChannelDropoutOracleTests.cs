using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// Dropout1d and Dropout3d against TorchSharp's, bit for bit: outputs, gradients, inputs written in place, and the default
/// generator afterwards; their refusals with nothing drawn or written.
/// </summary>
[TestFixture]
public class ChannelDropoutOracleTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        long[][] oneD = [[4, 3, 7], [2, 5, 1], [3, 7], [1, 2, 9]];
        long[][] threeD = [[2, 3, 4, 5, 6], [1, 2, 3, 1, 2], [3, 4, 5, 6]];
        foreach (var dtype in Dropout2dOracleTests.Dtypes)
        {
            foreach (double p in new[] { 0.3, 0.0, 1.0 })
            {
                foreach (bool inplace in new[] { false, true })
                {
                    foreach (bool training in new[] { true, false })
                    {
                        foreach (var shape in oneD)
                        {
                            yield return Case("Dropout1d", shape, false);
                        }

                        foreach (var shape in threeD)
                        {
                            yield return Case("Dropout3d", shape, false);
                            if (shape.Length == 5)
                            {
                                yield return Case("Dropout3d", shape, true);
                            }
                        }

                        TestCaseData Case(string layer, long[] shape, bool channelsLast3d) =>
                            new TestCaseData(layer, shape, channelsLast3d, dtype, p, inplace, training).SetArgDisplayNames(
                                layer,
                                string.Join('x', shape) + (channelsLast3d ? " channels-last-3d" : string.Empty),
                                dtype.ToString(),
                                string.Create(CultureInfo.InvariantCulture, $"p={p}"),
                                inplace ? "in place" : "new tensor",
                                training ? "training" : "eval");
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesTorchSharp_BitForBit(string layer, long[] shape, bool channelsLast3d, ScalarType dtype, double p, bool inplace, bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(31);
        var values = randn(shape, dtype);
        if (channelsLast3d)
        {
            values = values.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3);
        }

        var dy = randn(shape, dtype);
        var (ours, theirs) = Pair(layer, p, inplace);
        ours.train(training);
        theirs.train(training);

        // TorchSharp's Dropout1d refuses (C, L); PyTorch reads it as one sample, and so does ours: (1, C, L)'s mask.
        bool unbatched = layer == "Dropout1d" && shape.Length == 2;
        var expected = Step(x => unbatched ? theirs.forward(x.unsqueeze(0)).squeeze(0) : theirs.forward(x), values, dy, seed: 5);
        var actual = Step(ours.forward, values, dy, seed: 5);
        string[] names = ["output", "x.grad", "generator state after"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.That(actual[i].shape, Is.EqualTo(expected[i].shape), names[i] + ": shape");
            Assert.That(actual[i].eq(expected[i]).all().item<bool>(), Is.True, names[i] + ", bit for bit");
        }

        if (channelsLast3d && !inplace && training && p > 0)
        {
            var kept = Enumerable.Range(0, shape.Length).Where(d => shape[d] > 1).ToArray();
            Assert.That(kept.Select(d => actual[0].stride(d)), Is.EqualTo(kept.Select(d => values.stride(d))), "the output keeps the input's layout");
        }
    }

    [TestCase("Dropout1d", new long[] { 2, 3, 4, 5 })]
    [TestCase("Dropout1d", new long[] { 4 })]
    [TestCase("Dropout3d", new long[] { 2, 3, 4 })]
    [TestCase("Dropout3d", new long[] { 1, 2, 3, 4, 5, 6 })]
    public void WrongRank_IsRefused_NothingDrawnOrWritten(string layer, long[] shape)
    {
        using var scope = NewDisposeScope();
        var (ours, _) = Pair(layer, 0.5, inplace: true);
        var input = randn(shape);
        var before = input.clone();
        var generator = get_rng_state();
        var thrown = Assert.Throws<ArgumentException>(() => ours.forward(input));
        Assert.That(thrown!.Message, Does.StartWith($"{layer} expects"));
        Assert.That(input.eq(before).all().item<bool>(), Is.True, "the input is unchanged");
        Assert.That(get_rng_state().eq(generator).all().item<bool>(), Is.True, "nothing was drawn");
    }

    [Test]
    public void Dropout3d_OnStridesThatCannotBeViewedAsPlanes_MatchesTorchSharp_AndInPlaceIsRefused_NothingDrawnOrWritten()
    {
        using var scope = NewDisposeScope();
        var x = randn([2, 3, 5, 4, 6]).transpose(2, 3);
        manual_seed(3);
        var expected = nn.functional.dropout3d(x, 0.5, true, false);
        manual_seed(3);
        var actual = layers.functional.dropout3d(x, 0.5);
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, "out of place, through a copy");

        var before = x.clone();
        var generator = get_rng_state();
        var thrown = Assert.Throws<ArgumentException>(() => layers.Dropout3d(0.5, inplace: true).forward(x));
        Assert.That(thrown!.Message, Does.StartWith("Dropout3d in place needs an input whose memory can be viewed as [2, 3, 20, 6]"));
        Assert.That(x.eq(before).all().item<bool>(), Is.True, "the input is unchanged");
        Assert.That(get_rng_state().eq(generator).all().item<bool>(), Is.True, "nothing was drawn");
    }

    [Test]
    public void FunctionalForms_MatchTorchSharps_BitForBit()
    {
        using var scope = NewDisposeScope();
        var x1 = randn(4, 3, 6);
        var x3 = randn([2, 3, 2, 3, 4]);
        manual_seed(9);
        var expected1 = nn.functional.dropout1d(x1, 0.4, true, false);
        var expected3 = nn.functional.dropout3d(x3, 0.4, true, false);
        var state = get_rng_state();
        manual_seed(9);
        var actual1 = layers.functional.dropout1d(x1, 0.4);
        var actual3 = layers.functional.dropout3d(x3, 0.4);
        Assert.That(actual1.eq(expected1).all().item<bool>(), Is.True, "dropout1d");
        Assert.That(actual3.eq(expected3).all().item<bool>(), Is.True, "dropout3d");
        Assert.That(get_rng_state().eq(state).all().item<bool>(), Is.True, "generator");
    }

    private static (nn.Module<Tensor, Tensor> Ours, nn.Module<Tensor, Tensor> Theirs) Pair(string layer, double p, bool inplace) =>
        layer == "Dropout1d"
            ? (layers.Dropout1d(p, inplace), nn.Dropout1d(p, inplace))
            : (layers.Dropout3d(p, inplace), nn.Dropout3d(p, inplace));

    /// <summary>A forward and backward from <paramref name="seed"/>: the output, the input's gradient and the generator's state after.</summary>
    private static Tensor[] Step(Func<Tensor, Tensor> forward, Tensor values, Tensor dy, int seed)
    {
        // In place needs a non-leaf: the leaf's gradient then flows through the write, as in a network.
        var leaf = values.detach().clone().requires_grad_();
        var input = leaf * 1;
        manual_seed(seed);
        var output = forward(input);
        var state = get_rng_state();
        output.backward([dy]);
        return [output.detach().clone(), leaf.grad!.clone(), state];
    }
}
