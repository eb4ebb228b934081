using System;
using System.Collections.Generic;
using System.Numerics;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The block-of-channels training kernels against the plane-wise vectorised ones, which the reference holds: the same
/// bits for every tail, both dtypes, any block size and thread count, streaming stores or not, and in place; and the
/// rule that chooses the block size.
/// </summary>
[TestFixture]
public class BatchNorm2dChannelwiseKernelTests
{
    private static readonly int[] Spatials = [1, 2, 3, 7, 8, 9, 16, 17, 31, 49, 64, 65];

    public static IEnumerable<TestCaseData> Shapes()
    {
        foreach (int channels in new[] { 1, 3, 8, 17 })
        {
            foreach (int batch in new[] { 1, 3 })
            {
                yield return new TestCaseData(batch, channels).SetArgDisplayNames($"N={batch}", $"C={channels}");
            }
        }
    }

    [TestCaseSource(nameof(Shapes))]
    public void Float32_SameBitsAsThePlaneWiseKernels(int batch, int channels)
    {
        foreach (int spatial in Spatials)
        {
            Compare<float>(new PlaneLayout(batch, channels, spatial, channelsLast: false), seed: spatial);
        }
    }

    [TestCaseSource(nameof(Shapes))]
    public void Float64_SameBitsAsThePlaneWiseKernels(int batch, int channels)
    {
        foreach (int spatial in Spatials)
        {
            Compare<double>(new PlaneLayout(batch, channels, spatial, channelsLast: false), seed: spatial);
        }
    }

    [Test]
    public void Threaded_SameBitsAsThePlaneWiseKernels()
    {
        // Above the parallel threshold, with an odd plane size, on 1, 2 and 5 threads.
        Compare<float>(new PlaneLayout(6, 12, 1001, channelsLast: false), seed: 3, threadCounts: [1, 2, 5]);
    }

