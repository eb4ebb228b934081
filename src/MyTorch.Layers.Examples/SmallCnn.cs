using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>A BatchNorm2d and a Dropout2d to build a model with: TorchSharp's, ours, or (in tests) others.</summary>
/// <param name="Name">How the run is called in the output.</param>
/// <param name="BatchNorm2d">Makes a BatchNorm2d for a channel count, with TorchSharp's defaults otherwise.</param>
/// <param name="Dropout2d">Makes a Dropout2d for a probability.</param>
internal sealed record LayerSet(string Name, Func<long, nn.Module<Tensor, Tensor>> BatchNorm2d, Func<double, nn.Module<Tensor, Tensor>> Dropout2d)
{
    public static LayerSet TorchSharp { get; } = new("TorchSharp", c => nn.BatchNorm2d(c), p => nn.Dropout2d(p));

    public static LayerSet MyTorchLayers { get; } = new("MyTorch.Layers", c => layers.BatchNorm2d(c), p => layers.Dropout2d(p));

    /// <summary>Ours, each BatchNorm2d → ReLU → Dropout2d group then fused into one layer by <c>layers.fuse_modules</c>.</summary>
    public static LayerSet MyTorchLayersFused { get; } = MyTorchLayers with { Name = "MyTorch.Layers fused", Fused = true };

    /// <summary>
    /// Whether the built model's BatchNorm2d → ReLU (→ Dropout2d) groups are fused by <c>layers.fuse_modules</c>
    /// (<see cref="SmallCnn.FusionGroups"/>).
    /// </summary>
    public bool Fused { get; init; }
}

/// <summary>
/// The small CNN every run trains: two blocks of conv → BatchNorm2d → ReLU → Dropout2d → max-pool, then two linear
/// layers. Everything but BatchNorm2d and Dropout2d is TorchSharp's, whichever <see cref="LayerSet"/> builds it.
/// </summary>
internal static class SmallCnn
{
    public const double DropoutP = 0.1;

    /// <summary>Slots a model built with <see cref="Decisions"/> uses: three ReLUs and two max-pools.</summary>
    public const int DecisionSlots = 5;

    /// <summary>
    /// Builds the model. With <paramref name="decisions"/>, its ReLUs and max-pools record or replay their choices there
    /// (<see cref="DecidedReLU"/>, <see cref="DecidedMaxPool2d"/>); they have no state, so the state_dict keys are the same.
    /// A fused model (<see cref="LayerSet.Fused"/>) has a <see cref="BatchNormReLUDropout2d"/> in each BatchNorm2d's
    /// place and Identity in its ReLU's and Dropout2d's, the same state_dict keys again; with
    /// <paramref name="decisions"/>, a <see cref="FusedReLUChoice"/> after each block records its ReLU's choices, which
    /// it cannot replay.
    /// </summary>
    public static nn.Module<Tensor, Tensor> Create(LayerSet layers, int classes, Decisions? decisions = null)
    {
        var children = new List<(string, nn.Module<Tensor, Tensor>)>();
        AddBlock(children, layers, decisions, 1, nn.Conv2d(1, 16, 3, padding: 1, bias: false), 16, 0);
        AddBlock(children, layers, decisions, 2, nn.Conv2d(16, 32, 3, padding: 1, bias: false), 32, 2);
        children.Add(("flatten", nn.Flatten()));
        children.Add(("fc1", nn.Linear(32 * 7 * 7, 64)));
        children.Add(("relu3", ReLU(decisions, 4)));
        children.Add(("fc2", nn.Linear(64, classes)));
        var model = nn.Sequential(children.ToArray());
        return layers.Fused ? global::MyTorch.Layers.layers.fuse_modules(model, FusionGroups(model)) : model;
    }

    /// <summary>
    /// The names of each BatchNorm2d (ours or TorchSharp's) directly followed by TorchSharp's ReLU, with the Dropout2d
    /// that follows it if there is one: the groups <c>layers.fuse_modules</c> takes.
    /// </summary>
    public static string[][] FusionGroups(nn.Module model)
    {
        var children = model.named_children().ToList();
        var groups = new List<string[]>();
        for (int i = 0; i + 1 < children.Count; i++)
        {
            if (children[i].module is not (BatchNorm2d or TorchSharp.Modules.BatchNorm2d) || children[i + 1].module is not TorchSharp.Modules.ReLU)
            {
                continue;
            }

            bool dropout = i + 2 < children.Count && children[i + 2].module is (Dropout2d or TorchSharp.Modules.Dropout2d);
            groups.Add(children.Skip(i).Take(dropout ? 3 : 2).Select(c => c.name).ToArray());
        }

        return groups.ToArray();
    }

    /// <summary>conv → BatchNorm2d → ReLU → Dropout2d → max-pool, its ReLU in <paramref name="reluSlot"/> and its max-pool in the next.</summary>
    private static void AddBlock(List<(string, nn.Module<Tensor, Tensor>)> children, LayerSet layers, Decisions? decisions, int n, nn.Module<Tensor, Tensor> conv, long channels, int reluSlot)
    {
        children.Add(($"conv{n}", conv));
        children.Add(($"bn{n}", layers.BatchNorm2d(channels)));

        // fuse_modules takes TorchSharp's ReLU only; the block's own ReLU then records its choices from the block's output.
        children.Add(($"relu{n}", layers.Fused ? nn.ReLU() : ReLU(decisions, reluSlot)));
        children.Add(($"drop{n}", layers.Dropout2d(DropoutP)));
        if (layers.Fused && decisions is not null)
        {
            children.Add(($"relu{n}_choice", new FusedReLUChoice(decisions, reluSlot)));
        }

        children.Add(($"pool{n}", MaxPool(decisions, reluSlot + 1)));
    }

    private static nn.Module<Tensor, Tensor> ReLU(Decisions? decisions, int slot) =>
        decisions is null ? nn.ReLU() : new DecidedReLU(decisions, slot);

    private static nn.Module<Tensor, Tensor> MaxPool(Decisions? decisions, int slot) =>
        decisions is null ? nn.MaxPool2d(2) : new DecidedMaxPool2d(decisions, slot);
}
