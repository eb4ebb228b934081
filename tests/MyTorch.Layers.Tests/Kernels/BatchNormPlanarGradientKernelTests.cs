using System;
using System.Collections.Generic;
using System.Numerics;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The backward of a channels-last input that reads its NCHW output gradient where it lies: sums and dx the same bits
/// as moving the gradient first and running the channels-last kernels on the copy, for any thread count and either
/// kind of store; both within the reference's tolerance of the plain reference.
/// </summary>
[TestFixture]
public unsafe class BatchNormPlanarGradientKernelTests
{
    public static IEnumerable<TestCaseData> Shapes()
    {
        // C = 8: a period is one row. C = 9: a period is 8 rows and a sample 65, so pieces start inside samples.
        // C = 24: the loops for periods of three vector steps (float32). C = 64 and 80: with AVX-512, a period in
        // registers and period by period 16 values a step. C = 256 over 196-value planes: 16 × 16 tiles with AVX-512
        // (float32). C = 130 over 221-value planes: 114,920 values, several blocks on several threads. C = 2100: a
        // float32 period longer than a piece, so pieces that do not start on a cache line. N = 0: nothing to do.
        yield return new TestCaseData(3, 8, 64).SetArgDisplayNames("3x8x64");
        yield return new TestCaseData(2, 9, 65).SetArgDisplayNames("2x9x65");
        yield return new TestCaseData(5, 24, 100).SetArgDisplayNames("5x24x100");
        yield return new TestCaseData(3, 64, 100).SetArgDisplayNames("3x64x100");
        yield return new TestCaseData(2, 80, 67).SetArgDisplayNames("2x80x67");
        yield return new TestCaseData(2, 256, 196).SetArgDisplayNames("2x256x196");
        yield return new TestCaseData(4, 130, 221).SetArgDisplayNames("4x130x221");
        yield return new TestCaseData(2, 2100, 64).SetArgDisplayNames("2x2100x64");
        yield return new TestCaseData(0, 16, 64).SetArgDisplayNames("0x16x64");
    }

    [TestCaseSource(nameof(Shapes))]
    public void Float32_SameBitsAsMovingFirst(int batch, int channels, int spatial) =>
        CompareWithMovingFirst<float>(new PlaneLayout(batch, channels, spatial, channelsLast: true), seed: channels, outputTolerance: 2e-6);

    [TestCaseSource(nameof(Shapes))]
    public void Float64_SameBitsAsMovingFirst(int batch, int channels, int spatial) =>
        CompareWithMovingFirst<double>(new PlaneLayout(batch, channels, spatial, channelsLast: true), seed: channels + 1, outputTolerance: 1e-12);

