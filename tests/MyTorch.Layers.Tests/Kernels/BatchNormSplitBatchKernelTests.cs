using System;
using System.Linq;
using MyTorch.Layers.Kernels;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The statistics of a batch split into parts (SyncBatchNorm) from the parts' shifted sums, against the two-pass
/// reference on the whole batch; with one non-empty part, bit for bit the vectorised statistics of that part.
/// </summary>
[TestFixture]
public class BatchNormSplitBatchKernelTests
{
    [TestCase(false, new[] { 3, 5 })]
    [TestCase(true, new[] { 3, 5 })]
    [TestCase(false, new[] { 1, 0, 4, 2, 1 })]
    [TestCase(true, new[] { 0, 1, 7 })]
    public void MergeShiftedSums_OfTheParts_MatchesTheWholeBatchReference(bool channelsLast, int[] parts)
    {
        const int Channels = 5, Spatial = 13;
        var random = new Random(parts.Length);
        // Channels far from zero with a small spread, and each part's K (its first value) different: the merge must keep the variance.
        var whole = new PlaneLayout(parts.Sum(), Channels, Spatial, channelsLast);
        double[] x = [.. Enumerable.Range(0, whole.Length).Select(i => 1e3 + (i % Channels) + (random.NextDouble() * 1e-2))];
        double[] expectedMean = new double[Channels], expectedVariance = new double[Channels];
        BatchNormKernels.BatchStatistics<double>(x, whole, expectedMean, expectedVariance);

        double[] records = Records(x, parts, Channels, Spatial, channelsLast);
        double[] mean = new double[Channels], variance = new double[Channels];
        long values = BatchNormKernels.MergeShiftedSums(records, Channels, mean, variance);

        Assert.That(values, Is.EqualTo(whole.ValuesPerChannel));
        for (int c = 0; c < Channels; c++)
        {
            Assert.That(mean[c], Is.EqualTo(expectedMean[c]).Within(1e-12 * Math.Abs(expectedMean[c])), $"mean of channel {c}");
            Assert.That(variance[c], Is.EqualTo(expectedVariance[c]).Within(1e-9 * expectedVariance[c]), $"variance of channel {c}");
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void MergeShiftedSums_WithOneNonEmptyPart_IsThatPartsStatistics_BitForBit(bool channelsLast)
    {
        const int Channels = 3, Spatial = 17;
        var random = new Random(7);
        var layout = new PlaneLayout(4, Channels, Spatial, channelsLast);
        float[] x = [.. Enumerable.Range(0, layout.Length).Select(_ => (float)((random.NextDouble() * 8) - 2))];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        double[] expectedMean = new double[Channels], expectedVariance = new double[Channels];
        BatchNormKernels.BatchStatisticsVectorized<float>(x, layout, expectedMean, expectedVariance, scratch, threads: 2);

        double[] records = Records(x, [0, 4, 0], Channels, Spatial, channelsLast);
        double[] mean = new double[Channels], variance = new double[Channels];
        BatchNormKernels.MergeShiftedSums(records, Channels, mean, variance);

        Assert.That(mean, Is.EqualTo(expectedMean));
        Assert.That(variance, Is.EqualTo(expectedVariance));
    }

    [Test]
    public void MergeShiftedSums_OfEmptyParts_IsZero()
    {
        double[] mean = [9, 9], variance = [9, 9];
        Assert.That(BatchNormKernels.MergeShiftedSums(new double[2 * BatchNormKernels.ShiftedSumsRecordLength(2)], 2, mean, variance), Is.Zero);
        Assert.That(mean.Concat(variance), Is.All.Zero);
    }

    [Test]
    public void SumParts_AddsElementByElement_InPartOrder()
    {
        double[] sums = new double[3];
        BatchNormKernels.SumParts([1, 2, 3, 10, 20, 30, 1e16, -1e16, 0.5], sums);
        Assert.That(sums, Is.EqualTo(new[] { 1 + 10 + 1e16, 2 + 20 - 1e16, 3 + 30 + 0.5 }));
    }

    /// <summary>Each part's record as a process makes it: its values per channel, then the vectorised shifted sums.</summary>
    private static double[] Records<T>(T[] x, int[] parts, int channels, int spatial, bool channelsLast)
        where T : unmanaged
    {
        int length = BatchNormKernels.ShiftedSumsRecordLength(channels);
        double[] records = new double[length * parts.Length];
        int first = 0;
        for (int p = 0; p < parts.Length; p++)
        {
            var layout = new PlaneLayout(parts[p], channels, spatial, channelsLast);
            var record = records.AsSpan(p * length, length);
            if (parts[p] > 0)
            {
                record[0] = layout.ValuesPerChannel;
                double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
                BatchNormKernels.ShiftedSumsVectorized<T>(
                    x.AsSpan(first * channels * spatial, layout.Length), layout, record.Slice(1, channels), record.Slice(1 + channels, channels), record.Slice(1 + (2 * channels), channels), scratch, threads: 2);
            }

            first += parts[p];
        }

        return records;
    }
}
