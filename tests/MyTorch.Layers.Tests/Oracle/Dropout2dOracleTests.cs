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
/// Our Dropout2d against TorchSharp's nn.Dropout2d and nn.functional.dropout2d under the same seed: outputs, input
/// gradients, the input itself when written in place, and the generator's state afterwards must all be bit for bit equal.
/// </summary>
[TestFixture]
public class Dropout2dOracleTests
{
    private static readonly double[] Probabilities = [0, 0.1, 0.5, 0.9, 1];

    /// <summary>Every dtype the layer takes: TorchSharp's Dropout2d takes the 16-bit ones too, drawing their masks in them.</summary>
    public static readonly ScalarType[] Dtypes = [ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16];

    /// <summary>TorchSharp's two entry points.</summary>
    public enum Oracle
    {
        /// <summary><c>nn.Dropout2d(p, inplace)</c>, switched with train()/eval().</summary>
        Module,

        /// <summary><c>nn.functional.dropout2d(input, p, training, inplace)</c>.</summary>
        Functional,
    }

    public static IEnumerable<TestCaseData> Matrix()
    {
        foreach (var dtype in Dtypes)
        {
            foreach (int rank in new[] { 4, 3 })
            {
                foreach (var layout in Enum.GetValues<Layout>())
                {
                    foreach (bool inplace in new[] { false, true })
                    {
                        foreach (bool training in new[] { true, false })
                        {
                            foreach (double p in Probabilities)
                            {
                                yield return new TestCaseData(new Case(dtype, rank, layout, inplace, training, p))
                                    .SetArgDisplayNames(
                                        dtype.ToString(),
                                        $"{rank}-D",
                                        layout.ToString(),
                                        inplace ? "inplace" : "out-of-place",
                                        training ? "training" : "eval",
                                        string.Create(CultureInfo.InvariantCulture, $"p={p}"));
                            }
                        }
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Matrix))]
    public void Module_MatchesTorchSharp(Case c)
    {
        foreach (var oracle in Enum.GetValues<Oracle>())
        {
            CompareModule(c, oracle, seed: 1000 + (int)oracle);
        }
    }

    [TestCaseSource(nameof(Matrix))]
    public void ExplicitForwardAndBackward_MatchTorchSharp(Case c)
    {
        using var scope = NewDisposeScope();
        var values = Values(c);
        var gradOutput = randn(c.Shape, c.Dtype);
        using var ourInput = LaidOutInput.Create(values, c.Layout);
        using var theirInput = LaidOutInput.Create(values, c.Layout);

        // Ours by hand, on memory autograd does not track; TorchSharp's through autograd, out of place so that the
        // gradient with respect to its input can be read off the leaf.
        var x = InputView(ourInput.Leaf.detach(), c, ourInput.View);
        manual_seed(77);
        var (output, mask) = Dropout2dFunctional.Forward(x, c.P, c.Training, c.Inplace);
        double ourNext = rand(1, ScalarType.Float64).item<double>();

        var theirX = InputView(theirInput.Leaf, c, theirInput.View);
        manual_seed(77);
        var expected = nn.functional.dropout2d(theirX, c.P, c.Training, inplace: false);
        double theirNext = rand(1, ScalarType.Float64).item<double>();

        BitExact.AssertEqual(output, expected, "output");
        Assert.That(ourNext, Is.EqualTo(theirNext), "the default generator after the forward");
        Assert.That(output.stride(), Is.EqualTo(c.Inplace ? x.stride() : expected.stride()), "output strides: the input's own when in place");
        Assert.That(mask.shape, Is.EqualTo(c.Rank == 4 ? new long[] { c.Shape[0], c.Shape[1], 1, 1 } : [c.Shape[0], 1, 1]), "mask shape");
        BitExact.AssertEqual(Sample(values, c) * mask, output, "input · mask");
        if (c.Inplace)
        {
            BitExact.AssertEqual(x, expected, "the input, written in place");
        }

        expected.backward([gradOutput]);
        var gradInput = Dropout2dFunctional.Backward(gradOutput, mask);
        BitExact.AssertEqual(gradInput, InputView(theirInput.Leaf.grad!, c, null), "gradInput");
    }

    /// <summary>Cases with a mask of N·C = 5 × 1700 values, which is drawn in parts while the parts drawn are applied.</summary>
    public static IEnumerable<TestCaseData> DrawnMaskMatrix()
    {
        foreach (var dtype in Dtypes)
        {
            foreach (var layout in Enum.GetValues<Layout>())
            {
                foreach (bool inplace in new[] { false, true })
                {
                    foreach (double p in new[] { 0.1, 0.5, 0.9 })
                    {
                        yield return new TestCaseData(new Case(dtype, 4, layout, inplace, Training: true, p, Size: [5, 1700, 3, 7]))
                            .SetArgDisplayNames(dtype.ToString(), layout.ToString(), inplace ? "inplace" : "out-of-place", string.Create(CultureInfo.InvariantCulture, $"p={p}"));
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(DrawnMaskMatrix))]
    public void MaskDrawnWhileApplied_MatchesTorchSharp(Case c) => WithAtLeastTwoThreads(() =>
    {
        var layout = new MyTorch.Layers.Kernels.PlaneLayout((int)c.Shape[0], (int)c.Shape[1], (int)(c.Shape[2] * c.Shape[3]), c.Layout == Layout.ChannelsLast);
        Assert.That(MyTorch.Layers.Kernels.ChannelDropoutKernels.DrawWhileApplying(layout, KernelThreads.Count), Is.True, "the case must draw its mask in parts");
        foreach (var oracle in Enum.GetValues<Oracle>())
        {
            CompareModule(c, oracle, seed: 31 + (int)oracle);
        }
    });

    [Test]
    public void MaskDrawnWhileApplied_FromASeparateGenerator_MatchesTorchSharp_AndLeavesTheDefaultAlone() => WithAtLeastTwoThreads(() =>
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3000, 4, 4);
        var generator = new Generator(777);
        manual_seed(12);
        double before = rand(1, ScalarType.Float64).item<double>();
        manual_seed(12);
        var (first, _) = Dropout2dFunctional.Forward(x, 0.4, generator: generator);
        var (second, _) = Dropout2dFunctional.Forward(x, 0.4, generator: generator);
        Assert.That(rand(1, ScalarType.Float64).item<double>(), Is.EqualTo(before), "the default generator was used");

        manual_seed(777);
        BitExact.AssertEqual(first, nn.functional.dropout2d(x, 0.4, training: true), "first forward");
        BitExact.AssertEqual(second, nn.functional.dropout2d(x, 0.4, training: true), "second forward");
        Assert.That(generator.get_state().eq(get_rng_state()).all().item<bool>(), Is.True, "the generator's state after two draws: where TorchSharp's two leave the default one");
    });

    /// <summary>
    /// The kernels make the draws wherever libtorch's <c>bernoulli_</c> draws from the generator's own engine, number by
    /// number, and nowhere else (libtorch built with MKL can hand the draw to an MKL stream seeded by one number of the
    /// generator, on Intel processors its cpuinfo recognises). Which of the two libtorch does is found here without the
    /// kernels: a draw of 1,000 values and one of 2,000, from two generators with the same seed, leave the engine at
    /// different places if it drew every value, and at the same place if it only seeded a stream. A draw of ours that
    /// went wrong would turn the first-use check off and hide behind libtorch's draw; this pins the check to libtorch.
    /// </summary>
    [Test]
    public void KernelsDrawTheMask_WhereLibtorchDrawsFromTheEngine()
    {
        bool engineDraws;
        using (var first = new Generator(5))
        using (var second = new Generator(5))
        using (var shorter = empty(1000))
        using (var longer = empty(2000))
        {
            shorter.bernoulli_(0.5, first);
            longer.bernoulli_(0.5, second);
            using var afterShorter = rand(4, dtype: ScalarType.Float64, generator: first);
            using var afterLonger = rand(4, dtype: ScalarType.Float64, generator: second);
            engineDraws = !afterShorter.eq(afterLonger).all().item<bool>();
        }

        Assert.That(GeneratorState.Works, Is.EqualTo(engineDraws), engineDraws ? "libtorch draws from the engine, as the kernels do" : "libtorch seeds another stream");
        using var state = GeneratorState.TryRead(null, out _);
        Assert.That(state, engineDraws ? Is.Not.Null : Is.Null, "the default generator's state is read");
    }

    /// <summary>
    /// The generator first advanced by k float32 draws, one 32-bit number each: masks that start at an odd number,
    /// with a pair of numbers split by the twister's regeneration, or right at one; float32 and float64, small masks
    /// and one drawn while applied.
    /// </summary>
    [Test]
    public void AfterAnyNumberOfEarlierDraws_MatchesTorchSharp_AndLeavesTheGeneratorWhereTorchSharpDoes(
        [Values(0, 1, 2, 3, 311, 623, 624, 625, 1247)] int earlier) => WithAtLeastTwoThreads(() =>
    {
        using var scope = NewDisposeScope();
        foreach (var (dtype, shape) in new[] { (ScalarType.Float32, new long[] { 3, 5, 2, 2 }), (ScalarType.Float64, new long[] { 7, 100, 1, 3 }), (ScalarType.Float32, new long[] { 5, 1700, 3, 7 }) })
        {
            var x = randn(shape, dtype);
            manual_seed(123);
            rand([earlier]);
            var (ours, _) = Dropout2dFunctional.Forward(x, 0.3);
            double ourNext = rand(1, ScalarType.Float64).item<double>();

            manual_seed(123);
            rand([earlier]);
            var theirs = nn.functional.dropout2d(x, 0.3, training: true);
            double theirNext = rand(1, ScalarType.Float64).item<double>();

            string at = $"{dtype} {string.Join('×', shape)}";
            BitExact.AssertEqual(ours, theirs, at);
            Assert.That(ourNext, Is.EqualTo(theirNext), at + ": the default generator afterwards");
        }
    });

    /// <summary>
    /// Where the kernels cannot make the generator's draws (where libtorch hands <c>bernoulli_</c> to MKL),
    /// libtorch's <c>bernoulli_</c> draws the whole mask in one call: the same outputs, gradients and generator state.
    /// </summary>
    [Test]
    public void WithLibtorchsOwnDraw_MatchesTorchSharp() => WithAtLeastTwoThreads(() =>
    {
        Case[] cases =
        [
            new(ScalarType.Float32, 4, Layout.Contiguous, Inplace: false, Training: true, 0.5),
            new(ScalarType.Float64, 3, Layout.ChannelsLast, Inplace: true, Training: true, 0.1),
            new(ScalarType.Float32, 4, Layout.ChannelsLast, Inplace: false, Training: true, 0.9, Size: [5, 1700, 3, 7]),
        ];
        GeneratorState.KernelDraws = false;
        try
        {
            foreach (var c in cases)
            {
                Assert.That(GeneratorState.TryRead(null, out _), Is.Null, "the kernels must not draw");
                foreach (var oracle in Enum.GetValues<Oracle>())
                {
                    CompareModule(c, oracle, seed: 61 + (int)oracle);
                }
            }
        }
        finally
        {
            GeneratorState.KernelDraws = true;
        }
    });

    /// <summary>
    /// Runs <paramref name="test"/> with TorchSharp's thread count at 2 or more: the mask is drawn in parts only where
    /// the kernels have a second thread to apply them meanwhile.
    /// </summary>
    private static void WithAtLeastTwoThreads(Action test)
    {
        int original = get_num_threads();
        set_num_threads(Math.Max(2, original));
        try
        {
            test();
        }
        finally
        {
            set_num_threads(original);
        }
    }

    /// <summary>
    /// For these p, T(1 / (1 − p)) computed in double and rounded to float32 is one ulp away from libtorch's
    /// 1f / (float)(1 − p): only a mask divided in the element type matches.
    /// </summary>
    [Test]
    public void ProbabilitiesWhereRoundingTheScaleFromDoubleWouldDiffer_MatchTorchSharp(
        [Values(0.021, 0.04, 0.054)] double p,
        [ValueSource(nameof(Dtypes))] ScalarType dtype,
        [Values(Layout.Contiguous, Layout.ChannelsLast)] Layout layout)
    {
        Assert.That(1f / (float)(1 - p), Is.Not.EqualTo((float)(1 / (1 - p))), "p must be one where the two roundings differ");
        foreach (var oracle in Enum.GetValues<Oracle>())
        {
            foreach (bool inplace in new[] { false, true })
            {
                CompareModule(new Case(dtype, 4, layout, inplace, Training: true, p), oracle, seed: 5);
            }
        }
    }

    [TestCase(ScalarType.Float32, 4)]
    [TestCase(ScalarType.Float64, 3)]
    public void SeparateGenerator_GivesTheSameMasksAsTheDefaultGeneratorWithThatSeed_AndLeavesTheDefaultAlone(ScalarType dtype, int rank)
    {
        using var scope = NewDisposeScope();
        long[] shape = rank == 4 ? [6, 5, 3, 4] : [7, 3, 4];
        var x = randn(shape, dtype);
        var generator = new Generator(4242);
        var ours = new Dropout2d(0.5, generator: generator);
        var theirs = nn.Dropout2d(0.5);

        manual_seed(9);
        double before = rand(1, ScalarType.Float64).item<double>();
        manual_seed(9);
        var first = ours.forward(x);
        var second = ours.forward(x);
        var (third, _) = Dropout2dFunctional.Forward(x, 0.5, generator: generator);
        Assert.That(rand(1, ScalarType.Float64).item<double>(), Is.EqualTo(before), "the default generator was used");

        manual_seed(4242);
        BitExact.AssertEqual(first, theirs.forward(x), "first forward");
        BitExact.AssertEqual(second, theirs.forward(x), "second forward: the generator advanced as the default one does");
        BitExact.AssertEqual(third, theirs.forward(x), "functional forward with the generator");
    }

    [TestCase(4, false)]
    [TestCase(4, true)]
    [TestCase(3, false)]
    public void WhenNothingIsDropped_TheInputsOwnTensorIsReturned_AsTorchSharpDoes(int rank, bool emptyInput)
    {
        using var scope = NewDisposeScope();
        long[] shape = (rank, emptyInput) switch
        {
            (4, false) => [2, 3, 4, 5],
            (4, true) => [0, 3, 4, 5],
            _ => [3, 4, 5],
        };
        foreach (var (name, module, training) in new (string, Dropout2d, bool)[]
        {
            ("eval", new Dropout2d(0.5), false),
            ("p = 0", new Dropout2d(0.0), true),
            (emptyInput ? "empty input" : "inplace, eval", new Dropout2d(emptyInput ? 0.5 : 0.3, inplace: !emptyInput), emptyInput),
        })
        {
            module.train(training);
            var x = randn(shape);
            var y = module.forward(x);
            Assert.That(y, Is.Not.SameAs(x), $"{name}: a new handle, as TorchSharp returns");
            y.unsqueeze_(0);
            Assert.That(x.dim(), Is.EqualTo(rank + 1), $"{name}: the output is the input's own tensor, not a copy or a view");
            y.squeeze_(0);
            y.Dispose();
            Assert.That(x.IsInvalid, Is.False, $"{name}: disposing the output left the input alive");
        }
    }

    [TestCase(4)]
    [TestCase(3)]
    public void Inplace_ReturnsTheInputsOwnTensor(int rank)
    {
        using var scope = NewDisposeScope();
        var x = randn(rank == 4 ? [2, 3, 4, 5] : [3, 4, 5]);
        var y = new Dropout2d(0.5, inplace: true).forward(x);
        y.unsqueeze_(0);
        Assert.That(x.dim(), Is.EqualTo(rank + 1));
    }

    [Test]
    public void InplaceOnATensorAnotherNodeSaved_IsCaughtByAutograd_AsInTorchSharp()
    {
        using var scope = NewDisposeScope();
        foreach (bool ours in new[] { true, false })
        {
            var leaf = randn(2, 3, 4, 4).requires_grad_(true);
            var saved = leaf.exp(); // exp saves its result for the backward
            if (ours)
            {
                new Dropout2d(0.5, inplace: true).forward(saved);
            }
            else
            {
                nn.functional.dropout2d(saved, 0.5, training: true, inplace: true);
            }

            var ex = Assert.Catch(() => saved.sum().backward(), ours ? "ours" : "TorchSharp's");
            Assert.That(ex!.Message, Does.StartWith("one of the variables needed for gradient computation has been modified by an inplace operation"));
        }
    }

    [Test]
    public void InplaceOnAViewOfANonLeaf_GivesTheBaseTheSameGradient()
    {
        using var scope = NewDisposeScope();
        var values = randn(2, 3, 4, 6, ScalarType.Float64);
        var results = new List<(Tensor Base, Tensor Grad)>();
        foreach (bool ours in new[] { true, false })
        {
            var leaf = values.clone().requires_grad_(true);
            var whole = leaf.Times(2);
            var view = whole.slice(3, 0, 6, 2);
            manual_seed(3);
            var y = ours ? new Dropout2d(0.5, inplace: true).forward(view) : nn.functional.dropout2d(view, 0.5, training: true, inplace: true);
            (whole * whole).sum().Plus(y.sum().Times(3)).backward();
            results.Add((whole.detach(), leaf.grad!));
        }

        BitExact.AssertEqual(results[0].Base, results[1].Base, "the base after the in-place write");
        BitExact.AssertEqual(results[0].Grad, results[1].Grad, "leaf.grad");
    }

    [Test]
    public void OutputCanBeModifiedInPlaceAfterwards()
    {
        using var scope = NewDisposeScope();
        foreach (var layout in new[] { Layout.Contiguous, Layout.ChannelsLast })
        {
            using var input = LaidOutInput.Create(randn(2, 3, 4, 5), layout);
            var y = new Dropout2d(0.5).forward(input.View);
            y.relu_(); // refused by autograd if the output were a view made inside the custom function
            y.sum().backward();
            Assert.That(input.Leaf.grad, Is.Not.Null, layout.ToString());
        }
    }

    [Test]
    public void BitExact_TellsNegativeZeroFromZero_MatchesNaNWithNaN_AndSeesOneUlp()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new[] { 0f, float.NaN, 1f });
        Assert.That(BitExact.FirstMismatch(a, tensor(new[] { 0f, -float.NaN, 1f })), Is.Null, "NaN meets NaN, whatever its payload");
        Assert.That(BitExact.FirstMismatch(a, tensor(new[] { -0f, float.NaN, 1f })), Does.Contain("flat index 0"), "−0.0 is not +0.0");
        Assert.That(BitExact.FirstMismatch(a, tensor(new[] { 0f, 0f, 1f })), Does.Contain("flat index 1"), "NaN is not a number");
        Assert.That(BitExact.FirstMismatch(a, tensor(new[] { 0f, float.NaN, MathF.BitIncrement(1f) })), Does.Contain("flat index 2"), "one ulp");
        Assert.That(BitExact.FirstMismatch(tensor(new[] { 0.1, 0.2 }), tensor(new[] { 0.1, 0.2 }).permute(0)), Is.Null, "float64");
    }

    /// <summary>Runs one case through our module and one TorchSharp entry point, comparing everything.</summary>
    private static void CompareModule(Case c, Oracle oracle, int seed)
    {
        using var scope = NewDisposeScope();
        var values = Values(c);
        var gradOutput = randn(c.Shape, c.Dtype);
        using var ourInput = LaidOutInput.Create(values, c.Layout);
        using var theirInput = LaidOutInput.Create(values, c.Layout);
        string at = $"{oracle}";

        // An in-place dropout of a leaf that requires grad (or of a view of one) is an error in both; write into a non-leaf copy.
        var x = c.Inplace ? InputView(ourInput.Leaf.Times(1), c, ourInput.View) : InputView(ourInput.Leaf, c, ourInput.View);
        var theirX = c.Inplace ? InputView(theirInput.Leaf.Times(1), c, theirInput.View) : InputView(theirInput.Leaf, c, theirInput.View);

        var ours = new Dropout2d(c.P, c.Inplace);
        ours.train(c.Training);
        manual_seed(seed);
        var actual = ours.forward(x);
        double ourNext = rand(1, ScalarType.Float64).item<double>();

        manual_seed(seed);
        Tensor expected;
        if (oracle == Oracle.Module)
        {
            var theirs = nn.Dropout2d(c.P, c.Inplace);
            theirs.train(c.Training);
            expected = theirs.forward(theirX);
        }
        else
        {
            expected = nn.functional.dropout2d(theirX, c.P, c.Training, c.Inplace);
        }

        double theirNext = rand(1, ScalarType.Float64).item<double>();

        BitExact.AssertEqual(actual, expected, $"output, {at}");
        Assert.That(ourNext, Is.EqualTo(theirNext), $"the default generator after the forward, {at}");
        Assert.That(actual.stride(), Is.EqualTo(expected.stride()), $"output strides, {at}");
        Assert.That(actual.requires_grad, Is.EqualTo(expected.requires_grad), $"output requires_grad, {at}");
        if (c.Inplace)
        {
            BitExact.AssertEqual(x, expected, $"the input, written in place, {at}");
        }

        actual.backward([gradOutput]);
        expected.backward([gradOutput]);
        BitExact.AssertEqual(ourInput.Leaf.grad!, theirInput.Leaf.grad!, $"leaf.grad, {at}");
    }

    /// <summary>(N, C, H, W) values with a different scale per channel and a few special values, for a 4-D input of N samples or a 3-D one.</summary>
    private static Tensor Values(Case c)
    {
        long[] shape = c.Rank == 4 ? c.Shape : [1, .. c.Shape];
        var values = randn(shape, c.Dtype) * rand(1, shape[1], 1, 1, c.Dtype).Times(3).Plus(0.5);
        using (no_grad())
        {
            // NaN, ±∞ and −0.0 show what p = 1 (x · 0) and a kept channel's scaling do to them.
            values[0, 0, 0, 0] = tensor(double.NaN, c.Dtype);
            values[shape[0] - 1, shape[1] - 1, 0, 1] = tensor(double.NegativeInfinity, c.Dtype);
            values[0, shape[1] - 1, 1, 0] = tensor(double.PositiveInfinity, c.Dtype);
            values[shape[0] - 1, 0, 1, 1] = tensor(-0.0, c.Dtype);
        }

        return values;
    }

    /// <summary>The values as the layer sees them: all of them for 4-D, the single sample for 3-D.</summary>
    private static Tensor Sample(Tensor values, Case c) => c.Rank == 4 ? values : values.select(0, 0);

    /// <summary>
    /// The view <see cref="LaidOutInput"/> takes of its leaf, taken of <paramref name="whole"/> (a leaf, a non-leaf copy of
    /// one, or a gradient of the leaf's shape), then its single sample for 3-D. With <paramref name="laidOut"/> given,
    /// checks that the result has the laid-out view's geometry.
    /// </summary>
    private static Tensor InputView(Tensor whole, Case c, Tensor? laidOut)
    {
        var view = c.Layout switch
        {
            Layout.StridedSlice => whole.slice(3, 0, whole.shape[3], 2),
            Layout.StorageOffset => whole.slice(0, 1, whole.shape[0], 1),
            _ => whole,
        };
        if (laidOut is not null)
        {
            Assert.That(view.stride(), Is.EqualTo(laidOut.stride()), "InputView must take LaidOutInput's view");
            Assert.That(view.storage_offset(), Is.EqualTo(laidOut.storage_offset()), "InputView must take LaidOutInput's view");
        }

        return c.Rank == 4 ? view : view.select(0, 0);
    }

    /// <summary>One point of the test matrix.</summary>
    public sealed record Case(ScalarType Dtype, int Rank, Layout Layout, bool Inplace, bool Training, double P, long[]? Size = null)
    {
        /// <summary>
        /// <see cref="Size"/> if given; otherwise odd sizes, N·C = 15 channels for 4-D (5 for 3-D), so that both kept and
        /// dropped channels occur.
        /// </summary>
        public long[] Shape => Size ?? (Rank == 4 ? [3, 5, 3, 7] : [5, 3, 7]);
    }
}

/// <summary>
/// Exact comparison of tensors: the same shape and dtype, NaN exactly where the other has NaN, and every other value
/// bit for bit equal (so −0.0 and +0.0 differ). NaN payloads are not compared: they are not part of IEEE results' meaning.
/// </summary>
internal static class BitExact
{
    public static void AssertEqual(Tensor actual, Tensor expected, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        Assert.That(actual.dtype, Is.EqualTo(expected.dtype), $"{what}: dtype");
        string? mismatch = FirstMismatch(actual, expected);
        Assert.That(mismatch, Is.Null, what);
    }

