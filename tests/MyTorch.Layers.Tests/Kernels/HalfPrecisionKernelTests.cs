using System;
using System.Linq;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MyTorch.Layers.Kernels;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The 16-bit formats' conversions against a reference that rounds by comparing distances in double, and the 16-bit
/// dropout kernel against a value-by-value reference, every length across the vector steps and tails.
/// </summary>
[TestFixture]
public class HalfPrecisionKernelTests
{
    /// <summary>Float32 values where rounding is easy to get wrong: ties both ways, the overflow edge, subnormals, ±0, ±∞.</summary>
    private static readonly uint[] EdgeBits =
    [
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0x00008000, 0x00018000,
        0x00000001, 0x807FFFFF, 0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x3F800000, 0xBF808000,
    ];

    private static uint[] Samples()
    {
        var random = new Random(17);
        return EdgeBits.Concat(Enumerable.Range(0, 200_000).Select(_ => (uint)random.NextInt64(0, 1L << 32))).ToArray();
    }

    [Test]
    public void BFloat16Narrow_IsTheNearestValue_TiesToEven()
    {
        foreach (uint bits in Samples())
        {
            float value = BitConverter.UInt32BitsToSingle(bits);
            ushort actual = BFloat16Bits.Narrow(value);
            if (float.IsNaN(value))
            {
                Assert.That(float.IsNaN(BFloat16Bits.Widen(actual)), Is.True, $"0x{bits:X8}: NaN stays NaN");
                continue;
            }

            Assert.That(actual, Is.EqualTo(NearestBFloat16(value)), $"0x{bits:X8} ({value:R})");
        }
    }

    [Test]
    public void BFloat16Widen_IsExact() =>
        Assert.That(Enumerable.Range(0, 1 << 16).All(b => BitConverter.SingleToUInt32Bits(BFloat16Bits.Widen((ushort)b)) == (uint)b << 16), Is.True);

    [Test]
    public void BFloat16Vectors_GiveTheScalarBits()
    {
        Assume.That(BFloat16Bits.Vectorized, Is.True, "no vector path here");
        uint[] samples = Samples();
        for (int i = 0; i + 16 <= samples.Length; i += 16)
        {
            var values = samples.AsSpan(i, 16).ToArray().Select(BitConverter.UInt32BitsToSingle).ToArray();
            var narrowed = BFloat16Bits.Narrow(Vector256.Create(values.AsSpan(0, 8)), Vector256.Create(values.AsSpan(8, 8)));
            for (int k = 0; k < 16; k++)
            {
                ushort scalar = BFloat16Bits.Narrow(values[k]);
                Assert.That(narrowed[k], Is.EqualTo(scalar), $"0x{samples[i + k]:X8}");
            }

            var (lower, upper) = BFloat16Bits.Widen(narrowed);
            for (int k = 0; k < 16; k++)
            {
                float widened = k < 8 ? lower[k] : upper[k - 8];
                Assert.That(BitConverter.SingleToUInt32Bits(widened), Is.EqualTo(BitConverter.SingleToUInt32Bits(BFloat16Bits.Widen(narrowed[k]))));
            }
        }
    }

    [Test]
    public void BFloat16WideVectors_GiveTheScalarBits()
    {
        Assume.That(Vector512.IsHardwareAccelerated, Is.True, "no 512-bit path here");
        uint[] samples = Samples();
        for (int i = 0; i + 32 <= samples.Length; i += 32)
        {
            var values = samples.AsSpan(i, 32).ToArray().Select(BitConverter.UInt32BitsToSingle).ToArray();
            var narrowed = BFloat16Bits.Narrow(Vector512.Create(values.AsSpan(0, 16)), Vector512.Create(values.AsSpan(16, 16)));
            var (lower, upper) = BFloat16Bits.Widen(narrowed);
            for (int k = 0; k < 32; k++)
            {
                Assert.That(narrowed[k], Is.EqualTo(BFloat16Bits.Narrow(values[k])), $"0x{samples[i + k]:X8}");
                float widened = k < 16 ? lower[k] : upper[k - 16];
                Assert.That(BitConverter.SingleToUInt32Bits(widened), Is.EqualTo((uint)narrowed[k] << 16));
            }
        }
    }

