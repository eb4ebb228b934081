using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>Bookkeeping of the running statistics that is not per-element math.</summary>
internal static class RunningStatistics
{
    /// <summary>The count a num_batches_tracked scalar holds, of any of the dtypes <see cref="Advance"/> takes.</summary>
    public static long Count(Tensor numBatchesTracked) => numBatchesTracked.dtype switch
    {
        ScalarType.Int64 => TensorMemory.Span<long>(numBatchesTracked, 1)[0],
        ScalarType.Float32 => (long)TensorMemory.Span<float>(numBatchesTracked, 1)[0],
        ScalarType.Float64 => (long)TensorMemory.Span<double>(numBatchesTracked, 1)[0],
        _ => throw new InvalidOperationException($"num_batches_tracked has dtype {numBatchesTracked.dtype}; expected Int64."),
    };

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
