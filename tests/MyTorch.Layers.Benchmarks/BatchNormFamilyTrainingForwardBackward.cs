using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// BatchNorm1d's and BatchNorm3d's training step, forward and backward, on the shapes of their ranks: the same 8 passes
/// as BatchNorm2d's (<see cref="BatchNorm2dTrainingForwardBackward"/>).
/// </summary>
public class BatchNormFamilyTrainingForwardBackward : LayerBenchmark
{
    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm1d (2-D, 3-D) and BatchNorm3d (5-D) training forward+backward";

    public override int Passes => 8;

    protected override bool NeedsGradOutput => true;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Family();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: true);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: true);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase) =>
        BatchNormModules.Create(tensorCase, training: true);
}
