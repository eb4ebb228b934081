using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The block's vectorised kernels against their reference, bit for bit: every plane or row length from 1 to 70 (every
/// vector tail), both layouts, with and without ReLU and mask, on 1 and 3 threads; values that make y exactly 0, −0.0
/// and NaN included.
/// </summary>
[TestFixture]
public class BlockKernelTests
{
    [Test]
    public void RectifyAndScale_Vectorized_MatchesReference_BitForBit([Values(false, true)] bool channelsLast, [Values(false, true)] bool rectify, [Values(false, true)] bool masked)
    {
        var random = new Random(5);
        for (int length = 1; length <= 70; length++)
        {
            var layout = channelsLast ? new PlaneLayout(3, length, 2, true) : new PlaneLayout(3, 2, length, false);
            float[] y = Values(random, layout.Length);
            float[] mask = masked ? Mask(random, layout.Batch * layout.Channels) : [];
            float[] expected = (float[])y.Clone();
            BlockKernels.RectifyAndScale<float>(expected, layout, mask, rectify);
            foreach (int threads in new[] { 1, 3 })
            {
                float[] actual = (float[])y.Clone();
                BlockKernels.RectifyAndScaleVectorized<float>(actual, layout, mask, rectify, threads);
                AssertBits(actual, expected, $"length {length}, {threads} threads");
            }
        }
    }

    [Test]
    public void Gradient_Vectorized_MatchesReference_BitForBit([Values(false, true)] bool channelsLast, [Values(false, true)] bool rectify, [Values(false, true)] bool masked)
    {
        var random = new Random(6);
        for (int length = 1; length <= 70; length++)
        {
            var layout = channelsLast ? new PlaneLayout(3, length, 2, true) : new PlaneLayout(3, 2, length, false);
            int channels = layout.Channels;
            float[] x = Values(random, layout.Length);
            float[] dy = Values(random, layout.Length);
            double[] offset = Enumerable.Range(0, channels).Select(c => Math.Round(random.NextDouble() * 4) - 2).ToArray();
            double[] scale = Enumerable.Range(0, channels).Select(c => random.NextDouble() + 0.5).ToArray();
            double[] shift = Enumerable.Range(0, channels).Select(c => c % 2 == 0 ? 0.0 : random.NextDouble() - 0.5).ToArray();
            float[] mask = masked ? Mask(random, layout.Batch * channels) : [];
            float[] expected = new float[layout.Length];
            BlockKernels.Gradient<float>(x, dy, expected, layout, offset, scale, shift, mask, rectify);
            foreach (int threads in new[] { 1, 3 })
            {
                float[] actual = new float[layout.Length];
                BlockKernels.GradientVectorized<float>(x, dy, actual, layout, offset, scale, shift, mask, rectify, threads);
                AssertBits(actual, expected, $"length {length}, {threads} threads");

                // In place, over dy itself, as the contract allows.
                float[] inPlace = (float[])dy.Clone();
                BlockKernels.GradientVectorized<float>(x, inPlace, inPlace, layout, offset, scale, shift, mask, rectify, threads);
                AssertBits(inPlace, expected, $"in place, length {length}, {threads} threads");

                // With the gate's thresholds, out of place and in place.
                double[] thresholds = new double[channels];
                BlockKernels.GateThresholds<float>(offset, scale, shift, thresholds);
                float[] gated = new float[layout.Length];
                BlockKernels.GradientVectorized<float>(x, dy, gated, layout, offset, scale, shift, mask, rectify, threads, thresholds);
                AssertBits(gated, expected, $"thresholds, length {length}, {threads} threads");
                float[] gatedInPlace = (float[])dy.Clone();
                BlockKernels.GradientVectorized<float>(x, gatedInPlace, gatedInPlace, layout, offset, scale, shift, mask, rectify, threads, thresholds);
                AssertBits(gatedInPlace, expected, $"thresholds in place, length {length}, {threads} threads");

                // With the gate ready in T as well, as the block's backward passes it.
                float[] channelGate = new float[2 * channels];
                BlockKernels.ChannelGate(thresholds, scale, channelGate.AsSpan());
                float[] ready = (float[])dy.Clone();
                BlockKernels.GradientVectorized<float>(x, ready, ready, layout, offset, scale, shift, mask, rectify, threads, thresholds, channelGate);
                AssertBits(ready, expected, $"channel gate in place, length {length}, {threads} threads");
            }
        }
    }

