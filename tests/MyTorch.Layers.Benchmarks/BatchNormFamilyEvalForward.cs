using System.Collections.Generic;
using BenchmarkDotNet.Attributes;

namespace MyTorch.Layers.Benchmarks;

/// <summary><see cref="BatchNorm2dEvalForward"/>'s step on the other ranks' shapes: BatchNorm1d on 2-D and 3-D input, BatchNorm3d on 5-D.</summary>
public class BatchNormFamilyEvalForward : BatchNorm2dEvalForward
{
    [ParamsSource(nameof(FamilyCases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm1d (2-D, 3-D) and BatchNorm3d (5-D) eval forward (no_grad)";

    public static IEnumerable<TensorCase> FamilyCases() => TensorCase.Family();
}
