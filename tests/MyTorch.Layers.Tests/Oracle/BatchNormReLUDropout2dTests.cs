using System;
using System.Collections.Generic;
using System.Linq;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// The fused BatchNorm2d → ReLU → Dropout2d block against its definition: our BatchNorm2d, TorchSharp's ReLU and our
/// Dropout2d one after another, on identical inputs under the same seed, bit for bit (output, every gradient, running
/// statistics, num_batches_tracked, the default generator's state afterwards); and against TorchSharp's three layers
/// within the suite's tolerance.
/// </summary>
[TestFixture]
public class BatchNormReLUDropout2dTests
{
    public static IEnumerable<TestCaseData> Blocks()
    {
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            foreach (bool channelsLast in new[] { false, true })
            {
                foreach (var (relu, p) in new[] { (true, 0.3), (true, 0.0), (false, 0.5), (true, 1.0) })
                {
                    foreach (var (affine, track, momentum) in new[] { (true, true, (double?)0.1), (false, true, null), (true, false, 0.1) })
                    {
                        yield return new TestCaseData(dtype, channelsLast, relu, p, affine, track, momentum).SetArgDisplayNames(
                            $"{dtype}, {(channelsLast ? "channels-last" : "NCHW")}, relu {relu}, p {p}, affine {affine}, track {track}, momentum {momentum?.ToString() ?? "null"}");
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Blocks))]
    public void TrainingAndEvaluation_AreBitIdenticalToOurThreeLayers(ScalarType dtype, bool channelsLast, bool relu, double p, bool affine, bool track, double? momentum)
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(6, dtype, relu, p, affine, track, momentum, seed: 3);
        foreach (bool training in new[] { true, true, true, false, false })
        {
            fused.train(training);
            unfused.train(training);
            manual_seed(100);
            var x = Input([5, 6, 7, 9], dtype, channelsLast, seed: 11);
            var dy = Input([5, 6, 7, 9], dtype, channelsLast, seed: 12);
            var expected = Step(unfused, x, dy, seed: 21);
            var expectedGenerator = get_rng_state();
            var actual = Step(fused, x, dy, seed: 21);
            Assert.That(get_rng_state().eq(expectedGenerator).all().item<bool>(), Is.True, "the default generator's state afterwards");
            foreach (var (name, value) in expected)
            {
                AssertBitIdentical(actual[name], value, $"{name} ({(training ? "training" : "evaluation")})");
            }

            AssertBitIdentical(fused.running_mean, ((BatchNorm2d)unfused[0]).running_mean, "running_mean");
            AssertBitIdentical(fused.running_var, ((BatchNorm2d)unfused[0]).running_var, "running_var");
            AssertBitIdentical(fused.num_batches_tracked, ((BatchNorm2d)unfused[0]).num_batches_tracked, "num_batches_tracked");
        }
    }

    /// <summary>
    /// Planes of one to four values and of 4×4 (summed four planes at a time, 4×4 one vector step each), channels-last
    /// rows of whole vectors and a remainder and rows gated in the sums' and dx's own loops (128 float32, 96 float64 channels), planes that cross vector steps, inputs of many
    /// chunks spread over threads, and outputs large enough (13 MB) to be written with streaming stores, where the
    /// block's ReLU and dropout run inside batch normalisation's kernels; among those, planes of 63 values, which cross
    /// vector steps and start chunks off a cache line.
    /// </summary>
    [TestCase(3, 8, 1, 1, false)]
    [TestCase(7, 5, 2, 2, false)]
    [TestCase(7, 5, 2, 2, true)]
    [TestCase(4, 3, 5, 13, false)]
    [TestCase(4, 8, 64, 70, false)]
    [TestCase(4, 8, 64, 70, true)]
    [TestCase(64, 24, 3, 3, true)]
    [TestCase(8, 16, 160, 160, false)]
    [TestCase(8, 16, 160, 160, true)]
    [TestCase(512, 128, 7, 9, false)]
    [TestCase(33, 24, 4, 4, false)]
    [TestCase(512, 16, 4, 4, false)]
    [TestCase(33, 24, 4, 4, false, ScalarType.Float64)]
    [TestCase(16, 40, 5, 7, true)]
    [TestCase(16, 24, 5, 7, true, ScalarType.Float64)]
    [TestCase(6, 128, 5, 7, true)]
    [TestCase(8, 128, 24, 24, true)]
    [TestCase(6, 96, 5, 7, true, ScalarType.Float64)]
    public void EveryShapeAndChunking_IsBitIdenticalToOurThreeLayers(int n, int c, int h, int w, bool channelsLast, ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(c, dtype, relu: true, p: 0.4, affine: true, track: true, momentum: 0.1, seed: 8);
        foreach (bool training in new[] { true, true, false })
        {
            fused.train(training);
            unfused.train(training);
            var x = Input([n, c, h, w], dtype, channelsLast, seed: 13);
            var dy = Input([n, c, h, w], dtype, channelsLast, seed: 14);
            var expected = Step(unfused, x, dy, seed: 23);
            var actual = Step(fused, x, dy, seed: 23);
            foreach (var (name, value) in expected)
            {
                AssertBitIdentical(actual[name], value, $"{name} ({(training ? "training" : "evaluation")})");
            }
        }
    }

