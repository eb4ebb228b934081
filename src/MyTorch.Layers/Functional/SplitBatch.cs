using System;

namespace MyTorch.Layers.Functional;

/// <summary>
/// A training batch split across processes (SyncBatchNorm): each process normalises its own part with the statistics
/// of the whole batch, and its backward with the whole batch's sums. One instance per forward, kept by the autograd
/// node for its backward.
/// </summary>
/// <param name="exchange">How the parts' sums reach every process.</param>
internal sealed class SplitBatch(ISumExchange exchange)
{
    /// <summary>How the parts' sums reach every process.</summary>
    public ISumExchange Exchange { get; } = exchange;

    /// <summary>M, the values per channel of the whole batch, set by the forward.</summary>
    public long Values { get; set; }
}

/// <summary>Gathers float64 records from every process of a group.</summary>
internal interface ISumExchange
{
    /// <summary>The number of processes, each holding one part.</summary>
    int Parts { get; }

    /// <summary>
    /// Every process's <paramref name="local"/> (of one length on all) into <paramref name="all"/>, in process order:
    /// the same on every process.
    /// </summary>
    void AllGather(ReadOnlySpan<double> local, Span<double> all);
}
