using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The math of 2-d batch normalisation over raw buffers, one channel at a time.
/// Every sum accumulates in <see cref="double"/>, whatever the element type is: as libtorch's forward does on the CPU,
/// and unlike its float32 backward, whose float sums drift by about 1e-4 relative over 10^5 values per channel.
/// Callers validate; these functions only assert.
/// </summary>
/// <remarks>
/// Notation: x is the input, M = N·H·W the number of values per channel, μ and σ² the batch mean and biased variance,
/// γ and β the optional affine weight and bias (an empty span means "none": γ = 1, β = 0).
/// </remarks>
internal static partial class BatchNormKernels
{
    /// <summary>
    /// Per-channel batch statistics in two passes: μ[c] = Σx / M, then σ²[c] = Σ(x − μ)² / M.
    /// The second pass keeps precision for channels whose mean is large next to their spread.
    /// </summary>
    public static void BatchStatistics<T>(ReadOnlySpan<T> x, PlaneLayout layout, Span<double> mean, Span<double> variance)
        where T : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && mean.Length >= layout.Channels && variance.Length >= layout.Channels);
        double count = layout.ValuesPerChannel;
        for (int c = 0; c < layout.Channels; c++)
        {
            double sum = 0;
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    sum += Element.ToDouble(x[offset + s * layout.SpatialStride]);
                }
            }

            double mu = sum / count;
            double squares = 0;
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    double d = Element.ToDouble(x[offset + s * layout.SpatialStride]) - mu;
                    squares += d * d;
                }
            }

            mean[c] = mu;
            variance[c] = squares / count;
        }
    }

    /// <summary>invstd[c] = 1 / sqrt(variance[c] + eps).</summary>
    public static void InverseStandardDeviation(ReadOnlySpan<double> variance, double eps, Span<double> invstd)
    {
        Debug.Assert(invstd.Length >= variance.Length);
        for (int c = 0; c < variance.Length; c++)
        {
            invstd[c] = InverseStandardDeviation(variance[c], eps);
        }
    }

    /// <summary>1 / sqrt(variance + eps) of one channel.</summary>
    public static double InverseStandardDeviation(double variance, double eps) => 1.0 / Math.Sqrt(variance + eps);

    /// <summary>
    /// y = (x − mean[c]) · invstd[c] · γ[c] + β[c]. <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    public static void Normalize<T, TParam>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> weight,
        ReadOnlySpan<TParam> bias)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        for (int c = 0; c < layout.Channels; c++)
        {
            double mu = mean[c];
            double scale = invstd[c] * (weight.IsEmpty ? 1.0 : Element.ToDouble(weight[c]));
            double shift = bias.IsEmpty ? 0.0 : Element.ToDouble(bias[c]);
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + s * layout.SpatialStride;
                    y[i] = Element.FromDouble<T>(((Element.ToDouble(x[i]) - mu) * scale) + shift);
                }
            }
        }
    }

    /// <summary>
    /// y = (x − mean[c]) · s[c] + β[c] in T, with s[c] = invstd[c] · γ[c] rounded to T and one rounding for the
    /// multiply-add: normalisation with fixed statistics (the running ones), whose mean is already a value of T. Where
    /// x − mean[c] is not finite in T (it overflows float32, or is NaN or infinite anyway), the value is computed with
    /// x − mean[c] in double instead. <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    public static void NormalizeFixed<T>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        ReadOnlySpan<T> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<T> weight,
        ReadOnlySpan<T> bias)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        for (int c = 0; c < layout.Channels; c++)
        {
            T mu = mean[c];
            T scale = T.CreateTruncating(invstd[c] * (weight.IsEmpty ? 1.0 : double.CreateTruncating(weight[c])));
            T shift = bias.IsEmpty ? T.Zero : bias[c];
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + s * layout.SpatialStride;
                    y[i] = FixedValue(x[i], mu, scale, shift);
                }
            }
        }
    }

    /// <summary>
    /// y = (x − offset) · scale + shift for one value: in T when x − offset is finite, else with x − offset in double
    /// (for float32: where it overflows float32, or is NaN or infinite anyway), rounded to T once at the end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T FixedValue<T>(T x, T offset, T scale, T shift)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T difference = x - offset;
        return T.IsFinite(difference)
            ? T.FusedMultiplyAdd(difference, scale, shift)
            : T.CreateTruncating(double.FusedMultiplyAdd(
                double.CreateTruncating(x) - double.CreateTruncating(offset), double.CreateTruncating(scale), double.CreateTruncating(shift)));
    }

    /// <summary>
    /// running_mean = (1 − momentum) · running_mean + momentum · μ and
    /// running_var = (1 − momentum) · running_var + momentum · σ² · M / (M − 1), the unbiased variance.
    /// </summary>
    public static void UpdateRunningStatistics<T>(
        Span<T> runningMean,
        Span<T> runningVar,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> variance,
        long valuesPerChannel,
        double momentum)
        where T : unmanaged
    {
        Debug.Assert(runningMean.Length == mean.Length && runningVar.Length == variance.Length);
        double bessel = valuesPerChannel / (double)(valuesPerChannel - 1);
        for (int c = 0; c < mean.Length; c++)
        {
            runningMean[c] = Element.FromDouble<T>((momentum * mean[c]) + ((1 - momentum) * Element.ToDouble(runningMean[c])));
            runningVar[c] = Element.FromDouble<T>((momentum * variance[c] * bessel) + ((1 - momentum) * Element.ToDouble(runningVar[c])));
        }
    }

    /// <summary>
    /// The two per-channel sums the backward needs, in one read of x and dy:
    /// sumDy[c] = Σ dy and sumDyXmu[c] = Σ dy · (x − mean[c]).
    /// </summary>
    public static void BackwardReductions<T>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutput,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        Span<double> sumDy,
        Span<double> sumDyXmu)
        where T : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && gradOutput.Length >= layout.Length);
        for (int c = 0; c < layout.Channels; c++)
        {
            double mu = mean[c];
            double sum = 0;
            double dot = 0;
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + s * layout.SpatialStride;
                    double dy = Element.ToDouble(gradOutput[i]);
                    sum += dy;
                    dot += dy * (Element.ToDouble(x[i]) - mu);
                }
            }

            sumDy[c] = sum;
            sumDyXmu[c] = dot;
        }
    }

    /// <summary>
    /// Input gradient when the batch statistics were used:
    /// dx = (dy − sumDy/M − (x − μ) · invstd² · sumDyXmu/M) · invstd · γ.
    /// </summary>
    public static void BackwardInputBatchStatistics<T, TParam>(
        ReadOnlySpan<T> x,
        ReadOnlySpan<T> gradOutput,
        Span<T> gradInput,
        PlaneLayout layout,
        ReadOnlySpan<double> mean,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> weight,
        ReadOnlySpan<double> sumDy,
        ReadOnlySpan<double> sumDyXmu)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(x.Length >= layout.Length && gradOutput.Length >= layout.Length && gradInput.Length >= layout.Length);
        double count = layout.ValuesPerChannel;
        for (int c = 0; c < layout.Channels; c++)
        {
            double mu = mean[c];
            double istd = invstd[c];
            double dyMean = sumDy[c] / count;
            double projection = sumDyXmu[c] * istd * istd / count;
            double scale = istd * (weight.IsEmpty ? 1.0 : Element.ToDouble(weight[c]));
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + s * layout.SpatialStride;
                    double xmu = Element.ToDouble(x[i]) - mu;
                    gradInput[i] = Element.FromDouble<T>((Element.ToDouble(gradOutput[i]) - dyMean - (xmu * projection)) * scale);
                }
            }
        }
    }

    /// <summary>
    /// Input gradient when fixed (running) statistics were used: dx = dy · invstd[c] · γ[c].
    /// </summary>
    public static void BackwardInputFixedStatistics<T, TParam>(
        ReadOnlySpan<T> gradOutput,
        Span<T> gradInput,
        PlaneLayout layout,
        ReadOnlySpan<double> invstd,
        ReadOnlySpan<TParam> weight)
        where T : unmanaged
        where TParam : unmanaged
    {
        Debug.Assert(gradOutput.Length >= layout.Length && gradInput.Length >= layout.Length);
        for (int c = 0; c < layout.Channels; c++)
        {
            double scale = invstd[c] * (weight.IsEmpty ? 1.0 : Element.ToDouble(weight[c]));
            for (int n = 0; n < layout.Batch; n++)
            {
                int offset = n * layout.BatchStride + c * layout.ChannelStride;
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + s * layout.SpatialStride;
                    gradInput[i] = Element.FromDouble<T>(Element.ToDouble(gradOutput[i]) * scale);
                }
            }
        }
    }
}
