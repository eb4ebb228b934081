using System;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// Where a model's <see cref="SharedMaskDropout2d"/> layers draw their masks: the whole batch's size, the first row of
/// this process's part in it, and the step's seed. Data-parallel training with a plain Dropout2d draws each part's
/// masks on its own, as valid for training but never the single-process run's masks, so nothing could be compared
/// step by step; drawing the whole batch's masks everywhere and applying one's own rows makes them the same.
/// </summary>
internal sealed class DropoutMasks(long wholeBatch, long offset, long seed)
{
    private int _layers;

    public long WholeBatch => wholeBatch;

    public long Offset => offset;

    /// <summary>The training step the next forward passes belong to; each step draws new masks.</summary>
    public long Step { get; set; }

    /// <summary>A number for a new layer, so that the layers of one model draw different masks.</summary>
    public int Register() => _layers++;

    /// <summary>The seed of one layer's masks at the current step: the same in every model built in the same order.</summary>
    public ulong Seed(int layer) => (ulong)((seed * 1_000_003) + (Step * 64) + layer);
}

/// <summary>
/// Dropout2d whose (whole batch, C) keep-mask comes from <see cref="DropoutMasks"/>: a process keeps the rows of its
/// part, so every image loses the same channels whichever process computes it. Kept channels are scaled by 1/(1 − p);
/// the identity in evaluation, as Dropout2d.
/// </summary>
internal sealed class SharedMaskDropout2d : nn.Module<Tensor, Tensor>
{
    private readonly double _p;
    private readonly DropoutMasks _masks;
    private readonly int _layer;

    public SharedMaskDropout2d(double p, DropoutMasks masks)
        : base(nameof(SharedMaskDropout2d))
    {
        ArgumentOutOfRangeException.ThrowIfNegative(p);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(p, 1);
        _p = p;
        _masks = masks;
        _layer = masks.Register();
    }

    public override Tensor forward(Tensor input)
    {
        if (!training || _p == 0)
        {
            return input.alias();
        }

        using var scope = NewDisposeScope();
        using var generator = new Generator(_masks.Seed(_layer));
        long[] shape = new long[input.dim()];
        Array.Fill(shape, 1L);
        shape[0] = _masks.WholeBatch;
        shape[1] = input.shape[1];
        var keep = bernoulli(full(shape, 1 - _p, ScalarType.Float64), generator)
            .narrow(0, _masks.Offset, input.shape[0])
            .div_(1 - _p)
            .to(input.dtype);
        return (input * keep).MoveToOuterDisposeScope();
    }
}
