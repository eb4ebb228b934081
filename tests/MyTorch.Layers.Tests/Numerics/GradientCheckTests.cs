using System;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Oracle;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Numerics;

/// <summary>
/// Our backward kernels against central finite differences of our own forward, in float64 on small shapes, so that the
/// gradients are checked without TorchSharp; and NaN and infinity through both passes, placed exactly as TorchSharp
/// places them.
/// </summary>
[TestFixture]
public class GradientCheckTests
{
    /// <summary>Central-difference step.</summary>
    private const double Step = 1e-5;

    /// <summary>
    /// |analytic − numeric| ≤ Agreement · (1 + |numeric|). Not the suite's tolerance: that compares two computations of
    /// one formula, this compares a derivative with a difference quotient, whose truncation error is about
    /// Step² · |f'''| ≈ 1e-10 and rounding error about 1e-16 · |loss| / Step ≈ 1e-10 on these shapes. A wrong or missing
    /// term of the gradient is of order 1e-2 or more here.
    /// </summary>
    private const double Agreement = 1e-7;

    [TestCase(true, true)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(false, false)]
    public void BatchNorm2d_Gradients_MatchCentralDifferences(bool training, bool channelsLast)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        long[] shape = [3, 2, 2, 3];
        var x0 = randn(shape, ScalarType.Float64).Times(2).Plus(0.5);
        var weights = randn(shape, ScalarType.Float64); // loss = Σ weights · y, so dy = weights
        var gamma = rand(2, ScalarType.Float64).Times(1.5).Plus(0.25);
        var beta = randn(2, ScalarType.Float64);
        var runningMean = randn(2, ScalarType.Float64);
        var runningVar = rand(2, ScalarType.Float64).Plus(0.5);

        // Training without running statistics and evaluation with them: both forwards change nothing, so they can be repeated.
        var bn = new BatchNorm2d(2, eps: 1e-3, track_running_stats: !training, dtype: ScalarType.Float64);
        using (no_grad())
        {
            bn.weight!.copy_(gamma);
            bn.bias!.copy_(beta);
            if (!training)
            {
                bn.running_mean!.copy_(runningMean);
                bn.running_var!.copy_(runningVar);
            }
        }

        bn.train(training);
        double Loss() => (bn.forward(Layout(x0)) * weights).sum().item<double>();
        Tensor Layout(Tensor t) => channelsLast ? t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : t;

        var x = Layout(x0).detach().requires_grad_(true);
        (bn.forward(x) * weights).sum().backward();

        AssertMatchesDifferences(x.grad!, x0, Loss, "x.grad");
        AssertMatchesDifferences(bn.weight!.grad!, bn.weight!, Loss, "weight.grad");
        AssertMatchesDifferences(bn.bias!.grad!, bn.bias!, Loss, "bias.grad");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Dropout2d_Gradient_MatchesCentralDifferences(bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(22);
        var x0 = randn([4, 5, 2, 3], ScalarType.Float64);
        var weights = randn([4, 5, 2, 3], ScalarType.Float64);

        // A generator reseeded before every forward fixes the mask; the explicit backward takes that mask.
        Tensor Forward(Tensor x) => Dropout2dFunctional.Forward(x, 0.4, training, generator: new Generator(7)).Output;
        double Loss() => (Forward(x0) * weights).sum().item<double>();
        var (_, mask) = Dropout2dFunctional.Forward(x0, 0.4, training, generator: new Generator(7));
        var gradInput = Dropout2dFunctional.Backward(weights, mask);
        using Scalar zero = 0;
        Assert.That(mask.eq(zero).any().item<bool>() || !training, Is.True, "some channels are dropped, so the check sees the mask");
        AssertMatchesDifferences(gradInput, x0, Loss, "x.grad");

        // The module's autograd path gives the same gradient with the same mask.
        var module = new Dropout2d(0.4, generator: new Generator(7));
        module.train(training);
        var leaf = x0.clone().requires_grad_(true);
        (module.forward(leaf) * weights).sum().backward();
        BitExact.AssertEqual(leaf.grad!, gradInput, "module x.grad");
    }

    [TestCase(ScalarType.Float32, true)]
    [TestCase(ScalarType.Float32, false)]
    [TestCase(ScalarType.Float64, true)]
    [TestCase(ScalarType.Float64, false)]
    public void BatchNorm2d_NaNAndInfinity_InInputAndGradient_LandWhereTorchSharpsDo(ScalarType dtype, bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(23);
        var x = randn([4, 4, 3, 3], dtype);
        x[0, 0, 0, 0] = tensor(double.NaN, dtype);          // channel 0: a NaN
        x[1, 1, 1, 1] = tensor(double.PositiveInfinity, dtype); // channel 1: an infinity
        var dy = randn([4, 4, 3, 3], dtype);
        dy[2, 2, 2, 2] = tensor(double.NegativeInfinity, dtype); // channel 2: an infinite gradient
        dy[3, 3, 0, 1] = tensor(double.NaN, dtype);              // channel 3: a NaN gradient

        var theirs = nn.BatchNorm2d(4, dtype: dtype);
        var ours = new BatchNorm2d(4, dtype: dtype);
        theirs.train(training);
        ours.train(training);
        var theirX = x.clone().requires_grad_(true);
        var ourX = x.clone().requires_grad_(true);
        var expected = theirs.forward(theirX);
        var actual = ours.forward(ourX);
        expected.backward([dy]);
        actual.backward([dy]);

        // Tolerance.AssertClose requires NaN exactly where TorchSharp has NaN and the same infinities in the same places.
        Tolerance.AssertClose(actual, expected, "output");
        Tolerance.AssertClose(ourX.grad, theirX.grad, "x.grad");
        Tolerance.AssertClose(ours.weight!.grad, theirs.weight.grad, "weight.grad");
        Tolerance.AssertClose(ours.bias!.grad, theirs.bias!.grad, "bias.grad");
        Tolerance.AssertClose(ours.running_mean, theirs.running_mean, "running_mean");
        Tolerance.AssertClose(ours.running_var, theirs.running_var, "running_var");
        Assert.That(actual.isnan().any().item<bool>(), Is.True, "the case has NaN to place");
    }

    /// <summary>Each element of <paramref name="analytic"/> against (L(p + h) − L(p − h)) / 2h, perturbing <paramref name="point"/> in place.</summary>
    private static void AssertMatchesDifferences(Tensor analytic, Tensor point, Func<double> loss, string what)
    {
        var flat = point.detach().view(-1);
        var expected = analytic.detach().contiguous().view(-1);
        double worst = 0;
        for (long i = 0; i < flat.numel(); i++)
        {
            double original = flat[i].item<double>();
            using (no_grad())
            {
                flat[i] = tensor(original + Step, ScalarType.Float64);
                double up = loss();
                flat[i] = tensor(original - Step, ScalarType.Float64);
                double down = loss();
                flat[i] = tensor(original, ScalarType.Float64);
                double numeric = (up - down) / (2 * Step);
                double a = expected[i].item<double>();
                worst = Math.Max(worst, Math.Abs(a - numeric));
                Assert.That(Math.Abs(a - numeric), Is.LessThanOrEqualTo(Agreement * (1 + Math.Abs(numeric))), $"{what}[{i}]: analytic {a:R}, central difference {numeric:R}");
            }
        }

        TestContext.Out.WriteLine($"{what}: largest |analytic − central difference| {worst:G3}");
    }
}
