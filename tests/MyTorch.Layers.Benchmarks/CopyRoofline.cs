using System;
using System.Collections.Generic;
using System.Linq;
using BenchmarkDotNet.Attributes;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// The roofline: <c>dst.copy_(src)</c> of one tensor's bytes into another already allocated, in the same layout and
/// with the same threads, between ring entries that are not in cache. A copy reads the tensor once and writes it
/// once, so a step of P passes can at best take P/2 copy times.
/// </summary>
public class CopyRoofline
{
    private TensorRing? _ring;

    /// <summary>Every case any other benchmark runs on, a channels-last input with an NCHW gradient being copied as channels-last.</summary>
    [ParamsSource(nameof(Cases))]
    public TensorCase Case { get; set; } = null!;

    public static IEnumerable<TensorCase> Cases() =>
        TensorCase.TrainingStep().Where(c => c.CopyCase == c).Concat(TensorCase.Family()).Concat(TensorCase.HalfPrecisionNchw()).Distinct();

    [GlobalSetup]
    public void GlobalSetup()
    {
        Threads.Apply();
        manual_seed(42);
        _ring = new TensorRing(Case.RandomInput().DetachFromDisposeScope());
    }

    [GlobalCleanup]
    public void GlobalCleanup()
    {
        _ring?.Dispose();
        _ring = null;
    }

    [Benchmark]
    public void Copy()
    {
        var ring = _ring ?? throw new InvalidOperationException("GlobalSetup has not run.");
        using var scope = NewDisposeScope();
        var destination = ring.Opposite()[0];
        destination.copy_(ring.Next()[0]);
    }
}
