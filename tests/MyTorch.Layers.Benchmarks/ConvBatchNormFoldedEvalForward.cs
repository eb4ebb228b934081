using System;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// A Conv2d (C → C channels, stride 1, padding that keeps H × W, no bias) then a BatchNorm2d, in evaluation under
/// no_grad: TorchSharp's Conv2d then TorchSharp's BatchNorm2d (the baseline), the same conv then our BatchNorm2d, the
/// one conv <c>layers.fuse_conv_bn_eval</c> folds the baseline's pair into, and the conv alone, which is as fast as
/// folding can make the pair. The case is the BatchNorm2d's input (N, C, H, W), which is also the conv's input and
/// output. 2 passes: the folded conv's own read of x and write of y (the pair also writes the conv's output and reads
/// it back, 4); the roofline ignores the conv's arithmetic.
/// </summary>
/// <remarks>
/// Every float32 NCHW performance shape is kept for both kinds of conv: in a short check on 2 cores none took more
/// than about 130 ms a call (32×64×56×56, either conv), below the 200 ms beyond which a shape would be left out.
/// </remarks>
public abstract class ConvBatchNormFoldedEvalForward : LayerBenchmark
{
    private nn.Module<Tensor, Tensor>? _ourPair;

    private Conv2d? _convAlone;

    [ParamsSource(typeof(TensorCase), nameof(TensorCase.Float32Nchw))]
    public override TensorCase Case { get; set; } = null!;

    public override int Passes => 2;

    protected override bool NeedsGradOutput => false;

    [Benchmark(Baseline = true)]
    public void TorchSharp() => NoGradForward(Theirs);

    [Benchmark]
    public void OurUnfusedPair() => NoGradForward(_ourPair!);

    [Benchmark]
    public void MyTorchLayers() => NoGradForward(Ours);

    /// <summary>The pair's conv without the BatchNorm2d: the floor of the folded conv's time, so that folded / pair is at least this / pair.</summary>
    [Benchmark]
    public void ConvAlone() => NoGradForward(_convAlone!);

    /// <summary>The conv of this kind for <paramref name="channels"/> channels in and out, with TorchSharp's initialisation.</summary>
    protected abstract Conv2d CreateConv(long channels);

    protected override (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase)
    {
        ArgumentNullException.ThrowIfNull(tensorCase);

        // Running statistics and affine parameters away from 0 and 1, the same in both BatchNorm2d layers.
        var (theirNorm, ourNorm) = BatchNormModules.Create(tensorCase, training: false);
        var conv = CreateConv(tensorCase.C);
        var ourConv = CreateConv(tensorCase.C);
        _convAlone = CreateConv(tensorCase.C);
        using (no_grad())
        {
            ourConv.weight!.copy_(conv.weight!);
            _convAlone.weight!.copy_(conv.weight!);
        }

        conv.eval();
        ourConv.eval();
        _convAlone.eval();
        var folded = layers.fuse_conv_bn_eval(conv, (BatchNorm)theirNorm);
        folded.eval();
        _ourPair = nn.Sequential(("conv", ourConv), ("bn", ourNorm));
        return (nn.Sequential(("conv", conv), ("bn", theirNorm)), folded);
    }

    protected override void DisposeMoreModules()
    {
        _ourPair?.Dispose();
        _ourPair = null;
        _convAlone?.Dispose();
        _convAlone = null;
    }
}

/// <summary>
/// <see cref="ConvBatchNormFoldedEvalForward"/> with a depthwise 3 × 3 conv (groups = C, padding 1), as in MobileNet's
/// blocks: the conv does 9 multiply-adds per element, so the BatchNorm2d is a large share of the pair's work.
/// </summary>
public class DepthwiseConvBatchNormFoldedEvalForward : ConvBatchNormFoldedEvalForward
{
    public override string Title => "Depthwise 3×3 Conv2d → BatchNorm2d eval forward (no_grad; ours: the conv folded by layers.fuse_conv_bn_eval; TorchSharp: its Conv2d then its BatchNorm2d)";

    protected override Conv2d CreateConv(long channels) => nn.Conv2d(channels, channels, 3, padding: 1, groups: channels, bias: false);
}

/// <summary>
/// <see cref="ConvBatchNormFoldedEvalForward"/> with a pointwise 1 × 1 conv (C → C): C multiply-adds per element, so
/// the conv outweighs the BatchNorm2d as C grows.
/// </summary>
public class PointwiseConvBatchNormFoldedEvalForward : ConvBatchNormFoldedEvalForward
{
    public override string Title => "Pointwise 1×1 Conv2d → BatchNorm2d eval forward (no_grad; ours: the conv folded by layers.fuse_conv_bn_eval; TorchSharp: its Conv2d then its BatchNorm2d)";

    protected override Conv2d CreateConv(long channels) => nn.Conv2d(channels, channels, 1, bias: false);
}
