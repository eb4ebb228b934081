using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// Dropout2dKernels.DrawAndApplyMask against one draw of the whole mask, ScaleMask and ApplyMask: the same mask and
/// output bit for bit, the parts drawn once each in order, on any thread count and either kind of thread.
/// </summary>
[TestFixture]
public unsafe class Dropout2dDrawnKernelTests
{
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
    public void DrawAndApply_GivesOneDrawsMaskAndOutput_PartsDrawnInOrder(int batch, int channels, int spatial, bool channelsLast, bool openMpTeam)
    {
        var layout = new PlaneLayout(batch, channels, spatial, channelsLast);
        Assert.That(Dropout2dKernels.DrawWhileApplying(layout, threads: 2), Is.True, "the layout must take the drawn path");
        float[] x = KernelInputs.Uniform<float>(new Random(channels), layout.Length, 4, 0);
        const double keep = 1 - 0.3;

        // What drawing the whole mask at once, scaling it and applying it gives.
        float[] expectedMask = new float[batch * channels];
        Draws.Fill(expectedMask, 0);
        Dropout2dKernels.ScaleMask<float>(expectedMask, keep);
        float[] expected = new float[x.Length];
        Dropout2dKernels.ApplyMask<float>(x, expected, layout, expectedMask);

        foreach (int threads in new[] { 1, 2, 5 })
        {
            foreach (bool inPlace in new[] { false, true })
            {
                float[] y = inPlace ? (float[])x.Clone() : new float[x.Length];
                float[] mask = new float[batch * channels];
                var draws = new Draws(mask);
                bool drawn = Run(openMpTeam, x: inPlace ? y : x, y, layout, mask, keep, draws, threads);
                string at = $"{threads} threads, {(inPlace ? "in place" : "out of place")}";
                Assert.That(drawn, Is.True, at);
                Assert.That(draws.Parts, Is.EqualTo(ExpectedParts(batch, channels)), $"{at}: the parts drawn, in order");
                Assert.That(mask, Is.EqualTo(expectedMask), $"{at}: mask");
                Assert.That(y, Is.EqualTo(expected), $"{at}: y");
            }
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void DrawThatFails_StopsTheDraw_AndTheCallSaysSo(bool openMpTeam)
    {
        var layout = new PlaneLayout(6, 2048, 16, channelsLast: false);
        float[] x = KernelInputs.Uniform<float>(new Random(1), layout.Length, 1, 0);
        float[] y = new float[x.Length];
        float[] mask = new float[layout.Batch * layout.Channels];
        var draws = new Draws(mask) { FailAtPart = 1 };
        bool drawn = Run(openMpTeam, x, y, layout, mask, 0.5, draws, threads: 2);
        Assert.That(drawn, Is.False, "a failed draw is reported");
        Assert.That(draws.Parts, Has.Count.EqualTo(2), "no part is drawn after the one that failed");
        Assert.That(y.AsSpan(2 * layout.BatchStride).IndexOfAnyExcept(0f), Is.EqualTo(-1), "samples of the failed part (2 and 3) and after are not applied");
    }

    /// <summary>The (first, count) of each part: whole samples, ⌊4096 / C⌋ of them (at least one), the last part the rest.</summary>
    private static List<(int First, int Count)> ExpectedParts(int batch, int channels)
    {
        int samples = Math.Max(1, Dropout2dKernels.DrawPartValues / channels);
        var parts = new List<(int, int)>();
        for (int n = 0; n < batch; n += samples)
        {
            parts.Add((n * channels, Math.Min(samples, batch - n) * channels));
        }

        return parts;
    }

    private static bool Run(bool openMpTeam, float[] x, float[] y, PlaneLayout layout, float[] mask, double keep, Draws draws, int threads)
    {
        var handle = GCHandle.Alloc(draws);
        try
        {
            bool drawn = false;
            KernelTeams.Run(openMpTeam, () => drawn = Dropout2dKernels.DrawAndApplyMask<float>(x, y, layout, mask, keep, &Draw, (void*)GCHandle.ToIntPtr(handle), threads));
            return drawn;
        }
        finally
        {
            handle.Free();
        }
    }

    private static bool Draw(void* state, int first, int count) =>
        ((Draws)GCHandle.FromIntPtr((IntPtr)state).Target!).Draw(first, count);

    /// <summary>A stand-in generator: mask value i is a fixed pseudo-random 0 or 1 of i; every call is logged.</summary>
    private sealed class Draws(float[] mask)
    {
        public List<(int First, int Count)> Parts { get; } = [];

        public int FailAtPart { get; init; } = -1;

        public static void Fill(Span<float> values, int first)
        {
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = (uint)(first + i) * 2654435761u >> 31;
            }
        }

        public bool Draw(int first, int count)
        {
            lock (Parts)
            {
                Parts.Add((first, count));
            }

            if (Parts.Count - 1 == FailAtPart)
            {
                return false;
            }

            Fill(mask.AsSpan(first, count), first);
            return true;
        }
    }
}
