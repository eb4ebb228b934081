using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Batch normalisation over a 5-D input (N, C, D, H, W), a drop-in for TorchSharp's <c>torch.nn.BatchNorm3d</c>
/// whose forward and backward run MyTorch.Layers' kernels (see <see cref="BatchNormBase"/>).
/// </summary>
public sealed class BatchNorm3d : BatchNormBase
{
    /// <inheritdoc cref="BatchNorm2d(long, double, double?, bool, bool, Device?, ScalarType?)"/>
    public BatchNorm3d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null)
        : base(num_features, eps, momentum, affine, track_running_stats, device, dtype, nameof(BatchNorm3d))
    {
    }

    /// <summary>(N, C, D, H, W).</summary>
    private protected override Functional.BatchNormRanks Ranks => Functional.BatchNormRanks.Three;
}
