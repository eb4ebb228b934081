using System;
using System.Collections.Generic;
using System.Linq;
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
