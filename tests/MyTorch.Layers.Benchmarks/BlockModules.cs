using System;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// A BatchNorm2d → ReLU → Dropout2d block four ways, in the same mode: TorchSharp's three
/// layers, our three layers, our fused <see cref="BatchNormReLUDropout2d"/>, and our BatchNorm2d alone, each with
/// non-trivial parameters and running statistics (<see cref="BatchNormModules"/>).
/// </summary>
internal sealed class BlockModules : IDisposable
{
    public const double P = 0.5;

    public BlockModules(TensorCase tensorCase, bool training)
    {
        ArgumentNullException.ThrowIfNull(tensorCase);
        var (theirs, ours) = BatchNormModules.Create(tensorCase, training);
        var ourThree = BatchNormModules.Create(tensorCase, training).Ours;
        Theirs = nn.Sequential(("bn", theirs), ("relu", nn.ReLU()), ("drop", nn.Dropout2d(P)));
        OurThree = nn.Sequential(("bn", ourThree), ("relu", nn.ReLU()), ("drop", new Dropout2d(P)));
        Fused = nn.Sequential(("bn", BatchNormModules.Create(tensorCase, training).Ours), ("relu", nn.ReLU()), ("drop", new Dropout2d(P)));
        BatchNorm = ours;
        foreach (var module in new nn.Module[] { Theirs, OurThree, Fused })
        {
            module.train(training);
        }

        // After train(): a group is fused only when its modules are all in one mode.
        layers.fuse_modules(Fused, [["bn", "relu", "drop"]]);
    }

    public nn.Module<Tensor, Tensor> Theirs { get; }

    public nn.Module<Tensor, Tensor> OurThree { get; }

    public nn.Module<Tensor, Tensor> Fused { get; }

    public nn.Module<Tensor, Tensor> BatchNorm { get; }

    public void Dispose()
    {
        OurThree.Dispose();
        BatchNorm.Dispose();
    }
}
