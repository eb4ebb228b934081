using System;
using System.Linq;
using System.Collections.Generic;
using System.Numerics;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// Streaming stores (used for large outputs) against plain ones: the same bits, for every output alignment, length
/// and tail, both layouts and both dtypes, in place too. The plain path is held to the reference elsewhere.
/// </summary>
[TestFixture]
public unsafe class StreamingStoreTests
{
    private static readonly int[] Spatials = [1, 3, 7, 8, 9, 16, 17, 31, 49, 64, 65];

    public static IEnumerable<TestCaseData> Layouts()
    {
        foreach (bool channelsLast in new[] { false, true })
        {
            // C = 16, 48 and 64: NHWC periods that AVX-512 computes with the period's constants in registers; C = 80,
            // one it computes period by period, 16 values a step.
            foreach (int channels in new[] { 1, 3, 8, 9, 16, 17, 48, 64, 80 })
            {
                yield return new TestCaseData(channels, channelsLast).SetArgDisplayNames($"C={channels}", channelsLast ? "NHWC" : "NCHW");
            }
        }
    }

    [TestCaseSource(nameof(Layouts))]
    public void BatchNorm2d_Float32_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareBatchNorm<float>(channels, channelsLast);

    [TestCaseSource(nameof(Layouts))]
    public void BatchNorm2d_Float64_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareBatchNorm<double>(channels, channelsLast);

    [TestCaseSource(nameof(Layouts))]
    public void Dropout2d_Float32_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareDropout<float>(channels, channelsLast);

    [TestCaseSource(nameof(Layouts))]
    public void Dropout2d_Float64_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareDropout<double>(channels, channelsLast);

    [TestCaseSource(nameof(Layouts))]
    public void Dropout2d_BFloat16_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareHalfPrecisionDropout<BFloat16Bits>(channels, channelsLast);

    [TestCaseSource(nameof(Layouts))]
    public void Dropout2d_Float16_SameBitsAsPlainStores_AtEveryAlignment(int channels, bool channelsLast) => CompareHalfPrecisionDropout<Float16Bits>(channels, channelsLast);

    [Test]
    public void LargePasses_UseStreamingStores_SmallOnesAndShortRunsDoNot()
    {
        long threshold = StreamingStores.MinimumPassBytes;
        bool vectors = Vector.IsHardwareAccelerated;
        Assert.That(StreamingStores.For<float>((threshold / 8) - 1, run: 1024, tensors: 2), Is.False, "two tensors, under the size");
        Assert.That(StreamingStores.For<float>(threshold / 8, run: 1024, tensors: 2), Is.EqualTo(vectors), "two tensors, at the size");
        Assert.That(StreamingStores.For<double>(threshold / 16, run: 1024, tensors: 2), Is.EqualTo(vectors), "float64 at the size");
        Assert.That(StreamingStores.For<float>(threshold / 8, run: 1024, tensors: 3), Is.EqualTo(vectors), "three tensors of the two-tensor size");
        Assert.That(StreamingStores.For<float>((threshold / 12) - 1, run: 1024, tensors: 3), Is.False, "three tensors, under the size");
        Assert.That(StreamingStores.For<float>((threshold / 12) + 1, run: 1024, tensors: 3), Is.EqualTo(vectors), "three tensors, at the size");
        Assert.That(StreamingStores.For<float>(threshold, run: 16, tensors: 2), Is.EqualTo(vectors), "runs of 16 values: 64 bytes, one whole cache line");
        Assert.That(StreamingStores.For<float>(threshold, run: 196, tensors: 2), Is.EqualTo(vectors), "runs of 196 values: 784 bytes");
        Assert.That(StreamingStores.For<float>(threshold, run: 49, tensors: 2), Is.False, "runs of 49 values: 196 bytes, mostly partial lines");
        Assert.That(StreamingStores.For<float>(threshold, run: 9, tensors: 2), Is.False, "runs of 9 values");
    }

