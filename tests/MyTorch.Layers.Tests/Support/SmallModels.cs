using MyTorch.Layers.Examples;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>Small CNNs for integration tests, built with TorchSharp's BatchNorm2d and Dropout2d or with ours.</summary>
internal static class SmallModels
{
    public const int Classes = 3;

    /// <summary>The ReLU and max-pool choices a <see cref="Cnn"/> built with <see cref="Decisions"/> records or replays.</summary>
    public const int DecisionSlots = 4;

    /// <summary>
    /// conv → BatchNorm2d → ReLU → Dropout2d → max-pool, twice, then linear; for (N, 1, 8, 8) input. Everything but
    /// the two layers under test is TorchSharp's. <paramref name="dtype"/> is given to the BatchNorm2d factories only.
    /// With <paramref name="decisions"/>, the ReLUs and max-pools record or replay their choices there, as the examples
    /// app's step check has them.
    /// </summary>
    public static nn.Module<Tensor, Tensor> Cnn(bool ours, double p = 0.2, ScalarType? dtype = null, Decisions? decisions = null) => nn.Sequential(
        ("conv1", nn.Conv2d(1, 4, 3, padding: 1, bias: false)),
        ("bn1", Norm(ours, 4, dtype)),
        ("relu1", ReLU(decisions, 0)),
        ("drop1", Drop(ours, p)),
        ("pool1", MaxPool(decisions, 1)),
        ("conv2", nn.Conv2d(4, 8, 3, padding: 1, bias: false)),
        ("bn2", Norm(ours, 8, dtype)),
        ("relu2", ReLU(decisions, 2)),
        ("drop2", Drop(ours, p)),
        ("pool2", MaxPool(decisions, 3)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8 * 2 * 2, Classes)));

    /// <summary>TorchSharp's model and ours with the same initial parameters (ours loads TorchSharp's state dict).</summary>
    public static (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) SamePair(long seed, double p = 0.2, Decisions? decisions = null)
    {
        manual_seed(seed);
        var theirs = Cnn(ours: false, p, decisions: decisions);
        var ours = Cnn(ours: true, p, decisions: decisions);
        ours.load_state_dict(theirs.state_dict());
        return (theirs, ours);
    }

    private static nn.Module<Tensor, Tensor> ReLU(Decisions? decisions, int slot) =>
        decisions is null ? nn.ReLU() : new DecidedReLU(decisions, slot);

    private static nn.Module<Tensor, Tensor> MaxPool(Decisions? decisions, int slot) =>
        decisions is null ? nn.MaxPool2d(2) : new DecidedMaxPool2d(decisions, slot);

    private static nn.Module<Tensor, Tensor> Norm(bool ours, long channels, ScalarType? dtype) =>
        ours ? layers.BatchNorm2d(channels, dtype: dtype) : nn.BatchNorm2d(channels, dtype: dtype);

    private static nn.Module<Tensor, Tensor> Drop(bool ours, double p) =>
        ours ? layers.Dropout2d(p) : nn.Dropout2d(p);
}
