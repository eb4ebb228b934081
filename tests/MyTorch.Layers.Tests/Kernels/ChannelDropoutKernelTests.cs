using System;
using System.Linq;
using System.Numerics;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>ChannelDropoutKernels on spans small enough to check by hand, in both layouts, including the vector paths' tails.</summary>
[TestFixture]
public class ChannelDropoutKernelTests
{
    [Test]
    public void ScaleMask_DividesInTheElementType()
    {
        float[] single = [1, 0, 1];
        ChannelDropoutKernels.ScaleMask<float>(single, 1 - 0.1);
        Assert.That(single, Is.EqualTo(new[] { 1f / 0.9f, 0f, 1f / 0.9f }));
        Assert.That(BitConverter.SingleToInt32Bits(single[0]), Is.EqualTo(BitConverter.SingleToInt32Bits(1.1111111640930176f)), "float32: 1f / (float)0.9");

        // p = 0.04: rounding 1 / 0.96 from double would give 1.0416666269302368f, one ulp below libtorch's value.
        float[] rounding = [1];
        ChannelDropoutKernels.ScaleMask<float>(rounding, 1 - 0.04);
        Assert.That(rounding[0], Is.EqualTo(1.0416667461395264f), "float32: 1f / (float)0.96");

        double[] wide = [0, 1];
        ChannelDropoutKernels.ScaleMask<double>(wide, 1 - 0.9);
        Assert.That(wide[1], Is.EqualTo(10.000000000000002), "float64: 1 / (1 − 0.9), and 1 − 0.9 is not 0.1 in binary");
        Assert.That(BitConverter.DoubleToInt64Bits(wide[0]), Is.Zero, "a dropped channel's factor is +0");

        double[] kept = [1, 1];
        ChannelDropoutKernels.ScaleMask<double>(kept, 1);
        Assert.That(kept, Is.EqualTo(new[] { 1.0, 1.0 }), "p = 0 scales by 1");
    }

    [Test]
    public void ApplyMask_Nchw_ScalesEachPlaneByItsChannelsFactor()
    {
        // N = 2, C = 3, S = 2: x[n, c, s] = 100n + 10c + s.
        var layout = new PlaneLayout(2, 3, 2, channelsLast: false);
        double[] x = [0, 1, 10, 11, 20, 21, 100, 101, 110, 111, 120, 121];
        double[] mask = [2, 0, 2, 0, 0, 2];
        var y = new double[12];
        ChannelDropoutKernels.ApplyMask<double>(x, y, layout, mask);
        Assert.That(y, Is.EqualTo(new double[] { 0, 2, 0, 0, 40, 42, 0, 0, 0, 0, 240, 242 }));
    }

