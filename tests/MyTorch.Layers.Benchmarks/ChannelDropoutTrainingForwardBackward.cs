using System.Collections.Generic;
using System.Linq;
using BenchmarkDotNet.Attributes;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// <see cref="Dropout2dTrainingForwardBackward"/>'s step with Dropout1d on (N, C, L) and Dropout3d on (N, C, D, H, W).
/// The (N, C) shapes are left out: Dropout1d reads a 2-D input as one sample (C, L), which TorchSharp's Dropout1d
/// refuses, so there is nothing to compare with.
/// </summary>
public class ChannelDropoutTrainingForwardBackward : Dropout2dTrainingForwardBackward
{
    [ParamsSource(nameof(FamilyCases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => $"Dropout1d (3-D) and Dropout3d (5-D) training forward+backward, p = {P}";

    public static IEnumerable<TensorCase> FamilyCases() => TensorCase.Family().Where(c => c.Rank is 3 or 5);
}
