using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Batch normalisation over a 4-D input (N, C, H, W), a drop-in for TorchSharp's <c>torch.nn.BatchNorm2d</c>
/// whose forward and backward run MyTorch.Layers' kernels (see <see cref="BatchNormBase"/>).
/// </summary>
public sealed class BatchNorm2d : BatchNormBase
{
    /// <summary>Creates the module with TorchSharp's parameter names, order and defaults.</summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel weight (ones) and bias (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default), Float64, BFloat16 or Float16. A float32 module also takes bfloat16 and float16 input.</param>
    /// <exception cref="System.ArgumentOutOfRangeException"><paramref name="num_features"/> is below 1, or <paramref name="eps"/> is negative or NaN.</exception>
    /// <exception cref="System.ArgumentException"><paramref name="dtype"/> is not Float32, Float64, BFloat16 or Float16.</exception>
    /// <exception cref="System.NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public BatchNorm2d(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        Device? device = null,
        ScalarType? dtype = null)
        : base(num_features, eps, momentum, affine, track_running_stats, device, dtype, nameof(BatchNorm2d))
    {
    }

    /// <summary>(N, C, H, W).</summary>
    private protected override Functional.BatchNormRanks Ranks => Functional.BatchNormRanks.Two;
}
