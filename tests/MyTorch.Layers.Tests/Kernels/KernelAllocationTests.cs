using System;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The kernels allocate nothing on the managed heap once warmed up: scratch comes from the caller, a parallel
/// region's shared state lives on the calling thread's stack. Counted on the calling thread, which runs a share of
/// every parallel region's chunks.
/// </summary>
[TestFixture]
public class KernelAllocationTests
{
    [Test]
    public void Kernels_InSteadyState_AllocateNothing(
        [Values(false, true)] bool channelsLast,
        [Values(1, 2)] int threads,
        [Values(true, false)] bool openMpTeam)
    {
        // 3 × 40 × 700 = 84,000 values: above the parallel threshold, several chunks.
        var layout = new PlaneLayout(3, 40, 700, channelsLast);
        var random = new Random(5);
        float[] x = KernelInputs.Uniform<float>(random, layout.Length, 3, 1);
        float[] dy = KernelInputs.Uniform<float>(random, layout.Length, 1, 0);
        float[] weight = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0.5);
        float[] bias = KernelInputs.Uniform<float>(random, layout.Channels, 1, 0);
        float[] output = new float[layout.Length];
        float[] mask = KernelInputs.Uniform<float>(random, layout.Batch * layout.Channels, 1, 0);
        int c = layout.Channels;
        double[] mean = new double[c], variance = new double[c], invstd = new double[c], sumDy = new double[c], sumDyXmu = new double[c];
        double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
        var generator = MersenneTwisterTests.Seeded(8);

        // A mask of 3 × 2,800 values, drawn while it is applied: 3 × 2,800 × 30 values.
        var drawnLayout = new PlaneLayout(3, 2800, 30, channelsLast);
        float[] drawnX = KernelInputs.Uniform<float>(random, drawnLayout.Length, 1, 0);
        float[] drawnY = new float[drawnLayout.Length];
        float[] drawnMask = new float[drawnLayout.Batch * drawnLayout.Channels];

        void Calls()
        {
            BatchNormKernels.BatchStatisticsVectorized<float>(x, layout, mean, variance, scratch, threads);
            BatchNormKernels.InverseStandardDeviation(variance, 1e-5, invstd);
            BatchNormKernels.NormalizeVectorized<float, float>(x, output, layout, mean, invstd, weight, bias, scratch, threads);
            BatchNormKernels.BackwardReductionsVectorized<float>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads);
            BatchNormKernels.BackwardInputVectorized<float, float>(x, dy, output, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads);
            ChannelDropoutKernels.ApplyMask<float>(x, output, layout, mask, threads);
            ChannelDropoutKernels.DrawMask<float>(ref generator, mask, 0.5);
            ChannelDropoutKernels.DrawAndApplyMask<float>(drawnX, drawnY, drawnLayout, drawnMask, 0.5, ref generator, threads);
            LayoutKernels.ToOtherLayout<float>(x, output, layout, threads);
            if (channelsLast)
            {
                // dy read as NCHW planes under the channels-last x.
                BatchNormKernels.BackwardReductionsPlanarGradient<float>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads);
                BatchNormKernels.BackwardInputPlanarGradient<float, float>(x, dy, output, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads);
            }
        }

        // The runtime itself may allocate on this thread now and then (once, about 1 KB, was seen in a full test run),
        // so one of three windows of five rounds must allocate nothing; a kernel that allocates per call fails all three.
        KernelTeams.Run(openMpTeam, () =>
        {
            Calls();
            long[] windows = new long[3];
            for (int w = 0; w < windows.Length; w++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                for (int i = 0; i < 5; i++)
                {
                    Calls();
                }

                windows[w] = GC.GetAllocatedBytesForCurrentThread() - before;
                if (windows[w] == 0)
                {
                    return;
                }
            }

            Assert.Fail($"bytes allocated on the managed heap by each of three windows of five rounds of kernel calls: {string.Join(", ", windows)}");
        });
    }
}
