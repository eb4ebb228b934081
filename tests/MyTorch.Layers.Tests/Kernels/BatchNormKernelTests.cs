using System;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The BatchNorm2d kernels on small buffers whose answers are known by hand, by layout symmetry, or by finite
/// differences: independent of TorchSharp.
/// </summary>
[TestFixture]
public class BatchNormKernelTests
{
    [Test]
    public void BatchStatistics_OfKnownValues_AreExact()
    {
        // N = 2, C = 2, S = 2, NCHW: channel 0 holds 1, 2, 3, 4; channel 1 holds 10, 10, 10, 14.
        double[] x = [1, 2, 10, 10, 3, 4, 10, 14];
        var layout = new PlaneLayout(2, 2, 2, channelsLast: false);
        var mean = new double[2];
        var variance = new double[2];
        BatchNormKernels.BatchStatistics<double>(x, layout, mean, variance);
        Assert.That(mean, Is.EqualTo(new[] { 2.5, 11.0 }));
        Assert.That(variance, Is.EqualTo(new[] { 1.25, 3.0 }));
    }

    [TestCase(1, 1, 5)]
    [TestCase(3, 4, 1)]
    [TestCase(2, 3, 7)]
    [TestCase(5, 17, 9)]
    public void EveryKernel_GivesTheSameResult_InBothLayouts(int batch, int channels, int spatial)
    {
        var random = new Random(batch * 1000 + channels * 10 + spatial);
        var nchw = new PlaneLayout(batch, channels, spatial, channelsLast: false);
        var nhwc = new PlaneLayout(batch, channels, spatial, channelsLast: true);
        float[] x = KernelInputs.Uniform<float>(random, nchw.Length, 3, 1);
        float[] dy = KernelInputs.Uniform<float>(random, nchw.Length, 1, 0);
        float[] weight = KernelInputs.Uniform<float>(random, channels, 1, 1);
        float[] bias = KernelInputs.Uniform<float>(random, channels, 1, 0);

        var a = Run(x, dy, weight, bias, nchw);
        var b = Run(ToChannelsLast(x, nchw), ToChannelsLast(dy, nchw), weight, bias, nhwc);
        Assert.That(b.Mean, Is.EqualTo(a.Mean).Within(1e-12));
        Assert.That(b.Variance, Is.EqualTo(a.Variance).Within(1e-12));
        Assert.That(b.SumDy, Is.EqualTo(a.SumDy).Within(1e-9));
        Assert.That(b.SumDyXmu, Is.EqualTo(a.SumDyXmu).Within(1e-9));
        Assert.That(b.Output, Is.EqualTo(ToChannelsLast(a.Output, nchw)).Within(1e-6));
        Assert.That(b.GradInput, Is.EqualTo(ToChannelsLast(a.GradInput, nchw)).Within(1e-6));
    }

    [Test]
    public void Normalize_MayWriteOverItsInput()
    {
        var layout = new PlaneLayout(2, 3, 4, channelsLast: true);
        double[] x = KernelInputs.Uniform<double>(new Random(1), layout.Length, 2, 1);
        double[] separate = new double[x.Length];
        double[] mean = [0.5, -1, 2];
        double[] invstd = [1, 2, 0.25];
        double[] weight = [1, -1, 3];
        double[] bias = [0, 1, -2];
        BatchNormKernels.Normalize<double, double>(x, separate, layout, mean, invstd, weight, bias);
        BatchNormKernels.Normalize<double, double>(x, x, layout, mean, invstd, weight, bias);
        Assert.That(x, Is.EqualTo(separate));
    }

