using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The vectorised batch-norm kernels on bfloat16 and float16 values with float32 parameters, against the reference
/// kernels on the same values, over the tails, layouts and channel counts of <see cref="BatchNormVectorizedKernelTests"/>;
/// and bit-identical results for any thread count. Each 16-bit output must be within one ulp of the reference's (the
/// vector loops fuse the multiply-add the reference rounds twice, so a value next to a tie may round either way), and
/// the reference's within half an ulp of its float64 value (and half a float32 ulp, as it rounds through float32), computed
/// here separately.
/// </summary>
[TestFixture]
public class BatchNormHalfPrecisionKernelTests
{
    private static readonly int[] ChannelCounts = [1, 3, 5, 8, 9, 16, 17, 32, 48, 64, 80];

    public static IEnumerable<TestCaseData> Shapes()
    {
        foreach (string dtype in new[] { "bfloat16", "float16" })
        {
            foreach (bool channelsLast in new[] { false, true })
            {
                foreach (int channels in ChannelCounts)
                {
                    yield return new TestCaseData(dtype, 3, channels, channelsLast)
                        .SetArgDisplayNames(dtype, $"C={channels}", channelsLast ? "NHWC" : "NCHW");
                }
            }
        }
    }

    [TestCaseSource(nameof(Shapes))]
    public void MatchesTheReference_OnEveryTail(string dtype, int batch, int channels, bool channelsLast)
    {
        foreach (int spatial in BatchNormVectorizedKernelTests.Spatials)
        {
            var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
            if (dtype == "bfloat16")
            {
                CompareWithReference<BFloat16>(layout, seed: spatial);
            }
            else
            {
                CompareWithReference<Half>(layout, seed: spatial);
            }
        }
    }

    [TestCase("bfloat16", false)]
    [TestCase("bfloat16", true)]
    [TestCase("float16", false)]
    [TestCase("float16", true)]
    public void Results_AreBitIdentical_ForAnyThreadCount(string dtype, bool channelsLast)
    {
        foreach (var layout in new[] { new PlaneLayout(4, 5, 4099, channelsLast), new PlaneLayout(131, 35, 16, channelsLast), new PlaneLayout(64, 64, 33, channelsLast) })
        {
            if (dtype == "bfloat16")
            {
                SameForAnyThreadCount<BFloat16>(layout);
            }
            else
            {
                SameForAnyThreadCount<Half>(layout);
            }
        }
    }

