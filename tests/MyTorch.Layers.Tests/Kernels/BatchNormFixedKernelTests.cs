using System;
using System.Collections.Generic;
using System.Linq;
using System.Numerics;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// Normalisation with fixed (running) statistics in the input's precision: the vectorised kernel against the plain
/// reference bit for bit on every tail, both layouts and dtypes, any thread count; and the reference against the
/// formula evaluated in double, including a mean far larger than the spread.
/// </summary>
[TestFixture]
public class BatchNormFixedKernelTests
{
    private static readonly int[] Spatials = BatchNormVectorizedKernelTests.Spatials;

    [TestCaseSource(typeof(BatchNormVectorizedKernelTests), nameof(BatchNormVectorizedKernelTests.SmallShapes))]
    public void Float32_SameBitsAsTheReference_OnEveryTail(int batch, int channels, bool channelsLast)
    {
        foreach (int spatial in Spatials)
        {
            CompareWithReference<float>(new PlaneLayout(batch, channels, spatial, channelsLast), seed: spatial);
        }
    }

    [TestCaseSource(typeof(BatchNormVectorizedKernelTests), nameof(BatchNormVectorizedKernelTests.SmallShapes))]
    public void Float64_SameBitsAsTheReference_OnEveryTail(int batch, int channels, bool channelsLast)
    {
        foreach (int spatial in Spatials)
        {
            CompareWithReference<double>(new PlaneLayout(batch, channels, spatial, channelsLast), seed: spatial);
        }
    }

    [TestCase(false)]
    [TestCase(true)]
    public void EmptyBatch_WritesNothing(bool channelsLast)
    {
        var layout = new PlaneLayout(0, 3, 5, channelsLast);
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        float[] y = [7];
        BatchNormKernels.NormalizeFixedVectorized<float>([], y, layout, [0, 0, 0], [1, 1, 1], [], [], scratch, threads: 2);
        Assert.That(y, Is.EqualTo(new float[] { 7 }));
    }

