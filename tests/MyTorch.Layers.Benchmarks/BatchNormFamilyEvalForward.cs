using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>BatchNorm1d and BatchNorm3d in evaluation under no_grad, from the running statistics: x read, y written: 2 passes.</summary>
public class BatchNormFamilyEvalForward : LayerBenchmark
{
    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm1d (2-D, 3-D) and BatchNorm3d (5-D) eval forward (no_grad)";

    public override int Passes => 2;

    protected override bool NeedsGradOutput => false;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Family();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => NoGradForward(Theirs);

    [Benchmark]
    public void MyTorchLayers() => NoGradForward(Ours);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase) =>
        BatchNormModules.Create(tensorCase, training: false);
}
