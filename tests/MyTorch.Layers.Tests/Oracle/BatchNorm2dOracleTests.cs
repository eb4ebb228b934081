using System;
using System.Collections.Generic;
using System.Globalization;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// Our BatchNorm2d against TorchSharp's nn.BatchNorm2d: the same options, weights and inputs through both, several
/// training steps then evaluation, comparing every output, gradient and buffer at every step.
/// </summary>
[TestFixture]
public class BatchNorm2dOracleTests
{
    private static readonly long[][] SmallShapes =
    [
        [1, 3, 4, 5],   // N = 1, H·W > 1
        [4, 1, 3, 3],   // C = 1
        [6, 3, 1, 1],   // H·W = 1, N > 1
        [3, 5, 7, 9],   // odd sizes
    ];

    public static IEnumerable<TestCaseData> OptionMatrix()
    {
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
        {
            foreach (bool affine in new[] { true, false })
            {
                foreach (bool track in new[] { true, false })
                {
                    foreach (double? momentum in new double?[] { 0.1, 0.5, null })
                    {
                        foreach (var layout in Enum.GetValues<Layout>())
                        {
                            foreach (var shape in SmallShapes)
                            {
                                yield return new TestCaseData(new Options(dtype, affine, track, momentum, 1e-5), layout, shape)
                                    .SetArgDisplayNames(
                                        dtype.ToString(),
                                        affine ? "affine" : "no-affine",
                                        track ? "tracking" : "no-tracking",
                                        momentum is null ? "momentum=null" : string.Create(CultureInfo.InvariantCulture, $"momentum={momentum}"),
                                        layout.ToString(),
                                        string.Join('x', shape));
                            }
                        }
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(OptionMatrix))]
    public void TrainingThenEval_MatchesTorchSharp(Options options, Layout layout, long[] shape)
    {
        RunAgainstOracle(options, layout, shape, trainingSteps: 3, evalSteps: 2);
    }

    /// <summary>
    /// 100,352 values per channel. In float32, libtorch's own sums carry errors of about 1e-4 relative at this size, so the
    /// oracle runs TorchSharp in float64 on the same values: ours must be within the float32 tolerance of that.
    /// </summary>
    [TestCase(ScalarType.Float32, Layout.Contiguous)]
    [TestCase(ScalarType.Float32, Layout.ChannelsLast)]
    [TestCase(ScalarType.Float64, Layout.Contiguous)]
    public void LargeInput_MatchesTorchSharp(ScalarType dtype, Layout layout)
    {
        var options = new Options(dtype, Affine: true, Track: true, Momentum: 0.1, Eps: 1e-5) { OracleDtype = ScalarType.Float64 };
        RunAgainstOracle(options, layout, [32, 64, 56, 56], trainingSteps: 2, evalSteps: 1);
    }

    /// <summary>
    /// 32×32 planes (4 KB of float32) and 8 channels: NCHW layouts take the channel-at-a-time kernels. The oracle runs
    /// TorchSharp in float64, as for the large input.
    /// </summary>
    [Test]
    public void ChannelAtATimeShape_MatchesTorchSharp(
        [Values(ScalarType.Float32, ScalarType.Float64)] ScalarType dtype,
        [Values(true, false)] bool affine,
        [Values] Layout layout)
    {
        var options = new Options(dtype, affine, Track: true, Momentum: 0.1, Eps: 1e-5) { OracleDtype = ScalarType.Float64 };
        RunAgainstOracle(options, layout, [3, 8, 32, 32], trainingSteps: 2, evalSteps: 1);
    }

    /// <summary>
    /// The output gradient in either layout under an input in either. A gradient in the other layout than the input's
    /// is moved into the input's before the backward reads it: 130 channels are two blocks of 64 and 2 more, planes of
    /// 13×17 = 221 values three blocks and 29 more, and 86,190 values take the parallel path.
    /// </summary>
    [Test]
    public void Backward_GradientInEitherLayout_MatchesTorchSharp(
        [Values(ScalarType.Float32, ScalarType.Float64)] ScalarType dtype,
        [Values(Layout.Contiguous, Layout.ChannelsLast)] Layout inputLayout,
        [Values(Layout.Contiguous, Layout.ChannelsLast)] Layout gradientLayout,
        [Values("3x130x13x17", "2x5x7x9")] string shape)
    {
        var options = new Options(dtype, Affine: true, Track: true, Momentum: 0.1, Eps: 1e-5) { OracleDtype = ScalarType.Float64 };
        long[] dims = Array.ConvertAll(shape.Split('x'), long.Parse);
        RunAgainstOracle(options, inputLayout, dims, trainingSteps: 2, evalSteps: 1, gradientLayout);
    }

    /// <summary>
    /// A contiguous output gradient under a channels-last input large enough (24 MiB for dy, x and a copy) to be read
    /// where it lies, not moved into the input's layout first.
    /// </summary>
    [TestCase(ScalarType.Float32, "2x64x128x128")]
    [TestCase(ScalarType.Float64, "2x64x128x64")]
    public void Backward_LargeContiguousGradientUnderChannelsLastInput_MatchesTorchSharp(ScalarType dtype, string shape)
    {
        long[] dims = Array.ConvertAll(shape.Split('x'), long.Parse);
        var plane = new PlaneLayout((int)dims[0], (int)dims[1], (int)(dims[2] * dims[3]), channelsLast: true);
        bool planar = dtype == ScalarType.Float32 ? BatchNormKernels.ReadsPlanarGradient<float>(plane) : BatchNormKernels.ReadsPlanarGradient<double>(plane);
        Assert.That(planar, Is.True, "the shape takes the path under test");
        var options = new Options(dtype, Affine: true, Track: true, Momentum: 0.1, Eps: 1e-5) { OracleDtype = ScalarType.Float64 };
        RunAgainstOracle(options, Layout.ChannelsLast, dims, trainingSteps: 1, evalSteps: 0, Layout.Contiguous);
    }

    [Test]
    public void OtherEps_MatchesTorchSharp()
    {
        RunAgainstOracle(new Options(ScalarType.Float64, true, true, 0.1, Eps: 1e-3), Layout.Contiguous, [5, 4, 3, 2], trainingSteps: 2, evalSteps: 1);
        RunAgainstOracle(new Options(ScalarType.Float64, true, true, 0.1, Eps: 0), Layout.Contiguous, [5, 4, 3, 2], trainingSteps: 2, evalSteps: 1);
    }

    [TestCase(Layout.Contiguous)]
    [TestCase(Layout.ChannelsLast)]
    public void Output_KeepsTheInputsMemoryLayout(Layout layout)
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        var theirs = nn.BatchNorm2d(4);
        var ours = new BatchNorm2d(4);
        using var input = LaidOutInput.Create(randn(2, 4, 3, 5), layout);
        var expected = theirs.forward(input.View);
        var actual = ours.forward(input.View);
        Assert.That(actual.stride(), Is.EqualTo(expected.stride()));
        expected.backward([ones_like(expected)]);
        var expectedGrad = input.Leaf.grad!.clone();
        input.Leaf.grad!.zero_();
        actual.backward([ones_like(actual)]);
        Tolerance.AssertClose(input.Leaf.grad, expectedGrad, "x.grad");
    }

    [TestCase(Layout.Contiguous)]
    [TestCase(Layout.ChannelsLast)]
    public void Output_CanBeModifiedInPlace_AsTorchSharpsCan(Layout layout)
    {
        // The output is allocated with its strides, not as a permuted view: autograd refuses in-place changes to a
        // view returned by a custom function, and users write bn.forward(x).relu_().
        using var scope = NewDisposeScope();
        manual_seed(8);
        var theirs = nn.BatchNorm2d(4);
        var ours = new BatchNorm2d(4);
        using var theirInput = LaidOutInput.Create(randn(2, 4, 3, 5), layout);
        using var ourInput = LaidOutInput.Create(theirInput.View.detach(), layout);
        var expected = theirs.forward(theirInput.View).relu_();
        var actual = ours.forward(ourInput.View).relu_();
        Tolerance.AssertClose(actual, expected, "relu_ of the output");
        expected.sum().backward();
        actual.sum().backward();
        Tolerance.AssertClose(ourInput.Leaf.grad, theirInput.Leaf.grad, "x.grad through relu_");
    }

    [Test]
    public void EmptyBatch_BehavesAsTorchSharp()
    {
        using var scope = NewDisposeScope();
        var theirs = nn.BatchNorm2d(3);
        var ours = new BatchNorm2d(3);
        var x = randn(0, 3, 4, 4);
        var expected = theirs.forward(x);
        var actual = ours.forward(x);
        Assert.That(actual.shape, Is.EqualTo(expected.shape));
        Tolerance.AssertClose(ours.running_mean, theirs.running_mean, "running_mean");
        Tolerance.AssertClose(ours.running_var, theirs.running_var, "running_var");
        Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(theirs.num_batches_tracked!.to(ScalarType.Int64).item<long>()));
    }

    [Test]
    public void NaNAndInfinity_PropagateAsInTorchSharp()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var x = randn(4, 3, 2, 2);
        x[0, 0, 0, 0] = tensor(double.NaN);
        x[1, 1, 1, 1] = tensor(double.PositiveInfinity);
        foreach (bool training in new[] { true, false })
        {
            var theirs = nn.BatchNorm2d(3);
            var ours = new BatchNorm2d(3);
            theirs.train(training);
            ours.train(training);
            Tolerance.AssertClose(ours.forward(x), theirs.forward(x), $"output (training={training})");
            Tolerance.AssertClose(ours.running_mean, theirs.running_mean, "running_mean");
            Tolerance.AssertClose(ours.running_var, theirs.running_var, "running_var");
        }
    }

