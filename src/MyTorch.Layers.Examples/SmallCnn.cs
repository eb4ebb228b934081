using System;
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
    /// </summary>
    public static nn.Module<Tensor, Tensor> Create(LayerSet layers, int classes, Decisions? decisions = null) => nn.Sequential(
        ("conv1", nn.Conv2d(1, 16, 3, padding: 1, bias: false)),
        ("bn1", layers.BatchNorm2d(16)),
        ("relu1", ReLU(decisions, 0)),
        ("drop1", layers.Dropout2d(DropoutP)),
        ("pool1", MaxPool(decisions, 1)),
        ("conv2", nn.Conv2d(16, 32, 3, padding: 1, bias: false)),
        ("bn2", layers.BatchNorm2d(32)),
        ("relu2", ReLU(decisions, 2)),
        ("drop2", layers.Dropout2d(DropoutP)),
        ("pool2", MaxPool(decisions, 3)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(32 * 7 * 7, 64)),
        ("relu3", ReLU(decisions, 4)),
        ("fc2", nn.Linear(64, classes)));

    private static nn.Module<Tensor, Tensor> ReLU(Decisions? decisions, int slot) =>
        decisions is null ? nn.ReLU() : new DecidedReLU(decisions, slot);

    private static nn.Module<Tensor, Tensor> MaxPool(Decisions? decisions, int slot) =>
        decisions is null ? nn.MaxPool2d(2) : new DecidedMaxPool2d(decisions, slot);
}
