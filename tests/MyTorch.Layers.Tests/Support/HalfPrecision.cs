using System;
using System.Globalization;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>Comparisons of bfloat16 and float16 results in units in the last place (ulp) of their dtype.</summary>
internal static class HalfPrecision
{
    /// <summary>
    /// Each element of the 16-bit <paramref name="actual"/> within one ulp of <paramref name="exact"/> (a float64 result
    /// on the same values), the ulp being the spacing of the dtype's values at |exact|, plus the suite's float64 tolerance
    /// for the float64 result's own error. NaN must meet NaN.
    /// </summary>
    public static void AssertWithinUlp(Tensor? actual, Tensor exact, string what) => AssertWithin(actual, exact, what, floatTolerance: false, exact: null);

    /// <summary>
    /// Each element of <paramref name="actual"/> within one ulp of TorchSharp's 16-bit <paramref name="witness"/> plus the
    /// suite's float32 tolerance (1e-5 relative, 1e-6 absolute; TorchSharp computes in float32, whose error a value that
    /// cancels can carry past an ulp of the dtype), or no further from <paramref name="exact"/> than TorchSharp's: on
    /// strided and channels-last inputs TorchSharp's bfloat16 x.grad differed from ours by two ulps where ours was within one of
    /// float64's.
    /// </summary>
    public static void AssertAgreesWithTorchSharp(Tensor? actual, Tensor witness, Tensor exact, string what) =>
        AssertWithin(actual, witness, what, floatTolerance: true, exact);

    /// <summary>The spacing of <paramref name="dtype"/>'s values at each |value| (subnormal spacing below the normal range).</summary>
    public static Tensor Ulp(Tensor value, ScalarType dtype)
    {
        var (fraction, minimumExponent) = dtype switch
        {
            ScalarType.BFloat16 => (7, -126),
            ScalarType.Float16 => (10, -14),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a 16-bit dtype"),
        };
        var exponent = value.abs().clamp_min(Math.ScaleB(1, minimumExponent)).log2().floor();
        return exp2(exponent - fraction);
    }

    private static void AssertWithin(Tensor? actual, Tensor reference, string what, bool floatTolerance, Tensor? exact)
    {
        Assert.That(actual, Is.Not.Null, $"{what}: ours is missing");
        Assert.That(actual!.shape, Is.EqualTo(reference.shape), $"{what}: shape");
        if (actual.numel() == 0)
        {
            return; // an empty batch: shape is all there is to compare
        }

        using var scope = NewDisposeScope();
        var dtype = actual.dtype;
        var a = actual.detach().to(ScalarType.Float64).flatten();
        var e = reference.detach().to(ScalarType.Float64).flatten();
        var nanMismatch = a.isnan().logical_xor(e.isnan()).sum().item<long>();
        Assert.That(nanMismatch, Is.Zero, $"{what}: NaN in one result but not the other at {nanMismatch} places");
        var finite = a.isfinite().logical_and(e.isfinite());
        var diff = (a - e).abs().where(finite, 0.0);
        // Plus the suite's float64 tolerance: the float64 oracle's own error, which decides near zero (an output of
        // 2.8e-17 where x equals the mean, and ours 0).
        var bound = Ulp(e, dtype) + (e.abs() * 1e-10) + 1e-12;
        if (floatTolerance)
        {
            bound = bound + (e.abs() * 1e-5) + 1e-6;
        }

        if (exact is not null)
        {
            var truth = exact.detach().to(ScalarType.Float64).flatten();
            var ours = (a - truth).abs();
            var theirs = (e - truth).abs();
            bound = bound.where(ours.gt(theirs), double.PositiveInfinity);
        }

        var excess = (diff - bound).where(finite, 0.0);
        if (excess.max().item<double>() > 0)
        {
            long worst = excess.argmax().item<long>();
            Assert.Fail(string.Create(
                CultureInfo.InvariantCulture,
                $"{what}: ours {a[worst].item<double>():R} vs {e[worst].item<double>():R} at flat index {worst}; |diff| {diff[worst].item<double>():G4} exceeds {bound[worst].item<double>():G4} ({dtype})"));
        }
    }
}