    /// <summary>
    /// Runs <paramref name="trainingSteps"/> training steps and <paramref name="evalSteps"/> evaluation steps through both
    /// modules, comparing output, input gradient, parameter gradients and buffers after each.
    /// </summary>
    internal static void RunAgainstOracle(Options options, Layout layout, long[] shape, int trainingSteps, int evalSteps, Layout gradientLayout = Layout.Contiguous)
    {
        using var scope = NewDisposeScope();
        manual_seed(1234);
        long channels = shape[1];
        var oracleDtype = options.OracleDtype ?? options.Dtype;
        var theirs = nn.BatchNorm2d(channels, options.Eps, options.Momentum ?? 0.1, options.Affine, options.Track, dtype: oracleDtype);
        theirs.momentum = options.Momentum;
        var ours = new BatchNorm2d(channels, options.Eps, options.Momentum, options.Affine, options.Track, dtype: options.Dtype);
        if (options.Affine)
        {
            using var noGrad = no_grad();
            var gamma = rand(channels, options.Dtype).Times(1.5).Plus(0.25);
            var beta = randn(channels, options.Dtype);
            theirs.weight.copy_(gamma.to(oracleDtype));
            theirs.bias!.copy_(beta.to(oracleDtype));
            ours.weight!.copy_(gamma);
            ours.bias!.copy_(beta);
        }

        for (int step = 0; step < trainingSteps + evalSteps; step++)
        {
            bool training = step < trainingSteps;
            theirs.train(training);
            ours.train(training);
            string at = $"{(training ? "training" : "eval")} step {step}";

            // Non-zero means and non-unit spreads per channel, so that every term of the math matters.
            var values = (randn(shape, options.Dtype) * rand(1, channels, 1, 1, options.Dtype).Times(3).Plus(0.5)).Plus(randn(1, channels, 1, 1, options.Dtype));
            var gradOutput = InLayout(randn(shape, options.Dtype), gradientLayout);
            using var theirInput = LaidOutInput.Create(values.to(oracleDtype), layout);
            using var ourInput = LaidOutInput.Create(values, layout);

            var expected = theirs.forward(theirInput.View);
            var actual = ours.forward(ourInput.View);
            Tolerance.AssertClose(actual, AsOurs(expected, options), $"output, {at}");

            expected.backward([gradOutput.to(oracleDtype)]);
            actual.backward([gradOutput]);
            Tolerance.AssertClose(ourInput.Leaf.grad, AsOurs(theirInput.Leaf.grad, options), $"x.grad, {at}");
            if (options.Affine)
            {
                Tolerance.AssertClose(ours.weight!.grad, AsOurs(theirs.weight.grad, options), $"weight.grad, {at}");
                Tolerance.AssertClose(ours.bias!.grad, AsOurs(theirs.bias!.grad, options), $"bias.grad, {at}");
                ours.zero_grad();
                theirs.zero_grad();
            }

            if (options.Track)
            {
                Tolerance.AssertClose(ours.running_mean, AsOurs(theirs.running_mean, options), $"running_mean, {at}");
                Tolerance.AssertClose(ours.running_var, AsOurs(theirs.running_var, options), $"running_var, {at}");
                Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(theirs.num_batches_tracked!.to(ScalarType.Int64).item<long>()), $"num_batches_tracked, {at}");
            }
            else
            {
                Assert.That(ours.running_mean, Is.Null);
                Assert.That(ours.running_var, Is.Null);
                Assert.That(ours.num_batches_tracked, Is.Null);
            }
        }
    }

    /// <summary>The same values in contiguous or channels-last memory.</summary>
    private static Tensor InLayout(Tensor values, Layout layout) => layout switch
    {
        Layout.Contiguous => values,
        Layout.ChannelsLast => values.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
        _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, null),
    };

    /// <summary>The oracle's result in our dtype: itself, or rounded from the float64 oracle.</summary>
    private static Tensor? AsOurs(Tensor? expected, Options options) =>
        expected is null || options.OracleDtype is null ? expected : expected.to(options.Dtype);

    /// <summary>Module options shared by both implementations; the oracle may run in a wider dtype.</summary>
    public sealed record Options(ScalarType Dtype, bool Affine, bool Track, double? Momentum, double Eps)
    {
        /// <summary>The dtype TorchSharp computes in, when not <see cref="Dtype"/>.</summary>
        public ScalarType? OracleDtype { get; init; }
    }
}
