using System;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    /// <summary>Whether the vector conversions run in vectors here (the 512-bit ones also need <see cref="Vector512.IsHardwareAccelerated"/>).</summary>
    static abstract bool Vectorized { get; }

    /// <summary><see cref="Widen(ushort)"/> of 16 values: the first 8 and the last 8.</summary>
    static abstract (Vector256<float> Lower, Vector256<float> Upper) Widen(Vector256<ushort> bits);

    /// <summary><see cref="Narrow(float)"/> of 16 values, the lower 8 first.</summary>
    static abstract Vector256<ushort> Narrow(Vector256<float> lower, Vector256<float> upper);

    /// <summary><see cref="Widen(ushort)"/> of 32 values, for 512-bit steps: the first 16 and the last 16.</summary>
    static abstract (Vector512<float> Lower, Vector512<float> Upper) Widen(Vector512<ushort> bits);

    /// <summary><see cref="Narrow(float)"/> of 32 values, for 512-bit steps, the lower 16 first.</summary>
    static abstract Vector512<ushort> Narrow(Vector512<float> lower, Vector512<float> upper);

    /// <summary>
    /// <see cref="Widen(ushort)"/> of 32 values taken as 16 pairs, with no shuffle: the values at even places (each
    /// 32-bit lane's low half) and at odd places (its high half).
    /// </summary>
    static abstract (Vector512<float> Even, Vector512<float> Odd) WidenPairs(Vector512<uint> bits);

    /// <summary><see cref="Narrow(float)"/> of 16 pairs, back in their places: the inverse of <see cref="WidenPairs"/>.</summary>
    static abstract Vector512<uint> NarrowPairs(Vector512<float> even, Vector512<float> odd);

    /// <summary>
    /// Whether every product of a value of the format and any of <paramref name="factors"/> (their bits), computed in
    /// float32, is itself a value of the format, infinite or NaN, so that rounding it changes nothing; false where that
    /// does not hold or is not known.
    /// </summary>
    static virtual bool KeepValues(ReadOnlySpan<ushort> factors) => false;

    /// <summary>
    /// <see cref="NarrowPairs"/> of 16 pairs that are each a value of the format already, with no rounding to do; false
    /// if any is infinite or NaN, or if the format has no such shortcut, for <see cref="NarrowPairs"/> to take instead.
    /// </summary>
    static virtual bool TryPairsOfValues(Vector512<float> even, Vector512<float> odd, out Vector512<uint> bits)
    {
        bits = default;
        return false;
    }
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Lower, Vector512<float> Upper) Widen(Vector512<ushort> bits)
    {
        var (lower, upper) = Vector512.Widen(bits);
        return ((lower << 16).AsSingle(), (upper << 16).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ushort> Narrow(Vector512<float> lower, Vector512<float> upper) =>
        Vector512.Narrow(NarrowToLow(lower), NarrowToLow(upper));

    /// <summary><see cref="Widen(ushort)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen16(Vector256<ushort> bits) => (Vector512.WidenLower(bits.ToVector512Unsafe()) << 16).AsSingle();

    /// <summary><see cref="Narrow(float)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow16(Vector512<float> values) => Avx512F.ConvertToVector256UInt16(NarrowToLow(values));

    /// <summary>
    /// The bits <see cref="Narrow(float)"/> gives every float32 value strictly between <c>value − error</c> and
    /// <c>value + error</c> (as float32 computes them), if it gives them all the same finite bits; false if it may not,
    /// or if they are infinite or NaN.
    /// </summary>
    /// <remarks>
    /// Rounding magnitudes half up, the two ends have the same upper 16 bits (sign included) exactly when no rounding
    /// boundary lies between them, so every value in between rounds half up to those bits. A value strictly inside
    /// rounds to nearest even to them too: a tie inside would leave the smaller end, at least one float32 step below
    /// it, rounding down. An end that is NaN or infinite shows in the bits, an exponent of all ones, if a NaN's lower
    /// 16 bits are clear, as they are in every NaN that arithmetic on bfloat16 values and finite constants makes.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryNarrowWithin(Vector512<float> value, Vector512<float> error, out Vector256<ushort> bits)
    {
        var low = RoundedHalfUp(value - error);
        var high = RoundedHalfUp(value + error);
        bits = Avx512F.ConvertToVector256UInt16(high >> 16);
        return ((low ^ high) & Vector512.Create(0xFFFF0000u)) == Vector512<uint>.Zero && !Special(high);
    }

    /// <summary>
    /// <see cref="TryNarrowWithin(Vector512{float}, Vector512{float}, out Vector256{ushort})"/> of 16 pairs, as
    /// <see cref="WidenPairs(Vector512{uint})"/> gives them: the bits of both, in their places, if every pair rounds alike.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryNarrowPairsWithin(Vector512<float> even, Vector512<float> evenError, Vector512<float> odd, Vector512<float> oddError, out Vector512<uint> bits)
    {
        var evenLow = RoundedHalfUp(even - evenError);
        var evenHigh = RoundedHalfUp(even + evenError);
        var oddLow = RoundedHalfUp(odd - oddError);
        var oddHigh = RoundedHalfUp(odd + oddError);
        var upper = Vector512.Create(0xFFFF0000u);
        bits = (evenHigh >> 16) | (oddHigh & upper);
        return (((evenLow ^ evenHigh) | (oddLow ^ oddHigh)) & upper) == Vector512<uint>.Zero
            && !Vector512.EqualsAny(bits.AsUInt16() & Vector512.Create((ushort)0x7F80), Vector512.Create((ushort)0x7F80));
    }

    /// <summary>The float32 bits plus half of bfloat16's last place: their upper 16 bits are the magnitude rounded half up.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> RoundedHalfUp(Vector512<float> value) => value.AsUInt32() + Vector512.Create(0x8000u);

    /// <summary>Whether any lane's upper 16 bits have an exponent of all ones (infinity or NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Special(Vector512<uint> rounded) =>
        Vector512.EqualsAny(rounded & Vector512.Create(0x7F800000u), Vector512.Create(0x7F800000u));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Even, Vector512<float> Odd) WidenPairs(Vector512<uint> bits) =>
        ((bits << 16).AsSingle(), (bits & Vector512.Create(0xFFFF0000u)).AsSingle());

    /// <summary><see cref="WidenPairs(Vector512{uint})"/> of 8 pairs, for 256-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector256<float> Even, Vector256<float> Odd) WidenPairs(Vector256<uint> bits) =>
        ((bits << 16).AsSingle(), (bits & Vector256.Create(0xFFFF0000u)).AsSingle());

    /// <summary>
    /// Whether every factor is 0 or a power of two from 1 up: multiplying by one keeps a value's 8 significant bits, and
    /// cannot fall into the subnormals, where float32 keeps more bits than bfloat16; past float32's range the product is
    /// infinite in both.
    /// </summary>
    public static bool KeepValues(ReadOnlySpan<ushort> factors)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // Whole vectors of factors, 16 at a time: the masks of exceptions, or-ed, must stay empty.
            var exceptions = Vector256<ushort>.Zero;
            ref ushort start = ref MemoryMarshal.GetReference(factors);
            for (; i <= factors.Length - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var f = Vector256.LoadUnsafe(ref start, (nuint)i);
                var power = Vector256.Equals(f & Vector256.Create((ushort)0x807F), Vector256<ushort>.Zero)
                    & Vector256.GreaterThanOrEqual(f, Vector256.Create((ushort)0x3F80)) & Vector256.LessThan(f, Vector256.Create((ushort)0x7F80));
                exceptions |= ~(power | Vector256.Equals(f, Vector256<ushort>.Zero));
            }

            if (exceptions != Vector256<ushort>.Zero)
            {
                return false;
            }
        }

        for (; i < factors.Length; i++)
        {
            ushort f = factors[i];
            if (f != 0 && ((f & 0x807F) != 0 || f < 0x3F80 || f >= 0x7F80))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// The upper halves of the pairs: a bfloat16 value's float32 bits end in 16 zeros. Infinity and NaN, whose exponent
    /// bits are all ones, go to <see cref="NarrowPairs"/>, which gives NaN its one quiet bit pattern.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryPairsOfValues(Vector512<float> even, Vector512<float> odd, out Vector512<uint> bits)
    {
        bits = (even.AsUInt32() >> 16) | (odd.AsUInt32() & Vector512.Create(0xFFFF0000u));
        return !Vector512.EqualsAny(bits.AsUInt16() & Vector512.Create((ushort)0x7F80), Vector512.Create((ushort)0x7F80));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> NarrowPairs(Vector512<float> even, Vector512<float> odd)
    {
        // Each value rounded where it lies: the odd ones keep their upper halves, the even ones move to the lower.
        var oddBits = odd.AsUInt32();
        var oddRounded = (oddBits + Vector512.Create(0x7FFFu) + ((oddBits >> 16) & Vector512<uint>.One)) & Vector512.Create(0xFFFF0000u);
        oddRounded = Vector512.ConditionalSelect(Vector512.Equals(odd, odd).AsUInt32(), oddRounded, Vector512.Create((uint)QuietNaN << 16));
        return NarrowToLow(even) | oddRounded;
    }

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
/// <remarks>
/// .NET 10 exposes no F16C or AVX-512 FP16 instructions, so the conversions are integer and float32 operations, the
/// same in scalar and vector code: widening exactly, by one float32 multiplication; narrowing to nearest,
/// ties to even, subnormal results through a float32 addition that rounds them, overflow to infinity, NaN to the quiet
/// NaN 0x7E00 with the input's sign, as libtorch's <c>c10::Half</c> narrows.
/// </remarks>
internal readonly struct Float16Bits : IHalfPrecision
{
    /// <summary>float32 bits of 2^112, the factor between binary16's exponent bias and float32's (15 and 127).</summary>
    private const uint WidenScale = (127u + 112) << 23;

    /// <summary>float32 bits of 2^-14, binary16's smallest normal value (113 in float32's exponent field).</summary>
    private const uint SmallestNormal = 113u << 23;

    /// <summary>float32 bits of 2^16: at or above it (and for infinity and NaN), a value narrows to infinity or NaN.</summary>
    private const uint Overflow = (127u + 16) << 23;

    /// <summary>
    /// float32 bits of 0.5: adding it to a value below 2^-14 rounds the value to a multiple of 2^-24, binary16's
    /// subnormal step, whose count lands in the low bits of the sum.
    /// </summary>
    private const uint SubnormalMagic = ((127u - 15) + (23 - 10) + 1) << 23;

    /// <summary>The exponent bias difference, float32's 127 less binary16's 15, in float32's exponent field.</summary>
    private const uint Rebias = (127u - 15) << 23;

    private const uint QuietNaN = 0x7E00;

    private const uint Infinity = 0x7C00;

    public static bool Vectorized => Vector256.IsHardwareAccelerated;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits)
    {
        // The exponent and fraction bits moved into float32's places make a float32 2^112 times too small, normal or
        // subnormal alike, so one exact multiplication rebiases both; from 2^16 up they were infinity or NaN.
        float value = BitConverter.UInt32BitsToSingle((bits & 0x7FFFu) << 13) * BitConverter.UInt32BitsToSingle(WidenScale);
        uint result = BitConverter.SingleToUInt32Bits(value);
        if (value >= 65536f)
        {
            result |= 0x7F800000u;
        }

        return BitConverter.UInt32BitsToSingle(result | ((bits & 0x8000u) << 16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Narrow(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint magnitude = bits & 0x7FFFFFFFu;
        uint result;
        if (magnitude >= Overflow)
        {
            result = magnitude > 0x7F800000u ? QuietNaN : Infinity;
        }
        else if (magnitude < SmallestNormal)
        {
            result = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(magnitude) + BitConverter.UInt32BitsToSingle(SubnormalMagic)) - SubnormalMagic;
        }
        else
        {
            // Rebias, then add 0xFFF plus the kept part's lowest bit: a carry into the kept part exactly when the dropped
            // 13 bits are above a tie, or a tie with an odd kept part.
            result = (magnitude - Rebias + 0xFFFu + ((magnitude >> 13) & 1u)) >> 13;
        }

        return (ushort)(result | ((bits >> 16) & 0x8000u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector256<float> Lower, Vector256<float> Upper) Widen(Vector256<ushort> bits)
    {
        var (lower, upper) = Vector256.Widen(bits);
        return (WidenLanes(lower), WidenLanes(upper));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow(Vector256<float> lower, Vector256<float> upper) =>
        Vector256.Narrow(NarrowLanes(lower), NarrowLanes(upper));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Lower, Vector512<float> Upper) Widen(Vector512<ushort> bits)
    {
        var (lower, upper) = Vector512.Widen(bits);
        return (WidenLanes(lower), WidenLanes(upper));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<ushort> Narrow(Vector512<float> lower, Vector512<float> upper) =>
        Vector512.Narrow(NarrowLanes(lower), NarrowLanes(upper));

    /// <summary><see cref="Widen(ushort)"/> of 8 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Widen(Vector128<ushort> bits) => WidenLanes(Vector256.WidenLower(bits.ToVector256Unsafe()));

    /// <summary><see cref="Narrow(float)"/> of 8 values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<ushort> Narrow(Vector256<float> values)
    {
        var low = NarrowLanes(values);
        return Vector128.Narrow(low.GetLower(), low.GetUpper());
    }

    /// <summary><see cref="Widen(ushort)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen16(Vector256<ushort> bits) => WidenLanes(Vector512.WidenLower(bits.ToVector512Unsafe()));

    /// <summary><see cref="Narrow(float)"/> of 16 values, for 512-bit steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<ushort> Narrow16(Vector512<float> values) => Avx512F.ConvertToVector256UInt16(NarrowLanes(values));

    /// <summary><see cref="Widen(ushort)"/> of the binary16 value in each lane's low 16 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenLanes(Vector256<uint> bits)
    {
        var value = ((bits & Vector256.Create(0x7FFFu)) << 13).AsSingle() * Vector256.Create(WidenScale).AsSingle();
        var special = Vector256.GreaterThanOrEqual(value, Vector256.Create(65536f)).AsUInt32() & Vector256.Create(0x7F800000u);
        return (value.AsUInt32() | special | ((bits & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary><see cref="Narrow(float)"/> lane by lane, the result in each lane's low 16 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> NarrowLanes(Vector256<float> value)
    {
        var bits = value.AsUInt32();
        var magnitude = bits & Vector256.Create(0x7FFFFFFFu);
        // The magnitude is below 2^31, so signed comparisons serve (unsigned ones cost more without AVX-512).
        var signed = magnitude.AsInt32();
        var large = Vector256.ConditionalSelect(Vector256.GreaterThan(signed, Vector256.Create(0x7F800000)).AsUInt32(), Vector256.Create(QuietNaN), Vector256.Create(Infinity));
        var small = (magnitude.AsSingle() + Vector256.Create(SubnormalMagic).AsSingle()).AsUInt32() - Vector256.Create(SubnormalMagic);
        var normal = (magnitude - Vector256.Create(Rebias) + Vector256.Create(0xFFFu) + ((magnitude >> 13) & Vector256<uint>.One)) >> 13;
        var result = Vector256.ConditionalSelect(Vector256.LessThan(signed, Vector256.Create((int)SmallestNormal)).AsUInt32(), small, normal);
        result = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(signed, Vector256.Create((int)Overflow)).AsUInt32(), large, result);
        return result | ((bits >> 16) & Vector256.Create(0x8000u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static (Vector512<float> Even, Vector512<float> Odd) WidenPairs(Vector512<uint> bits) =>
        (WidenLanes(bits & Vector512.Create(0xFFFFu)), WidenLanes(bits >> 16));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> NarrowPairs(Vector512<float> even, Vector512<float> odd) => NarrowLanes(even) | (NarrowLanes(odd) << 16);

    /// <summary><see cref="WidenLanes(Vector256{uint})"/> of 16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> WidenLanes(Vector512<uint> bits)
    {
        var value = ((bits & Vector512.Create(0x7FFFu)) << 13).AsSingle() * Vector512.Create(WidenScale).AsSingle();
        var special = Vector512.GreaterThanOrEqual(value, Vector512.Create(65536f)).AsUInt32() & Vector512.Create(0x7F800000u);
        return (value.AsUInt32() | special | ((bits & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary><see cref="NarrowLanes(Vector256{float})"/> of 16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> NarrowLanes(Vector512<float> value)
    {
        var bits = value.AsUInt32();
        var magnitude = bits & Vector512.Create(0x7FFFFFFFu);
        // The magnitude is below 2^31, so signed comparisons serve (unsigned ones cost more without AVX-512).
        var signed = magnitude.AsInt32();
        var large = Vector512.ConditionalSelect(Vector512.GreaterThan(signed, Vector512.Create(0x7F800000)).AsUInt32(), Vector512.Create(QuietNaN), Vector512.Create(Infinity));
        var small = (magnitude.AsSingle() + Vector512.Create(SubnormalMagic).AsSingle()).AsUInt32() - Vector512.Create(SubnormalMagic);
        var normal = (magnitude - Vector512.Create(Rebias) + Vector512.Create(0xFFFu) + ((magnitude >> 13) & Vector512<uint>.One)) >> 13;
        var result = Vector512.ConditionalSelect(Vector512.LessThan(signed, Vector512.Create((int)SmallestNormal)).AsUInt32(), small, normal);
        result = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(signed, Vector512.Create((int)Overflow)).AsUInt32(), large, result);
        return result | ((bits >> 16) & Vector512.Create(0x8000u));
    }
}