    [Test]
    public void ApplyMask_ChannelsLast_ScalesEachValueByItsChannelsFactor()
    {
        // The same tensor as above in NHWC memory: x[n, s, c] = 100n + 10c + s.
        var layout = new PlaneLayout(2, 3, 2, channelsLast: true);
        double[] x = [0, 10, 20, 1, 11, 21, 100, 110, 120, 101, 111, 121];
        double[] mask = [2, 0, 2, 0, 0, 2];
        var y = new double[12];
        ChannelDropoutKernels.ApplyMask<double>(x, y, layout, mask);
        Assert.That(y, Is.EqualTo(new double[] { 0, 0, 40, 2, 0, 42, 0, 0, 240, 0, 0, 242 }));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ApplyMask_InPlace_GivesWhatItGivesOutOfPlace(bool channelsLast)
    {
        var layout = new PlaneLayout(3, 4, 5, channelsLast);
        var random = new Random(5);
        float[] x = Enumerable.Range(0, layout.Length).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        float[] mask = [0, 1.25f, 1.25f, 0, 1.25f, 0, 0, 1.25f, 1.25f, 1.25f, 0, 1.25f];
        var outOfPlace = new float[x.Length];
        ChannelDropoutKernels.ApplyMask<float>(x, outOfPlace, layout, mask);
        ChannelDropoutKernels.ApplyMask<float>(x, x, layout, mask);
        Assert.That(x, Is.EqualTo(outOfPlace));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ZeroMask_IsLibtorchsPOfOne_XTimesZero(bool channelsLast)
    {
        var layout = new PlaneLayout(1, 2, 4, channelsLast);
        float[] x = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, -2f, 3f, -0f, 0f, float.Epsilon];
        var y = new float[8];
        ChannelDropoutKernels.ApplyMask<float>(x, y, layout, new float[2]);
        Assert.That(y.Take(3).All(float.IsNaN), Is.True, "NaN · 0 and ±∞ · 0 are NaN");
        Assert.That(y.Skip(3).Select(BitConverter.SingleToInt32Bits), Is.EqualTo(new[] { int.MinValue, 0, int.MinValue, 0, 0 }), "−2 → −0.0, 3 → +0.0, −0 → −0.0, +0 and ε → +0.0");

        ChannelDropoutKernels.ApplyMask<float>(x, x, layout, new float[2]);
        Assert.That(x.Select(BitConverter.SingleToInt32Bits).Skip(3), Is.EqualTo(y.Select(BitConverter.SingleToInt32Bits).Skip(3)), "in place");
        Assert.That(x.Take(3).All(float.IsNaN), Is.True, "in place");
    }

    [Test]
    public void ApplyMask_EveryPlaneLengthUpToThreeVectors_MatchesAScalarReference(
        [Values(false, true)] bool channelsLast)
    {
        // Covers the vector loop and every tail length, in both the per-plane (NCHW) and per-row (NHWC) paths.
        int width = Vector<double>.Count;
        var random = new Random(11);
        for (int size = 0; size <= (3 * width) + 1; size++)
        {
            // NCHW: S = size values per plane; NHWC: C = size values per row.
            var layout = channelsLast ? new PlaneLayout(2, size, 3, true) : new PlaneLayout(2, 3, size, false);
            double[] x = Enumerable.Range(0, layout.Length).Select(_ => random.NextDouble() - 0.5).ToArray();
            double[] mask = Enumerable.Range(0, layout.Batch * layout.Channels).Select(i => i % 3 == 0 ? 0 : 1 / 0.7).ToArray();
            var y = new double[x.Length];
            ChannelDropoutKernels.ApplyMask<double>(x, y, layout, mask);
            var dx = new double[x.Length];
            ChannelDropoutKernels.Backward<double>(x, dx, layout, mask);
            for (int n = 0; n < layout.Batch; n++)
            {
                for (int c = 0; c < layout.Channels; c++)
                {
                    for (int s = 0; s < layout.Spatial; s++)
                    {
                        int i = (n * layout.BatchStride) + (c * layout.ChannelStride) + (s * layout.SpatialStride);
                        double expected = x[i] * mask[(n * layout.Channels) + c];
                        Assert.That(y[i], Is.EqualTo(expected), $"forward, size {size}, (n, c, s) = ({n}, {c}, {s})");
                        Assert.That(dx[i], Is.EqualTo(expected), $"backward, size {size}, (n, c, s) = ({n}, {c}, {s})");
                    }
                }
            }
        }
    }

    [Test]
    public void ApplyMask_PlanesAsOneRun_EveryPlaneLengthAndStart_IsEveryProductExactly(
        [Values(false, true)] bool streamingStores,
        [Values(false, true)] bool inPlace)
    {
        // NCHW planes of at least a vector are taken a chunk at a time as one run, a vector that reaches across a plane
        // boundary taking its lanes' factors from both planes; with streaming stores the run starts at the first whole
        // cache line. Every plane length from one vector to three, from every start within a cache line.
        int width = Vector<float>.Count;
        var random = new Random(12);
        for (int size = width; size <= (3 * width) + 1; size++)
        {
            for (int start = 0; start < 16; start++)
            {
                var layout = new PlaneLayout(3, 5, size, channelsLast: false);
                float[] buffer = new float[start + layout.Length];
                for (int i = 0; i < buffer.Length; i++)
                {
                    buffer[i] = (float)(random.NextDouble() - 0.5);
                }

                float[] x = buffer[start..];
                float[] mask = Enumerable.Range(0, layout.Batch * layout.Channels).Select(i => i % 3 == 0 ? 0f : 1 / 0.7f).ToArray();
                float[] output = inPlace ? buffer : new float[buffer.Length];
                ChannelDropoutKernels.ApplyMask<float>(inPlace ? output.AsSpan(start) : x, output.AsSpan(start), layout, mask, streamingStores: streamingStores);
                for (int i = 0; i < layout.Length; i++)
                {
                    float expected = x[i] * mask[i / size];
                    if (BitConverter.SingleToInt32Bits(output[start + i]) != BitConverter.SingleToInt32Bits(expected))
                    {
                        Assert.Fail($"size {size}, start {start}: element {i} is {output[start + i]}, expected {expected}");
                    }
                }
            }
        }
    }

    [Test]
    public void Backward_IsGradOutputTimesMask()
    {
        var layout = new PlaneLayout(1, 2, 3, channelsLast: false);
        float[] dy = [1, -2, 3, 4, 5, -6];
        var dx = new float[6];
        ChannelDropoutKernels.Backward<float>(dy, dx, layout, [0f, 2f]);
        Assert.That(dx, Is.EqualTo(new[] { 0f, -0f, 0f, 8f, 10f, -12f }));
        Assert.That(BitConverter.SingleToInt32Bits(dx[1]), Is.EqualTo(int.MinValue), "−2 · 0 = −0.0, as libtorch's dy · 0");
    }

    [TestCase(false, 3001, false)]
    [TestCase(false, 3008, false)]
    [TestCase(true, 3001, false)]
    [TestCase(false, 3001, true)]
    [TestCase(false, 3008, true)]
    [TestCase(true, 3001, true)]
    public void ApplyMask_OnSeveralThreads_IsEveryProductExactly(bool channelsLast, int spatial, bool openMpTeam)
    {
        // Above the parallel threshold, several chunks long: each element is still x · its channel's factor, exactly.
        // NCHW chunks are one run whether the planes are whole vectors (3008) or not (3001).
        var layout = new PlaneLayout(6, 7, spatial, channelsLast);
        var random = new Random(4);
        float[] x = new float[layout.Length];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = (float)((random.NextDouble() * 4) - 2);
        }

        float[] mask = new float[layout.Batch * layout.Channels];
        for (int i = 0; i < mask.Length; i++)
        {
            mask[i] = random.Next(2) * 2f;
        }

        foreach (int threads in new[] { 1, 2, 5 })
        {
            var y = new float[x.Length];
            KernelTeams.Run(openMpTeam, () => ChannelDropoutKernels.ApplyMask<float>(x, y, layout, mask, threads));
            for (int n = 0; n < layout.Batch; n++)
            {
                for (int c = 0; c < layout.Channels; c++)
                {
                    for (int s = 0; s < layout.Spatial; s++)
                    {
                        int i = (n * layout.BatchStride) + (c * layout.ChannelStride) + (s * layout.SpatialStride);
                        if (y[i] != x[i] * mask[(n * layout.Channels) + c])
                        {
                            Assert.Fail($"{threads} threads: element (n, c, s) = ({n}, {c}, {s}) is {y[i]}, expected {x[i] * mask[(n * layout.Channels) + c]}");
                        }
                    }
                }
            }
        }
    }
}
