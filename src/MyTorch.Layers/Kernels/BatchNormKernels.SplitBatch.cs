using System;
using System.Diagnostics;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Batch statistics of a batch split into parts, one per process (SyncBatchNorm): each part's sums, gathered in part
/// order, merged into the whole batch's. Every process merges the same records in the same order, so all get the same
/// bits.
/// </summary>
internal static partial class BatchNormKernels
{
    /// <summary>
    /// The length of one part's record for <see cref="MergeShiftedSums"/>: M, the part's values per channel, then K,
    /// Σ(x − K) and Σ(x − K)² per channel, as <see cref="ShiftedSumsVectorized{T}"/> gives them.
    /// </summary>
    public static int ShiftedSumsRecordLength(int channels) => 1 + (3 * channels);

    /// <summary>
    /// μ[c] and the biased σ²[c] of the whole batch from its parts' records; returns the whole batch's M (0 when every
    /// part is empty, with μ = σ² = 0). With one non-empty part its own statistics, bit for bit as
    /// <see cref="BatchStatisticsVectorized{T}"/> gives them; with several, each part's mean and centred sum of squares
    /// merged as Chan, Golub and LeVeque do (Σ M2ₚ + Σ mₚ · (μₚ − μ)²), which stays exact where the parts' K differ.
    /// </summary>
    public static long MergeShiftedSums(ReadOnlySpan<double> records, int channels, Span<double> mean, Span<double> variance)
    {
        int length = ShiftedSumsRecordLength(channels);
        Debug.Assert(records.Length % length == 0 && mean.Length >= channels && variance.Length >= channels);
        int parts = records.Length / length;
        long total = 0;
        int filled = 0;
        int last = 0;
        for (int p = 0; p < parts; p++)
        {
            long values = (long)records[p * length];
            total += values;
            if (values > 0)
            {
                filled++;
                last = p;
            }
        }

        if (filled <= 1)
        {
            var only = records.Slice(last * length, length);
            for (int c = 0; c < channels; c++)
            {
                (mean[c], variance[c]) = filled == 0 ? (0, 0) : ShiftedMoments(only[1 + c], only[1 + channels + c], only[1 + (2 * channels) + c], total);
            }

            return total;
        }

        for (int c = 0; c < channels; c++)
        {
            double weighted = 0;
            for (int p = 0; p < parts; p++)
            {
                var part = records.Slice(p * length, length);
                if (part[0] > 0)
                {
                    weighted += part[0] * PartMean(part, channels, c);
                }
            }

            double mu = weighted / total;
            double centred = 0;
            for (int p = 0; p < parts; p++)
            {
                var part = records.Slice(p * length, length);
                if (part[0] > 0)
                {
                    double m = part[0];
                    double s = part[1 + channels + c];
                    double d = PartMean(part, channels, c) - mu;
                    centred += Math.Max(part[1 + (2 * channels) + c] - (s * s / m), 0) + (m * d * d);
                }
            }

            mean[c] = mu;
            variance[c] = centred / total;
        }

        return total;
    }

    /// <summary>Sums of records of <paramref name="sums"/>' length, element by element in part order: the first part's as they are, then each next added.</summary>
    public static void SumParts(ReadOnlySpan<double> records, Span<double> sums)
    {
        int length = sums.Length;
        Debug.Assert(length > 0 && records.Length % length == 0);
        records[..length].CopyTo(sums);
        for (int offset = length; offset < records.Length; offset += length)
        {
            AddRow(records.Slice(offset, length), sums);
        }
    }

    private static double PartMean(ReadOnlySpan<double> part, int channels, int c) => part[1 + c] + (part[1 + channels + c] / part[0]);
}
