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
/// Dropout1dFunctional and Dropout3dFunctional against TorchSharp's <c>nn.functional.dropout1d</c>/<c>dropout3d</c> under
/// the same seed, bit for bit: the output, the mask (output = input · mask), the default generator's state afterwards,
/// and Backward(dy, mask) against the gradient TorchSharp's autograd gives through its own dropout; and every refusal,
/// with nothing drawn or written.
/// </summary>
[TestFixture]
public class ChannelDropoutFunctionalTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        (string Layer, long[] Shape)[] shapes =
        [
            ("Dropout1d", [4, 3, 7]),
            ("Dropout1d", [3, 7]),
            ("Dropout1d", [2, 5, 1]),
            ("Dropout3d", [2, 3, 4, 5, 6]),
            ("Dropout3d", [3, 4, 5, 6]),
            ("Dropout3d", [1, 2, 3, 1, 2]),
        ];
        foreach (var (layer, shape) in shapes)
        {
            foreach (var dtype in Dropout2dOracleTests.Dtypes)
            {
                foreach (double p in new[] { 0.0, 0.3, 1.0 })
                {
                    foreach (bool training in new[] { true, false })
                    {
                        foreach (bool inplace in new[] { false, true })
                        {
                            yield return new TestCaseData(layer, shape, dtype, p, training, inplace).SetArgDisplayNames(
                                layer,
                                string.Join('x', shape),
                                dtype.ToString(),
                                string.Create(CultureInfo.InvariantCulture, $"p={p}"),
                                training ? "training" : "eval",
                                inplace ? "in place" : "new tensor");
                        }
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackward_MatchTorchSharp_BitForBit(string layer, long[] shape, ScalarType dtype, double p, bool training, bool inplace)
    {
        using var scope = NewDisposeScope();
        var values = Values(shape, dtype);
        var dy = randn(shape, dtype);
        bool batched = shape.Length == BatchedRank(layer);

        var (expected, expectedGrad, expectedState) = Theirs(layer, values, dy, p, training, seed: 17);

        var x = values.clone();
        manual_seed(17);
        var (output, mask) = OurForward(layer, x, p, training, inplace);
        var state = get_rng_state();

        BitExact.AssertEqual(output, expected, "output");
        Assert.That(state.eq(expectedState).all().item<bool>(), Is.True, "the default generator's state after the forward");
        long[] maskShape = [.. shape.Take(batched ? 2 : 1), .. Enumerable.Repeat(1L, shape.Length - (batched ? 2 : 1))];
        Assert.That(mask.shape, Is.EqualTo(maskShape), "mask shape");
        Assert.That(mask.dtype, Is.EqualTo(dtype), "mask dtype");
        BitExact.AssertEqual(values * mask, output, "input · mask");
        Assert.That(MaskValuesAre(mask, training ? p : 0), Is.True, "every mask value is 0 or T(1) / T(1 − p)");
        if (inplace || !training || p == 0)
        {
            // The input's own tensor under a new handle, as TorchSharp returns it: a change to one's shape is the other's.
            Assert.That(output, Is.Not.SameAs(x), "a new handle");
            output.unsqueeze_(0);
            Assert.That(x.dim(), Is.EqualTo(shape.Length + 1), "the output is the input's own tensor, not a copy or a view");
            output.squeeze_(0);
        }

        if (inplace)
        {
            BitExact.AssertEqual(x, expected, "the input, written in place");
        }
        else
        {
            BitExact.AssertEqual(x, values, "the input, unchanged");
        }

        var gradInput = OurBackward(layer, dy, mask);
        BitExact.AssertEqual(gradInput, expectedGrad, "Backward(dy, mask) against TorchSharp's x.grad");
    }

    /// <summary>
    /// (N, L, C) memory for 1d and channels-last-3d for 3d are read in place and kept in the output and in dx;
    /// strided slices, a storage offset and (3d) D and H that cannot merge are read through a copy.
    /// </summary>
    [Test]
    public void OtherMemoryLayouts_MatchTorchSharp_AndKeepTheChannelsLastLayout(
        [Values("Dropout1d", "Dropout3d")] string layer,
        [Values("contiguous", "channels last", "strided slice", "storage offset")] string layout,
        [ValueSource(typeof(Dropout2dOracleTests), nameof(Dropout2dOracleTests.Dtypes))] ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long[] shape = layer == "Dropout1d" ? [4, 5, 6] : [3, 4, 2, 3, 5];
        var x = InLayout(Values(shape, dtype), layout);
        var dy = InLayout(randn(shape, dtype), layout);

        var (expected, expectedGrad, expectedState) = Theirs(layer, x, dy, 0.4, training: true, seed: 23);
        manual_seed(23);
        var (output, mask) = OurForward(layer, x, 0.4);
        BitExact.AssertEqual(output, expected, "output");
        Assert.That(get_rng_state().eq(expectedState).all().item<bool>(), Is.True, "the default generator's state after the forward");
        var gradInput = OurBackward(layer, dy, mask);
        BitExact.AssertEqual(gradInput, expectedGrad, "Backward(dy, mask)");
        if (layout == "channels last")
        {
            Assert.That(output.stride(), Is.EqualTo(x.stride()), "the output keeps the input's layout");
            Assert.That(gradInput.stride(), Is.EqualTo(dy.stride()), "dx keeps dy's layout");
        }
    }

    [Test]
    public void Dropout3d_OnDAndHThatCannotMerge_MatchesTorchSharpOutOfPlace()
    {
        using var scope = NewDisposeScope();
        var x = randn([2, 3, 5, 4, 6], ScalarType.Float64).transpose(2, 3);
        var dy = randn([2, 3, 5, 4, 6], ScalarType.Float64).transpose(2, 3);
        var (expected, expectedGrad, expectedState) = Theirs("Dropout3d", x, dy, 0.5, training: true, seed: 3);
        manual_seed(3);
        var (output, mask) = Dropout3dFunctional.Forward(x, 0.5);
        BitExact.AssertEqual(output, expected, "output, through a copy");
        Assert.That(get_rng_state().eq(expectedState).all().item<bool>(), Is.True, "the default generator's state after the forward");
        BitExact.AssertEqual(Dropout3dFunctional.Backward(dy, mask), expectedGrad, "Backward(dy, mask), through a copy");
    }

    [Test]
    public void SeparateGenerator_GivesTorchSharpsMasksUnderItsSeed_AndLeavesTheDefaultAlone([Values("Dropout1d", "Dropout3d")] string layer)
    {
        using var scope = NewDisposeScope();
        long[] shape = layer == "Dropout1d" ? [6, 5, 4] : [3, 5, 2, 3, 4];
        var x = randn(shape);
        var generator = new Generator(4242);
        manual_seed(9);
        var defaultState = get_rng_state();
        var (first, _) = OurForward(layer, x, 0.5, generator: generator);
        var (second, _) = OurForward(layer, x, 0.5, generator: generator);
        Assert.That(get_rng_state().eq(defaultState).all().item<bool>(), Is.True, "the default generator was not used");

        manual_seed(4242);
        BitExact.AssertEqual(first, TheirForward(layer, x, 0.5, training: true), "first forward");
        BitExact.AssertEqual(second, TheirForward(layer, x, 0.5, training: true), "second forward: the generator advanced as the default one does");
        Assert.That(generator.get_state().eq(get_rng_state()).all().item<bool>(), Is.True, "the generator's state: where TorchSharp's two forwards leave the default one");
    }

    /// <summary>N·C of 9,000 and more: the mask is drawn in parts while the parts drawn are applied.</summary>
    [Test]
    public void MaskDrawnWhileApplied_MatchesTorchSharp([Values("Dropout1d", "Dropout3d")] string layer, [Values(false, true)] bool inplace)
    {
        int original = get_num_threads();
        set_num_threads(Math.Max(2, original));
        try
        {
            using var scope = NewDisposeScope();
            long[] shape = layer == "Dropout1d" ? [4, 3000, 16] : [2, 4500, 2, 2, 3];
            long spatial = shape.Skip(2).Aggregate(1L, (a, b) => a * b);
            var plane = new MyTorch.Layers.Kernels.PlaneLayout((int)shape[0], (int)shape[1], (int)spatial, false);
            Assert.That(MyTorch.Layers.Kernels.ChannelDropoutKernels.DrawWhileApplying(plane, KernelThreads.Count), Is.True, "the case must draw its mask in parts");

            var values = randn(shape);
            var dy = randn(shape);
            var (expected, expectedGrad, expectedState) = Theirs(layer, values, dy, 0.3, training: true, seed: 41);
            var x = values.clone();
            manual_seed(41);
            var (output, mask) = OurForward(layer, x, 0.3, inplace: inplace);
            BitExact.AssertEqual(output, expected, "output");
            Assert.That(get_rng_state().eq(expectedState).all().item<bool>(), Is.True, "the default generator's state after the forward");
            BitExact.AssertEqual(OurBackward(layer, dy, mask), expectedGrad, "Backward(dy, mask)");
        }
        finally
        {
            set_num_threads(original);
        }
    }

    [Test]
    public void EmptyInput_IsReturnedAsItIs_AndNothingIsDrawn([Values("Dropout1d", "Dropout3d")] string layer)
    {
        using var scope = NewDisposeScope();
        long[] shape = layer == "Dropout1d" ? [0, 3, 4] : [0, 3, 2, 2, 2];
        var x = randn(shape);
        var state = get_rng_state();
        var (output, mask) = OurForward(layer, x, 0.5);
        Assert.That(output.shape, Is.EqualTo(shape));
        Assert.That(mask.shape, Is.EqualTo(new long[] { 0, 3 }.Concat(Enumerable.Repeat(1L, shape.Length - 2))));
        Assert.That(get_rng_state().eq(state).all().item<bool>(), Is.True, "nothing was drawn");
    }

    /// <summary>One refused forward: what it is given, and what it must throw.</summary>
    public sealed record Refusal(string Layer, Func<Tensor> Input, double P, bool Inplace, Type Exception, string Message, bool GradMode = true);

    public static IEnumerable<TestCaseData> ForwardRefusals()
    {
        const string Probability = "dropout probability has to be between 0 and 1, but got ";
        const string Overlap = "unsupported operation: more than one element of the written-to tensor refers to a single memory location.";
        var cases = new (string Name, Refusal Refusal)[]
        {
            ("1d, 4-D input", new("Dropout1d", () => randn(2, 3, 4, 5), 0.5, false, typeof(ArgumentException), "Dropout1d expects a 2-D (C, L) or 3-D (N, C, L) input, got a 4-D input of size [2, 3, 4, 5]. PyTorch has deprecated other ranks for dropout1d and MyTorch.Layers refuses them.")),
            ("1d, 1-D input", new("Dropout1d", () => randn(6), 0.5, false, typeof(ArgumentException), "Dropout1d expects a 2-D (C, L) or 3-D (N, C, L) input, got a 1-D input of size [6].")),
            ("3d, 3-D input", new("Dropout3d", () => randn(2, 3, 4), 0.5, true, typeof(ArgumentException), "Dropout3d expects a 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input, got a 3-D input of size [2, 3, 4].")),
            ("3d, 6-D input", new("Dropout3d", () => randn([1, 2, 3, 4, 5, 6]), 0.5, false, typeof(ArgumentException), "Dropout3d expects a 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input, got a 6-D input of size [1, 2, 3, 4, 5, 6].")),
            ("1d, p = 1.5", new("Dropout1d", () => randn(2, 3, 4), 1.5, true, typeof(ArgumentOutOfRangeException), Probability + "1.5")),
            ("3d, p = -0.1", new("Dropout3d", () => randn([2, 3, 2, 2, 2]), -0.1, false, typeof(ArgumentOutOfRangeException), Probability + "-0.1")),
            ("1d, p = NaN", new("Dropout1d", () => randn(3, 4), double.NaN, false, typeof(ArgumentOutOfRangeException), Probability + "nan")),
            ("3d, p = NaN", new("Dropout3d", () => randn(3, 2, 2, 2), double.NaN, true, typeof(ArgumentOutOfRangeException), Probability + "nan")),
            ("1d, Int32 input", new("Dropout1d", () => randint(0, 9, [2, 3, 4]).to(ScalarType.Int32), 0.5, false, typeof(ArgumentException), "'input' has dtype Int32; expected Float32, Float64, BFloat16 or Float16.")),
            ("3d, Int64 input", new("Dropout3d", () => randint(0, 9, [2, 3, 2, 2, 2]), 0.5, true, typeof(ArgumentException), "'input' has dtype Int64; expected Float32, Float64, BFloat16 or Float16.")),
            ("1d, on the meta device", new("Dropout1d", () => empty([2, 3, 4], device: META), 0.5, false, typeof(NotSupportedException), "'input' is on device meta; MyTorch.Layers kernels run on the CPU only.")),
            ("1d, in place on an expanded tensor", new("Dropout1d", () => randn(1, 3, 1).expand(2, 3, 5), 0.5, true, typeof(ArgumentException), Overlap)),
            ("3d, in place on an expanded tensor", new("Dropout3d", () => randn([1, 3, 1, 1, 1]).expand(2, 3, 2, 3, 4), 0.5, true, typeof(ArgumentException), Overlap)),
            ("1d, in place on a leaf that requires grad", new("Dropout1d", () => randn(2, 3, 4).requires_grad_(true), 0.5, true, typeof(ArgumentException), "a leaf Variable that requires grad is being used in an in-place operation.")),
            ("3d, in place on a leaf that requires grad", new("Dropout3d", () => randn(3, 2, 2, 2).requires_grad_(true), 0.5, true, typeof(ArgumentException), "a leaf Variable that requires grad is being used in an in-place operation.")),
            ("1d, in place on a tensor autograd tracks", new("Dropout1d", () => randn(2, 3, 4).requires_grad_(true).Times(2), 0.5, true, typeof(ArgumentException), "'input' requires grad, and Dropout1dFunctional.Forward records no autograd history, so an in-place forward would change the tensor behind autograd's back. Use MyTorch.Layers.Dropout1d, or call this under torch.no_grad().")),
            ("3d, in place on a tensor autograd tracks", new("Dropout3d", () => randn([2, 3, 2, 2, 2]).requires_grad_(true).Times(2), 0.5, true, typeof(ArgumentException), "'input' requires grad, and Dropout3dFunctional.Forward records no autograd history")),
            ("3d, in place on D and H that cannot merge", new("Dropout3d", () => randn([2, 3, 5, 4, 6]).transpose(2, 3), 0.5, true, typeof(ArgumentException), "Dropout3d in place needs an input whose memory can be viewed as [2, 3, 20, 6] (contiguous, or channels-last-3d); this one's strides cannot. Call contiguous() first.")),
        };
        foreach (var (name, refusal) in cases)
        {
            yield return new TestCaseData(refusal).SetArgDisplayNames(name);
        }
    }

    [TestCaseSource(nameof(ForwardRefusals))]
    public void Forward_BadInput_Throws_NamingTheProblem_AndChangesNothing(Refusal refusal)
    {
        using var scope = NewDisposeScope();
        var input = refusal.Input();
        using var snapshot = new Snapshot();
        if (input.device_type == DeviceType.CPU)
        {
            snapshot.Add("input", input);
        }

        manual_seed(31);
        var state = get_rng_state();
        var thrown = Assert.Throws(refusal.Exception, () => OurForward(refusal.Layer, input, refusal.P, inplace: refusal.Inplace));
        Assert.That(thrown!.Message, Does.StartWith(refusal.Message));
        if (thrown is ArgumentException argument)
        {
            Assert.That(argument.ParamName, Is.EqualTo(refusal.Exception == typeof(ArgumentOutOfRangeException) ? "p" : "input"));
        }

        Assert.That(get_rng_state().eq(state).all().item<bool>(), Is.True, "nothing was drawn");
        if (input.device_type == DeviceType.CPU)
        {
            snapshot.AssertUnchanged();
        }
    }

    [Test]
    public void Forward_NullOrDisposedInput_Throws_AndDrawsNothing([Values("Dropout1d", "Dropout3d")] string layer)
    {
        using var scope = NewDisposeScope();
        var disposed = randn(layer == "Dropout1d" ? [2, 3, 4] : [2, 3, 2, 2, 2]);
        disposed.Dispose();
        var state = get_rng_state();
        var none = Assert.Throws<ArgumentNullException>(() => OurForward(layer, null!, 0.5));
        Assert.That(none!.ParamName, Is.EqualTo("input"));
        var gone = Assert.Throws<ObjectDisposedException>(() => OurForward(layer, disposed, 0.5, inplace: true));
        Assert.That(gone!.Message, Does.StartWith("The tensor 'input' has been disposed."));
        Assert.That(get_rng_state().eq(state).all().item<bool>(), Is.True, "nothing was drawn");
    }

    /// <summary>One refused backward: dy, the mask, and what it must throw.</summary>
    public sealed record BackwardRefusal(string Layer, Func<Tensor> GradOutput, Func<Tensor> Mask, Type Exception, string Message, string ParamName);

    public static IEnumerable<TestCaseData> BackwardRefusals()
    {
        var cases = new (string Name, BackwardRefusal Refusal)[]
        {
            ("1d, Dropout2d's mask shape", new("Dropout1d", () => randn(2, 3, 4), () => ones(2, 3, 1, 1), typeof(ArgumentException), "'mask' has shape [2, 3, 1, 1] but the mask of gradOutput has shape [2, 3, 1]; they must match.", "mask")),
            ("1d, mask of other channels", new("Dropout1d", () => randn(2, 3, 4), () => ones(3, 2, 1), typeof(ArgumentException), "'mask' has shape [3, 2, 1] but the mask of gradOutput has shape [2, 3, 1]; they must match.", "mask")),
            ("1d unbatched, a batched mask", new("Dropout1d", () => randn(3, 4), () => ones(1, 3, 1), typeof(ArgumentException), "'mask' has shape [1, 3, 1] but the mask of gradOutput has shape [3, 1]; they must match.", "mask")),
            ("3d, mask of other samples", new("Dropout3d", () => randn([2, 3, 2, 2, 2]), () => ones([1, 3, 1, 1, 1]), typeof(ArgumentException), "'mask' has shape [1, 3, 1, 1, 1] but the mask of gradOutput has shape [2, 3, 1, 1, 1]; they must match.", "mask")),
            ("3d unbatched, Dropout2d's mask shape", new("Dropout3d", () => randn(3, 2, 2, 2), () => ones(3, 1, 1), typeof(ArgumentException), "'mask' has shape [3, 1, 1] but the mask of gradOutput has shape [3, 1, 1, 1]; they must match.", "mask")),
            ("1d, Float64 mask for Float32 dy", new("Dropout1d", () => randn(2, 3, 4), () => ones(2, 3, 1, ScalarType.Float64), typeof(ArgumentException), "'mask' has dtype Float64 but gradOutput has dtype Float32; they must match.", "mask")),
            ("3d, mask not contiguous", new("Dropout3d", () => randn([2, 3, 2, 2, 2]), () => ones([2, 6, 1, 1, 1]).slice(1, 0, 6, 2), typeof(ArgumentException), "'mask' must be contiguous.", "mask")),
            ("3d, mask on the meta device", new("Dropout3d", () => randn([2, 3, 2, 2, 2]), () => empty([2, 3, 1, 1, 1], device: META), typeof(NotSupportedException), "'mask' is on device meta; MyTorch.Layers kernels run on the CPU only.", "mask")),
            ("1d, 4-D dy", new("Dropout1d", () => randn(2, 3, 4, 5), () => ones(2, 3, 1), typeof(ArgumentException), "Dropout1d expects a 2-D (C, L) or 3-D (N, C, L) input, got a 4-D input of size [2, 3, 4, 5].", "gradOutput")),
            ("3d, 3-D dy", new("Dropout3d", () => randn(3, 2, 2), () => ones(3, 1, 1, 1), typeof(ArgumentException), "Dropout3d expects a 4-D (C, D, H, W) or 5-D (N, C, D, H, W) input, got a 3-D input of size [3, 2, 2].", "gradOutput")),
            ("1d, Int32 dy", new("Dropout1d", () => randint(0, 9, [2, 3, 4]).to(ScalarType.Int32), () => ones(2, 3, 1), typeof(ArgumentException), "'gradOutput' has dtype Int32; expected Float32, Float64, BFloat16 or Float16.", "gradOutput")),
        };
        foreach (var (name, refusal) in cases)
        {
            yield return new TestCaseData(refusal).SetArgDisplayNames(name);
        }
    }

    [TestCaseSource(nameof(BackwardRefusals))]
    public void Backward_BadGradientOrMask_Throws_NamingTheProblem_AndChangesNothing(BackwardRefusal refusal)
    {
        using var scope = NewDisposeScope();
        var dy = refusal.GradOutput();
        var mask = refusal.Mask();
        using var snapshot = new Snapshot();
        snapshot.Add("gradOutput", dy);
        if (mask.device_type == DeviceType.CPU)
        {
            snapshot.Add("mask", mask);
        }

        var thrown = Assert.Throws(refusal.Exception, () => OurBackward(refusal.Layer, dy, mask));
        Assert.That(thrown!.Message, Does.StartWith(refusal.Message));
        if (thrown is ArgumentException argument)
        {
            Assert.That(argument.ParamName, Is.EqualTo(refusal.ParamName));
        }

        snapshot.AssertUnchanged();
    }

    [Test]
    public void Backward_NullOrDisposedTensor_Throws([Values("Dropout1d", "Dropout3d")] string layer)
    {
        using var scope = NewDisposeScope();
        long[] shape = layer == "Dropout1d" ? [2, 3, 4] : [2, 3, 2, 2, 2];
        var dy = randn(shape);
        var (_, mask) = OurForward(layer, randn(shape), 0.5);
        Assert.That(Assert.Throws<ArgumentNullException>(() => OurBackward(layer, null!, mask))!.ParamName, Is.EqualTo("gradOutput"));
        Assert.That(Assert.Throws<ArgumentNullException>(() => OurBackward(layer, dy, null!))!.ParamName, Is.EqualTo("mask"));
        mask.Dispose();
        var gone = Assert.Throws<ObjectDisposedException>(() => OurBackward(layer, dy, mask));
        Assert.That(gone!.Message, Does.StartWith("The tensor 'mask' has been disposed."));
    }

    private static int BatchedRank(string layer) => layer == "Dropout1d" ? 3 : 5;

    private static (Tensor Output, Tensor Mask) OurForward(string layer, Tensor input, double p, bool training = true, bool inplace = false, Generator? generator = null) =>
        layer == "Dropout1d"
            ? Dropout1dFunctional.Forward(input, p, training, inplace, generator)
            : Dropout3dFunctional.Forward(input, p, training, inplace, generator);

    private static Tensor OurBackward(string layer, Tensor gradOutput, Tensor mask) =>
        layer == "Dropout1d" ? Dropout1dFunctional.Backward(gradOutput, mask) : Dropout3dFunctional.Backward(gradOutput, mask);

    /// <summary>
    /// TorchSharp's functional dropout. Its dropout1d refuses (C, L), which PyTorch reads as one sample: that is
    /// (1, C, L)'s result, squeezed.
    /// </summary>
    private static Tensor TheirForward(string layer, Tensor x, double p, bool training)
    {
        if (layer == "Dropout3d")
        {
            return nn.functional.dropout3d(x, p, training, inplace: false);
        }

        return x.dim() == 2
            ? nn.functional.dropout1d(x.unsqueeze(0), p, training, inplace: false).squeeze(0)
            : nn.functional.dropout1d(x, p, training, inplace: false);
    }

    /// <summary>
    /// TorchSharp's forward from <paramref name="seed"/> on an alias of <paramref name="values"/> that requires grad, and
    /// its autograd backward with <paramref name="dy"/>: the output, x.grad, and the default generator's state after the forward.
    /// </summary>
    private static (Tensor Output, Tensor Grad, Tensor State) Theirs(string layer, Tensor values, Tensor dy, double p, bool training, int seed)
    {
        var x = values.detach().requires_grad_(true);
        manual_seed(seed);
        var output = TheirForward(layer, x, p, training);
        var state = get_rng_state();
        output.backward([dy]);
        return (output.detach(), x.grad!, state);
    }

    /// <summary>Values of <paramref name="shape"/> with a NaN, a −∞ and a −0.0, which show what x · 0 and a kept channel's scaling do.</summary>
    private static Tensor Values(long[] shape, ScalarType dtype)
    {
        var values = randn(shape, dtype);
        using (no_grad())
        using (var flat = values.view(-1))
        {
            long n = flat.shape[0];
            flat[0] = tensor(double.NaN, dtype);
            flat[n - 1] = tensor(double.NegativeInfinity, dtype);
            flat[n / 2] = tensor(-0.0, dtype);
        }

        return values;
    }

    /// <summary>
    /// <paramref name="values"/> (N, C, …) in a memory layout: contiguous; the channels innermost ((N, L, C) memory for
    /// 3-D, channels-last-3d for 5-D); every other element of a last dimension twice as wide; or starting one sample
    /// into a larger tensor.
    /// </summary>
    private static Tensor InLayout(Tensor values, string layout)
    {
        long[] shape = values.shape;
        int rank = shape.Length, last = rank - 1;
        switch (layout)
        {
            case "contiguous":
                return values.clone();
            case "channels last":
                long[] toMemory = [0, .. Enumerable.Range(2, rank - 2).Select(d => (long)d), 1];
                long[] back = [0, last, .. Enumerable.Range(1, rank - 2).Select(d => (long)d)];
                return values.permute(toMemory).contiguous().permute(back);
            case "strided slice":
                var wide = zeros([.. shape[..last], 2 * shape[last]], values.dtype);
                var slice = wide.slice(last, 0, 2 * shape[last], 2);
                slice.copy_(values);
                return slice;
            default:
                var longer = cat([randn([1, .. shape[1..]], values.dtype), values], 0);
                return longer.slice(0, 1, shape[0] + 1, 1);
        }
    }

    /// <summary>
    /// Whether every mask value is 0 or libtorch's scale in the mask's dtype: T(1) / T(1 − p) for float32 and float64,
    /// 1f / (float)(1 − p) rounded to the dtype for bfloat16 and float16 (libtorch divides those in float32).
    /// </summary>
    private static bool MaskValuesAre(Tensor mask, double p)
    {
        double kept = mask.dtype == ScalarType.Float64 ? 1 / (1 - p) : 1f / (float)(1 - p);
        using var isZero = mask.eq(0);
        using var isKept = p == 1 ? isZero.clone() : mask.eq(tensor(kept, mask.dtype));
        using var either = isZero.logical_or(isKept);
        return either.all().item<bool>();
    }
}
