using System;
using System.Collections.Generic;
using System.Linq;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The mask's draws: ChannelDropoutKernels.DrawMask against libtorch's formula applied one value at a time
/// (<see cref="Reference"/>), wherever the generator stands in its words; and DrawAndApplyMask against DrawMask of
/// the whole mask, ScaleMask and ApplyMask (and their 16-bit forms), on any thread count and either kind of thread.
/// Equal means bit for bit, generator included.
/// </summary>
[TestFixture]
public class ChannelDropoutDrawnKernelTests
{
    /// <summary>libtorch's Bernoulli draw: u = (h·2³² + l mod 2⁵³) · 2⁻⁵³ from the next two numbers h, l; 1 if u &lt; keep.</summary>
    private static T Reference<T>(ref MersenneTwister generator, double keep)
        where T : System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        ulong high = generator.NextUInt32();
        ulong low = generator.NextUInt32();
        double u = (double)(((high << 32) | low) % (1UL << 53)) / 9007199254740992.0;
        return u < keep ? T.One : T.Zero;
    }

    /// <summary>
    /// Every mask length from 0 to 70 (whole vectors of pairs and odd tails), started at every count of numbers already
    /// taken in the generator's words from 0 to 20 and from 600 to 624 (pairs that the next regeneration splits, both
    /// parities of the word a draw starts at, a first number that regenerates), and lengths that run through several
    /// regenerations.
    /// </summary>
    [Test]
    public void DrawMask_IsLibtorchsDrawValueByValue_WhereverTheGeneratorStands(
        [Values(0.5, 0.1, 0.9, 1, 1e-300, 0.7000000000000001)] double keep)
    {
        var starts = new List<int>();
        for (int taken = 0; taken <= 20; taken++)
        {
            starts.Add(taken);
        }

        for (int taken = 600; taken <= 624; taken++)
        {
            starts.Add(taken);
        }

        var lengths = new List<int>();
        for (int n = 0; n <= 70; n++)
        {
            lengths.Add(n);
        }

        lengths.AddRange([311, 312, 313, 1000, 5003]);
        foreach (int taken in starts)
        {
            foreach (int n in lengths)
            {
                Check<float>(taken, n, keep);
                Check<double>(taken, n, keep);
            }
        }
    }

    [Test]
    public void DrawMask_FromAFreshlySeededGenerator_IsLibtorchsDraw()
    {
        // A seeded engine has left = 1: its first number regenerates the words.
        foreach (int n in new[] { 1, 8, 9, 312, 313, 2000 })
        {
            var expected = MersenneTwisterTests.Seeded(7);
            var actual = MersenneTwisterTests.Seeded(7);
            float[] mask = new float[n];
            float[] reference = new float[n];
            ChannelDropoutKernels.DrawMask<float>(ref actual, mask, 0.3);
            for (int i = 0; i < n; i++)
            {
                reference[i] = Reference<float>(ref expected, 0.3);
            }

            Assert.That(mask, Is.EqualTo(reference), $"{n} values");
            MersenneTwisterTests.AssertSameState(actual, expected, $"{n} values");
        }
    }

    private static void Check<T>(int taken, int n, double keep)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        var expected = MersenneTwisterTests.Seeded(2024);
        for (int i = 0; i < 624 + taken; i++)
        {
            expected.NextUInt32();
        }

        var actual = expected;
        var mask = new T[n + 1];
        mask[n] = T.NaN;
        var reference = new T[n + 1];
        reference[n] = T.NaN;
        ChannelDropoutKernels.DrawMask<T>(ref actual, mask.AsSpan(0, n), keep);
        for (int i = 0; i < n; i++)
        {
            reference[i] = Reference<T>(ref expected, keep);
        }

        string at = $"{typeof(T).Name}, {taken} numbers taken, {n} values, keep {keep}";
        Assert.That(mask, Is.EqualTo(reference), at + ": the values, and nothing written past the mask");
        MersenneTwisterTests.AssertSameState(actual, expected, at);
    }

    public static IEnumerable<TestCaseData> Layouts()
    {
        // C = 1700: two samples a part (4096 / 1700), the last part one sample. C = 9000: one sample a part, longer
        // than a part's usual size. Planes of 21 values (not whole vectors) and 48 (whole ones).
        foreach (var (batch, channels, spatial) in new[] { (5, 1700, 21), (3, 9000, 48) })
        {
            foreach (bool channelsLast in new[] { false, true })
            {
                foreach (bool openMpTeam in new[] { true, false })
                {
                    yield return new TestCaseData(batch, channels, spatial, channelsLast, openMpTeam)
                        .SetArgDisplayNames($"{batch}×{channels}×{spatial}", channelsLast ? "NHWC" : "NCHW", openMpTeam ? "OpenMP team" : "own workers");
                }
            }
        }
    }

    [TestCaseSource(nameof(Layouts))]
    public void DrawAndApplyHalfPrecision_GivesOneDrawsMaskOutputAndGeneratorState(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        DrawAndApplyHalfPrecision<BFloat16Bits>(batch, channels, spatial, channelsLast, openMpTeam, keep: 1 - 0.3);
        DrawAndApplyHalfPrecision<BFloat16Bits>(batch, channels, spatial, channelsLast, openMpTeam, keep: 1 - 0.5);
        DrawAndApplyHalfPrecision<Float16Bits>(batch, channels, spatial, channelsLast, openMpTeam, keep: 1 - 0.3);
    }

    private static void DrawAndApplyHalfPrecision<TFormat>(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam, double keep)
        where TFormat : struct, IHalfPrecision
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        Assert.That(ChannelDropoutKernels.DrawWhileApplying(layout, threads: 2), Is.True, "the layout must take the drawn path");
        ushort[] x = KernelInputs.Uniform<float>(new Random(channels), layout.Length, 4, 0).Select(TFormat.Narrow).ToArray();

        // What drawing the whole mask at once, scaling it and applying it gives.
        var expectedGenerator = MersenneTwisterTests.Seeded(99);
        ushort[] expectedMask = new ushort[batch * channels];
        ChannelDropoutKernels.DrawHalfPrecisionMask<TFormat>(ref expectedGenerator, expectedMask, keep);
        ChannelDropoutKernels.ScaleHalfPrecisionMask<TFormat>(expectedMask, keep);
        ushort[] expected = new ushort[x.Length];
        ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(x, expected, layout, expectedMask);

        foreach (int threads in new[] { 1, 2, 5 })
        {
            foreach (bool inPlace in new[] { false, true })
            {
                ushort[] y = inPlace ? (ushort[])x.Clone() : new ushort[x.Length];
                ushort[] mask = new ushort[batch * channels];
                var generator = MersenneTwisterTests.Seeded(99);
                KernelTeams.Run(openMpTeam, () => ChannelDropoutKernels.DrawAndApplyHalfPrecisionMask<TFormat>(inPlace ? y : x, y, layout, mask, keep, ref generator, threads));
                string at = $"{typeof(TFormat).Name}, keep {keep}, {threads} threads, {(inPlace ? "in place" : "out of place")}";
                Assert.That(mask, Is.EqualTo(expectedMask), $"{at}: mask");
                Assert.That(y, Is.EqualTo(expected), $"{at}: y");
                MersenneTwisterTests.AssertSameState(generator, expectedGenerator, at);
            }
        }
    }

    [TestCaseSource(nameof(Layouts))]
    public void DrawAndApply_GivesOneDrawsMaskOutputAndGeneratorState(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        Assert.That(ChannelDropoutKernels.DrawWhileApplying(layout, threads: 2), Is.True, "the layout must take the drawn path");
        float[] x = KernelInputs.Uniform<float>(new Random(channels), layout.Length, 4, 0);
        const double keep = 1 - 0.3;

        // What drawing the whole mask at once, scaling it and applying it gives.
        var expectedGenerator = MersenneTwisterTests.Seeded(99);
        float[] expectedMask = new float[batch * channels];
        ChannelDropoutKernels.DrawMask<float>(ref expectedGenerator, expectedMask, keep);
        ChannelDropoutKernels.ScaleMask<float>(expectedMask, keep);
        float[] expected = new float[x.Length];
        ChannelDropoutKernels.ApplyMask<float>(x, expected, layout, expectedMask);

        foreach (int threads in new[] { 1, 2, 5 })
        {
            foreach (bool inPlace in new[] { false, true })
            {
                float[] y = inPlace ? (float[])x.Clone() : new float[x.Length];
                float[] mask = new float[batch * channels];
                var generator = MersenneTwisterTests.Seeded(99);
                KernelTeams.Run(openMpTeam, () => ChannelDropoutKernels.DrawAndApplyMask<float>(inPlace ? y : x, y, layout, mask, keep, ref generator, threads));
                string at = $"{threads} threads, {(inPlace ? "in place" : "out of place")}";
                Assert.That(mask, Is.EqualTo(expectedMask), $"{at}: mask");
                Assert.That(y, Is.EqualTo(expected), $"{at}: y");
                MersenneTwisterTests.AssertSameState(generator, expectedGenerator, at);
            }
        }
    }
}