    /// <summary>
    /// Channels-last rows of few channels over several chunks and threads, with samples that end inside a chunk and
    /// inside a vector: the periodic loops against the reference, float32 and float64, bit for bit.
    /// </summary>
    [TestCase(2, 3, 20011)]
    [TestCase(3, 17, 2503)]
    [TestCase(2, 48, 1399)]
    [TestCase(5, 5, 7)]
    [TestCase(3, 96, 1)]
    public void ChannelsLastRowsOfFewChannels_MatchTheReference_BitForBit(int batch, int channels, int spatial)
    {
        CheckRows<float>(batch, channels, spatial);
        CheckRows<double>(batch, channels, spatial);
    }

    private static void CheckRows<T>(int batch, int channels, int spatial)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        var random = new Random(channels);
        var layout = new PlaneLayout(batch, channels, spatial, true);
        T[] x = KernelInputs.Uniform<T>(random, layout.Length, 4, -2);
        T[] dy = KernelInputs.Uniform<T>(random, layout.Length, 2, -1);
        x[1] = T.NaN;
        x[2] = T.NegativeZero;
        double[] offset = Enumerable.Range(0, channels).Select(c => (random.NextDouble() * 2) - 1).ToArray();
        double[] scale = Enumerable.Range(0, channels).Select(c => (random.NextDouble() + 0.5) * (c % 3 == 1 ? -1 : 1)).ToArray();
        double[] shift = Enumerable.Range(0, channels).Select(c => random.NextDouble() - 0.5).ToArray();
        double[] thresholds = new double[channels];
        BlockKernels.GateThresholds<T>(offset, scale, shift, thresholds);
        Assert.That(thresholds.Any(double.IsNaN), Is.False, "every channel has a threshold, as the channel gate needs");
        T[] channelGate = new T[2 * channels];
        BlockKernels.ChannelGate(thresholds, scale, channelGate.AsSpan());
        T factor = T.CreateTruncating(1 / 0.6);
        T[] mask = Enumerable.Range(0, batch * channels).Select(_ => random.NextDouble() < 0.4 ? T.Zero : factor).ToArray();
        foreach (bool rectify in new[] { false, true })
        {
            foreach (bool masked in new[] { false, true })
            {
                T[] m = masked ? mask : [];
                T[] expectedY = (T[])x.Clone();
                BlockKernels.RectifyAndScale<T>(expectedY, layout, m, rectify);
                T[] expectedG = new T[layout.Length];
                BlockKernels.Gradient<T>(x, dy, expectedG, layout, offset, scale, shift, m, rectify);
                foreach (int threads in new[] { 1, 3 })
                {
                    string what = $"{typeof(T).Name}, rectify {rectify}, masked {masked}, {threads} threads";
                    T[] y = (T[])x.Clone();
                    BlockKernels.RectifyAndScaleVectorized<T>(y, layout, m, rectify, threads);
                    AssertBits(y, expectedY, $"y, {what}");
                    T[] g = new T[layout.Length];
                    BlockKernels.GradientVectorized<T>(x, dy, g, layout, offset, scale, shift, m, rectify, threads, thresholds, rectify ? channelGate : []);
                    AssertBits(g, expectedG, $"gradient, {what}");
                    T[] inPlace = (T[])dy.Clone();
                    BlockKernels.GradientVectorized<T>(x, inPlace, inPlace, layout, offset, scale, shift, m, rectify, threads, thresholds, rectify ? channelGate : []);
                    AssertBits(inPlace, expectedG, $"gradient in place, {what}");
                }
            }
        }
    }

    /// <summary>
    /// The gate's threshold for a channel closes it at exactly the values whose recomputed y is ≤ 0: checked at the
    /// threshold and a few values of T either side of it, for scales of both signs and of very different sizes,
    /// offsets and shifts that put the threshold among ordinary, tiny and huge values, and constants that have none.
    /// </summary>
    [Test]
    public void GateThresholds_CloseTheGateExactlyWhereTheFormulaDoes([Values(false, true)] bool float64)
    {
        var random = new Random(8);
        var channels = new List<(double Offset, double Scale, double Shift)>
        {
            (0, 1, 0), (0, -1, 0), (1, 1e-30, 0), (-3, 1e30, 1), (0, 1, -0.0), (2, 0, -1), (2, 0, 1), (double.NaN, 1, 0),
            (0, double.PositiveInfinity, 0), (1, 1, double.NaN), (1e-300, 1e-10, -1e-310), (0, 1, 1e-46), (0, -1, -1e-46),
        };
        for (int i = 0; i < 200; i++)
        {
            double scale = Math.Pow(10, (random.NextDouble() * 12) - 6) * (random.Next(2) == 0 ? 1 : -1);
            channels.Add(((random.NextDouble() * 8) - 4, scale, (random.NextDouble() * 2) - 1));
        }

        if (float64)
        {
            CheckThresholds<double>(channels, double.BitIncrement, double.BitDecrement);
        }
        else
        {
            CheckThresholds<float>(channels, MathF.BitIncrement, MathF.BitDecrement);
        }
    }

    private static void CheckThresholds<T>(List<(double Offset, double Scale, double Shift)> channels, Func<T, T> up, Func<T, T> down)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        double[] offset = channels.Select(c => c.Offset).ToArray();
        double[] scale = channels.Select(c => c.Scale).ToArray();
        double[] shift = channels.Select(c => c.Shift).ToArray();
        double[] thresholds = new double[channels.Count];
        BlockKernels.GateThresholds<T>(offset, scale, shift, thresholds);

        // One plane per channel of 48 values: the threshold (or 0 without one) and 15 values of T on either side,
        // then ±∞, NaN and ±0.
        const int Spatial = 48;
        var layout = new PlaneLayout(1, channels.Count, Spatial, false);
        var x = new T[layout.Length];
        for (int c = 0; c < channels.Count; c++)
        {
            T centre = double.IsNaN(thresholds[c]) ? T.Zero : T.CreateTruncating(thresholds[c]);
            T below = centre, above = centre;
            x[(c * Spatial) + 15] = centre;
            for (int k = 1; k <= 15; k++)
            {
                below = down(below);
                above = up(above);
                x[(c * Spatial) + 15 - k] = below;
                x[(c * Spatial) + 15 + k] = above;
            }

            T[] special = [T.NegativeInfinity, T.PositiveInfinity, T.NaN, T.Zero, T.NegativeZero, T.One, -T.One];
            for (int k = 31; k < Spatial; k++)
            {
                x[(c * Spatial) + k] = special[k % special.Length];
            }
        }

        T[] dy = Enumerable.Repeat(T.One, layout.Length).ToArray();
        var expected = new T[layout.Length];
        BlockKernels.Gradient<T>(x, dy, expected, layout, offset, scale, shift, [], rectify: true);
        var actual = new T[layout.Length];
        BlockKernels.GradientVectorized<T>(x, dy, actual, layout, offset, scale, shift, [], rectify: true, threads: 1, thresholds);
        for (int i = 0; i < layout.Length; i++)
        {
            int c = i / Spatial;
            Assert.That(actual[i], Is.EqualTo(expected[i]), $"channel {c} {channels[c]}, threshold {thresholds[c]}, x = {x[i]}");
        }

        Assert.That(expected.Count(v => v == T.Zero), Is.InRange(layout.Length / 4, layout.Length * 3 / 4), "the values close and open the gate");
    }

    [Test]
    public void Gradient_Reference_PassesWhereTheNormalisedValueIsAboveZero()
    {
        // y = (x − 1) · 1 + 0: 0 at x = 1 (blocked), −0.0 from x = 1 with shift −0.0 is not made here; NaN passes.
        var layout = new PlaneLayout(1, 1, 5, false);
        float[] x = [0f, 1f, 2f, float.NaN, 1.0000001f];
        float[] dy = [1f, 1f, 1f, 1f, 1f];
        float[] g = new float[5];
        BlockKernels.Gradient<float>(x, dy, g, layout, [1.0], [1.0], [0.0], [], rectify: true);
        Assert.That(g, Is.EqualTo(new[] { 0f, 0f, 1f, 1f, 1f }));
    }

    /// <summary>Integers (so that some y are exactly 0), a NaN, ±0.0 and ordinary values.</summary>
    private static float[] Values(Random random, int length)
    {
        float[] values = KernelInputs.Uniform<float>(random, length, 4, -2);
        for (int i = 0; i < length; i += 3)
        {
            values[i] = MathF.Round(values[i]);
        }

        if (length > 4)
        {
            values[1] = float.NaN;
            values[2] = -0f;
        }

        return values;
    }

    private static float[] Mask(Random random, int length) =>
        Enumerable.Range(0, length).Select(_ => random.NextDouble() < 0.4 ? 0f : 1f / 0.6f).ToArray();

    private static void AssertBits<T>(T[] actual, T[] expected, string what)
        where T : unmanaged
    {
        int differing = MemoryMarshal.AsBytes(actual.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(expected.AsSpan()))
            ? 0
            : Enumerable.Range(0, expected.Length).Count(i => !MemoryMarshal.AsBytes(actual.AsSpan(i, 1)).SequenceEqual(MemoryMarshal.AsBytes(expected.AsSpan(i, 1))));
        Assert.That(differing, Is.Zero, $"{what}: {differing} of {expected.Length} values differ");
    }
}
