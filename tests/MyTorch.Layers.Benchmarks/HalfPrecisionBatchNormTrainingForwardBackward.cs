using System.Collections.Generic;
using BenchmarkDotNet.Attributes;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// <see cref="BatchNorm2dTrainingForwardBackward"/>'s step in float32, and in bfloat16 and float16 with float32
/// parameters (mixed precision), in one run, so that the 16-bit steps' times can be set beside the float32 one as well as
/// beside TorchSharp's.
/// </summary>
public class HalfPrecisionBatchNormTrainingForwardBackward : BatchNorm2dTrainingForwardBackward
{
    [ParamsSource(nameof(HalfPrecisionCases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm2d training forward+backward in float32, bfloat16 and float16 (float32 parameters)";

    public static IEnumerable<TensorCase> HalfPrecisionCases() => TensorCase.HalfPrecisionNchw();
}