    /// <summary>
    /// Channels-last rows that the kernels take whole vectors of (128 and 96 channels), a period in registers of (16,
    /// 32, 48 and 64 channels, and 3, 12 and 24 channels where a sample is whole periods of three vector steps) or a
    /// period of several rows of (3 channels on 9×9), with and without the ReLU and the mask: each loop's case against
    /// the three layers.
    /// </summary>
    [TestCase(4, 128, 6, 6, ScalarType.Float32)]
    [TestCase(3, 96, 5, 5, ScalarType.Float64)]
    [TestCase(4, 3, 9, 9, ScalarType.Float32)]
    [TestCase(4, 3, 8, 8, ScalarType.Float32)]
    [TestCase(3, 12, 4, 6, ScalarType.Float64)]
    [TestCase(4, 16, 6, 6, ScalarType.Float32)]
    [TestCase(3, 32, 5, 5, ScalarType.Float64)]
    [TestCase(3, 48, 4, 5, ScalarType.Float32)]
    [TestCase(2, 64, 3, 3, ScalarType.Float32)]
    [TestCase(3, 24, 5, 7, ScalarType.Float64)]
    public void ChannelsLastRows_WithAndWithoutReLUAndMask_AreBitIdenticalToOurThreeLayers(int n, int c, int h, int w, ScalarType dtype)
    {
        foreach (var (relu, p) in new[] { (true, 0.3), (true, 0.0), (false, 0.5) })
        {
            using var scope = NewDisposeScope();
            var (fused, unfused) = Pair(c, dtype, relu, p, affine: true, track: true, momentum: 0.1, seed: 9);
            var x = Input([n, c, h, w], dtype, channelsLast: true, seed: 15);
            var dy = Input([n, c, h, w], dtype, channelsLast: true, seed: 16);
            var expected = Step(unfused, x, dy, seed: 24);
            var actual = Step(fused, x, dy, seed: 24);
            foreach (var (name, value) in expected)
            {
                AssertBitIdentical(actual[name], value, $"{name} (relu {relu}, p {p})");
            }
        }
    }

    /// <summary>
    /// The block's forward draws its mask while it sums the batch statistics, on one of two threads where the input is
    /// large enough for two, or, where the kernels cannot make the generator's draws, by libtorch's <c>bernoulli_</c>
    /// before the sums: either way the values and the default generator's state afterwards are the three layers'.
    /// </summary>
    [Test]
    public void MaskDrawnBesideTheStatistics_LeavesTheGeneratorAsOurThreeLayersDo([Values] bool kernelDraws, [Values] bool channelsLast)
    {
        int original = get_num_threads();
        set_num_threads(Math.Max(2, original));
        GeneratorState.KernelDraws = kernelDraws;
        try
        {
            using var scope = NewDisposeScope();
            foreach (long[] shape in new long[][] { [512, 16, 4, 4], [8, 16, 40, 40], [3, 4, 2, 2] })
            {
                var (fused, unfused) = Pair((int)shape[1], ScalarType.Float32, relu: true, p: 0.4, affine: true, track: true, momentum: 0.1, seed: 8);
                var x = Input(shape, ScalarType.Float32, channelsLast, seed: 13);
                var dy = Input(shape, ScalarType.Float32, channelsLast, seed: 14);
                var expected = Step(unfused, x, dy, seed: 23);
                var expectedGenerator = get_rng_state();
                var actual = Step(fused, x, dy, seed: 23);
                Assert.That(get_rng_state().eq(expectedGenerator).all().item<bool>(), Is.True, $"the default generator's state afterwards, {string.Join("×", shape)}");
                foreach (var (name, value) in expected)
                {
                    AssertBitIdentical(actual[name], value, $"{name}, {string.Join("×", shape)}");
                }
            }
        }
        finally
        {
            GeneratorState.KernelDraws = true;
            set_num_threads(original);
        }
    }

