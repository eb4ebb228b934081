using System;
using System.Collections.Generic;
using System.Linq;
using System.Numerics;
using System.Threading.Tasks;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The vectorised, threaded BatchNorm2d kernels against the plain reference kernels, on every length from 0 to a few
/// vector widths with odd tails, both layouts and both dtypes; and bit-identical results for any thread count.
/// Run a second time in CI with DOTNET_EnableHWIntrinsic=0, which sends the same calls down the scalar fallbacks.
/// </summary>
[TestFixture]
public class BatchNormVectorizedKernelTests
{
    /// <summary>Plane lengths from 1 to a few vector widths, with odd tails; shared by the other vectorised-kernel tests.</summary>
    internal static readonly int[] Spatials = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 64, 65];
    // NHWC periods lcm(C, 8) of 8, 24, 40, 72 and 136 values; of 16, 32, 48 and 64, which AVX-512 keeps in registers;
    // and of 80, which AVX-512 goes through period by period 16 values a step.
    private static readonly int[] ChannelCounts = [1, 2, 3, 5, 8, 9, 16, 17, 24, 32, 48, 64, 80];

    public static IEnumerable<TestCaseData> SmallShapes()
    {
        foreach (bool channelsLast in new[] { false, true })
        {
            foreach (int channels in ChannelCounts)
            {
                foreach (int batch in new[] { 1, 3 })
                {
                    yield return new TestCaseData(batch, channels, channelsLast)
                        .SetArgDisplayNames($"N={batch}", $"C={channels}", channelsLast ? "NHWC" : "NCHW");
                }
            }
        }
    }

    [TestCaseSource(nameof(SmallShapes))]
    public void Float32_MatchesTheReference_OnEveryTail(int batch, int channels, bool channelsLast)
    {
        foreach (int spatial in Spatials)
        {
            CompareWithReference<float>(new PlaneLayout(batch, channels, spatial, channelsLast), seed: spatial, outputTolerance: 2e-6);
        }
    }

    [TestCaseSource(nameof(SmallShapes))]
    public void Float64_MatchesTheReference_OnEveryTail(int batch, int channels, bool channelsLast)
    {
        foreach (int spatial in Spatials)
        {
            CompareWithReference<double>(new PlaneLayout(batch, channels, spatial, channelsLast), seed: spatial, outputTolerance: 1e-12);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void EmptyBatch_WritesZeroSumsAndNoElements(bool channelsLast)
    {
        var layout = new PlaneLayout(0, 3, 5, channelsLast);
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        double[] sumDy = [9, 9, 9];
        double[] sumDyXmu = [9, 9, 9];
        BatchNormKernels.BackwardReductionsVectorized<float>([], [], layout, [0, 0, 0], sumDy, sumDyXmu, scratch, threads: 2);
        Assert.That(sumDy, Is.EqualTo(new double[3]));
        Assert.That(sumDyXmu, Is.EqualTo(new double[3]));
        BatchNormKernels.NormalizeVectorized<float, float>([], [], layout, [0, 0, 0], [1, 1, 1], [], [], scratch, threads: 2);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void LargeMeanSmallSpread_StatisticsMatchTheTwoPassReference(bool channelsLast)
    {
        // Mean 1e4, standard deviation 1e-2: the shifted one-read sums must not lose the variance.
        var layout = new PlaneLayout(4, 3, 257, channelsLast);
        var random = new Random(3);
        double[] x = Enumerable.Range(0, layout.Length).Select(_ => 1e4 + (Gaussian(random) * 1e-2)).ToArray();
        var (mean, variance) = ReferenceStatistics<double>(x, layout);
        var (fastMean, fastVariance) = FastStatistics<double>(x, layout, threads: 2);
        for (int c = 0; c < layout.Channels; c++)
        {
            Assert.That(fastMean[c], Is.EqualTo(mean[c]).Within(1e-12).Percent, $"mean of channel {c}");
            Assert.That(fastVariance[c], Is.EqualTo(variance[c]).Within(1e-6).Percent, $"variance of channel {c}");
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void InfiniteFirstValue_GivesTheReferencesInfiniteMean(bool channelsLast)
    {
        // The first value of channel 0 is +∞, of channel 1 −∞; channel 2 holds a +∞ further on. Plain sums give ±∞ means.
        var layout = new PlaneLayout(2, 3, 5, channelsLast);
        double[] x = Enumerable.Range(0, layout.Length).Select(i => (double)(i % 7)).ToArray();
        x[0 * layout.ChannelStride] = double.PositiveInfinity;
        x[1 * layout.ChannelStride] = double.NegativeInfinity;
        x[(2 * layout.ChannelStride) + (3 * layout.SpatialStride)] = double.PositiveInfinity;
        var (mean, variance) = ReferenceStatistics<double>(x, layout);
        var (fastMean, fastVariance) = FastStatistics<double>(x, layout, threads: 2);
        Assert.That(mean, Is.EqualTo(new[] { double.PositiveInfinity, double.NegativeInfinity, double.PositiveInfinity }));
        Assert.That(fastMean, Is.EqualTo(mean));
        Assert.That(fastVariance.Select(double.IsNaN), Is.EqualTo(variance.Select(double.IsNaN)));
    }

    [Test]
    public void Float32_4x4Planes_SameSumsWhereverAPlaneFalls([Values(4, 5, 7, 9)] int channels, [Values(1, 11)] int batch)
    {
        // Planes of 16 values are summed in columns of four channels, a row's last channels fewer, each channel in its
        // own lanes: a channel's statistics and backward sums are its planes' alone, so rotating the channels of every
        // sample (which moves each channel to another place in a column, or into or out of the last one) must give
        // every channel the same bits. 11 samples make a group of 8 and one of 3.
        var layout = new PlaneLayout(batch, channels, 16, channelsLast: false);
        var random = new Random(31);
        float[] x = KernelInputs.Uniform<float>(random, layout.Length, 3, 1);
        float[] dy = KernelInputs.Uniform<float>(random, layout.Length, 1, 0.25);
        var (mean, variance, sumDy, sumDyXmu) = PlaneSums(x, dy, layout);
        for (int shift = 1; shift < channels; shift++)
        {
            float[] rotatedX = Rotate(x, shift), rotatedDy = Rotate(dy, shift);
            var (rotatedMean, rotatedVariance, rotatedSumDy, rotatedSumDyXmu) = PlaneSums(rotatedX, rotatedDy, layout);
            for (int c = 0; c < channels; c++)
            {
                int moved = (c + shift) % channels;
                Assert.That(rotatedMean[moved], Is.EqualTo(mean[c]), $"mean, channel {c} moved by {shift}");
                Assert.That(rotatedVariance[moved], Is.EqualTo(variance[c]), $"variance, channel {c} moved by {shift}");
                Assert.That(rotatedSumDy[moved], Is.EqualTo(sumDy[c]), $"Σdy, channel {c} moved by {shift}");
                Assert.That(rotatedSumDyXmu[moved], Is.EqualTo(sumDyXmu[c]), $"Σdy·(x − μ), channel {c} moved by {shift}");
            }
        }

        float[] Rotate(float[] values, int by)
        {
            var rotated = new float[values.Length];
            for (int n = 0; n < batch; n++)
            {
                for (int c = 0; c < channels; c++)
                {
                    Array.Copy(values, ((n * channels) + c) * 16, rotated, ((n * channels) + ((c + by) % channels)) * 16, 16);
                }
            }

            return rotated;
        }
    }

    public static IEnumerable<TestCaseData> ThreadedShapes()
    {
        // Above the parallel threshold and several chunks long in both layouts; C = 5 makes the NHWC period 5 · 8.
        // Each on the kernels' own workers and on libtorch's OpenMP team.
        foreach (bool openMpTeam in new[] { false, true })
        {
            foreach (bool channelsLast in new[] { false, true })
            {
                string[] names = [channelsLast ? "NHWC" : "NCHW", openMpTeam ? "OpenMP team" : "own workers"];
                yield return new TestCaseData(4, 5, 4099, channelsLast, openMpTeam).SetArgDisplayNames(["4x5x4099", .. names]);
                yield return new TestCaseData(64, 70, 9, channelsLast, openMpTeam).SetArgDisplayNames(["64x70x9", .. names]);

                // 4×4 planes, summed in columns: a last group of 3 samples (131 = 16 · 8 + 3) and a last column of 3 channels.
                yield return new TestCaseData(131, 35, 16, channelsLast, openMpTeam).SetArgDisplayNames(["131x35x16", .. names]);

                // An NHWC period of 64 values, whose sums AVX-512 keeps in registers, over several blocks of rows.
                yield return new TestCaseData(6, 64, 257, channelsLast, openMpTeam).SetArgDisplayNames(["6x64x257", .. names]);
            }
        }
    }

    [TestCaseSource(nameof(ThreadedShapes))]
    public void Results_AreBitIdentical_ForAnyThreadCount(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        var one = RunFast<float>(layout, seed: 11, threads: 1);
        var oneDouble = RunFast<double>(layout, seed: 12, threads: 1);
        KernelTeams.Run(openMpTeam, () =>
        {
            foreach (int threads in new[] { 2, 3, 8 })
            {
                var many = RunFast<float>(layout, seed: 11, threads);
                AssertBitIdentical(many, one, $"{threads} threads");
            }

            AssertBitIdentical(RunFast<double>(layout, seed: 12, threads: 2), oneDouble, "float64, 2 threads");
        });
    }

    [TestCaseSource(nameof(ThreadedShapes))]
    public void ConcurrentCallers_GetTheSameResultsAsOneAfterAnother(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        var expected = RunFast<float>(layout, seed: 21, threads: 1);
        var results = new FastResult<float>[6];
        KernelTeams.Run(openMpTeam, () => Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = results.Length }, i => results[i] = RunFast<float>(layout, seed: 21, threads: 2)));
        foreach (var result in results)
        {
            AssertBitIdentical(result, expected, "concurrent");
        }
    }

    /// <summary>
    /// The kernels start their channels-last rows on a cache line inside the scratch they are given. Wherever the
    /// scratch starts, they must stay within its <see cref="BatchNormKernels.VectorizedScratchLength"/> values and give the
    /// same bits.
    /// </summary>
    [TestCase(3, 80, 5, false)]
    [TestCase(4, 512, 1, false)]
    [TestCase(2, 24, 7, true)]
    [TestCase(5, 48, 3, true)]
    public void Kernels_StayWithinTheirScratch_AndGiveTheSameBits_WhereverItStarts(int batch, int channels, int spatial, bool float64)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast: true);
        if (float64)
        {
            CheckScratchPlacement<double>(layout);
        }
        else
        {
            CheckScratchPlacement<float>(layout);
        }
    }

    private static void CheckScratchPlacement<T>(PlaneLayout layout)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        const int Guard = 16;
        int length = BatchNormKernels.VectorizedScratchLength(layout);
        var expected = RunFast<T>(layout, seed: 31, threads: 2);
        T[] expectedFixed = RunFixed<T>(layout, seed: 31, new double[length]);

        // Pinned, so that the eight starts below fall at eight different places within a cache line.
        double[] buffer = GC.AllocateArray<double>(Guard + length + 8 + Guard, pinned: true);
        for (int start = Guard; start < Guard + 8; start++)
        {
            buffer.AsSpan().Fill(-7.25);
            var result = RunFast<T>(layout, seed: 31, threads: 2, buffer.AsSpan(start, length));
            T[] fixedOutput = RunFixed<T>(layout, seed: 31, buffer.AsSpan(start, length));
            string where = $"scratch starting {start - Guard} values into the buffer";
            Assert.That(buffer[..start], Is.All.EqualTo(-7.25), $"values before the scratch, {where}");
            Assert.That(buffer[(start + length)..], Is.All.EqualTo(-7.25), $"values after the scratch, {where}");
            AssertBitIdentical(result, expected, where);
            Assert.That(fixedOutput, Is.EqualTo(expectedFixed), $"output with fixed statistics, {where}");
        }
    }

    private static T[] RunFixed<T>(PlaneLayout layout, int seed, Span<double> scratch)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var random = new Random(seed);
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] mean = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0);
        double[] invstd = KernelInputs.Uniform<double>(random, layout.Channels, 1, 2);
        T[] weight = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0.5);
        T[] bias = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0);
        var y = new T[x.Length];
        BatchNormKernels.NormalizeFixedVectorized<T>(x, y, layout, mean, invstd, weight, bias, scratch, threads: 2);
        return y;
    }

    private static void CompareWithReference<T>(PlaneLayout layout, int seed, double outputTolerance)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        string where = $"N={layout.Batch} C={layout.Channels} S={layout.Spatial} {(layout.ChannelsLast ? "NHWC" : "NCHW")}";
        var random = new Random(seed);
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] dy = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
        T[] weight = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0.5);
        T[] bias = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0);
        int c = layout.Channels;

        var (mean, variance) = ReferenceStatistics(x, layout);
        var invstd = new double[c];
        BatchNormKernels.InverseStandardDeviation(variance, 1e-5, invstd);
        var output = new T[x.Length];
        BatchNormKernels.Normalize<T, T>(x, output, layout, mean, invstd, weight, bias);
        double[] sumDy = new double[c], sumDyXmu = new double[c];
        BatchNormKernels.BackwardReductions<T>(x, dy, layout, mean, sumDy, sumDyXmu);
        var gradInput = new T[x.Length];
        BatchNormKernels.BackwardInputBatchStatistics<T, T>(x, dy, gradInput, layout, mean, invstd, weight, sumDy, sumDyXmu);
        var gradFixed = new T[x.Length];
        BatchNormKernels.BackwardInputFixedStatistics<T, T>(dy, gradFixed, layout, invstd, weight);

        var (fastMean, fastVariance) = FastStatistics(x, layout, threads: 2);
        Assert.That(fastMean, Is.EqualTo(mean).Within(1e-12), $"mean, {where}");
        Assert.That(fastVariance, Is.EqualTo(variance).Within(1e-12), $"variance, {where}");

        // The rest is fed the reference statistics, so each kernel is compared on its own.
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        var fastOutput = new T[x.Length];
        BatchNormKernels.NormalizeVectorized<T, T>(x, fastOutput, layout, mean, invstd, weight, bias, scratch, threads: 2);
        Assert.That(ToDoubles(fastOutput), Is.EqualTo(ToDoubles(output)).Within(outputTolerance), $"output, {where}");

        double[] fastSumDy = new double[c], fastSumDyXmu = new double[c];
        BatchNormKernels.BackwardReductionsVectorized<T>(x, dy, layout, mean, fastSumDy, fastSumDyXmu, scratch, threads: 2);
        double sumTolerance = 1e-13 * layout.ValuesPerChannel * 8;
        Assert.That(fastSumDy, Is.EqualTo(sumDy).Within(sumTolerance), $"Σdy, {where}");
        Assert.That(fastSumDyXmu, Is.EqualTo(sumDyXmu).Within(sumTolerance), $"Σdy·(x − μ), {where}");

        var fastGradInput = new T[x.Length];
        BatchNormKernels.BackwardInputVectorized<T, T>(x, dy, fastGradInput, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads: 2);
        Assert.That(ToDoubles(fastGradInput), Is.EqualTo(ToDoubles(gradInput)).Within(outputTolerance), $"dx with batch statistics, {where}");

        var fastGradFixed = new T[x.Length];
        BatchNormKernels.BackwardInputVectorized<T, T>(x, dy, fastGradFixed, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: false, scratch, threads: 2);
        Assert.That(ToDoubles(fastGradFixed), Is.EqualTo(ToDoubles(gradFixed)).Within(outputTolerance), $"dx with fixed statistics, {where}");

        // In place, as the module never does but the contract allows.
        var inPlace = (T[])x.Clone();
        BatchNormKernels.NormalizeVectorized<T, T>(inPlace, inPlace, layout, mean, invstd, weight, bias, scratch, threads: 2);
        Assert.That(inPlace, Is.EqualTo(fastOutput), $"in-place output, {where}");
    }

    private static (double[] Mean, double[] Variance) ReferenceStatistics<T>(T[] x, PlaneLayout layout)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        double[] mean = new double[layout.Channels], variance = new double[layout.Channels];
        BatchNormKernels.BatchStatistics<T>(x, layout, mean, variance);
        return (mean, variance);
    }

    private static (double[] Mean, double[] Variance) FastStatistics<T>(T[] x, PlaneLayout layout, int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        double[] mean = new double[layout.Channels], variance = new double[layout.Channels];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        BatchNormKernels.BatchStatisticsVectorized<T>(x, layout, mean, variance, scratch, threads);
        return (mean, variance);
    }

    /// <summary>The vectorised statistics and backward sums, with the mean the statistics gave.</summary>
    private static (double[] Mean, double[] Variance, double[] SumDy, double[] SumDyXmu) PlaneSums(float[] x, float[] dy, PlaneLayout layout)
    {
        var (mean, variance) = FastStatistics(x, layout, threads: 1);
        double[] sumDy = new double[layout.Channels], sumDyXmu = new double[layout.Channels];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        BatchNormKernels.BackwardReductionsVectorized<float>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads: 1);
        return (mean, variance, sumDy, sumDyXmu);
    }

    /// <summary>Forward and backward through the vectorised kernels only.</summary>
    private static FastResult<T> RunFast<T>(PlaneLayout layout, int seed, int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        RunFast<T>(layout, seed, threads, new double[BatchNormKernels.VectorizedScratchLength(layout)]);

    private static FastResult<T> RunFast<T>(PlaneLayout layout, int seed, int threads, Span<double> scratch)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var random = new Random(seed);
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] dy = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
        T[] weight = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0.5);
        T[] bias = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0);
        int c = layout.Channels;
        var r = new FastResult<T>(new double[c], new double[c], new double[c], new double[c], new T[x.Length], new T[x.Length]);
        var invstd = new double[c];
        BatchNormKernels.BatchStatisticsVectorized<T>(x, layout, r.Mean, r.Variance, scratch, threads);
        BatchNormKernels.InverseStandardDeviation(r.Variance, 1e-5, invstd);
        BatchNormKernels.NormalizeVectorized<T, T>(x, r.Output, layout, r.Mean, invstd, weight, bias, scratch, threads);
        BatchNormKernels.BackwardReductionsVectorized<T>(x, dy, layout, r.Mean, r.SumDy, r.SumDyXmu, scratch, threads);
        BatchNormKernels.BackwardInputVectorized<T, T>(x, dy, r.GradInput, layout, r.Mean, invstd, weight, r.SumDy, r.SumDyXmu, batchStatistics: true, scratch, threads);
        return r;
    }

    private static void AssertBitIdentical<T>(FastResult<T> actual, FastResult<T> expected, string what)
    {
        Assert.That(actual.Mean, Is.EqualTo(expected.Mean), $"mean, {what}");
        Assert.That(actual.Variance, Is.EqualTo(expected.Variance), $"variance, {what}");
        Assert.That(actual.SumDy, Is.EqualTo(expected.SumDy), $"Σdy, {what}");
        Assert.That(actual.SumDyXmu, Is.EqualTo(expected.SumDyXmu), $"Σdy·(x − μ), {what}");
        Assert.That(actual.Output, Is.EqualTo(expected.Output), $"output, {what}");
        Assert.That(actual.GradInput, Is.EqualTo(expected.GradInput), $"dx, {what}");
    }

    private static double[] ToDoubles<T>(T[] values)
        where T : INumberBase<T> => values.Select(double.CreateTruncating).ToArray();

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    private sealed record FastResult<T>(double[] Mean, double[] Variance, double[] SumDy, double[] SumDyXmu, T[] Output, T[] GradInput);
}