    /// <summary>Where two tensors of one shape and dtype differ, described; null when they are equal in the sense above.</summary>
    public static string? FirstMismatch(Tensor actual, Tensor expected)
    {
        var a = Values(actual);
        var e = Values(expected);
        for (int i = 0; i < a.Length; i++)
        {
            if (!Same(a[i], e[i]))
            {
                int mismatches = Enumerable.Range(0, a.Length).Count(k => !Same(a[k], e[k]));
                return string.Create(
                    CultureInfo.InvariantCulture,
                    $"ours {a[i].Value:R} (0x{a[i].Bits:X}) vs TorchSharp's {e[i].Value:R} (0x{e[i].Bits:X}) at flat index {i}; {mismatches} of {a.Length} differ");
            }
        }

        return null;
    }

    private static bool Same((double Value, long Bits) a, (double Value, long Bits) e) =>
        double.IsNaN(e.Value) ? double.IsNaN(a.Value) : a.Bits == e.Bits;

    private static float[] Widened(Tensor dense)
    {
        using var wide = dense.to(ScalarType.Float32);
        return wide.data<float>().ToArray();
    }

    /// <summary>Every element in logical (row-major) order, with its bits in its own dtype.</summary>
    public static (double Value, long Bits)[] Values(Tensor tensor)
    {
        if (tensor.numel() == 0)
        {
            return [];
        }

        using var dense = tensor.detach().contiguous();
        return tensor.dtype switch
        {
            ScalarType.Float32 => dense.data<float>().ToArray().Select(v => ((double)v, (long)BitConverter.SingleToInt32Bits(v))).ToArray(),
            ScalarType.Float64 => dense.data<double>().ToArray().Select(v => (v, BitConverter.DoubleToInt64Bits(v))).ToArray(),

            // Every bfloat16 and float16 value is a float32 value, so its bits follow from the widened value.
            ScalarType.BFloat16 => Widened(dense).Select(v => ((double)v, (long)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray(),
            ScalarType.Float16 => Widened(dense).Select(v => ((double)v, (long)BitConverter.HalfToUInt16Bits((Half)v))).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(tensor), tensor.dtype, "a floating dtype"),
        };
    }
}
