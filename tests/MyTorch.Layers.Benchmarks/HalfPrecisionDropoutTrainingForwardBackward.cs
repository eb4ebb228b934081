using System.Collections.Generic;
using BenchmarkDotNet.Attributes;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// <see cref="Dropout2dTrainingForwardBackward"/>'s step in float32, bfloat16 and float16 in one run, so that the 16-bit
/// step's time can be set beside the float32 one as well as beside TorchSharp's.
/// </summary>
public class HalfPrecisionDropoutTrainingForwardBackward : Dropout2dTrainingForwardBackward
{
    [ParamsSource(nameof(HalfPrecisionCases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => $"Dropout2d training forward+backward in float32, bfloat16 and float16, p = {P}";

    public static IEnumerable<TensorCase> HalfPrecisionCases() => TensorCase.HalfPrecisionNchw();
}
