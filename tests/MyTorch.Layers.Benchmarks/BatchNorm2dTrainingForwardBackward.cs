using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// BatchNorm2d's training step, forward and backward. The forward reads x twice (statistics, then normalisation) and
/// writes y; the backward reads dy and x for the two sums, then dy and x again and writes dx: 8 passes.
/// </summary>
public class BatchNorm2dTrainingForwardBackward : LayerBenchmark
{
    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm2d training forward+backward";

    public override int Passes => 8;

    protected override bool NeedsGradOutput => true;

    public static IEnumerable<TensorCase> Cases() => TensorCase.TrainingStep();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: true);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: true);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase) =>
        BatchNormModules.Create(tensorCase, training: true);
}