    [Test]
    public void ChannelwiseBlock_GivesRunsOfTheTarget_WithinTheCacheAndThreadLimits()
    {
        // The benchmark shapes on 2 threads: planes of 12.5 KB, 4 KB, 784 B, 200 KB (only 3 channels) and 64 B.
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(32, 64, 56 * 56), threads: 2), Is.EqualTo(2), "56×56: 25 KB runs, 0.8 MB blocks");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(128, 32, 32 * 32), threads: 2), Is.EqualTo(2), "32×32: limited by the 1 MiB block");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(32, 256, 14 * 14), threads: 2), Is.EqualTo(21), "14×14: 16 KB runs");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(8, 3, 224 * 224), threads: 2), Is.EqualTo(0), "3 channels: no block for 2 threads × 4");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(256, 512, 4 * 4), threads: 2), Is.EqualTo(64), "4×4: limited by the 1 MiB block and 4 blocks per thread");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(1, 4096, 1), threads: 1), Is.EqualTo(BatchNorm2dKernels.ChannelwiseMaximumBlockChannels), "1×1 planes: the channel cap");
        Assert.That(BatchNorm2dKernels.ChannelwiseBlock<float>(Nchw(64, 64, 112 * 112), threads: 2), Is.EqualTo(1), "112×112: one channel of 3 MB, over the block bytes but the unit of work");
    }

    [Test]
    public void UsesChannelwise_OnlyForNchw_WithRunsOfAPage_AndEnoughBlocksPerThread()
    {
        int perThread = BatchNorm2dKernels.ChannelwiseBlocksPerThread;
        int page = BatchNorm2dKernels.ChannelwiseMinimumRunBytes;
        var large = Nchw(64, 2 * perThread, page / sizeof(float));
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(large, threads: 2), Is.True);
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(large, threads: 3), Is.False, "fewer channels than threads × " + perThread);
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(64, 2 * perThread, (page / sizeof(float)) - 1), threads: 2), Is.False, "one channel per block and planes under a page");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(2, 16 * perThread, page / sizeof(float) / 4), threads: 2), Is.True, "quarter-page planes, four to a block");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(2048, 16 * perThread, page / sizeof(float) / 4), threads: 2), Is.False, "quarter-page planes whose channel alone exceeds the block bytes");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(64, 64, 112 * 112), threads: 2), Is.True, "large planes whose channel alone exceeds the block bytes");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<double>(Nchw(64, 2 * perThread, page / sizeof(double)), threads: 2), Is.True, "float64 planes of a page");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(new PlaneLayout(64, 2 * perThread, page / sizeof(float), channelsLast: true), threads: 2), Is.False, "channels-last");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(0, 2 * perThread, page / sizeof(float)), threads: 2), Is.False, "empty");
        Assert.That(BatchNorm2dKernels.UsesChannelwise<float>(Nchw(1, perThread, page / sizeof(float)), threads: 8), Is.True, "a small input runs on one thread");
    }

    private static PlaneLayout Nchw(int batch, int channels, int spatial) => new(batch, channels, spatial, channelsLast: false);

    private static void Compare<T>(PlaneLayout layout, int seed, int[]? threadCounts = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        string where = $"N={layout.Batch} C={layout.Channels} S={layout.Spatial} {typeof(T).Name}";
        var random = new Random(seed);
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] dy = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
        T[] weight = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0.5);
        T[] bias = KernelInputs.Uniform<T>(random, layout.Channels, 1, 0);
        int c = layout.Channels;
        const double eps = 1e-5;

        // The plane-wise kernels, one after another.
        double[] scratch = new double[BatchNorm2dKernels.VectorizedScratchLength(layout)];
        double[] mean = new double[c], variance = new double[c], invstd = new double[c];
        BatchNorm2dKernels.BatchStatisticsVectorized<T>(x, layout, mean, variance, scratch, threads: 1);
        BatchNorm2dKernels.InverseStandardDeviation(variance, eps, invstd);
        var output = new T[x.Length];
        BatchNorm2dKernels.NormalizeVectorized<T>(x, output, layout, mean, invstd, weight, bias, scratch, threads: 1);
        double[] sumDy = new double[c], sumDyXmu = new double[c];
        BatchNorm2dKernels.BackwardReductionsVectorized<T>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads: 1);
        var gradBatch = new T[x.Length];
        BatchNorm2dKernels.BackwardInputVectorized<T>(x, dy, gradBatch, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads: 1);
        var gradFixed = new T[x.Length];
        BatchNorm2dKernels.BackwardInputVectorized<T>(x, dy, gradFixed, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: false, scratch, threads: 1);

        int[] blocks = layout.Channels == 1 ? [1] : [1, 2, 3, layout.Channels];
        foreach (int threads in threadCounts ?? [2])
        {
            foreach (bool streaming in new[] { false, true })
            {
                foreach (int block in blocks)
                {
                    CompareChannelwise(threads, streaming, block);
                }
            }
        }

        void CompareChannelwise(int threads, bool streaming, int block)
        {
            string how = $"{where}, {threads} threads, blocks of {block} channels{(streaming ? ", streaming stores" : "")}";
            double[] m = new double[c], v = new double[c], i = new double[c];
            var y = new T[x.Length];
            BatchNorm2dKernels.TrainingForwardChannelwise<T>(x, y, layout, weight, bias, eps, m, v, i, threads, streaming, block);
            Assert.That(m, Is.EqualTo(mean), "mean, " + how);
            Assert.That(v, Is.EqualTo(variance), "variance, " + how);
            Assert.That(i, Is.EqualTo(invstd), "invstd, " + how);
            Assert.That(y, Is.EqualTo(output), "output, " + how);

            foreach (bool batchStatistics in new[] { true, false })
            {
                double[] s = new double[c], p = new double[c];
                var dx = new T[x.Length];
                BatchNorm2dKernels.BackwardChannelwise<T>(x, dy, dx, layout, mean, invstd, weight, batchStatistics, s, p, threads, streaming, block);
                Assert.That(s, Is.EqualTo(sumDy), "Σdy, " + how);
                Assert.That(p, Is.EqualTo(sumDyXmu), "Σdy·(x − μ), " + how);
                Assert.That(dx, Is.EqualTo(batchStatistics ? gradBatch : gradFixed), $"dx with {(batchStatistics ? "batch" : "fixed")} statistics, " + how);
            }

            // In place, and without affine parameters.
            var inPlace = (T[])x.Clone();
            BatchNorm2dKernels.TrainingForwardChannelwise<T>(inPlace, inPlace, layout, weight, bias, eps, m, v, i, threads, streaming, block);
            Assert.That(inPlace, Is.EqualTo(output), "in-place output, " + how);
            var gradInPlace = (T[])dy.Clone();
            BatchNorm2dKernels.BackwardChannelwise<T>(x, gradInPlace, gradInPlace, layout, mean, invstd, weight, batchStatistics: true, new double[c], new double[c], threads, streaming, block);
            Assert.That(gradInPlace, Is.EqualTo(gradBatch), "in-place dx, " + how);

            var plain = new T[x.Length];
            BatchNorm2dKernels.NormalizeVectorized<T>(x, plain, layout, mean, invstd, [], [], scratch, threads: 1);
            var noAffine = new T[x.Length];
            BatchNorm2dKernels.TrainingForwardChannelwise<T>(x, noAffine, layout, [], [], eps, m, v, i, threads, streaming, block);
            Assert.That(noAffine, Is.EqualTo(plain), "output without weight and bias, " + how);
        }
    }
}