    [Test]
    public void BFloat16Stores_RoundToNearestEven_InVectorAndScalar()
    {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3·2^-8 a tie between 1 + 2^-7 and 1 + 2^-6 (even:
        // 1 + 2^-6); one float32 ulp above a tie rounds up. Normalising x with mean 0, invstd 1, γ 1, β v gives v for x = 0.
        double[] targets = [1 + Math.Pow(2, -8), 1 + (3 * Math.Pow(2, -8)), 1 + Math.Pow(2, -8) + Math.Pow(2, -23), -(1 + Math.Pow(2, -8)), 3.4e38, double.NaN];
        double[] expected = [1, 1 + Math.Pow(2, -6), 1 + Math.Pow(2, -7), -1, double.PositiveInfinity, double.NaN];
        foreach (bool channelsLast in new[] { false, true })
        {
            var layout = new PlaneLayout(2, targets.Length, 40, channelsLast);
            var x = new BFloat16[layout.Length];
            var y = new BFloat16[layout.Length];
            float[] bias = targets.Select(t => (float)t).ToArray();

            double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
            double[] zero = new double[targets.Length], one = Enumerable.Repeat(1.0, targets.Length).ToArray();
            BatchNormKernels.NormalizeVectorized<BFloat16, float>(x, y, layout, zero, one, [], bias, scratch, threads: 1);
            for (int c = 0; c < targets.Length; c++)
            {
                for (int n = 0; n < layout.Batch; n++)
                {
                    for (int s = 0; s < layout.Spatial; s++)
                    {
                        double value = Element.ToDouble(y[(n * layout.BatchStride) + (c * layout.ChannelStride) + (s * layout.SpatialStride)]);
                        Assert.That(value, Is.EqualTo(expected[c]), $"channel {c} (β = {bias[c]}), sample {n}, position {s}, {(channelsLast ? "NHWC" : "NCHW")}");
                    }
                }
            }
        }
    }

    /// <summary>
    /// bfloat16 NCHW planes of 16 values or more go through float32 arithmetic checked against its rounding
    /// (BatchNormKernels.CheckedSingle.cs), 16 values a step or, on planes of an even length, 16 pairs; float16 planes
    /// through the float64 loops. Every y and dx must be the float64 result, rounded to float32 and then to the 16-bit
    /// type, bit for bit. The channels are centred far from zero, so that y and dx cancel and float32 alone would round
    /// many of them differently; some values and channels are beyond what float32 or the 16-bit type holds.
    /// </summary>
    [TestCase("bfloat16", 16)]
    [TestCase("bfloat16", 49)]
    [TestCase("bfloat16", 98)]
    [TestCase("bfloat16", 1000)]
    [TestCase("float16", 16)]
    [TestCase("float16", 49)]
    [TestCase("float16", 98)]
    [TestCase("float16", 1000)]
    public void HalfPrecisionPlanes_GiveTheBitsOfFloat64Arithmetic(string dtype, int spatial)
    {
        if (dtype == "bfloat16")
        {
            // Infinities, zeros, a subnormal, the largest values, and NaNs with a sign or a payload, which rounding
            // through float64 makes the one quiet NaN.
            GiveTheBitsOfFloat64Arithmetic<BFloat16>(spatial, [0x7F80, 0xFF80, 0x0000, 0x8000, 0x0001, 0x7F7F, 0xFF7F, 0x7FC0, 0xFFC0, 0x7F81, 0xFFC1], largest: 1e35);
        }
        else
        {
            GiveTheBitsOfFloat64Arithmetic<Half>(spatial, [0x7C00, 0xFC00, 0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7E00, 0xFE00, 0x7C01, 0xFE01], largest: 6e4);
        }
    }

    private static void GiveTheBitsOfFloat64Arithmetic<T>(int spatial, ushort[] specials, double largest)
        where T : unmanaged
    {
        var random = new Random(spatial);
        // An odd channel count, so that steps of two 4×4 planes take the last channel and the first.
        var layout = new PlaneLayout(3, 97, spatial, channelsLast: false);
        int channels = layout.Channels;
        double[] mean = new double[channels], invstd = new double[channels], sumDy = new double[channels], sumDyXmu = new double[channels];
        float[] weight = new float[channels], bias = new float[channels];
        for (int c = 0; c < channels; c++)
        {
            double spread = 1 + (random.NextDouble() * 20);
            mean[c] = (random.NextDouble() - 0.5) * 400;
            invstd[c] = 1 / spread;
            weight[c] = (float)((random.NextDouble() + 0.5) * (random.Next(2) == 0 ? -1 : 1));
            bias[c] = (float)((random.NextDouble() - 0.5) * 4);
            sumDy[c] = (random.NextDouble() - 0.5) * layout.ValuesPerChannel;
            sumDyXmu[c] = (random.NextDouble() - 0.5) * layout.ValuesPerChannel * spread;
        }

        // Channels whose constants float32 cannot hold (a subnormal scale on large values, values beyond its range), one
        // without scale, and one whose float64 arithmetic rounds more than its result's size suggests (x − 10¹² + 10¹²).
        (mean[1], invstd[1], bias[1]) = (0, 3e-44, 0);
        bias[2] = 3e38f;
        mean[3] = 1e300;
        weight[4] = 0;
        invstd[5] = 1e39;
        (bias[6], weight[6], invstd[6]) = (1e12f, 1, 1);
        mean[6] = bias[6];

        var x = new T[layout.Length];
        var dy = new T[layout.Length];
        for (int i = 0; i < layout.Length; i++)
        {
            int c = ChannelOf(layout, i);
            double spread = 1 / invstd[c];
            double value = c switch
            {
                1 => (random.NextDouble() - 0.5) * largest,
                3 or 5 or 6 => (random.NextDouble() - 0.5) * 2,
                _ => mean[c] + ((random.NextDouble() - 0.5) * 4 * spread),
            };
            x[i] = Element.FromDouble<T>(value);
            dy[i] = Element.FromDouble<T>((random.NextDouble() - 0.5) * 2);
        }

        foreach (ushort bits in specials)
        {
            x[random.Next(layout.Length)] = FromBits<T>(bits);
            dy[random.Next(layout.Length)] = FromBits<T>(bits);
        }

        // A zero in the channel whose scale float32 cannot hold.
        x[layout.ChannelStride + random.Next(layout.Spatial)] = FromBits<T>(0);

        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        var y = new T[layout.Length];
        BatchNormKernels.NormalizeVectorized<T, float>(x, y, layout, mean, invstd, weight, bias, scratch, threads: 2);
        var dx = new T[layout.Length];
        BatchNormKernels.BackwardInputVectorized<T, float>(x, dy, dx, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads: 2);
        var dxFixed = new T[layout.Length];
        BatchNormKernels.BackwardInputVectorized<T, float>(x, dy, dxFixed, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: false, scratch, threads: 2);

        // The float64 loops' arithmetic, operation for operation.
        double count = layout.ValuesPerChannel;
        ushort[] yBits = Bits(y), dxBits = Bits(dx), dxFixedBits = Bits(dxFixed);
        for (int i = 0; i < layout.Length; i++)
        {
            int c = ChannelOf(layout, i);
            double scale = invstd[c] * weight[c];
            double xi = Element.ToDouble(x[i]), dyi = Element.ToDouble(dy[i]);
            T expectedY = Element.FromDouble<T>(double.FusedMultiplyAdd(xi - mean[c], scale, bias[c]));
            double shift = sumDy[c] / count;
            double projection = sumDyXmu[c] * invstd[c] * invstd[c] / count;
            T expectedDx = Element.FromDouble<T>((dyi - shift - ((xi - mean[c]) * projection)) * scale);
            T expectedFixed = Element.FromDouble<T>(double.FusedMultiplyAdd(dyi - 0.0, scale, 0.0));
            string where = $"{typeof(T).Name}, index {i}, channel {c}, x = {x[i]}, dy = {dy[i]}, S = {spatial}";
            Assert.That(yBits[i], Is.EqualTo(Bits([expectedY])[0]), $"y, {where}");
            Assert.That(dxBits[i], Is.EqualTo(Bits([expectedDx])[0]), $"dx, {where}");
            Assert.That(dxFixedBits[i], Is.EqualTo(Bits([expectedFixed])[0]), $"dx with fixed statistics, {where}");
        }
    }

    private static T FromBits<T>(ushort bits)
        where T : unmanaged => Unsafe.As<ushort, T>(ref bits);

    private static void CompareWithReference<T>(PlaneLayout layout, int seed)
        where T : unmanaged
    {
        string where = $"{typeof(T).Name} N={layout.Batch} C={layout.Channels} S={layout.Spatial} {(layout.ChannelsLast ? "NHWC" : "NCHW")}";
        var random = new Random(seed);
        T[] x = Values<T>(KernelInputs.Uniform<double>(random, layout.Length, 3, 1));
        T[] dy = Values<T>(KernelInputs.Uniform<double>(random, layout.Length, 1, 0.25));
        float[] weight = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0.5);
        float[] bias = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0);
        int c = layout.Channels;