    /// <summary>
    /// Float32 values around binary16's range: random magnitudes from 2^-27 to 2^17, both signs, with the edges where
    /// rounding changes regime (ties at the subnormal step and the largest value, the smallest normal, overflow at 65520).
    /// </summary>
    private static uint[] Float16Samples()
    {
        var random = new Random(23);
        float[] edges =
        [
            MathF.ScaleB(1, -24), MathF.ScaleB(1, -25), MathF.ScaleB(3, -25), MathF.ScaleB(1, -25) * 1.0000001f, MathF.ScaleB(1, -14),
            MathF.ScaleB(1023, -24), MathF.ScaleB(2047, -25), 65504f, 65519.996f, 65520f, 65536f, 1f + MathF.ScaleB(1, -11),
            1f + MathF.ScaleB(3, -11), -0f, 0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, -float.NaN,
            BitConverter.UInt32BitsToSingle(0x7F800001), BitConverter.UInt32BitsToSingle(0xFFC00001),
        ];
        var values = edges.Concat(edges.Select(v => -v)).Concat(Enumerable.Range(0, 200_000).Select(_ =>
            (random.Next(2) == 0 ? 1 : -1) * MathF.ScaleB((float)(1 + random.NextDouble()), random.Next(-27, 18))));
        return values.Select(BitConverter.SingleToUInt32Bits).Concat(Samples().Take(20_000)).ToArray();
    }

    [Test]
    public void Float16Narrow_IsDotNetsHalf_AndNaNStaysNaN()
    {
        foreach (uint bits in Float16Samples())
        {
            float value = BitConverter.UInt32BitsToSingle(bits);
            ushort actual = Float16Bits.Narrow(value);
            if (float.IsNaN(value))
            {
                Assert.That(actual & 0x7FFF, Is.EqualTo(0x7E00), $"0x{bits:X8}: the quiet NaN libtorch gives");
                Assert.That(actual >> 15, Is.EqualTo(bits >> 31), $"0x{bits:X8}: with the input's sign");
                continue;
            }

            Assert.That(actual, Is.EqualTo(BitConverter.HalfToUInt16Bits((Half)value)), $"0x{bits:X8} ({value:R})");
        }
    }

    [Test]
    public void Float16Widen_IsDotNetsHalf_ForEveryValue()
    {
        for (int b = 0; b < 1 << 16; b++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)b);
            float actual = Float16Bits.Widen((ushort)b);
            if (float.IsNaN(expected))
            {
                Assert.That(float.IsNaN(actual) && BitConverter.SingleToUInt32Bits(actual) >> 31 == (uint)b >> 15, Is.True, $"0x{b:X4}");
                continue;
            }

