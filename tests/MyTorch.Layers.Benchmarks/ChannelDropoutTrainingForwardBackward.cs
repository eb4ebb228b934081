using System.Collections.Generic;
using System.Linq;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;
using OurDropout1d = MyTorch.Layers.Dropout1d;
using OurDropout3d = MyTorch.Layers.Dropout3d;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// Dropout1d on (N, C, L) and Dropout3d on (N, C, D, H, W), training, p = 0.5, forward and backward: 4 passes as
/// Dropout2d's. The (N, C) shapes are left out: Dropout1d reads a 2-D input as one sample (C, L), which TorchSharp's
/// Dropout1d refuses, so there is nothing to compare with.
/// </summary>
public class ChannelDropoutTrainingForwardBackward : LayerBenchmark
{
    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => $"Dropout1d (3-D) and Dropout3d (5-D) training forward+backward, p = {Dropout2dTrainingForwardBackward.P}";

    public override int Passes => 4;

    protected override bool NeedsGradOutput => true;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Family().Where(c => c.Rank is 3 or 5);

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: true);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: true);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        double p = Dropout2dTrainingForwardBackward.P;
        (nn.Module<Tensor, Tensor> theirs, nn.Module<Tensor, Tensor> ours) = tensorCase.Rank == 3
            ? ((nn.Module<Tensor, Tensor>)nn.Dropout1d(p), (nn.Module<Tensor, Tensor>)new OurDropout1d(p))
            : (nn.Dropout3d(p), new OurDropout3d(p));
        theirs.train();
        ours.train();
        return (theirs, ours);
    }
}
