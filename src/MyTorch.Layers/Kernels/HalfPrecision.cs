using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// A 16-bit floating-point format, its values kept as their bits: widened to float32 exactly (every 16-bit value is a
/// float32 value), narrowed from float32 to the nearest value, ties to even, as libtorch's <c>c10::BFloat16</c> and
/// <c>c10::Half</c> round.
/// </summary>
/// <remarks>
/// The product of two 16-bit values is exact in float32 (8 + 8 and 11 + 11 significant bits fit in 24), so
/// <c>Narrow(Widen(a) · Widen(b))</c> is the product correctly rounded to the format, as libtorch computes it.
/// </remarks>
internal interface IHalfPrecision
{
    /// <summary>The value of <paramref name="bits"/>, exactly.</summary>
    static abstract float Widen(ushort bits);

    /// <summary>The format's value nearest to <paramref name="value"/>, ties to even; NaN stays NaN.</summary>
    static abstract ushort Narrow(float value);

    /// <summary>Whether <see cref="Widen(Vector256{ushort})"/> and <see cref="Narrow(Vector256{float}, Vector256{float})"/> run in vectors here.</summary>
    static abstract bool Vectorized { get; }

    /// <summary><see cref="Widen(ushort)"/> of 16 values: the first 8 and the last 8.</summary>
    static abstract (Vector256<float> Lower, Vector256<float> Upper) Widen(Vector256<ushort> bits);

    /// <summary><see cref="Narrow(float)"/> of 16 values, the lower 8 first.</summary>
    static abstract Vector256<ushort> Narrow(Vector256<float> lower, Vector256<float> upper);
}

/// <summary>bfloat16: float32's sign and exponent with 7 fraction bits, the upper half of a float32's bits.</summary>
internal readonly struct BFloat16Bits : IHalfPrecision
{
    /// <summary>The bits libtorch gives every NaN it rounds to bfloat16 one value at a time.</summary>
    private const ushort QuietNaN = 0x7FC0;

    public static bool Vectorized => Vector256.IsHardwareAccelerated;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Narrow(float value)
    {
        if (float.IsNaN(value))
        {
            return QuietNaN;
        }

        // Adding 0x7FFF, plus 1 when the kept part is odd, carries into the kept part exactly when the dropped half is
        // above a tie, or a tie with an odd kept part; a carry out of the fraction steps the exponent, up to infinity.
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector256<float> Lower, Vector256<float> Upper) Widen(Vector256<ushort> bits)
    {
        var (lower, upper) = Vector256.Widen(bits);
        return ((lower << 16).AsSingle(), (upper << 16).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow(Vector256<float> lower, Vector256<float> upper) =>
        Vector256.Narrow(NarrowToLow(lower), NarrowToLow(upper));

    /// <summary><see cref="Widen(ushort)"/> of 8 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector128<ushort> bits) => (Vector256.WidenLower(bits.ToVector256Unsafe()) << 16).AsSingle();

    /// <summary><see cref="Narrow(float)"/> of 8 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<ushort> Narrow(Vector256<float> values)
    {
        var low = NarrowToLow(values);
        return Vector128.Narrow(low.GetLower(), low.GetUpper());
    }

    /// <summary><see cref="Widen(Vector256{ushort})"/> of 32 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Lower, Vector512<float> Upper) Widen(Vector512<ushort> bits)
    {
        var (lower, upper) = Vector512.Widen(bits);
        return ((lower << 16).AsSingle(), (upper << 16).AsSingle());
    }

    /// <summary><see cref="Narrow(Vector256{float}, Vector256{float})"/> of 32 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ushort> Narrow(Vector512<float> lower, Vector512<float> upper) =>
        Vector512.Narrow(NarrowToLow(lower), NarrowToLow(upper));

    /// <summary><see cref="Widen(ushort)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen16(Vector256<ushort> bits) => (Vector512.WidenLower(bits.ToVector512Unsafe()) << 16).AsSingle();

    /// <summary><see cref="Narrow(float)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow16(Vector512<float> values) => Avx512F.ConvertToVector256UInt16(NarrowToLow(values));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> NarrowToLow(Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One)) >> 16;
        return Vector512.ConditionalSelect(Vector512.Equals(value, value).AsUInt32(), rounded, Vector512.Create((uint)QuietNaN));
    }

    /// <summary><see cref="Narrow(float)"/> lane by lane, the result in each lane's low 16 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> NarrowToLow(Vector256<float> value)
    {
        var bits = value.AsUInt32();
        var rounded = (bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One)) >> 16;
        return Vector256.ConditionalSelect(Vector256.Equals(value, value).AsUInt32(), rounded, Vector256.Create((uint)QuietNaN));
    }
}

/// <summary>IEEE 754 binary16 (<see cref="Half"/>): 5 exponent bits and 10 fraction bits.</summary>
internal readonly struct Float16Bits : IHalfPrecision
{
    // .NET has no vector conversions between binary16 and float32, so this format runs value by value.
    public static bool Vectorized => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Narrow(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    public static (Vector256<float> Lower, Vector256<float> Upper) Widen(Vector256<ushort> bits) => throw new NotSupportedException();

    public static Vector256<ushort> Narrow(Vector256<float> lower, Vector256<float> upper) => throw new NotSupportedException();
}