    private static void CompareBatchNorm<T>(int channels, bool channelsLast)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        foreach (int spatial in Spatials)
        {
            var layout = new PlaneLayout(2, channels, spatial, channelsLast);
            var random = new Random(spatial);
            T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
            T[] dy = KernelInputs.Uniform<T>(random, layout.Length, 1, 0.25);
            T[] weight = KernelInputs.Uniform<T>(random, channels, 1, 0.5);
            T[] bias = KernelInputs.Uniform<T>(random, channels, 1, 0);
            T[] runningMean = KernelInputs.Uniform<T>(random, channels, 1, 1);
            double[] mean = new double[channels], variance = new double[channels], invstd = new double[channels];
            double[] sumDy = new double[channels], sumDyXmu = new double[channels];
            double[] scratch = new double[BatchNormKernels.VectorizedScratchLength(layout)];
            BatchNormKernels.BatchStatisticsVectorized<T>(x, layout, mean, variance, scratch, threads: 1);
            BatchNormKernels.InverseStandardDeviation(variance, 1e-5, invstd);
            BatchNormKernels.BackwardReductionsVectorized<T>(x, dy, layout, mean, sumDy, sumDyXmu, scratch, threads: 1);

            void Normalize(Span<T> output, bool streaming) =>
                BatchNormKernels.NormalizeVectorized<T, T>(x, output, layout, mean, invstd, weight, bias, scratch, threads: 2, streaming);
            void NormalizeFixed(Span<T> output, bool streaming) =>
                BatchNormKernels.NormalizeFixedVectorized<T>(x, output, layout, runningMean, invstd, weight, bias, scratch, threads: 2, streaming);
            void GradBatch(Span<T> output, bool streaming) =>
                BatchNormKernels.BackwardInputVectorized<T, T>(x, dy, output, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: true, scratch, threads: 2, streaming);
            void GradFixed(Span<T> output, bool streaming) =>
                BatchNormKernels.BackwardInputVectorized<T, T>(x, dy, output, layout, mean, invstd, weight, sumDy, sumDyXmu, batchStatistics: false, scratch, threads: 2, streaming);

            string where = $"C={channels} S={spatial} {(channelsLast ? "NHWC" : "NCHW")} {typeof(T).Name}";
            CompareAtEveryAlignment<T>(layout.Length, Normalize, "output, " + where);
            CompareAtEveryAlignment<T>(layout.Length, NormalizeFixed, "output with fixed statistics, " + where);
            CompareAtEveryAlignment<T>(layout.Length, GradBatch, "dx with batch statistics, " + where);
            CompareAtEveryAlignment<T>(layout.Length, GradFixed, "dx with fixed statistics, " + where);

            // In place: the output overwrites the input it is computed from.
            var plain = new T[x.Length];
            Normalize(plain, streaming: false);
            var inPlace = (T[])x.Clone();
            BatchNormKernels.NormalizeVectorized<T, T>(inPlace, inPlace, layout, mean, invstd, weight, bias, scratch, threads: 2, streamingStores: true);
            Assert.That(inPlace, Is.EqualTo(plain), "in place, " + where);
        }
    }

    private static void CompareDropout<T>(int channels, bool channelsLast)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        foreach (int spatial in Spatials)
        {
            var layout = new PlaneLayout(2, channels, spatial, channelsLast);
            var random = new Random(spatial);
            T[] x = KernelInputs.Uniform<T>(random, layout.Length, 3, 1);
            T[] mask = new T[2 * channels];
            for (int i = 0; i < mask.Length; i++)
            {
                mask[i] = T.CreateTruncating(random.Next(2) * 2.0);
            }

            string where = $"C={channels} S={spatial} {(channelsLast ? "NHWC" : "NCHW")} {typeof(T).Name}";
            CompareAtEveryAlignment<T>(layout.Length, (output, streaming) => ChannelDropoutKernels.ApplyMask<T>(x, output, layout, mask, threads: 2, streaming), "y, " + where);

            var plain = new T[x.Length];
            ChannelDropoutKernels.ApplyMask<T>(x, plain, layout, mask, threads: 2, streamingStores: false);
            var inPlace = (T[])x.Clone();
            ChannelDropoutKernels.ApplyMask<T>(inPlace, inPlace, layout, mask, threads: 2, streamingStores: true);
            Assert.That(inPlace, Is.EqualTo(plain), "in place, " + where);
        }
    }

    private static void CompareHalfPrecisionDropout<TFormat>(int channels, bool channelsLast)
        where TFormat : struct, IHalfPrecision
    {
        foreach (int spatial in Spatials)
        {
            var layout = new PlaneLayout(2, channels, spatial, channelsLast);
            var random = new Random(spatial);
            ushort[] x = Enumerable.Range(0, layout.Length).Select(_ => TFormat.Narrow((float)((random.NextDouble() * 6) - 2))).ToArray();
            ushort[] mask = Enumerable.Range(0, 2 * channels).Select(_ => TFormat.Narrow(random.Next(2) * 2f)).ToArray();
            string where = $"C={channels} S={spatial} {(channelsLast ? "NHWC" : "NCHW")} {typeof(TFormat).Name}";
            CompareAtEveryAlignment<ushort>(layout.Length, (output, streaming) => ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(x, output, layout, mask, threads: 2, streaming), "y, " + where);

            var plain = new ushort[x.Length];
            ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(x, plain, layout, mask, threads: 2, streamingStores: false);
            var inPlace = (ushort[])x.Clone();
            ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(inPlace, inPlace, layout, mask, threads: 2, streamingStores: true);
            Assert.That(inPlace, Is.EqualTo(plain), "in place, " + where);
        }
    }

    /// <summary>
    /// Runs <paramref name="kernel"/> with plain stores into an array, then with streaming stores into native memory
    /// starting at every element offset within a vector's alignment, and asserts the same bits.
    /// </summary>
    private static void CompareAtEveryAlignment<T>(int length, Action<Span<T>, bool> kernel, string what)
        where T : unmanaged
    {
        var expected = new T[length];
        kernel(expected, false);
        int alignment = Math.Max(Vector<byte>.Count, 64);
        byte* block = (byte*)NativeMemory.AlignedAlloc((nuint)((length * sizeof(T)) + alignment), (nuint)alignment);
        try
        {
            for (int offset = 0; offset < alignment / sizeof(T); offset++)
            {
                var output = new Span<T>((T*)block + offset, length);
                MemoryMarshal.AsBytes(output).Fill(0xFF); // NaN in every floating type
                kernel(output, true);
                for (int i = 0; i < length; i++)
                {
                    if (!BitEquals(output[i], expected[i]))
                    {
                        Assert.Fail($"{what}, output {offset} elements past an aligned address: element {i} is {output[i]}, plain stores gave {expected[i]}");
                    }
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(block);
        }
    }

    private static bool BitEquals<T>(T a, T b)
        where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in a)).SequenceEqual(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in b)));
}
