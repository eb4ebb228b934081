using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// Gradients of functions of the gradients (<c>create_graph: true</c>, as a gradient penalty takes them) through our
/// BatchNorm2d and Dropout2d against TorchSharp's own layers in float64, against finite differences of our first-order
/// gradients, to third order; and the first-order gradients unchanged, bit for bit, when a graph is asked for.
/// </summary>
[TestFixture]
public class SecondOrderTests
{
    /// <summary>The largest relative difference, in L2 norm, of a second-order gradient from TorchSharp's in float64.</summary>
    private const double Relative = 1e-9;

    public static IEnumerable<TestCaseData> BatchNormModes()
    {
        foreach (bool training in new[] { true, false })
        {
            foreach (bool affine in new[] { true, false })
            {
                foreach (bool track in new[] { true, false })
                {
                    foreach (bool channelsLast in new[] { false, true })
                    {
                        yield return new TestCaseData(training, affine, track, channelsLast).SetArgDisplayNames(
                            $"{(training ? "training" : "evaluation")}, affine {affine}, track_running_stats {track}, {(channelsLast ? "channels-last" : "NCHW")}");
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(BatchNormModes))]
    public void BatchNorm2d_GradientOfAFunctionOfTheGradients_MatchesTorchSharp_Float64(bool training, bool affine, bool track, bool channelsLast)
    {
        using var scope = NewDisposeScope();
        manual_seed(41);
        var x = Layout(randn([4, 3, 5, 6], ScalarType.Float64).Times(2).Plus(0.5), channelsLast);
        var dy = Layout(randn([4, 3, 5, 6], ScalarType.Float64), channelsLast);
        var ours = layers.BatchNorm2d(3, affine: affine, track_running_stats: track, dtype: ScalarType.Float64);
        var theirs = nn.BatchNorm2d(3, affine: affine, track_running_stats: track, dtype: ScalarType.Float64);
        Prepare(ours, theirs, training);

        var expected = PenaltyGradients(theirs, x, dy);
        var actual = PenaltyGradients(ours, x, dy);
        AssertRelative(actual, expected, ["x", "dy", "weight", "bias"]);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Dropout2d_AfterBatchNorm2d_GradientOfAFunctionOfTheGradients_MatchesTorchSharp_Float64(bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(42);
        var x = randn([4, 3, 5, 6], ScalarType.Float64);
        var dy = randn([4, 3, 5, 6], ScalarType.Float64);
        var ours = nn.Sequential(("bn", layers.BatchNorm2d(3, dtype: ScalarType.Float64)), ("drop", layers.Dropout2d(0.4)));
        var theirs = nn.Sequential(("bn", nn.BatchNorm2d(3, dtype: ScalarType.Float64)), ("drop", nn.Dropout2d(0.4)));
        Prepare(ours, theirs, training);

        manual_seed(7);
        var expected = PenaltyGradients(theirs, x, dy);
        manual_seed(7);
        var actual = PenaltyGradients(ours, x, dy);
        AssertRelative(actual, expected, ["x", "dy", "bn.weight", "bn.bias"]);
    }

    /// <summary>
    /// Third order, against batch normalisation written out in TorchSharp operations (whose derivatives autograd takes
    /// to any order) and against central differences of our second-order gradient. TorchSharp's own BatchNorm2d is not
    /// the oracle here: its third-order gradient disagrees with central differences of its own second-order one (by a
    /// factor of 4 along some directions), so only its difference from the formula is printed beside ours.
    /// </summary>
    [Test]
    public void BatchNorm2d_ThirdOrder_MatchesTheFormulaInTorchSharpOperations_AndCentralDifferences()
    {
        using var scope = NewDisposeScope();
        manual_seed(43);
        var x = randn([3, 2, 4, 4], ScalarType.Float64);
        var dy = randn([3, 2, 4, 4], ScalarType.Float64);
        var r = randn([3, 2, 4, 4], ScalarType.Float64);
        var ours = layers.BatchNorm2d(2, dtype: ScalarType.Float64);
        var theirs = nn.BatchNorm2d(2, dtype: ScalarType.Float64);
        Prepare(ours, theirs, training: true);
        var weight = ours.weight!.detach().clone();
        var bias = ours.bias!.detach().clone();
        Tensor Formula(Tensor input)
        {
            var centred = input - input.mean([0, 2, 3], keepdim: true);
            var variance = (centred * centred).mean([0, 2, 3], keepdim: true);
            return (centred * (variance + 1e-5).rsqrt() * weight.view(1, -1, 1, 1)) + bias.view(1, -1, 1, 1);
        }

        // T(x) = ⟨∇ₓ Σ (∂y/∂x · dy)², r⟩; its gradient is the third order.
        Tensor Second(Func<Tensor, Tensor> forward, Tensor at, bool graph)
        {
            var input = at.detach().clone().requires_grad_();
            var first = torch.autograd.grad([forward(input)], [input], [dy], retain_graph: true, create_graph: true)[0];
            var second = torch.autograd.grad([(first * first).sum()], [input], retain_graph: graph, create_graph: graph)[0];
            return graph ? torch.autograd.grad([(second * r).sum()], [input])[0] : second;
        }

        var expected = Second(Formula, x, graph: true);
        var actual = Second(ours.forward, x, graph: true);
        var libtorch = Second(theirs.forward, x, graph: true);
        TestContext.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"TorchSharp's BatchNorm2d, third order: relative difference {(libtorch - expected).norm().item<double>() / expected.norm().item<double>():G3} from the formula"));
        AssertRelative([actual], [expected], ["x, third order"]);

        const double h = 1e-6;
        for (int direction = 0; direction < 3; direction++)
        {
            var u = randn(x.shape, ScalarType.Float64);
            double numeric = ((Second(ours.forward, x + (u * h), graph: false) - Second(ours.forward, x - (u * h), graph: false)) * r).sum().item<double>() / (2 * h);
            double predicted = (actual * u).sum().item<double>();
            TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"direction {direction}: analytic {predicted:R}, central difference {numeric:R}"));
            Assert.That(Math.Abs(predicted - numeric), Is.LessThanOrEqualTo(1e-6 * (1 + Math.Abs(numeric))), $"direction {direction}");
        }
    }