    [Test]
    public void NchwInputs_FewChannels_ShortPlanes_LongPeriods_AndTensorsThatStayInTheCache_AreMovedFirst()
    {
        Assert.That(BatchNormKernels.ReadsPlanarGradient<float>(new PlaneLayout(4, 64, 1024, channelsLast: false)), Is.False, "NCHW input");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<float>(new PlaneLayout(8, 3, 50176, channelsLast: true)), Is.False, "3 channels");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<float>(new PlaneLayout(256, 512, 16, channelsLast: true)), Is.False, "4×4 planes");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<double>(new PlaneLayout(2, 20_001, 64, channelsLast: true)), Is.False, "a period of 1.3 MB");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<float>(new PlaneLayout(32, 256, 196, channelsLast: true)), Is.False, "32×256×14×14: 6.4 MB");
        Assert.That(BatchNormKernels.CanReadPlanarGradient<float>(new PlaneLayout(32, 256, 196, channelsLast: true)), Is.True, "32×256×14×14 could be");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<float>(new PlaneLayout(32, 64, 3136, channelsLast: true)), Is.True, "32×64×56×56");
        Assert.That(BatchNormKernels.ReadsPlanarGradient<double>(new PlaneLayout(2, 64, 128 * 64, channelsLast: true)), Is.True, "2×64×128×64 float64: 8 MiB");
    }

    private static void CompareWithMovingFirst<T>(PlaneLayout layout, int seed, double outputTolerance)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Assert.That(BatchNormKernels.CanReadPlanarGradient<T>(layout), Is.True, "the shape can take the path under test");
        var random = new Random(seed);
        int c = layout.Channels;
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] planes = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
        T[] weight = KernelInputs.Uniform<T>(random, c, 1, 0.5);
        double[] mean = KernelInputs.Uniform<double>(random, c, 0.5, 1);
        double[] invstd = KernelInputs.Uniform<double>(random, c, 0.5, 1.5);
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];

        // The channels-last kernels on a gradient moved first, and the plain reference on the same.
        var movedFirst = new T[layout.Length];
        LayoutKernels.ToOtherLayout<T>(planes, movedFirst, new PlaneLayout(layout.Batch, c, layout.Spatial, channelsLast: false));
        double[] sumDy = new double[c], sumDyXmu = new double[c];
        BatchNormKernels.BackwardReductionsVectorized<T>(x, movedFirst, layout, mean, sumDy, sumDyXmu, scratch, threads: 1);
        var gradInput = new Dictionary<bool, T[]>();
        foreach (bool batchStatistics in new[] { true, false })
        {
            gradInput[batchStatistics] = new T[layout.Length];
            BatchNormKernels.BackwardInputVectorized<T, T>(
                x, movedFirst, gradInput[batchStatistics], layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics, scratch, threads: 1, streamingStores: false);
        }

        double[] referenceSumDy = new double[c], referenceSumDyXmu = new double[c];
        BatchNormKernels.BackwardReductions<T>(x, movedFirst, layout, mean, referenceSumDy, referenceSumDyXmu);
        double tolerance = 1e-13 * Math.Max(1, layout.ValuesPerChannel) * 8;
        var referenceGradInput = new T[layout.Length];
        BatchNormKernels.BackwardInputBatchStatistics<T, T>(x, movedFirst, referenceGradInput, layout, mean, invstd, weight, referenceSumDy, referenceSumDyXmu);
        var referenceGradFixed = new T[layout.Length];
        BatchNormKernels.BackwardInputFixedStatistics<T, T>(movedFirst, referenceGradFixed, layout, invstd, weight);

        byte* block = (byte*)NativeMemory.AlignedAlloc((nuint)((layout.Length + 1) * sizeof(T)), 64);
        try
        {
            foreach (int threads in new[] { 1, 2, 3 })
            {
                double[] planarSumDy = new double[c], planarSumDyXmu = new double[c];
                BatchNormKernels.BackwardReductionsPlanarGradient<T>(x, planes, layout, mean, planarSumDy, planarSumDyXmu, scratch, threads);
                Assert.That(Bits(planarSumDy), Is.EqualTo(Bits(sumDy)), $"Σdy, {threads} threads");
                Assert.That(Bits(planarSumDyXmu), Is.EqualTo(Bits(sumDyXmu)), $"Σdy·(x − μ), {threads} threads");
                Assert.That(planarSumDy, Is.EqualTo(referenceSumDy).Within(tolerance), $"Σdy against the reference, {threads} threads");
                Assert.That(planarSumDyXmu, Is.EqualTo(referenceSumDyXmu).Within(tolerance), $"Σdy·(x − μ) against the reference, {threads} threads");

                foreach (bool batchStatistics in new[] { true, false })
                {
                    // Plain stores, then streaming ones into memory that starts on a cache line and into memory one value past it.
                    foreach ((bool streaming, int offset) in new[] { (false, 0), (true, 0), (true, 1) })
                    {
                        string where = $"{threads} threads, {(batchStatistics ? "batch" : "fixed")} statistics, {(streaming ? "streaming" : "plain")} stores, offset {offset}";
                        var planarGradInput = new Span<T>((T*)block + offset, layout.Length);
                        planarGradInput.Fill(T.NaN);
                        BatchNormKernels.BackwardInputPlanarGradient<T, T>(
                            x, planes, planarGradInput, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics, scratch, threads, streaming);
                        T[] actual = planarGradInput.ToArray();
                        Assert.That(Bits(actual), Is.EqualTo(Bits(gradInput[batchStatistics])), $"dx, {where}");
                        Assert.That(
                            ToDoubles(actual),
                            Is.EqualTo(ToDoubles(batchStatistics ? referenceGradInput : referenceGradFixed)).Within(outputTolerance),
                            $"dx against the reference, {where}");
                    }
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(block);
        }
    }

    private static byte[] Bits<T>(T[] values)
        where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static double[] ToDoubles<T>(T[] values)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> => Array.ConvertAll(values, double.CreateTruncating);
}
