using System;
using System.Collections.Generic;
using System.Globalization;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Numerics;

/// <summary>
/// Our BatchNorm2d module's float32 gradients of x, γ and β against the float64 gradients of the same float32 values
/// (TorchSharp's float64 module): each within <see cref="BoundUlps"/> float32 ulps of the largest element of the float64
/// gradient, in training and evaluation, on inputs whose mean is up to 1e4 standard deviations from zero. TorchSharp's
/// own float32 error is printed beside ours.
/// </summary>
[TestFixture]
public class GradientAccuracyTests
{
    /// <summary>The bound, in float32 ulps of the largest |float64 gradient| of each quantity.</summary>
    private const double BoundUlps = 4;

    private static readonly string[] Quantities = ["x.grad", "weight.grad", "bias.grad"];

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (long[] shape in new[] { new long[] { 8, 4, 16, 16 }, [16, 3, 8, 8] })
        {
            foreach (bool training in new[] { true, false })
            {
                foreach (var (name, mean, std) in new[] { ("mean 1e4, std 1e-2", 1e4, 1e-2), ("mean -3e3, std 1", -3e3, 1.0), ("std 1e-3 around 1", 1.0, 1e-3) })
                {
                    for (int draw = 0; draw < 3; draw++)
                    {
                        string display = string.Create(CultureInfo.InvariantCulture, $"{name}, {string.Join('x', shape)}, {(training ? "training" : "evaluation")}, draw {draw}");
                        yield return new TestCaseData(shape, mean, std, training, draw).SetArgDisplayNames(display);
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Float32Gradients_WithinFourUlpsOfFloat64(long[] shape, double mean, double std, bool training, int draw)
    {
        using var scope = NewDisposeScope();
        manual_seed(1000 + draw);
        var x = randn(shape, ScalarType.Float64).Times(std).Plus(mean).to(ScalarType.Float32);
        var result = Measure(x, training, affine: true, channelsLast: false);
        AssertWithinBound(result, string.Create(CultureInfo.InvariantCulture, $"mean {mean:G3}, std {std:G3}, {string.Join('x', shape)}, {(training ? "training" : "evaluation")}, draw {draw}:"));
    }

    /// <summary>
    /// Drawn cases: N 1–6, C 1–6, H and W 1–12 (at least two values per channel), σ from 1e-3 to 1e2, means up to
    /// 1e4·σ of either sign, γ of either sign or no affine parameters, both layouts, training or evaluation.
    /// </summary>
    [Test]
    public void Float32Gradients_WithinFourUlpsOfFloat64_OnDrawnCases()
    {
        var random = new Random(2028);
        double worst = 0;
        for (int i = 0; i < 300; i++)
        {
            using var scope = NewDisposeScope();
            long n = random.Next(1, 7), c = random.Next(1, 7), h = random.Next(1, 13), w = random.Next(1, 13);
            if (n * h * w < 2)
            {
                w = 2;
            }

            double std = Math.Pow(10, -3 + (5 * random.NextDouble()));
            double mean = (random.Next(2) == 0 ? -1 : 1) * std * Math.Pow(10, 4 * random.NextDouble());
            bool training = random.Next(4) != 0;
            bool affine = random.Next(4) != 0;
            bool channelsLast = random.Next(2) == 0;
            manual_seed(i);
            var x = randn([n, c, h, w], ScalarType.Float64).Times(std).Plus(mean).to(ScalarType.Float32);
            var result = Measure(x, training, affine, channelsLast);
            string what = string.Create(CultureInfo.InvariantCulture, $"case {i}: {n}x{c}x{h}x{w}, mean {mean:G3}, std {std:G3}, {(training ? "training" : "evaluation")}, affine {affine}, channels-last {channelsLast}");
            AssertWithinBound(result, what);
            worst = Math.Max(worst, Math.Max(result.Ours[0], Math.Max(result.Ours[1], result.Ours[2])));
        }

        TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"largest error over 300 cases: {worst:G3} ulps"));
    }

    private static void AssertWithinBound((double[] Ours, double[] Theirs) result, string what)
    {
        for (int q = 0; q < Quantities.Length; q++)
        {
            TestContext.Out.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"{what} {Quantities[q]}: ours {result.Ours[q]:G3} ulps, TorchSharp float32 {result.Theirs[q]:G3} ulps"));
            Assert.That(result.Ours[q], Is.LessThanOrEqualTo(BoundUlps), $"{what} {Quantities[q]}, in float32 ulps of its largest element");
        }
    }