            Assert.That(BitConverter.SingleToUInt32Bits(actual), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected)), $"0x{b:X4}");
        }
    }

    [Test]
    public void Float16Vectors_GiveTheScalarBits()
    {
        Assume.That(Float16Bits.Vectorized, Is.True, "no vector path here");
        uint[] samples = Float16Samples();
        for (int i = 0; i + 16 <= samples.Length; i += 16)
        {
            var values = samples.AsSpan(i, 16).ToArray().Select(BitConverter.UInt32BitsToSingle).ToArray();
            var narrowed = Float16Bits.Narrow(Vector256.Create(values.AsSpan(0, 8)), Vector256.Create(values.AsSpan(8, 8)));
            var narrowedHalf = Float16Bits.Narrow(Vector256.Create(values.AsSpan(0, 8)));
            var (lower, upper) = Float16Bits.Widen(narrowed);
            var widenedHalf = Float16Bits.Widen(narrowedHalf);
            for (int k = 0; k < 16; k++)
            {
                Assert.That(narrowed[k], Is.EqualTo(Float16Bits.Narrow(values[k])), $"0x{samples[i + k]:X8}");
                float widened = k < 8 ? lower[k] : upper[k - 8];
                Assert.That(BitConverter.SingleToUInt32Bits(widened), Is.EqualTo(BitConverter.SingleToUInt32Bits(Float16Bits.Widen(narrowed[k]))), $"0x{narrowed[k]:X4}");
            }

            for (int k = 0; k < 8; k++)
            {
                Assert.That(narrowedHalf[k], Is.EqualTo(narrowed[k]), $"8 values, 0x{samples[i + k]:X8}");
                Assert.That(BitConverter.SingleToUInt32Bits(widenedHalf[k]), Is.EqualTo(BitConverter.SingleToUInt32Bits(lower[k])), "8 values widened");
            }
        }

        // Every binary16 value widened in vectors.
        for (int b = 0; b < 1 << 16; b += 8)
        {
            var bits = Vector128.Create((ushort)b, (ushort)(b + 1), (ushort)(b + 2), (ushort)(b + 3), (ushort)(b + 4), (ushort)(b + 5), (ushort)(b + 6), (ushort)(b + 7));
            var widened = Float16Bits.Widen(bits);
            for (int k = 0; k < 8; k++)
            {
                Assert.That(BitConverter.SingleToUInt32Bits(widened[k]), Is.EqualTo(BitConverter.SingleToUInt32Bits(Float16Bits.Widen((ushort)(b + k)))), $"0x{b + k:X4}");
            }
        }
    }

    [Test]
    public void Float16WideVectors_GiveTheScalarBits()
    {
        Assume.That(Avx512F.IsSupported, Is.True, "no 512-bit path here");
        uint[] samples = Float16Samples();
        for (int i = 0; i + 16 <= samples.Length; i += 16)
        {
            var values = samples.AsSpan(i, 16).ToArray().Select(BitConverter.UInt32BitsToSingle).ToArray();
            var narrowed = Float16Bits.Narrow16(Vector512.Create(values.AsSpan()));
            var widened = Float16Bits.Widen16(narrowed);
            for (int k = 0; k < 16; k++)
            {
                Assert.That(narrowed[k], Is.EqualTo(Float16Bits.Narrow(values[k])), $"0x{samples[i + k]:X8}");
                Assert.That(BitConverter.SingleToUInt32Bits(widened[k]), Is.EqualTo(BitConverter.SingleToUInt32Bits(Float16Bits.Widen(narrowed[k]))), $"0x{narrowed[k]:X4}");
            }
        }
    }

    [Test]
    public void Float16Narrow_IsTheNearestValue_TiesToEven()
    {
        // binary16 is exact in double; its nearest value to a float32 is found by comparing with its neighbours.
        foreach (uint bits in Samples().Take(50_000))
        {
            float value = BitConverter.UInt32BitsToSingle(bits);
            if (float.IsNaN(value))
            {
                continue;
            }

            ushort actual = Float16Bits.Narrow(value);
            double chosen = Float16Bits.Widen(actual);
            ushort magnitude = (ushort)(actual & 0x7FFF);
            if (magnitude < 0x7C00)
            {
                foreach (int neighbour in new[] { magnitude - 1, magnitude + 1 })
                {
                    if (neighbour is < 0 or >= 0x7C00)
                    {
                        continue;
                    }

                    double other = Math.CopySign(Float16Bits.Widen((ushort)neighbour), value);
                    double ours = Math.Abs(chosen - value), theirs = Math.Abs(other - value);
                    Assert.That(ours < theirs || (ours == theirs && (magnitude & 1) == 0), Is.True, $"0x{bits:X8} ({value:R}) → 0x{actual:X4}");
                }
            }
            else
            {
                Assert.That(Math.Abs(value), Is.GreaterThanOrEqualTo(65520f), $"0x{bits:X8} ({value:R}) overflows only from 65520 on");
            }
        }
    }

    [TestCase("bfloat16")]
    [TestCase("float16")]
    public void PairVectors_GiveTheScalarBits(string format)
    {
        Assume.That(Vector512.IsHardwareAccelerated, Is.True, "no 512-bit path here");
        if (format == "bfloat16")
        {
            PairsGiveTheScalarBits<BFloat16Bits>(Samples());
        }
        else
        {
            PairsGiveTheScalarBits<Float16Bits>(Float16Samples());
        }
    }

    private static void PairsGiveTheScalarBits<TFormat>(uint[] samples)
        where TFormat : struct, IHalfPrecision
    {
        for (int i = 0; i + 32 <= samples.Length; i += 32)
        {
            float[] values = samples.AsSpan(i, 32).ToArray().Select(BitConverter.UInt32BitsToSingle).ToArray();
            var even = Vector512.Create(Enumerable.Range(0, 16).Select(k => values[2 * k]).ToArray());
            var odd = Vector512.Create(Enumerable.Range(0, 16).Select(k => values[(2 * k) + 1]).ToArray());
            var narrowed = TFormat.NarrowPairs(even, odd).AsUInt16();
            var (evenWidened, oddWidened) = TFormat.WidenPairs(narrowed.AsUInt32());
            for (int k = 0; k < 32; k++)
            {
                Assert.That(narrowed[k], Is.EqualTo(TFormat.Narrow(values[k])), $"0x{samples[i + k]:X8}");
                float widened = k % 2 == 0 ? evenWidened[k / 2] : oddWidened[k / 2];
                Assert.That(BitConverter.SingleToUInt32Bits(widened), Is.EqualTo(BitConverter.SingleToUInt32Bits(TFormat.Widen(narrowed[k]))), $"0x{narrowed[k]:X4}");
            }
        }
    }

    [TestCase("bfloat16", true)]
    [TestCase("bfloat16", false)]
    [TestCase("float16", true)]
    [TestCase("float16", false)]
    public void ApplyHalfPrecisionMask_IsTheRoundedProduct_EveryLength(string format, bool channelsLast)
    {
        // The product of two 16-bit values is exact in float32; rounded by the bfloat16 reference above, or by .NET's Half.
        if (format == "bfloat16")
        {
            ApplyMaskEveryLength<BFloat16Bits>(channelsLast, exact => NearestBFloat16((float)exact), random => random.Next(2) / 0.7f);
        }
        else
        {
            ApplyMaskEveryLength<Float16Bits>(channelsLast, exact => BitConverter.HalfToUInt16Bits((Half)(float)exact), random => random.Next(2) / 0.7f);
        }
    }

    /// <summary>
    /// Dropout's default p = 0.5 makes bfloat16 factors of 0 and 2, whose products the 512-bit steps take without
    /// rounding (<see cref="IHalfPrecision.KeepValues"/>): still the rounded products, with NaN, infinity, the largest
    /// value (whose double overflows) and subnormals among the values; and where one plane's factor is not a power of
    /// two, the products beside it are rounded as they must be.
    /// </summary>
    [TestCase(true, 2f)]
    [TestCase(false, 2f)]
    [TestCase(false, 4f)]
    [TestCase(true, 0f)]
    [TestCase(false, 0f)]
    public void ApplyHalfPrecisionMask_WithPowerOfTwoFactors_IsTheRoundedProduct(bool channelsLast, float kept)
    {
        // Masks of 0 and kept (all zeros for kept = 0); and of 0, kept and 1 / 0.7, which no chunk may take unrounded
        // (for kept = 0: of 0 and 2 only).
        ushort[] specials = [0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x7F7F, 0xFF7F, 0x0001, 0x807F, 0x8000, 0x0000];
        float[] mixed = kept == 0f ? [0f, 2f] : [0f, kept, 1 / 0.7f];
        ApplyMaskEveryLength<BFloat16Bits>(channelsLast, exact => NearestBFloat16((float)exact), random => random.Next(2) * kept, specials);
        ApplyMaskEveryLength<BFloat16Bits>(channelsLast, exact => NearestBFloat16((float)exact), random => mixed[random.Next(mixed.Length)], specials);
    }

    /// <summary>
    /// Only 0 and powers of two from 1 up keep bfloat16's values: not 0.5 (a product may fall into the subnormals),
    /// −0, −2, infinity, NaN or 1 / 0.7; one exception anywhere in a run, in its vectors or its tail, is enough.
    /// float16 claims none.
    /// </summary>
    [Test]
    public void KeepValues_IsTrueOnlyForZeroAndPowersOfTwoFromOne()
    {
        ushort[] keep = [0x0000, 0x3F80, 0x4000, 0x4080, 0x7F00];
        ushort[] others = [0x3F00, 0x3F7F, 0x3FB7, 0x8000, 0xC000, 0x7F80, 0x7FC0, 0x0001];
        foreach (int length in new[] { 1, 15, 16, 17, 40 })
        {
            ushort[] factors = Enumerable.Range(0, length).Select(i => keep[i % keep.Length]).ToArray();
            Assert.That(BFloat16Bits.KeepValues(factors), Is.True, $"length {length}");
            Assert.That(KeepValues<Float16Bits>(factors), Is.False, $"float16, length {length}");
            foreach (ushort other in others)
            {
                foreach (int place in new[] { 0, length - 1, length / 2 }.Distinct())
                {
                    ushort[] one = (ushort[])factors.Clone();
                    one[place] = other;
                    Assert.That(BFloat16Bits.KeepValues(one), Is.False, $"0x{other:X4} at {place} of {length}");
                }
            }
        }
    }

    private static bool KeepValues<TFormat>(ushort[] factors)
        where TFormat : struct, IHalfPrecision => TFormat.KeepValues(factors);

    private static void ApplyMaskEveryLength<TFormat>(bool channelsLast, Func<double, ushort> nearest, Func<Random, float> factor, ushort[]? specials = null)
        where TFormat : struct, IHalfPrecision
    {
        // Up to 70: planes shorter than a 256-bit step, between one and two 512-bit steps, and past two. Fifteen NCHW
        // planes, so that planes taken two at a time (4×4) meet unequal factors.
        var random = new Random(3);
        for (int inner = 1; inner <= 70; inner++)
        {
            foreach (int threads in new[] { 1, 2 })
            {
                var layout = channelsLast ? new PlaneLayout(3, inner, 2, channelsLast: true) : new PlaneLayout(5, 3, inner, channelsLast: false);
                ushort[] x = Enumerable.Range(0, layout.Length).Select(_ => TFormat.Narrow((float)(random.NextDouble() * 8 - 4))).ToArray();
                foreach (ushort bits in specials ?? [])
                {
                    x[random.Next(x.Length)] = bits;
                }

                ushort[] mask = Enumerable.Range(0, layout.Batch * layout.Channels).Select(_ => TFormat.Narrow(factor(random))).ToArray();
                ushort[] y = new ushort[x.Length];
                ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(x, y, layout, mask, threads);
                for (int i = 0; i < x.Length; i++)
                {
                    int n = i / (layout.Channels * layout.Spatial);
                    int c = channelsLast ? i % layout.Channels : i / layout.Spatial % layout.Channels;
                    double exact = (double)TFormat.Widen(x[i]) * TFormat.Widen(mask[(n * layout.Channels) + c]);
                    // libtorch gives every NaN it rounds one quiet bit pattern.
                    ushort expected = double.IsNaN(exact) ? TFormat.Narrow(float.NaN) : nearest(exact);
                    Assert.That(y[i], Is.EqualTo(expected), $"inner {inner}, threads {threads}, index {i}, x 0x{x[i]:X4}");
                }
            }
        }
    }

    /// <summary>The bfloat16 nearest to <paramref name="value"/> (not NaN), ties to the even one, by distances in double.</summary>
    private static ushort NearestBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        ushort toward = (ushort)(bits >> 16);
        if ((toward & 0x7FFF) == 0x7F80)
        {
            return toward;
        }

        // The next value away from zero; past the largest finite one it is ∞, at 2¹²⁸ in this comparison.
        ushort away = (ushort)(toward + 1);
        double low = Math.Abs((double)BFloat16Bits.Widen(toward));
        double high = (away & 0x7FFF) == 0x7F80 ? Math.Pow(2, 128) : Math.Abs((double)BFloat16Bits.Widen(away));
        double magnitude = Math.Abs((double)value);
        double below = magnitude - low, above = high - magnitude;
        return below < above || (below == above && (toward & 1) == 0) ? toward : away;
    }
}
