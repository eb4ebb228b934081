using TorchSharp;
using static MyTorch.Layers.layers;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>Which BatchNorm2d and Dropout2d a model is built with.</summary>
internal enum Implementation
{
    TorchSharp,
    MyTorchLayers,
}

/// <summary>
/// The small CNN both runs train: two blocks of conv → BatchNorm2d → ReLU → Dropout2d → max-pool, then two linear
/// layers. Everything but BatchNorm2d and Dropout2d is TorchSharp's in both.
/// </summary>
internal static class SmallCnn
{
    public const double DropoutP = 0.1;

    public static nn.Module<Tensor, Tensor> Create(Implementation implementation, int classes) => nn.Sequential(
        ("conv1", nn.Conv2d(1, 16, 3, padding: 1, bias: false)),
        ("bn1", Norm(implementation, 16)),
        ("relu1", nn.ReLU()),
        ("drop1", Drop(implementation)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding: 1, bias: false)),
        ("bn2", Norm(implementation, 32)),
        ("relu2", nn.ReLU()),
        ("drop2", Drop(implementation)),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(32 * 7 * 7, 64)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(64, classes)));

    private static nn.Module<Tensor, Tensor> Norm(Implementation implementation, long channels) =>
        implementation == Implementation.TorchSharp ? nn.BatchNorm2d(channels) : BatchNorm2d(channels);

    private static nn.Module<Tensor, Tensor> Drop(Implementation implementation) =>
        implementation == Implementation.TorchSharp ? nn.Dropout2d(DropoutP) : Dropout2d(DropoutP);
}
