using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>
/// Tensor arithmetic with a number, and tensor addition, with every <see cref="Scalar"/> held alive through the native
/// call. TorchSharp's operators make the Scalar of a number as a temporary, and <c>add</c> without an alpha passes a
/// temporary alpha of 1; nothing references either once its handle has been read, so a garbage collection during the
/// native call may finalize it first, and libtorch then reads freed memory ("Expected false to be true, but got false"
/// from <c>toDouble</c> in <c>add_Scalar</c>/<c>add_Tensor</c>). Each helper makes the very call the operator makes,
/// with the Scalars in <c>using</c> variables, so the values are bit for bit the operator's.
/// </summary>
internal static class Arithmetic
{
    /// <summary><c>t + value</c>: <c>t.add(value, alpha: 1)</c>.</summary>
    public static Tensor Plus(this Tensor t, double value)
    {
        using Scalar s = value, one = 1;
        return t.add(s, one);
    }

    /// <summary><c>t + value</c> with an integral <paramref name="value"/>, which stays an integral Scalar.</summary>
    public static Tensor Plus(this Tensor t, long value)
    {
        using Scalar s = value, one = 1;
        return t.add(s, one);
    }

    /// <summary><c>t + other</c>: <c>t.add(other, alpha: 1)</c>.</summary>
    public static Tensor Plus(this Tensor t, Tensor other)
    {
        using Scalar one = 1;
        return t.add(other, one);
    }

    /// <summary><c>t - value</c>.</summary>
    public static Tensor Minus(this Tensor t, double value)
    {
        using Scalar s = value;
        return t.sub(s);
    }

    /// <summary><c>t - value</c> with an integral <paramref name="value"/>, which stays an integral Scalar.</summary>
    public static Tensor Minus(this Tensor t, long value)
    {
        using Scalar s = value;
        return t.sub(s);
    }

    /// <summary><c>t * value</c>.</summary>
    public static Tensor Times(this Tensor t, double value)
    {
        using Scalar s = value;
        return t.mul(s);
    }

    /// <summary><c>t * value</c> with an integral <paramref name="value"/>, which stays an integral Scalar.</summary>
    public static Tensor Times(this Tensor t, long value)
    {
        using Scalar s = value;
        return t.mul(s);
    }
}
