using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// BatchNorm2d's training forward alone, recording for autograd as in training: x read for the statistics, then read
/// again and y written: 3 passes.
/// </summary>
public class BatchNorm2dTrainingForward : LayerBenchmark
{
    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm2d training forward";

    public override int Passes => 3;

    protected override bool NeedsGradOutput => false;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Float32Nchw();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: false);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: false);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase) =>
        BatchNormModules.Create(tensorCase, training: true);
}