    /// <summary>
    /// gradgradcheck: the gradient of s = ⟨first-order gradients, v⟩ with respect to x, γ, β and dy, against central
    /// differences of s (our first-order gradients, without a graph) along random directions, in float64.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void BatchNorm2d_SecondOrder_MatchesCentralDifferencesOfOurFirstOrderGradients(bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(44);
        var x = randn([3, 2, 4, 5], ScalarType.Float64).Times(1.5).Plus(0.3);
        var dy = randn([3, 2, 4, 5], ScalarType.Float64);
        var bn = layers.BatchNorm2d(2, momentum: 0.0, dtype: ScalarType.Float64);
        using (no_grad())
        {
            bn.weight!.copy_(tensor(new[] { 0.7, -1.3 }));
            bn.bias!.copy_(tensor(new[] { 0.2, 0.4 }));
            bn.running_mean!.copy_(tensor(new[] { 0.1, -0.2 }));
            bn.running_var!.copy_(tensor(new[] { 1.7, 0.6 }));
        }

        bn.train(training);
        var vx = randn(x.shape, ScalarType.Float64);
        var vw = randn(2, ScalarType.Float64);
        var vb = randn(2, ScalarType.Float64);

        // s(x, γ, β, dy) = ⟨dx, vx⟩ + ⟨dγ, vw⟩ + ⟨dβ, vb⟩, from the first-order gradients.
        double S(Tensor input, Tensor gamma, Tensor beta, Tensor gradOutput, bool graph, out Tensor[] leaves)
        {
            using (no_grad())
            {
                bn.weight!.copy_(gamma);
                bn.bias!.copy_(beta);
            }

            var xi = input.detach().clone().requires_grad_();
            var dyi = gradOutput.detach().clone().requires_grad_(graph);
            var g = torch.autograd.grad([bn.forward(xi)], [xi, bn.weight!, bn.bias!], [dyi], retain_graph: graph, create_graph: graph);
            var s = (g[0] * vx).sum() + (g[1] * vw).sum() + (g[2] * vb).sum();
            leaves = [xi, bn.weight!, bn.bias!, dyi];
            if (graph)
            {
                // The first-order gradients do not depend on β: its second-order gradient is unused, and 0.
                var wrt = leaves;
                var second = torch.autograd.grad([s], wrt, allow_unused: true);
                leaves = wrt.Select((t, i) => second[i] is { } g && !g.IsInvalid ? g : zeros_like(t)).ToArray();
            }

            return s.item<double>();
        }

