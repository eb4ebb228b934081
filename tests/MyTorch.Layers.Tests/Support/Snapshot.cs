using System;
using System.Collections.Generic;
using System.Linq;
using NUnit.Framework;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>Bitwise copies of tensors taken before a call, to prove afterwards that the call changed none of them.</summary>
internal sealed class Snapshot : IDisposable
{
    private readonly List<(string Name, Tensor Live, Tensor Copy)> _entries = [];

    /// <summary>Records every parameter and buffer of <paramref name="module"/>.</summary>
    public static Snapshot Of(nn.Module module, params (string Name, Tensor Tensor)[] extra)
    {
        var snapshot = new Snapshot();
        foreach (var (name, p) in module.named_parameters())
        {
            snapshot.Add("parameter " + name, p);
        }

        foreach (var (name, b) in module.named_buffers())
        {
            snapshot.Add("buffer " + name, b);
        }

        foreach (var (name, t) in extra)
        {
            snapshot.Add(name, t);
        }

        return snapshot;
    }

    public void Add(string name, Tensor tensor) => _entries.Add((name, tensor, tensor.detach().clone()));

    /// <summary>Asserts every recorded tensor still holds exactly (bitwise, NaN included) what it held.</summary>
    public void AssertUnchanged()
    {
        Assert.That(_entries, Is.Not.Empty, "nothing was recorded");
        foreach (var (name, live, copy) in _entries)
        {
            Assert.That(live.shape, Is.EqualTo(copy.shape), $"{name}: shape changed");
            Assert.That(live.dtype, Is.EqualTo(copy.dtype), $"{name}: dtype changed");
            using var a = live.detach().contiguous();
            using var b = copy.contiguous();
            Assert.That(a.bytes.ToArray().SequenceEqual(b.bytes.ToArray()), Is.True, $"{name}: contents changed");
        }
    }

    public void Dispose()
    {
        foreach (var (_, _, copy) in _entries)
        {
            copy.Dispose();
        }
    }
}
