using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace MyTorch.Layers.Kernels;

/// <summary>A bfloat16 value as a tensor stores it: the upper 16 bits of a float32 (see <see cref="BFloat16Bits"/>).</summary>
internal readonly struct BFloat16(ushort bits)
{
    public ushort Bits { get; } = bits;

    public override string ToString() => BFloat16Bits.Widen(Bits).ToString(System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>
/// The element types the batch-norm kernels read and write, float32, float64, <see cref="BFloat16"/> and
/// <see cref="Half"/>, converted to and from the float64 they compute in. The type tests fold away when the JIT
/// specialises a kernel for its element type.
/// </summary>
/// <remarks>
/// Widening is exact for every type. Narrowing rounds to nearest, ties to even: float32 once from the float64 value;
/// bfloat16 and float16 through float32, as the vector loops do it (float64 → float32 → 16 bits, both to nearest), which
/// can differ from one rounding only for a value within half a float32 ulp of a tie, and then by one ulp of the
/// 16-bit type (docs/numerics.md).
/// </remarks>
internal static class Element
{
    /// <summary>Whether <typeparamref name="T"/> is one of the 16-bit types.</summary>
    /// <remarks>
    /// Hot loops test <c>typeof(T)</c> themselves: the JIT folds those tests in any method, but may leave a call to this
    /// one in a method that has used up its inlining budget, and the branch behind it unfolded.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsHalfPrecision<T>()
        where T : unmanaged => typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToDouble<T>(T value)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return Unsafe.As<T, float>(ref value);
        }

        if (typeof(T) == typeof(double))
        {
            return Unsafe.As<T, double>(ref value);
        }

        if (typeof(T) == typeof(BFloat16))
        {
            return BFloat16Bits.Widen(Unsafe.As<T, ushort>(ref value));
        }

        if (typeof(T) == typeof(Half))
        {
            return Float16Bits.Widen(Unsafe.As<T, ushort>(ref value));
        }

        throw new NotSupportedException($"No kernels for elements of type {typeof(T).Name}.");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T FromDouble<T>(double value)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            float narrowed = (float)value;
            return Unsafe.As<float, T>(ref narrowed);
        }

        if (typeof(T) == typeof(double))
        {
            return Unsafe.As<double, T>(ref value);
        }

        if (typeof(T) == typeof(BFloat16))
        {
            ushort bits = BFloat16Bits.Narrow((float)value);
            return Unsafe.As<ushort, T>(ref bits);
        }

        if (typeof(T) == typeof(Half))
        {
            ushort bits = Float16Bits.Narrow((float)value);
            return Unsafe.As<ushort, T>(ref bits);
        }

        throw new NotSupportedException($"No kernels for elements of type {typeof(T).Name}.");
    }
}
