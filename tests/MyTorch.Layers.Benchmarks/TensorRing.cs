using System;
using System.Collections.Generic;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// Several copies of the same tensors, handed out in turn, so that each step reads memory the previous steps did not
/// just touch: a training step's input was written by the layer before, not read a moment ago by this one.
/// </summary>
/// <remarks>
/// The copies together span <see cref="TargetBytes"/>, well past the last-level caches of the machines measured
/// (32 to 260 MiB), so a small tensor is read from memory as a large one is, and the copy benchmark that sets the
/// roofline sees the same.
/// </remarks>
public sealed class TensorRing : IDisposable
{
    /// <summary>The ring's total size, whatever the tensor size.</summary>
    public const long TargetBytes = 1L << 29;

    private const int MaxEntries = 64;

    private readonly List<Tensor[]> _entries = [];

    private int _next;

    /// <summary>Copies of <paramref name="tensors"/> (which are kept, as the first entry) until the ring spans <see cref="TargetBytes"/>.</summary>
    public TensorRing(params Tensor[] tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        long entryBytes = 0;
        foreach (var t in tensors)
        {
            entryBytes += t.NumberOfElements * t.ElementSize;
        }

        int count = (int)Math.Clamp((TargetBytes + entryBytes - 1) / Math.Max(entryBytes, 1), 2, MaxEntries);
        _entries.Add(tensors);
        for (int i = 1; i < count; i++)
        {
            // clone() keeps the layout (preserve_format), so channels-last stays channels-last.
            _entries.Add(Array.ConvertAll(tensors, t => t.clone().DetachFromDisposeScope()));
        }
    }

    public int Count => _entries.Count;

    /// <summary>The next entry: the same tensors, in the order given to the constructor.</summary>
    public Tensor[] Next()
    {
        var entry = _entries[_next];
        _next = (_next + 1) % _entries.Count;
        return entry;
    }

    /// <summary>
    /// The entry half the ring away from the one <see cref="Next"/> will return, without advancing: a destination that
    /// is read again only after the whole ring has gone through the cache.
    /// </summary>
    public Tensor[] Opposite() => _entries[(_next + (_entries.Count / 2)) % _entries.Count];

    public void Dispose()
    {
        foreach (var entry in _entries)
        {
            foreach (var t in entry)
            {
                t.Dispose();
            }
        }

        _entries.Clear();
    }
}
