using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;
using OurDropout2d = MyTorch.Layers.Dropout2d;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// Dropout2d's training step with p = 0.5, forward and backward: x read and y written, dy read and dx written (the
/// N·C mask is too small to count): 4 passes.
/// </summary>
public class Dropout2dTrainingForwardBackward : LayerBenchmark
{
    public const double P = 0.5;

    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "Dropout2d training forward+backward, p = 0.5";

    public override int Passes => 4;

    protected override bool NeedsGradOutput => true;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Float32Nchw();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: true);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: true);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        nn.Module<Tensor, Tensor> theirs = nn.Dropout2d(P);
        nn.Module<Tensor, Tensor> ours = new OurDropout2d(P);
        theirs.train();
        ours.train();
        return (theirs, ours);
    }
}