        var gamma0 = bn.weight!.detach().clone();
        var beta0 = bn.bias!.detach().clone();
        S(x, gamma0, beta0, dy, graph: true, out var analytic);
        const double h = 1e-6;
        for (int direction = 0; direction < 4; direction++)
        {
            var ux = randn(x.shape, ScalarType.Float64);
            var uw = randn(2, ScalarType.Float64);
            var ub = randn(2, ScalarType.Float64);
            var udy = randn(x.shape, ScalarType.Float64);
            double plus = S(x + (ux * h), gamma0 + (uw * h), beta0 + (ub * h), dy + (udy * h), graph: false, out _);
            double minus = S(x - (ux * h), gamma0 - (uw * h), beta0 - (ub * h), dy - (udy * h), graph: false, out _);
            double numeric = (plus - minus) / (2 * h);
            double predicted = (analytic[0] * ux).sum().item<double>() + (analytic[1] * uw).sum().item<double>()
                + (analytic[2] * ub).sum().item<double>() + (analytic[3] * udy).sum().item<double>();
            TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"direction {direction}: analytic {predicted:R}, central difference {numeric:R}"));
            Assert.That(Math.Abs(predicted - numeric), Is.LessThanOrEqualTo(1e-6 * (1 + Math.Abs(numeric))), $"direction {direction}");
        }
    }

    /// <summary>
    /// A bfloat16 input to a float32 BatchNorm2d, the penalty's gradients against TorchSharp's float64 module on the same
    /// values. Ours rounds dx to bfloat16 and the penalty's own operations run in bfloat16, about four roundings of 2^-8
    /// each between the values and the second-order gradients, so these agree within 2^-6 in relative L2 norm.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void BatchNorm2d_SecondOrder_OnBFloat16Input_MatchesFloat64(bool training)
    {
        using var scope = NewDisposeScope();
        manual_seed(47);
        var x = randn([4, 3, 5, 6]).Times(2).Plus(0.5).to(ScalarType.BFloat16);
        var dy = randn([4, 3, 5, 6]).to(ScalarType.BFloat16);
        var ours = layers.BatchNorm2d(3);
        var theirs = nn.BatchNorm2d(3, dtype: ScalarType.Float64);
        Prepare(ours, theirs, training);

        var expected = PenaltyGradients(theirs, x.to(ScalarType.Float64), dy.to(ScalarType.Float64));
        var actual = PenaltyGradients(ours, x, dy);
        Assert.That(actual[0].dtype, Is.EqualTo(ScalarType.BFloat16), "the input's gradient has the input's dtype");
        Assert.That(actual[2].dtype, Is.EqualTo(ScalarType.Float32), "the weight's gradient has the weight's dtype");
        AssertRelative(actual, expected, ["x", "dy", "weight", "bias"], Math.ScaleB(1, -6));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void FirstOrderGradients_AreTheSameBits_WithOrWithoutAGraph(bool channelsLast)
    {
        using var scope = NewDisposeScope();
        manual_seed(45);
        var x = Layout(randn([4, 5, 7, 6]).Times(3).Plus(100), channelsLast);
        var dy = Layout(randn([4, 5, 7, 6]), channelsLast);
        var model = nn.Sequential(("bn", layers.BatchNorm2d(5)), ("drop", layers.Dropout2d(0.3)));
        model.train();

        Tensor[] Gradients(bool graph)
        {
            manual_seed(8);
            var input = x.detach().clone().requires_grad_();
            var parameters = model.parameters().ToArray();
            return torch.autograd.grad([model.forward(input)], [input, .. parameters], [dy], retain_graph: graph, create_graph: graph).ToArray();
        }

        var without = Gradients(graph: false);
        var with = Gradients(graph: true);
        Assert.That(with[0].requires_grad, Is.True, "with a graph, the gradient has one");
        Assert.That(without[0].requires_grad, Is.False);
        for (int i = 0; i < without.Length; i++)
        {
            Assert.That(with[i].detach().eq(without[i]).all().item<bool>(), Is.True, $"gradient {i}, bit for bit");
            Assert.That(with[i].stride(), Is.EqualTo(without[i].stride()), $"gradient {i}, memory layout");
        }
    }

    private static Tensor Layout(Tensor x, bool channelsLast) =>
        channelsLast ? x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : x;

    /// <summary>The same γ, β and running statistics in both models, and the same mode.</summary>
    private static void Prepare(nn.Module<Tensor, Tensor> ours, nn.Module<Tensor, Tensor> theirs, bool training)
    {
        manual_seed(46);
        using (no_grad())
        {
            foreach (var (name, p) in theirs.named_parameters())
            {
                p.copy_(randn(p.shape, ScalarType.Float64).Times(0.8).Plus(name.EndsWith("weight", StringComparison.Ordinal) ? 1.0 : 0.0));
            }

            foreach (var (name, b) in theirs.named_buffers())
            {
                if (name.EndsWith("running_mean", StringComparison.Ordinal))
                {
                    b.copy_(randn(b.shape, ScalarType.Float64).Times(0.3));
                }
                else if (name.EndsWith("running_var", StringComparison.Ordinal))
                {
                    b.copy_(rand(b.shape, ScalarType.Float64).Plus(0.5));
                }
            }
        }

        ours.load_state_dict(theirs.state_dict());
        ours.train(training);
        theirs.train(training);
    }

    /// <summary>
    /// With first-order gradients g = (dx, dγ, dβ) taken with a graph, the gradients of
    /// P = Σ dx² · r + Σ sin(dγ) + Σ dβ² (any function of them) with respect to x, dy, γ and β.
    /// </summary>
    private static Tensor[] PenaltyGradients(nn.Module<Tensor, Tensor> module, Tensor x, Tensor dy)
    {
        var input = x.detach().clone().requires_grad_();
        var gradOutput = dy.detach().clone().requires_grad_();
        var parameters = module.parameters().ToArray();
        var first = torch.autograd.grad([module.forward(input)], [input, .. parameters], [gradOutput], retain_graph: true, create_graph: true);
        var r = full_like(first[0], 0.37) + (arange(first[0].numel(), ScalarType.Float64).view(first[0].shape) * 0.01).sin();
        var penalty = (first[0] * first[0] * r).sum();
        if (parameters.Length == 2)
        {
            penalty = penalty + first[1].sin().sum() + (first[2] * first[2]).sum();
        }

        // In evaluation without affine parameters dx = dy/σ does not depend on x: its gradient is unused, and counted as 0.
        Tensor[] wrt = [input, gradOutput, .. parameters];
        var second = torch.autograd.grad([penalty], wrt, allow_unused: true);
        return wrt.Select((t, i) => second[i] is { } g && !g.IsInvalid ? g : zeros_like(t)).ToArray();
    }

    private static void AssertRelative(Tensor[] actual, Tensor[] expected, string[] names, double relative = Relative)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
        {
            double scale = expected[i].norm().item<double>();
            double difference = (actual[i].to(ScalarType.Float64) - expected[i]).norm().item<double>();
            TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{names[i]}: relative difference {difference / scale:G3} (norm {scale:G3})"));
            Assert.That(difference, Is.LessThanOrEqualTo(relative * scale), names[i]);
        }
    }
}
