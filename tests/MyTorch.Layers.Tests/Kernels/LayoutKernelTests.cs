using System;
using System.Collections.Generic;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// LayoutKernels against the definition, destination[m, j, i] = source[m, i, j], bit for bit: sizes on both sides of
/// the 8 × 8 (four-byte) and 4 × 4 (eight-byte) tiles and of the 64 × 64 blocks, random bit patterns (NaN payloads,
/// signed zeros, subnormals), any thread count and either kind of thread.
/// </summary>
[TestFixture]
public class LayoutKernelTests
{
    private static readonly int[] Sides = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 130];

    public static IEnumerable<TestCaseData> Shapes()
    {
        foreach (int rows in Sides)
        {
            foreach (int columns in Sides)
            {
                yield return new TestCaseData(rows, columns).SetArgDisplayNames($"{rows}×{columns}");
            }
        }
    }

    [TestCaseSource(nameof(Shapes))]
    public void Transpose_Float32Bits_MatchTheDefinition(int rows, int columns) =>
        AssertTransposes<uint>(count: 3, rows, columns, threads: 1, openMpTeam: false);

    [TestCaseSource(nameof(Shapes))]
    public void Transpose_Float64Bits_MatchTheDefinition(int rows, int columns) =>
        AssertTransposes<ulong>(count: 3, rows, columns, threads: 1, openMpTeam: false);

    /// <summary>A few rows or columns against many: blocks of 2048 along the long side, and the ends of the last one.</summary>
    [TestCase(3, 5000)]
    [TestCase(5000, 3)]
    [TestCase(7, 2049)]
    [TestCase(2049, 7)]
    [TestCase(1, 4100)]
    [TestCase(4100, 1)]
    public void Transpose_FewRowsOrColumns_MatchesTheDefinition(int rows, int columns)
    {
        AssertTransposes<uint>(count: 3, rows, columns, threads: 2, openMpTeam: true);
        AssertTransposes<ulong>(count: 3, rows, columns, threads: 2, openMpTeam: true);
    }

    /// <summary>
    /// Three rows into triples and back (an image's colours), at lengths the shared sides leave out: either side of
    /// the third to sixth 8-column groups that go through vector permutations, and the columns left over after them.
    /// </summary>
    [Test]
    public void Transpose_ThreeRowsOrColumns_MatchesTheDefinition([Values(23, 24, 31, 32, 40, 47, 48, 49, 57)] int length)
    {
        AssertTransposes<uint>(count: 2, rows: 3, columns: length, threads: 1, openMpTeam: false);
        AssertTransposes<uint>(count: 2, rows: length, columns: 3, threads: 1, openMpTeam: false);
    }

    /// <summary>
    /// Destination rows a multiple of 4 KB apart (1,024 four-byte or 512 eight-byte values), where the tiles go along
    /// the destination's rows instead of the source's.
    /// </summary>
    [TestCase(20)]
    [TestCase(67)]
    public void Transpose_DestinationRowsPagesApart_MatchesTheDefinition(int columns)
    {
        AssertTransposes<uint>(count: 2, rows: 1024, columns, threads: 2, openMpTeam: true);
        AssertTransposes<ulong>(count: 2, rows: 512, columns, threads: 2, openMpTeam: true);
        AssertTransposes<uint>(count: 1, rows: 2048, columns: 1024, threads: 1, openMpTeam: false);
    }

    /// <summary>Enough values for the parallel path (65,536 or more): 5 matrices of 130 × 221, 143,650 values.</summary>
    [Test]
    public void Transpose_OnSeveralThreads_MatchesTheDefinition(
        [Values(1, 2, 5)] int threads,
        [Values(true, false)] bool openMpTeam)
    {
        AssertTransposes<uint>(count: 5, rows: 130, columns: 221, threads, openMpTeam);
        AssertTransposes<ulong>(count: 5, rows: 221, columns: 130, threads, openMpTeam);
    }

    /// <summary>NCHW to NHWC and back gives the input; NHWC's (n, s, c) element is NCHW's (n, c, s).</summary>
    [Test]
    public void ToOtherLayout_MovesEachElementToItsPlace_AndBack([Values(false, true)] bool channelsLast)
    {
        var layout = new PlaneLayout(batch: 3, channels: 70, spatial: 99, channelsLast);
        var other = new PlaneLayout(3, 70, 99, !channelsLast);
        float[] source = KernelInputs.Uniform<float>(new Random(11), layout.Length, 4, 0);
        float[] moved = new float[source.Length];
        float[] back = new float[source.Length];
        LayoutKernels.ToOtherLayout<float>(source, moved, layout, threads: 2);
        LayoutKernels.ToOtherLayout<float>(moved, back, other, threads: 2);
        for (int n = 0; n < 3; n++)
        {
            for (int c = 0; c < 70; c++)
            {
                for (int s = 0; s < 99; s++)
                {
                    Assert.That(moved[Index(other, n, c, s)], Is.EqualTo(source[Index(layout, n, c, s)]), $"({n}, {c}, {s})");
                }
            }
        }

        Assert.That(back, Is.EqualTo(source));
    }

    private static int Index(PlaneLayout layout, int n, int c, int s) =>
        (n * layout.BatchStride) + (c * layout.ChannelStride) + (s * layout.SpatialStride);

    private static void AssertTransposes<T>(int count, int rows, int columns, int threads, bool openMpTeam)
        where T : unmanaged
    {
        int length = count * rows * columns;
        var random = new Random((rows * 1000) + columns);
        var source = new T[length];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(source.AsSpan()));

        // A destination one longer than needed, its last element a value the source does not hold, to catch a write past the end.
        var destination = new T[length + 1];
        var held = new HashSet<T>(source);
        T sentinel = default;
        for (ulong candidate = 1; held.Contains(sentinel); candidate++)
        {
            sentinel = System.Runtime.CompilerServices.Unsafe.As<ulong, T>(ref candidate);
        }

        destination[length] = sentinel;
        KernelTeams.Run(openMpTeam, () => LayoutKernels.Transpose<T>(source, destination, count, rows, columns, threads));

        for (int m = 0; m < count; m++)
        {
            for (int i = 0; i < rows; i++)
            {
                for (int j = 0; j < columns; j++)
                {
                    int from = (m * rows * columns) + (i * columns) + j;
                    int to = (m * rows * columns) + (j * rows) + i;
                    if (!destination[to].Equals(source[from]))
                    {
                        Assert.Fail($"{typeof(T).Name} {count}×{rows}×{columns}, {threads} threads: element ({m}, {i}, {j}) is {destination[to]}, expected {source[from]}");
                    }
                }
            }
        }

        Assert.That(destination[length], Is.EqualTo(sentinel), "the element past the end");
    }
}
