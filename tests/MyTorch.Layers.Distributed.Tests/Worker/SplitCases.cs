using System.Collections.Generic;
using System.Linq;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed.Tests.Worker;

/// <summary>
/// A batch of <see cref="Shape"/> split across two ranks, <see cref="Parts"/>[r] samples to rank r, normalised by
/// SyncBatchNorm on each and by our BatchNorm of that rank on the whole batch.
/// </summary>
public sealed record SplitCase(string Name, ScalarType Dtype, long[] Shape, bool ChannelsLast, int[] Parts, bool Affine = true, bool Track = true, double? Momentum = 0.1)
{
    /// <summary>With one part empty, the other's sums are the whole batch's: every result must agree bit for bit.</summary>
    public bool Exact => Parts.Count(p => p > 0) == 1;

    public override string ToString() => Name;
}

/// <summary>The cases of the two-rank tests, known to the NUnit side and the worker alike.</summary>
public static class SplitCases
{
    private static readonly long[] Images = [8, 4, 6, 6];

    public static IReadOnlyList<SplitCase> All { get; } =
    [
        new("Float32_Nchw_Even", ScalarType.Float32, Images, false, [4, 4]),
        new("Float32_Nchw_Uneven", ScalarType.Float32, Images, false, [5, 3]),
        new("Float32_Nchw_EmptySecond", ScalarType.Float32, Images, false, [8, 0]),
        new("Float32_ChannelsLast_Even", ScalarType.Float32, Images, true, [4, 4]),
        new("Float32_ChannelsLast_Uneven", ScalarType.Float32, Images, true, [6, 2]),
        new("Float32_ChannelsLast_EmptyFirst", ScalarType.Float32, Images, true, [0, 8]),
        new("Float64_Nchw_Uneven", ScalarType.Float64, Images, false, [3, 5]),
        new("Float64_ChannelsLast_Even", ScalarType.Float64, Images, true, [4, 4]),
        new("Float64_Nchw_EmptyFirst", ScalarType.Float64, Images, false, [0, 8]),
        new("Float32_2d_Uneven", ScalarType.Float32, [16, 6], false, [9, 7]),
        new("Float32_3d_Uneven", ScalarType.Float32, [6, 5, 10], false, [2, 4]),
        new("Float32_5d_Uneven", ScalarType.Float32, [4, 3, 3, 4, 5], false, [1, 3]),
        new("Float32_5d_ChannelsLast_Even", ScalarType.Float32, [4, 3, 3, 4, 5], true, [2, 2]),
        new("Float32_OneValuePerChannelEach", ScalarType.Float32, [2, 3, 1, 1], false, [1, 1]),
        new("Float32_NoAffine_NoRunningStats", ScalarType.Float32, Images, false, [4, 4], Affine: false, Track: false),
        new("Float32_CumulativeAverage", ScalarType.Float32, Images, false, [5, 3], Momentum: null),
        new("BFloat16_Input_Float32_Module", ScalarType.BFloat16, Images, false, [4, 4]),
        new("Float32_Larger_Uneven", ScalarType.Float32, [16, 8, 16, 16], true, [9, 7]),
    ];

    public static IEnumerable<string> Names => All.Select(c => c.Name);
}