    [Test]
    public void UpdateRunningStatistics_BlendsWithTheUnbiasedVariance()
    {
        float[] runningMean = [1, 2];
        float[] runningVar = [3, 4];
        BatchNormKernels.UpdateRunningStatistics<float>(runningMean, runningVar, [5, 6], [8, 12], valuesPerChannel: 4, momentum: 0.25);
        Assert.That(runningMean, Is.EqualTo(new[] { 0.75f * 1 + 0.25f * 5, 0.75f * 2 + 0.25f * 6 }));
        Assert.That(runningVar, Is.EqualTo(new[] { 0.75f * 3 + 0.25f * 8 * 4 / 3f, 0.75f * 4 + 0.25f * 12 * 4 / 3f }).Within(1e-6));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void BackwardWithBatchStatistics_MatchesCentralFiniteDifferences(bool channelsLast)
    {
        // L(x) = Σ y(x) · g for a fixed g, so dL/dx is the input gradient for dy = g.
        var layout = new PlaneLayout(3, 2, 4, channelsLast);
        var random = new Random(5);
        double[] x = KernelInputs.Uniform<double>(random, layout.Length, 2, 0.5);
        double[] g = KernelInputs.Uniform<double>(random, layout.Length, 1, 0);
        double[] weight = [1.5, -0.75];
        double[] bias = [0.25, 2];
        const double Eps = 1e-3;

        var analytic = Run(x, g, weight, bias, layout, Eps).GradInput;
        const double H = 1e-6;
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + H;
            double plus = Loss(x, g, weight, bias, layout, Eps);
            x[i] = keep - H;
            double minus = Loss(x, g, weight, bias, layout, Eps);
            x[i] = keep;
            Assert.That(analytic[i], Is.EqualTo((plus - minus) / (2 * H)).Within(1e-6), $"element {i}");
        }
    }

    [Test]
    public void BackwardWithFixedStatistics_ScalesByInvstdAndWeight()
    {
        var layout = new PlaneLayout(2, 2, 3, channelsLast: false);
        double[] dy = KernelInputs.Uniform<double>(new Random(9), layout.Length, 1, 0);
        double[] dx = new double[dy.Length];
        BatchNormKernels.BackwardInputFixedStatistics<double, double>(dy, dx, layout, [2, 0.5], [3, -1]);
        for (int i = 0; i < dy.Length; i++)
        {
            int c = (i / layout.Spatial) % layout.Channels;
            Assert.That(dx[i], Is.EqualTo(dy[i] * (c == 0 ? 6 : -0.5)));
        }
    }

    private static double Loss(double[] x, double[] g, double[] weight, double[] bias, PlaneLayout layout, double eps)
    {
        var r = Run(x, g, weight, bias, layout, eps);
        double loss = 0;
        for (int i = 0; i < g.Length; i++)
        {
            loss += r.Output[i] * g[i];
        }

        return loss;
    }

    private static Result<T> Run<T>(T[] x, T[] dy, T[] weight, T[] bias, PlaneLayout layout, double eps = 1e-5)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int c = layout.Channels;
        var r = new Result<T>(new double[c], new double[c], new double[c], new double[c], new T[x.Length], new T[x.Length]);
        var invstd = new double[c];
        BatchNormKernels.BatchStatistics<T>(x, layout, r.Mean, r.Variance);
        BatchNormKernels.InverseStandardDeviation(r.Variance, eps, invstd);
        BatchNormKernels.Normalize<T, T>(x, r.Output, layout, r.Mean, invstd, weight, bias);
        BatchNormKernels.BackwardReductions<T>(x, dy, layout, r.Mean, r.SumDy, r.SumDyXmu);
        BatchNormKernels.BackwardInputBatchStatistics<T, T>(x, dy, r.GradInput, layout, r.Mean, invstd, weight, r.SumDy, r.SumDyXmu);
        return r;
    }

    private static T[] ToChannelsLast<T>(T[] nchw, PlaneLayout layout)
    {
        var result = new T[nchw.Length];
        for (int n = 0; n < layout.Batch; n++)
        {
            for (int c = 0; c < layout.Channels; c++)
            {
                for (int s = 0; s < layout.Spatial; s++)
                {
                    result[(n * layout.Spatial + s) * layout.Channels + c] = nchw[(n * layout.Channels + c) * layout.Spatial + s];
                }
            }
        }

        return result;
    }

    private sealed record Result<T>(double[] Mean, double[] Variance, double[] SumDy, double[] SumDyXmu, T[] Output, T[] GradInput);
}
