using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>Bookkeeping of the running statistics that is not per-element math.</summary>
internal static class RunningStatistics
{
    /// <summary>
    /// Adds one to a num_batches_tracked scalar and returns the new count. The scalar is int64 as PyTorch keeps it,
    /// or floating point when it was loaded from a TorchSharp module that was given a dtype.
    /// </summary>
    public static long Advance(Tensor numBatchesTracked)
    {
        switch (numBatchesTracked.dtype)
        {
            case ScalarType.Int64:
                return ++TensorMemory.Span<long>(numBatchesTracked, 1)[0];
            case ScalarType.Float32:
                return (long)++TensorMemory.Span<float>(numBatchesTracked, 1)[0];
            case ScalarType.Float64:
                return (long)++TensorMemory.Span<double>(numBatchesTracked, 1)[0];
            default:
                throw new InvalidOperationException($"num_batches_tracked has dtype {numBatchesTracked.dtype}; expected Int64.");
        }
    }
}
