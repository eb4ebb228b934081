using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// A BatchNorm2d → ReLU → Dropout2d block's training step, p = 0.5, forward and backward, as a network takes it:
/// TorchSharp's three layers (the baseline), our fused block (the summary's "ours"), our three layers, and our
/// BatchNorm2d alone, whose 8 passes are what the block needs too (ReLU's mask is recomputed from x, the dropout's
/// factors are per plane).
/// </summary>
public class BlockTrainingForwardBackward : LayerBenchmark
{
    private BlockModules? _modules;

    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm2d → ReLU → Dropout2d training forward+backward, p = 0.5 (ours: the fused block; TorchSharp: its three layers)";

    public override int Passes => 8;

    protected override bool NeedsGradOutput => true;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Block();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => TrainingStep(Theirs, backward: true);

    [Benchmark]
    public void MyTorchLayers() => TrainingStep(Ours, backward: true);

    [Benchmark]
    public void OurThreeLayers() => TrainingStep(_modules!.OurThree, backward: true);

    [Benchmark]
    public void OurBatchNorm2dAlone() => TrainingStep(_modules!.BatchNorm, backward: true);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        _modules = new BlockModules(tensorCase, training: true);
        return (_modules.Theirs, _modules.Fused);
    }

    protected override void DisposeMoreModules() => _modules?.Dispose();
}