    [TestCase(1e4, 1e-2, false)]
    [TestCase(1e4, 1e-2, true)]
    [TestCase(0, 1, false)]
    [TestCase(-3e3, 0.5, true)]
    public void Float32_IsWithinTwoRoundingsOfTheFormulaInDouble(double center, double spread, bool channelsLast)
    {
        // The centred form rounds x − μ, s and the multiply-add, each by at most half an ulp: relative to the exact
        // result, |error| ≤ ε · (|(x − μ) · s| + |y|) with ε = 2⁻²³. Folding μ into the shift (x · s + (β − μ · s))
        // would instead lose about ε · |μ · s|, 10⁶ times more at mean 1e4 and spread 1e-2.
        var layout = new PlaneLayout(3, 5, 37, channelsLast);
        var random = new Random(5);
        float[] x = KernelInputs.Uniform<float>(random, layout.Length, 3 * spread, center);
        float[] runningMean = KernelInputs.Uniform<float>(random, layout.Channels, spread, center);
        double[] invstd = KernelInputs.Uniform<double>(random, layout.Channels, 0.5 / spread, 1 / spread);
        float[] weight = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0.5);
        float[] bias = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0);
        var y = new float[layout.Length];
        BatchNormKernels.NormalizeFixed<float>(x, y, layout, runningMean, invstd, weight, bias);

        const double epsilon = 1.0 / (1 << 23);
        for (int c = 0; c < layout.Channels; c++)
        {
            double scale = invstd[c] * weight[c];
            for (int n = 0; n < layout.Batch; n++)
            {
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = (n * layout.BatchStride) + (c * layout.ChannelStride) + (s * layout.SpatialStride);
                    double centred = ((double)x[i] - runningMean[c]) * scale;
                    double exact = centred + bias[c];
                    double bound = epsilon * (Math.Abs(centred) + Math.Abs(exact));
                    Assert.That(Math.Abs(y[i] - exact), Is.LessThanOrEqualTo(bound), $"element {i}, channel {c}: {y[i]} against {exact}");
                }
            }
        }
    }

    [TestCase(37, false)]
    [TestCase(32, false)]
    [TestCase(37, true)]
    public void Float32_WhereXMinusMeanOverflows_TakesTheDifferenceInDouble(int spatial, bool channelsLast)
    {
        // Values up to ±3e38 against means of ∓2e38: x − μ overflows float32 for many of them, yet the output, about a
        // quarter or half of it, is finite. Those values take the difference in double; NaN and ±∞ go through as ever.
        // Planes of 37 values take the run-by-run loop, planes of 32 (whole vectors) the plane-by-plane one.
        var layout = new PlaneLayout(2, 3, spatial, channelsLast);
        var random = new Random(9);
        float[] x = KernelInputs.Uniform<float>(random, layout.Length, 3e38, 0);
        x[5] = float.NaN;
        x[17] = float.PositiveInfinity;
        x[40] = float.NegativeInfinity;
        float[] mean = [-2e38f, 2e38f, 0];
        double[] invstd = [0.25, 0.5, 1e-30];
        float[] weight = [1, 1, 2];
        float[] bias = [0.5f, -1, 2];
        var y = new float[layout.Length];
        BatchNormKernels.NormalizeFixed<float>(x, y, layout, mean, invstd, weight, bias);

        int overflows = 0;
        const double epsilon = 1.0 / (1 << 23);
        for (int i = 0; i < layout.Length; i++)
        {
            int c = layout.ChannelsLast ? i % layout.Channels : i / layout.Spatial % layout.Channels;
            double centred = ((double)x[i] - mean[c]) * invstd[c] * weight[c];
            double exact = centred + bias[c];
            overflows += float.IsFinite(x[i]) && !float.IsFinite(x[i] - mean[c]) ? 1 : 0;
            if (!double.IsFinite(exact))
            {
                Assert.That(y[i], Is.EqualTo((float)exact), $"element {i}: {x[i]}");
                continue;
            }

            Assert.That(Math.Abs(y[i] - exact), Is.LessThanOrEqualTo(epsilon * (Math.Abs(centred) + Math.Abs(exact))), $"element {i}: {x[i]}, channel {c}");
        }

        Assert.That(overflows, Is.GreaterThan(10), "the case must make x − μ overflow");
        foreach (bool streaming in new[] { false, true })
        {
            var fast = new float[layout.Length];
            double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
            BatchNormKernels.NormalizeFixedVectorized<float>(x, fast, layout, mean, invstd, weight, bias, scratch, threads: 2, streaming);
            Assert.That(fast, Is.EqualTo(y), streaming ? "streaming stores" : "plain stores");
        }
    }

    [TestCaseSource(typeof(BatchNormVectorizedKernelTests), nameof(BatchNormVectorizedKernelTests.ThreadedShapes))]
    public void Output_IsBitIdentical_ForAnyThreadCount(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        var inputs = Inputs<float>(layout, seed: 13);
        var one = Run(inputs, layout, threads: 1);
        Assert.That(one, Is.EqualTo(Reference(inputs, layout)), "1 thread against the reference");
        KernelTeams.Run(openMpTeam, () =>
        {
            foreach (int threads in new[] { 2, 3, 8 })
            {
                Assert.That(Run(inputs, layout, threads), Is.EqualTo(one), $"{threads} threads");
            }
        });
    }

    private static void CompareWithReference<T>(PlaneLayout layout, int seed)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        string where = $"N={layout.Batch} C={layout.Channels} S={layout.Spatial} {(layout.ChannelsLast ? "NHWC" : "NCHW")} {typeof(T).Name}";
        var inputs = Inputs<T>(layout, seed);
        var expected = Reference(inputs, layout);
        Assert.That(Run(inputs, layout, threads: 2), Is.EqualTo(expected), where);

        var withoutAffine = new T[layout.Length];
        BatchNormKernels.NormalizeFixed<T>(inputs.X, withoutAffine, layout, inputs.Mean, inputs.Invstd, [], []);
        var fastWithoutAffine = new T[layout.Length];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        BatchNormKernels.NormalizeFixedVectorized<T>(inputs.X, fastWithoutAffine, layout, inputs.Mean, inputs.Invstd, [], [], scratch, threads: 2);
        Assert.That(fastWithoutAffine, Is.EqualTo(withoutAffine), "without affine, " + where);
    }

    private static FixedInputs<T> Inputs<T>(PlaneLayout layout, int seed)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var random = new Random(seed);
        return new FixedInputs<T>(
            KernelInputs.Uniform<T>(random, layout.Length, 3, 1),
            KernelInputs.Uniform<T>(random, layout.Channels, 1, 1),
            KernelInputs.Uniform<double>(random, layout.Channels, 0.5, 1),
            KernelInputs.Uniform<T>(random, layout.Channels, 1, 0.5),
            KernelInputs.Uniform<T>(random, layout.Channels, 1, 0));
    }

    private static T[] Reference<T>(FixedInputs<T> inputs, PlaneLayout layout)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var y = new T[layout.Length];
        BatchNormKernels.NormalizeFixed<T>(inputs.X, y, layout, inputs.Mean, inputs.Invstd, inputs.Weight, inputs.Bias);
        return y;
    }

    private static T[] Run<T>(FixedInputs<T> inputs, PlaneLayout layout, int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        var y = new T[layout.Length];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        BatchNormKernels.NormalizeFixedVectorized<T>(inputs.X, y, layout, inputs.Mean, inputs.Invstd, inputs.Weight, inputs.Bias, scratch, threads);
        return y;
    }

    private sealed record FixedInputs<T>(T[] X, T[] Mean, double[] Invstd, T[] Weight, T[] Bias);
}