    /// <summary>
    /// Weights of 0 (a zero-initialised residual branch: the ReLU's input is β whatever x is), negative weights and
    /// ordinary ones side by side, on planes long enough for the 16-value loops, in both dtypes.
    /// </summary>
    [TestCase(ScalarType.Float32)]
    [TestCase(ScalarType.Float64)]
    public void ZeroAndNegativeWeights_AreBitIdenticalToOurThreeLayers(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(6, dtype, relu: true, p: 0.3, affine: true, track: true, momentum: 0.1, seed: 4);
        foreach (var module in new nn.Module[] { fused, unfused })
        {
            var bn = module is BatchNormReLUDropout2d ? (TorchSharp.Modules.BatchNorm)module : (TorchSharp.Modules.BatchNorm)((TorchSharp.Modules.Sequential)module).children().First();
            using var _ = no_grad();
            bn.weight!.copy_(tensor(new[] { 0.0, -1.5, 0.7, 0.0, 2.0, -0.25 }, dtype));
            bn.bias!.copy_(tensor(new[] { 0.5, 0.1, -0.2, -0.3, 0.0, 0.0 }, dtype));
        }

        var x = Input([5, 6, 9, 11], dtype, channelsLast: false, seed: 31);
        var dy = Input([5, 6, 9, 11], dtype, channelsLast: false, seed: 32);
        foreach (bool training in new[] { true, false })
        {
            fused.train(training);
            unfused.train(training);
            var expected = Step(unfused, x, dy, seed: 33);
            var actual = Step(fused, x, dy, seed: 33);
            foreach (var (name, value) in expected)
            {
                AssertBitIdentical(actual[name], value, $"{name} ({(training ? "training" : "evaluation")})");
            }
        }
    }

