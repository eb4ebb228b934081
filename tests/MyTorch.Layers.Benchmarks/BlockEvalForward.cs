using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// The BatchNorm2d → ReLU → Dropout2d block in evaluation under no_grad (dropout off): TorchSharp's three layers (the
/// baseline), our fused block, our three layers, our BatchNorm2d alone; x read, y written: 2 passes.
/// </summary>
public class BlockEvalForward : LayerBenchmark
{
    private BlockModules? _modules;

    [ParamsSource(nameof(Cases))]
    public override TensorCase Case { get; set; } = null!;

    public override string Title => "BatchNorm2d → ReLU → Dropout2d eval forward (no_grad; ours: the fused block; TorchSharp: its three layers)";

    public override int Passes => 2;

    protected override bool NeedsGradOutput => false;

    public static IEnumerable<TensorCase> Cases() => TensorCase.Block();

    [Benchmark(Baseline = true)]
    public void TorchSharp() => NoGradForward(Theirs);

    [Benchmark]
    public void MyTorchLayers() => NoGradForward(Ours);

    [Benchmark]
    public void OurThreeLayers() => NoGradForward(_modules!.OurThree);

    [Benchmark]
    public void OurBatchNorm2dAlone() => NoGradForward(_modules!.BatchNorm);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        _modules = new BlockModules(tensorCase, training: false);
        return (_modules.Theirs, _modules.Fused);
    }

    protected override void DisposeMoreModules() => _modules?.Dispose();
}
