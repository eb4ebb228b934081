using System;
using System.Globalization;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>
/// The one tolerance of the whole suite: |actual − expected| ≤ atol + rtol · |expected|, element by element.
/// float64: rtol 1e-10, atol 1e-12; float32: rtol 1e-5, atol 1e-6; integers exactly. No test loosens it for itself.
/// </summary>
internal static class Tolerance
{
    public static (double Relative, double Absolute) For(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => (1e-10, 1e-12),
        ScalarType.Float32 => (1e-5, 1e-6),
        ScalarType.Int64 or ScalarType.Int32 => (0, 0),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no tolerance for this dtype"),
    };

    /// <summary>Asserts values, shape and dtype; NaN must meet NaN and infinities must match exactly.</summary>
    public static void AssertClose(Tensor? actual, Tensor? expected, string what)
    {
        Assert.That(actual, Is.Not.Null, $"{what}: ours is missing");
        Assert.That(expected, Is.Not.Null, $"{what}: the oracle's is missing");
        Assert.That(actual!.shape, Is.EqualTo(expected!.shape), $"{what}: shape");
        Assert.That(actual.dtype, Is.EqualTo(expected.dtype), $"{what}: dtype");
        if (expected.numel() == 0)
        {
            return; // an empty batch: shape and dtype are all there is to compare
        }

        var (rtol, atol) = For(expected.dtype);
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64).flatten();
        var e = expected.detach().to(ScalarType.Float64).flatten();
        var nanMismatch = a.isnan().logical_xor(e.isnan()).sum().item<long>();
        Assert.That(nanMismatch, Is.Zero, $"{what}: NaN in one result but not the other at {nanMismatch} places");
        var finite = e.isfinite().logical_and(a.isfinite());
        var infMismatch = a.isinf().logical_or(e.isinf()).logical_and(a.ne(e)).sum().item<long>();
        Assert.That(infMismatch, Is.Zero, $"{what}: infinities differ at {infMismatch} places");
        var diff = (a - e).abs().where(finite, 0.0);
        var bound = e.abs().where(finite, 0.0).Times(rtol).Plus(atol);
        var excess = (diff - bound).max().item<double>();
        if (excess > 0)
        {
            long worst = (diff - bound).argmax().item<long>();
            Assert.Fail(string.Create(
                CultureInfo.InvariantCulture,
                $"{what}: ours {a[worst].item<double>():R} vs oracle {e[worst].item<double>():R} at flat index {worst}; " +
                $"|diff| {diff[worst].item<double>():G3} exceeds {atol:G3} + {rtol:G3}·|expected| (max |diff| {diff.max().item<double>():G3})"));
        }
    }

    /// <summary>
    /// For a float32 result checked against a float64 <paramref name="truth"/> (TorchSharp in float64 on the same values):
    /// every element within the tolerance of the truth, or, where TorchSharp's own float32 result
    /// <paramref name="witness"/> is not within it either (an element at float32's rounding floor: a result that
    /// cancels), no further from the truth than twice TorchSharp's float32 error there. NaN and infinities must match the
    /// truth's.
    /// </summary>
    /// <remarks>
    /// The factor 2: at such elements both errors are rounding noise of similar size, and either may be the larger (on
    /// generated cases ours was 8.67e-6 and TorchSharp's 8.43e-6 at one element of a three-value channel, and ours
    /// 1.3e-5 and TorchSharp's 4.0e-5 at another), while a wrong term or a float accumulation shows as errors many
    /// times TorchSharp's.
    /// </remarks>
    public static void AssertCloseOrNoWorse(Tensor? actual, Tensor? witness, Tensor? truth, string what)
    {
        Assert.That(actual, Is.Not.Null, $"{what}: ours is missing");
        Assert.That(witness, Is.Not.Null, $"{what}: TorchSharp's float32 result is missing");
        Assert.That(truth, Is.Not.Null, $"{what}: the oracle's is missing");
        Assert.That(actual!.shape, Is.EqualTo(truth!.shape), $"{what}: shape");
        Assert.That(actual.dtype, Is.EqualTo(witness!.dtype), $"{what}: dtype");
        if (truth.numel() == 0)
        {
            return;
        }

        var (rtol, atol) = For(actual.dtype);
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64).flatten();
        var t = witness.detach().to(ScalarType.Float64).flatten();
        var e = truth.detach().to(ScalarType.Float64).to(actual.dtype).to(ScalarType.Float64).flatten();
        var nanMismatch = a.isnan().logical_xor(e.isnan()).sum().item<long>();
        Assert.That(nanMismatch, Is.Zero, $"{what}: NaN in one result but not the other at {nanMismatch} places");
        var infMismatch = a.isinf().logical_or(e.isinf()).logical_and(a.ne(e)).sum().item<long>();
        Assert.That(infMismatch, Is.Zero, $"{what}: infinities differ at {infMismatch} places");
        var finite = e.isfinite().logical_and(a.isfinite());
        var diff = (a - e).abs().where(finite, 0.0);
        var theirs = (t - e).abs().where(finite.logical_and(t.isfinite()), 0.0);
        var bound = e.abs().where(finite, 0.0).Times(rtol).Plus(atol).maximum(theirs.Times(2));
        var excess = (diff - bound).max().item<double>();
        if (excess > 0)
        {
            long worst = (diff - bound).argmax().item<long>();
            Assert.Fail(string.Create(
                CultureInfo.InvariantCulture,
                $"{what}: ours {a[worst].item<double>():R} vs oracle {e[worst].item<double>():R} at flat index {worst}; |diff| {diff[worst].item<double>():G3} " +
                $"exceeds both {atol:G3} + {rtol:G3}·|expected| and twice TorchSharp's float32 error there ({theirs[worst].item<double>():G3}, its value {t[worst].item<double>():R})"));
        }
    }
}
