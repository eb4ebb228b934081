using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>The intra-op thread count every benchmark runs with: TorchSharp's, which MyTorch.Layers follows too.</summary>
public static class Threads
{
    /// <summary>All cores unless <c>--threads N</c> says otherwise.</summary>
    public static int Count { get; set; } = Environment.ProcessorCount;

    /// <summary>Sets TorchSharp's thread count; checked, because a silently different count would skew every row.</summary>
    public static void Apply()
    {
        set_num_threads(Count);
        if (get_num_threads() != Count)
        {
            throw new InvalidOperationException($"torch.set_num_threads({Count}) left {get_num_threads()} threads.");
        }
    }
}
