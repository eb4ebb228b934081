using System;
using System.Collections.Generic;
using System.Globalization;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Numerics;

/// <summary>
/// The two ways to run BatchNorm2d on bfloat16 input, ours and TorchSharp's, against TorchSharp in float64 on the same
/// values: a float32 module given bfloat16 input (mixed precision), and a module built in bfloat16. Ten training steps on
/// 8×4×16×16 with momentum 0.1, then the errors of the last step's output and x.grad (in bfloat16 ulps of the float64
/// value), weight.grad (relative to its largest value) and the running variance (relative to its largest value).
/// Ours must be no less accurate than TorchSharp's in the same setup, and its output and x.grad within one ulp.
/// The rows are docs/numerics.md's table of the setups; run with the detailed console logger to see them.
/// </summary>
[TestFixture]
public class HalfPrecisionSetupsTests
{
    private const int Steps = 10;

    [TestCase(ScalarType.Float32)]
    [TestCase(ScalarType.BFloat16)]
    public void BFloat16Input_OursNoLessAccurateThanTorchSharps(ScalarType moduleDtype)
    {
        using var scope = NewDisposeScope();
        var ours = Measure(layers.BatchNorm2d(4, dtype: moduleDtype));
        var theirs = Measure(nn.BatchNorm2d(4, dtype: moduleDtype));
        string setup = moduleDtype == ScalarType.Float32 ? "float32 module, bfloat16 input" : "bfloat16 module";
        foreach (var (name, o, t) in new[] { ("output (ulps)", ours.Output, theirs.Output), ("x.grad (ulps)", ours.InputGrad, theirs.InputGrad), ("weight.grad (relative)", ours.WeightGrad, theirs.WeightGrad), ("running_var (relative)", ours.RunningVar, theirs.RunningVar) })
        {
            TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {setup} | {name} | {o:G3} | {t:G3} |"));
        }

        Assert.That(ours.Output, Is.LessThanOrEqualTo(1), "output within one ulp");
        Assert.That(ours.InputGrad, Is.LessThanOrEqualTo(1), "x.grad within one ulp");

        // No less accurate than TorchSharp's, or within the module dtype's own rounding, where both are at its limit:
        // half an ulp for weight.grad, rounded once; for the running variance, rounded once per step with the earlier
        // roundings decaying by (1 − momentum), at most half an ulp per step.
        double halfUlp = moduleDtype == ScalarType.Float32 ? Math.ScaleB(1, -24) : Math.ScaleB(1, -9);
        Assert.That(ours.WeightGrad, Is.LessThanOrEqualTo(Math.Max(theirs.WeightGrad, halfUlp)), "weight.grad");
        Assert.That(ours.RunningVar, Is.LessThanOrEqualTo(Math.Max(theirs.RunningVar, Steps * halfUlp)), "running_var");
    }

    private static (double Output, double InputGrad, double WeightGrad, double RunningVar) Measure(TorchSharp.Modules.BatchNorm module)
    {
        using var scope = NewDisposeScope();
        var exact = nn.BatchNorm2d(4, dtype: ScalarType.Float64);
        manual_seed(3);
        using (no_grad())
        {
            // Parameters every setup holds exactly: bfloat16 values.
            var gamma = rand(4).Times(1.5).Plus(0.25).to(ScalarType.BFloat16);
            var beta = randn(4).to(ScalarType.BFloat16);
            module.weight!.copy_(gamma);
            module.bias!.copy_(beta);
            exact.weight!.copy_(gamma);
            exact.bias!.copy_(beta);
        }

        var errors = (Output: 0.0, InputGrad: 0.0, WeightGrad: 0.0, RunningVar: 0.0);
        for (int step = 0; step < Steps; step++)
        {
            module.zero_grad();
            exact.zero_grad();
            var values = ((randn(8, 4, 16, 16) * 2) + 1).to(ScalarType.BFloat16);
            var gradOutput = randn(8, 4, 16, 16).to(ScalarType.BFloat16);
            var x = values.detach().requires_grad_(true);
            var x64 = values.to(ScalarType.Float64).requires_grad_(true);
            var y = module.forward(x);
            var y64 = exact.forward(x64);
            y.backward([gradOutput]);
            y64.backward([gradOutput.to(ScalarType.Float64)]);
            errors = (Ulps(y, y64), Ulps(x.grad!, x64.grad!), Relative(module.weight!.grad!, exact.weight!.grad!), Relative(module.running_var!, exact.running_var!));
        }

        return errors;
    }

    private static double Ulps(Tensor actual, Tensor exact)
    {
        using var scope = NewDisposeScope();
        var e = exact.detach();
        return ((actual.detach().to(ScalarType.Float64) - e).abs() / HalfPrecision.Ulp(e, ScalarType.BFloat16)).max().item<double>();
    }

    private static double Relative(Tensor actual, Tensor exact)
    {
        using var scope = NewDisposeScope();
        var e = exact.detach();
        return (actual.detach().to(ScalarType.Float64) - e).abs().max().item<double>() / e.abs().max().item<double>();
    }
}