        double[] mean = new double[c], variance = new double[c];
        BatchNormKernels.BatchStatistics<T>(x, layout, mean, variance);
        var invstd = new double[c];
        BatchNormKernels.InverseStandardDeviation(variance, 1e-5, invstd);
        var output = new T[x.Length];
        BatchNormKernels.Normalize<T, float>(x, output, layout, mean, invstd, weight, bias);
        double[] sumDy = new double[c], sumDyXmu = new double[c];
        BatchNormKernels.BackwardReductions<T>(x, dy, layout, mean, sumDy, sumDyXmu);
        var gradInput = new T[x.Length];
        BatchNormKernels.BackwardInputBatchStatistics<T, float>(x, dy, gradInput, layout, mean, invstd, weight, sumDy, sumDyXmu);
        var gradFixed = new T[x.Length];
        BatchNormKernels.BackwardInputFixedStatistics<T, float>(dy, gradFixed, layout, invstd, weight);
        AssertCorrectlyRounded(output, i => ((Element.ToDouble(x[i]) - mean[ChannelOf(layout, i)]) * invstd[ChannelOf(layout, i)] * weight[ChannelOf(layout, i)]) + bias[ChannelOf(layout, i)], $"reference output, {where}");

        double[] fastMean = new double[c], fastVariance = new double[c];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        BatchNormKernels.BatchStatisticsVectorized<T>(x, layout, fastMean, fastVariance, scratch, threads: 2);
        Assert.That(fastMean, Is.EqualTo(mean).Within(1e-12), $"mean, {where}");
        Assert.That(fastVariance, Is.EqualTo(variance).Within(1e-12), $"variance, {where}");

        var fastOutput = new T[x.Length];
        BatchNormKernels.NormalizeVectorized<T, float>(x, fastOutput, layout, mean, invstd, weight, bias, scratch, threads: 2);
        AssertWithinOneUlp(fastOutput, output, $"output, {where}");

        double[] fastSumDy = new double[c], fastSumDyXmu = new double[c];
        BatchNormKernels.BackwardReductionsVectorized<T>(x, dy, layout, mean, fastSumDy, fastSumDyXmu, scratch, threads: 2);
        double sumTolerance = 1e-13 * layout.ValuesPerChannel * 8;
        Assert.That(fastSumDy, Is.EqualTo(sumDy).Within(sumTolerance), $"Σdy, {where}");
        Assert.That(fastSumDyXmu, Is.EqualTo(sumDyXmu).Within(sumTolerance), $"Σdy·(x − μ), {where}");

