using System;
using System.Collections.Generic;
using System.Numerics;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The backward sums of a channels-last input that move its NCHW output gradient into channels-last memory on the
/// way: the same bits as moving the gradient first and summing it after, for any thread count; the copy bit for bit
/// what the layout kernels make; the sums within the reference's tolerance of the plain reference.
/// </summary>
[TestFixture]
public class BatchNorm2dPlanarGradientKernelTests
{
    public static IEnumerable<TestCaseData> Shapes()
    {
        // C = 8: a period is one row. C = 9: a period is 8 rows and a sample 65, so pieces start inside samples.
        // C = 24: the loops for periods of three vector steps (float32). C = 130 over 221-value planes: 114,920 values,
        // several blocks on several threads. C = 2100: a float32 period longer than a piece. N = 0: nothing to sum.
        yield return new TestCaseData(3, 8, 64).SetArgDisplayNames("3x8x64");
        yield return new TestCaseData(2, 9, 65).SetArgDisplayNames("2x9x65");
        yield return new TestCaseData(5, 24, 100).SetArgDisplayNames("5x24x100");
        yield return new TestCaseData(4, 130, 221).SetArgDisplayNames("4x130x221");
        yield return new TestCaseData(2, 2100, 64).SetArgDisplayNames("2x2100x64");
        yield return new TestCaseData(0, 16, 64).SetArgDisplayNames("0x16x64");
    }

    [TestCaseSource(nameof(Shapes))]
    public void Float32_SameBitsAsMovingFirst(int batch, int channels, int spatial) =>
        CompareWithMovingFirst<float>(new PlaneLayout(batch, channels, spatial, channelsLast: true), seed: channels, referenceTolerance: 1e-13);

    [TestCaseSource(nameof(Shapes))]
    public void Float64_SameBitsAsMovingFirst(int batch, int channels, int spatial) =>
        CompareWithMovingFirst<double>(new PlaneLayout(batch, channels, spatial, channelsLast: true), seed: channels + 1, referenceTolerance: 1e-13);

    [Test]
    public void NchwInputs_FewChannels_ShortPlanes_LongPeriods_AndTensorsThatStayInTheCache_AreMovedFirst()
    {
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<float>(new PlaneLayout(4, 64, 1024, channelsLast: false)), Is.False, "NCHW input");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<float>(new PlaneLayout(8, 3, 50176, channelsLast: true)), Is.False, "3 channels");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<float>(new PlaneLayout(256, 512, 16, channelsLast: true)), Is.False, "4×4 planes");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<double>(new PlaneLayout(2, 20_001, 64, channelsLast: true)), Is.False, "a period of 1.3 MB");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<float>(new PlaneLayout(32, 256, 196, channelsLast: true)), Is.False, "32×256×14×14: 6.4 MB");
        Assert.That(BatchNorm2dKernels.CanMovePlanarGradient<float>(new PlaneLayout(32, 256, 196, channelsLast: true)), Is.True, "32×256×14×14 could be");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<float>(new PlaneLayout(32, 64, 3136, channelsLast: true)), Is.True, "32×64×56×56");
        Assert.That(BatchNorm2dKernels.MovesPlanarGradient<double>(new PlaneLayout(2, 64, 128 * 64, channelsLast: true)), Is.True, "2×64×128×64 float64: 8 MiB");
    }

    private static void CompareWithMovingFirst<T>(PlaneLayout layout, int seed, double referenceTolerance)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Assert.That(BatchNorm2dKernels.CanMovePlanarGradient<T>(layout), Is.True, "the shape can take the path under test");
        var random = new Random(seed);
        int c = layout.Channels;
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
        T[] planes = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
        double[] mean = KernelInputs.Uniform<double>(random, c, 0.5, 1);
        double[] scratch = new double[BatchNorm2dKernels.VectorizedScratchLength(layout)];

        var movedFirst = new T[layout.Length];
        LayoutKernels.ToOtherLayout<T>(planes, movedFirst, new PlaneLayout(layout.Batch, c, layout.Spatial, channelsLast: false));
        double[] sumDy = new double[c], sumDyXmu = new double[c];
        BatchNorm2dKernels.BackwardReductionsVectorized<T>(x, movedFirst, layout, mean, sumDy, sumDyXmu, scratch, threads: 1);

        double[] referenceSumDy = new double[c], referenceSumDyXmu = new double[c];
        BatchNorm2dKernels.BackwardReductions<T>(x, movedFirst, layout, mean, referenceSumDy, referenceSumDyXmu);
        double tolerance = referenceTolerance * Math.Max(1, layout.ValuesPerChannel) * 8;
        Assert.That(sumDy, Is.EqualTo(referenceSumDy).Within(tolerance), "Σdy against the reference");
        Assert.That(sumDyXmu, Is.EqualTo(referenceSumDyXmu).Within(tolerance), "Σdy·(x − μ) against the reference");

        foreach (int threads in new[] { 1, 2, 3 })
        {
            var moved = new T[layout.Length];
            moved.AsSpan().Fill(T.NaN);
            double[] movingSumDy = new double[c], movingSumDyXmu = new double[c];
            BatchNorm2dKernels.BackwardReductionsMovingGradient<T>(x, planes, moved, layout, mean, movingSumDy, movingSumDyXmu, scratch, threads);
            Assert.That(Bits(movingSumDy), Is.EqualTo(Bits(sumDy)), $"Σdy, {threads} threads");
            Assert.That(Bits(movingSumDyXmu), Is.EqualTo(Bits(sumDyXmu)), $"Σdy·(x − μ), {threads} threads");
            Assert.That(Bits(moved), Is.EqualTo(Bits(movedFirst)), $"the moved gradient, {threads} threads");
        }
    }

    private static byte[] Bits<T>(T[] values)
        where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
