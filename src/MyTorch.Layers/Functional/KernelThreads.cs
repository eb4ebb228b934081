using System;
using TorchSharp;

namespace MyTorch.Layers.Functional;

/// <summary>How many threads the kernels may use.</summary>
internal static class KernelThreads
{
    /// <summary>
    /// TorchSharp's intra-op thread count (<c>torch.get_num_threads()</c>), so that one setting governs both libraries.
    /// The kernels' results do not depend on it.
    /// </summary>
    public static int Count => Math.Max(1, torch.get_num_threads());
}