    /// <summary>The block's output gradient in another layout than its input: read through a copy in the input's.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void GradientInTheOtherLayout_IsBitIdenticalToOurThreeLayers(bool channelsLastInput)
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(6, ScalarType.Float32, relu: true, p: 0.5, affine: true, track: true, momentum: 0.1, seed: 9);
        var x = Input([4, 6, 8, 9], ScalarType.Float32, channelsLastInput, seed: 15);
        var dy = Input([4, 6, 8, 9], ScalarType.Float32, !channelsLastInput, seed: 16);
        var expected = Step(unfused, x, dy, seed: 24);
        var actual = Step(fused, x, dy, seed: 24);
        foreach (var (name, value) in expected)
        {
            AssertBitIdentical(actual[name], value, name);
        }
    }

    [TestCase(ScalarType.Float32, false)]
    [TestCase(ScalarType.Float32, true)]
    [TestCase(ScalarType.Float64, false)]
    public void TrainingAndEvaluation_MatchTorchSharpsThreeLayers(ScalarType dtype, bool channelsLast)
    {
        using var scope = NewDisposeScope();
        var fused = layers.BatchNormReLUDropout2d(4, p: 0.4, dtype: dtype);
        var theirs = nn.Sequential(("bn", nn.BatchNorm2d(4, dtype: dtype)), ("relu", nn.ReLU()), ("drop", nn.Dropout2d(0.4)));
        Randomise(fused, seed: 5);
        Randomise((nn.Module)theirs[0], seed: 5);
        foreach (bool training in new[] { true, true, false })
        {
            fused.train(training);
            theirs.train(training);
            var x = Input([6, 4, 10, 11], dtype, channelsLast, seed: 31);
            var dy = Input([6, 4, 10, 11], dtype, channelsLast, seed: 32);
            var expected = Step(theirs, x, dy, seed: 41);
            var actual = Step(fused, x, dy, seed: 41);
            foreach (var (name, value) in expected)
            {
                Tolerance.AssertClose(actual[name], value, name);
            }

            var norm = (TorchSharp.Modules.BatchNorm2d)theirs[0];
            Tolerance.AssertClose(fused.running_mean, norm.running_mean, "running_mean");
            Tolerance.AssertClose(fused.running_var, norm.running_var, "running_var");
        }
    }

    /// <summary>
    /// Values the ReLU and its gradient treat specially: y exactly 0 (integer inputs whose channel mean is an input value,
    /// no bias), y = −0.0, NaN and ±∞ in the input.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void ExactZerosAndNonFiniteValues_AreBitIdenticalToOurThreeLayers(bool nonFinite)
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(3, ScalarType.Float32, relu: true, p: 0.5, affine: false, track: true, momentum: 0.1, seed: 1);
        var x = arange(2 * 3 * 4 * 5, ScalarType.Float32).remainder(5).reshape(2, 3, 4, 5).Minus(2.0);
        if (nonFinite)
        {
            x[0, 0, 0, 0] = tensor(float.NaN);
            x[1, 1, 1, 1] = tensor(float.PositiveInfinity);
            x[1, 2, 0, 3] = tensor(float.NegativeInfinity);
        }

        var dy = Input([2, 3, 4, 5], ScalarType.Float32, channelsLast: false, seed: 2);
        foreach (bool training in new[] { true, false })
        {
            fused.train(training);
            unfused.train(training);
            var expected = Step(unfused, x, dy, seed: 9);
            var actual = Step(fused, x, dy, seed: 9);
            foreach (var (name, value) in expected)
            {
                AssertBitIdentical(actual[name], value, name);
            }
        }
    }

    [Test]
    public void GradientOfAFunctionOfTheGradients_MatchesOurThreeLayers_Float64()
    {
        using var scope = NewDisposeScope();
        var (fused, unfused) = Pair(3, ScalarType.Float64, relu: true, p: 0.4, affine: true, track: true, momentum: 0.1, seed: 4);
        var x = Input([4, 3, 5, 6], ScalarType.Float64, channelsLast: false, seed: 5);
        var dy = Input([4, 3, 5, 6], ScalarType.Float64, channelsLast: false, seed: 6);
        foreach (bool training in new[] { true, false })
        {
            fused.train(training);
            unfused.train(training);
            // In evaluation dL/dx does not depend on x (the statistics are fixed and the ReLU's gate is piecewise constant).
            var expected = Penalty(unfused, x, dy, withInput: training);
            var actual = Penalty(fused, x, dy, withInput: training);
            for (int i = 0; i < expected.Length; i++)
            {
                double relative = ((actual[i] - expected[i]).norm().item<double>()) / expected[i].norm().item<double>();
                Assert.That(relative, Is.LessThanOrEqualTo(1e-12), $"second-order gradient {i} ({(training ? "training" : "evaluation")})");
            }
        }
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void HalfPrecisionInput_Throws_AndChangesNothing(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var fused = layers.BatchNormReLUDropout2d(3, p: 0.5);
        var x = randn(2, 3, 4, 4).to(dtype);
        var before = get_rng_state();
        var error = Assert.Throws<ArgumentException>(() => fused.forward(x));
        Assert.That(error!.Message, Does.Contain(dtype.ToString()).And.Contain("Float32 or Float64"));
        Assert.That(fused.num_batches_tracked!.item<long>(), Is.Zero, "num_batches_tracked");
        Assert.That(fused.running_mean!.equal(zeros(3)).all().item<bool>(), Is.True, "running_mean");
        Assert.That(get_rng_state().eq(before).all().item<bool>(), Is.True, "the generator");
        Assert.Throws<ArgumentException>(() => layers.BatchNormReLUDropout2d(3, dtype: ScalarType.BFloat16));
        Assert.Throws<ArgumentOutOfRangeException>(() => layers.BatchNormReLUDropout2d(3, p: 1.5));
    }

    /// <summary>A fused block and our three layers with the same parameters.</summary>
    private static (BatchNormReLUDropout2d Fused, TorchSharp.Modules.Sequential Unfused) Pair(
        long channels, ScalarType dtype, bool relu, double p, bool affine, bool track, double? momentum, long seed)
    {
        var fused = layers.BatchNormReLUDropout2d(channels, momentum: momentum, affine: affine, track_running_stats: track, relu: relu, p: p, dtype: dtype);
        var norm = layers.BatchNorm2d(channels, momentum: momentum, affine: affine, track_running_stats: track, dtype: dtype);
        var modules = new List<(string, nn.Module<Tensor, Tensor>)> { ("bn", norm) };
        if (relu)
        {
            modules.Add(("relu", nn.ReLU()));
        }

        modules.Add(("drop", layers.Dropout2d(p)));
        Randomise(fused, seed);
        Randomise(norm, seed);
        return (fused, nn.Sequential(modules.ToArray()));
    }

    private static void Randomise(nn.Module norm, long seed)
    {
        if (norm is TorchSharp.Modules.BatchNorm { affine: true } bn)
        {
            using var _ = no_grad();
            manual_seed(seed);
            bn.weight!.copy_(randn(bn.weight.shape, bn.weight.dtype));
            bn.bias!.copy_(randn(bn.bias!.shape, bn.bias.dtype));
        }
    }

    private static Tensor Input(long[] shape, ScalarType dtype, bool channelsLast, long seed)
    {
        manual_seed(seed);
        var x = randn(shape, dtype).Times(1.5).Plus(0.25);
        return channelsLast ? x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : x;
    }

    /// <summary>One step as a network takes it: output, then the gradients of x, weight and bias handed on with dy.</summary>
    private static Dictionary<string, Tensor> Step(nn.Module<Tensor, Tensor> module, Tensor input, Tensor dy, long seed)
    {
        var x = input.detach().clone().requires_grad_(true);
        manual_seed(seed);
        var y = module.forward(x);
        var parameters = module.parameters().ToArray();
        var grads = autograd.grad([y], [x, .. parameters], [dy], allow_unused: true);
        var result = new Dictionary<string, Tensor> { ["output"] = y.detach(), ["x.grad"] = grads[0] };
        for (int i = 0; i < parameters.Length; i++)
        {
            result[$"parameter {i}.grad"] = grads[i + 1];
        }

        return result;
    }

    /// <summary>Gradients of Σ (dL/dx)² with respect to x and the weight, L = Σ y · dy (a gradient penalty; dL/dx does not depend on the bias).</summary>
    private static Tensor[] Penalty(nn.Module<Tensor, Tensor> module, Tensor input, Tensor dy, bool withInput)
    {
        var x = input.detach().clone().requires_grad_(true);
        manual_seed(77);
        var y = module.forward(x);
        var parameters = module.parameters().Take(1).ToArray();
        var first = autograd.grad([y], [x], [dy], retain_graph: true, create_graph: true)[0];
        var penalty = (first * first).sum();
        return autograd.grad([penalty], withInput ? [x, .. parameters] : parameters).ToArray();
    }

    private static void AssertBitIdentical(Tensor? actual, Tensor? expected, string what)
    {
        Assert.That(actual is null, Is.EqualTo(expected is null), $"{what}: present in one only");
        if (actual is null || expected is null)
        {
            return;
        }

        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        Assert.That(actual.dtype, Is.EqualTo(expected.dtype), $"{what}: dtype");
        // The memory layout, as PyTorch reads it: a dimension of size 1 has no stride that matters.
        long[] shape = expected.shape;
        Assert.That(
            actual.stride().Select((s, d) => shape[d] == 1 ? 0 : s),
            Is.EqualTo(expected.stride().Select((s, d) => shape[d] == 1 ? 0 : s)),
            $"{what}: strides (memory layout)");
        var a = Bits(actual);
        var e = Bits(expected);
        int differing = a.Zip(e).Count(pair => pair.First != pair.Second);
        Assert.That(differing, Is.Zero, $"{what}: {differing} of {e.Length} values differ in their bits");
    }

    private static long[] Bits(Tensor t)
    {
        var flat = t.detach().contiguous().flatten();
        return t.dtype switch
        {
            ScalarType.Float32 => flat.data<float>().Select(v => (long)BitConverter.SingleToInt32Bits(v)).ToArray(),
            ScalarType.Float64 => flat.data<double>().Select(BitConverter.DoubleToInt64Bits).ToArray(),
            ScalarType.Int64 => flat.data<long>().ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(t), t.dtype, "no bit comparison for this dtype"),
        };
    }
}
