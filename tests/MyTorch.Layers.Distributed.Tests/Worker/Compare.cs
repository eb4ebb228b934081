using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed.Tests.Worker;

/// <summary>
/// Compares a rank's result with the oracle's. Two implementations whose float64 arithmetic differs only in the order
/// of its sums give results that differ by the final rounding to the dtype, one unit in the last place, plus the
/// float64 sums' own difference, which stays far below 2^-40 of the tensor's largest value at these sizes (values per
/// channel × 2^-53 ≤ 2^-40 for up to 8192 values). That is the tolerance; an exact case must agree in every bit.
/// </summary>
internal static class Compare
{
    private const double SumsBudget = 1.0 / (1L << 40);

    /// <summary>
    /// The worst element's difference against one ulp of the expected value (or of <paramref name="magnitude"/>, for a
    /// sum whose parts were rounded on their own) plus the sums' budget.
    /// </summary>
    public static Measure Values(string name, string quantity, Tensor actual, Tensor expected, bool exact, double ulps = 1, Tensor? magnitude = null)
    {
        if (!actual.shape.AsSpan().SequenceEqual(expected.shape))
        {
            throw new InvalidOperationException($"{name} {quantity}: shape [{string.Join(", ", actual.shape)}] against [{string.Join(", ", expected.shape)}]");
        }

        if (expected.numel() == 0)
        {
            return new Measure(name, quantity, 0, 0, 0, exact, true);
        }

        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64).flatten();
        var e = expected.detach().to(ScalarType.Float64).flatten();
        bool identical = Identical(actual, expected);
        var difference = (a - e).abs();
        var scale = magnitude?.to(ScalarType.Float64).flatten() ?? e.abs();
        var tolerance = (Ulp(scale, expected.dtype) * ulps) + (SumsBudget * e.abs().max());
        var ratio = difference / tolerance.clamp_min(double.Epsilon);
        long worst = ratio.argmax().item<long>();
        return new Measure(name, quantity, ratio[worst].item<double>(), difference[worst].item<double>(), tolerance[worst].item<double>(), exact, identical);
    }

    /// <summary>The largest difference between the tensors against <paramref name="relative"/> times the expected tensor's largest magnitude.</summary>
    public static Measure Relative(string name, string quantity, Tensor actual, Tensor expected, double relative)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64);
        var e = expected.detach().to(ScalarType.Float64);
        double difference = (a - e).abs().max().item<double>();
        double tolerance = relative * Math.Max(e.abs().max().item<double>(), double.Epsilon);
        return new Measure(name, quantity, difference / tolerance, difference, tolerance, false, Identical(actual, expected));
    }

    /// <summary>Whether two tensors have the same dtype, shape and bits.</summary>
    public static bool Identical(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.dtype == b.dtype && a.shape.AsSpan().SequenceEqual(b.shape)
            && a.detach().contiguous().bytes.SequenceEqual(b.detach().contiguous().bytes);
    }

    /// <summary>One unit in the last place of each value in <paramref name="dtype"/> (its significand's bits after the point).</summary>
    private static Tensor Ulp(Tensor magnitude, ScalarType dtype)
    {
        int bits = dtype switch
        {
            ScalarType.Float64 => 52,
            ScalarType.Float32 => 23,
            ScalarType.BFloat16 => 7,
            ScalarType.Float16 => 10,
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a floating dtype"),
        };
        return exp2(floor(log2(magnitude)) - bits);
    }
}
