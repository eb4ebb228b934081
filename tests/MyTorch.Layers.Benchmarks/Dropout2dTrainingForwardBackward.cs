using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;
using OurDropout1d = MyTorch.Layers.Dropout1d;
using OurDropout2d = MyTorch.Layers.Dropout2d;
using OurDropout3d = MyTorch.Layers.Dropout3d;

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

    /// <summary>TorchSharp's channel dropout for the case's rank (1d for 3-D, 2d for 4-D, 3d for 5-D) and ours, in training.</summary>
    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        (nn.Module<Tensor, Tensor> theirs, nn.Module<Tensor, Tensor> ours) = tensorCase.Rank switch
        {
            3 => ((nn.Module<Tensor, Tensor>)nn.Dropout1d(P), (nn.Module<Tensor, Tensor>)new OurDropout1d(P)),
            4 => (nn.Dropout2d(P), new OurDropout2d(P)),
            _ => (nn.Dropout3d(P), new OurDropout3d(P)),
        };
        theirs.train();
        ours.train();
        return (theirs, ours);
    }
}