    /// <summary>
    /// The largest error of our float32 gradients (x, γ, β) and of TorchSharp's float32 ones, in float32 ulps of the largest
    /// |float64 gradient|, with a random output gradient, γ, β and (for evaluation) running statistics near the batch's.
    /// </summary>
    private static (double[] Ours, double[] Theirs) Measure(Tensor x, bool training, bool affine, bool channelsLast)
    {
        long channels = x.shape[1];
        var dy = randn(x.shape, ScalarType.Float64).to(ScalarType.Float32);
        var gamma = (rand(channels, ScalarType.Float64).Times(1.5).Plus(0.25) * (randint(2, [channels]).to(ScalarType.Float64).Times(2) - 1)).to(ScalarType.Float32);
        var beta = randn(channels, ScalarType.Float64).to(ScalarType.Float32);
        var runningMean = x.to(ScalarType.Float64).mean([0, 2, 3]).to(ScalarType.Float32);
        var runningVar = (x.shape[0] * x.shape[2] * x.shape[3] > 1 ? x.to(ScalarType.Float64).var([0, 2, 3]) : ones(channels, ScalarType.Float64)).to(ScalarType.Float32);
        if (channelsLast)
        {
            x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
            dy = dy.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
        }

        var reference = Gradients(nn.BatchNorm2d(channels, affine: affine, dtype: ScalarType.Float64), x.to(ScalarType.Float64), dy.to(ScalarType.Float64), gamma, beta, runningMean, runningVar, training);
        var ours = Gradients(layers.BatchNorm2d(channels, affine: affine), x, dy, gamma, beta, runningMean, runningVar, training);
        var theirs = Gradients(nn.BatchNorm2d(channels, affine: affine), x, dy, gamma, beta, runningMean, runningVar, training);
        var oursUlps = new double[3];
        var theirsUlps = new double[3];
        for (int q = 0; q < 3; q++)
        {
            oursUlps[q] = ours[q] is null ? 0 : UlpsOfLargest(ours[q]!, reference[q]!);
            theirsUlps[q] = theirs[q] is null ? 0 : UlpsOfLargest(theirs[q]!, reference[q]!);
        }

        return (oursUlps, theirsUlps);
    }

    private static Tensor?[] Gradients(nn.Module<Tensor, Tensor> module, Tensor x, Tensor dy, Tensor gamma, Tensor beta, Tensor runningMean, Tensor runningVar, bool training)
    {
        var dtype = x.dtype;
        var parameters = new Dictionary<string, Tensor>();
        foreach (var (name, p) in module.named_parameters())
        {
            parameters[name] = p;
        }

        using (no_grad())
        {
            foreach (var (name, b) in module.named_buffers())
            {
                if (name == "running_mean")
                {
                    b.copy_(runningMean);
                }
                else if (name == "running_var")
                {
                    b.copy_(runningVar);
                }
            }

            if (parameters.Count > 0)
            {
                parameters["weight"].copy_(gamma);
                parameters["bias"].copy_(beta);
            }
        }

        module.train(training);
        var input = x.detach().clone().requires_grad_();
        var output = module.forward(input);
        var inputs = new List<Tensor> { input };
        if (parameters.Count > 0)
        {
            inputs.Add(parameters["weight"]);
            inputs.Add(parameters["bias"]);
        }

        var grads = torch.autograd.grad([output], inputs, [dy.to(dtype)]);
        return parameters.Count > 0 ? [grads[0], grads[1], grads[2]] : [grads[0], null, null];
    }

    /// <summary>max |actual − reference| in float32 ulps of the largest |reference| (the spacing of float32 there).</summary>
    private static double UlpsOfLargest(Tensor actual, Tensor reference)
    {
        double largest = reference.abs().max().item<double>();
        float at = (float)largest;
        double ulp = MathF.BitIncrement(at) - at;
        double error = (actual.to(ScalarType.Float64) - reference).abs().max().item<double>();
        return double.IsNaN(error) ? double.PositiveInfinity : error / ulp;
    }
}