        var fastGradInput = new T[x.Length];
        BatchNormKernels.BackwardInputVectorized<T, float>(x, dy, fastGradInput, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads: 2);
        AssertWithinOneUlp(fastGradInput, gradInput, $"dx with batch statistics, {where}");

        var fastGradFixed = new T[x.Length];
        BatchNormKernels.BackwardInputVectorized<T, float>(x, dy, fastGradFixed, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: false, scratch, threads: 2);
        AssertWithinOneUlp(fastGradFixed, gradFixed, $"dx with fixed statistics, {where}");
    }

    private static void SameForAnyThreadCount<T>(PlaneLayout layout)
        where T : unmanaged
    {
        var random = new Random(layout.Length);
        T[] x = Values<T>(KernelInputs.Uniform<double>(random, layout.Length, 3, 1));
        T[] dy = Values<T>(KernelInputs.Uniform<double>(random, layout.Length, 1, 0.25));
        float[] weight = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0.5);
        float[] bias = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0);
        (double[], T[], T[]) Run(int threads)
        {
            int c = layout.Channels;
            double[] mean = new double[c], variance = new double[c], invstd = new double[c], sumDy = new double[c], sumDyXmu = new double[c];
            double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
            var y = new T[x.Length];
            var dx = new T[x.Length];
            BatchNormKernels.BatchStatisticsVectorized<T>(x, layout, mean, variance, scratch, threads);
            BatchNormKernels.InverseStandardDeviation(variance, 1e-5, invstd);
            BatchNormKernels.NormalizeVectorized<T, float>(x, y, layout, mean, invstd, weight, bias, scratch, threads);
            BatchNormKernels.BackwardReductionsVectorized<T>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads);
            BatchNormKernels.BackwardInputVectorized<T, float>(x, dy, dx, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads);
            return ([.. mean, .. variance, .. sumDy, .. sumDyXmu], y, dx);
        }

        var (sums, y, dx) = Run(1);
        foreach (int threads in new[] { 2, 3, 8 })
        {
            var (manySums, manyY, manyDx) = Run(threads);
            Assert.That(manySums, Is.EqualTo(sums), $"sums, {threads} threads, {layout}");
            Assert.That(Bits(manyY), Is.EqualTo(Bits(y)), $"output, {threads} threads, {layout}");
            Assert.That(Bits(manyDx), Is.EqualTo(Bits(dx)), $"dx, {threads} threads, {layout}");
        }
    }

    private static T[] Values<T>(double[] values)
        where T : unmanaged => values.Select(Element.FromDouble<T>).ToArray();

    private static ushort[] Bits<T>(T[] values)
        where T : unmanaged => MemoryMarshal.Cast<T, ushort>(values).ToArray();

    /// <summary>The distance between neighbouring values of T around <paramref name="value"/> (the larger one at a power of two).</summary>
    private static double Ulp<T>(double value)
        where T : unmanaged
    {
        int fraction = typeof(T) == typeof(Half) ? 10 : 7;
        int minimumExponent = typeof(T) == typeof(Half) ? -14 : -126;
        int exponent = Math.Max(value == 0 ? minimumExponent : Math.ILogB(value), minimumExponent);
        return Math.ScaleB(1, exponent - fraction);
    }

    private static void AssertWithinOneUlp<T>(T[] actual, T[] expected, string what)
        where T : unmanaged
    {
        for (int i = 0; i < actual.Length; i++)
        {
            double a = Element.ToDouble(actual[i]), e = Element.ToDouble(expected[i]);
            Assert.That(Math.Abs(a - e), Is.LessThanOrEqualTo(Ulp<T>(Math.Abs(e))), $"{what}, index {i}: {a} against {e}");
        }
    }

    /// <summary>
    /// Each value within half an ulp of <paramref name="exact"/>, plus half a float32 ulp (the 16-bit types round through
    /// float32), plus 1e-15 relative for the float64 arithmetic, done in another order here.
    /// </summary>
    private static void AssertCorrectlyRounded<T>(T[] actual, Func<int, double> exact, string what)
        where T : unmanaged
    {
        for (int i = 0; i < actual.Length; i++)
        {
            double a = Element.ToDouble(actual[i]), e = exact(i);
            double bound = (0.5 * Ulp<T>(Math.Abs(e))) + (Math.Abs(e) * (Math.ScaleB(1, -24) + 1e-15));
            Assert.That(Math.Abs(a - e), Is.LessThanOrEqualTo(bound), $"{what}, index {i}: {a} against {e}");
        }
    }

    private static int ChannelOf(PlaneLayout layout, int index) =>
        layout.ChannelsLast ? index % layout.Channels : index / layout.Spatial % layout.Channels;
}
