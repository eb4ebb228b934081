using System;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// Properties that hold whatever the generator draws: the kept fraction is close to 1 − p, whole channels are kept or
/// dropped, a kept channel is exactly x · (T(1) / T(1 − p)) in T arithmetic, a dropped one exactly x · 0, and the gradient
/// is zero exactly where the output is.
/// </summary>
[TestFixture]
public class Dropout2dStatisticsTests
{
    /// <summary>Six binomial standard deviations: a correct implementation fails this about once in 500 million runs.</summary>
    private const double Sigmas = 6;

    [Test]
    public void ChannelsAreKeptOrDroppedWhole_WithTheRightFrequency_AndExactValues(
        [Values(ScalarType.Float32, ScalarType.Float64)] ScalarType dtype,
        [Values(4, 3)] int rank,
        [Values(0.1, 0.5, 0.9)] double p,
        [Values(false, true)] bool channelsLast,
        [Values(false, true)] bool ownGenerator)
    {
        using var scope = NewDisposeScope();

        // 20,000 channels of 3 values (4-D), or 6,000 planes of 4 values (3-D).
        long[] shape = rank == 4 ? [400, 50, 1, 3] : [6000, 2, 2];
        var x = NonZeroValues(shape, dtype);
        if (channelsLast)
        {
            x = rank == 4 ? x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : x.permute(1, 2, 0).contiguous().permute(2, 0, 1);
        }

        x.requires_grad_(true);
        ulong seed = (ulong)Environment.TickCount64;
        var module = new Dropout2d(p, generator: ownGenerator ? new Generator(seed) : null);
        var y = module.forward(x);
        var gradOutput = NonZeroValues(shape, dtype);
        y.backward([gradOutput]);
        string source = ownGenerator ? $"generator seeded {seed}" : "default generator";

        // Per channel: the flattened planes, (N·C, H·W) for 4-D and (C, H·W) for 3-D, in logical order.
        long channels = rank == 4 ? shape[0] * shape[1] : shape[0];
        var xs = BitExact.Values(x.reshape(channels, -1));
        var ys = BitExact.Values(y.reshape(channels, -1));
        var dxs = BitExact.Values(x.grad!.reshape(channels, -1));
        var dys = BitExact.Values(gradOutput.reshape(channels, -1));
        int perChannel = xs.Length / (int)channels;
        double keepFactor = dtype == ScalarType.Float32 ? 1f / (float)(1 - p) : 1 / (1 - p);

        long kept = 0;
        string? firstFailure = null;
        for (int c = 0; c < channels && firstFailure is null; c++)
        {
            int start = c * perChannel;
            bool isKept = ys[start].Value != 0;
            kept += isKept ? 1 : 0;
            double factor = isKept ? keepFactor : 0;
            for (int i = start; i < start + perChannel && firstFailure is null; i++)
            {
                if (ys[i].Bits != Product(xs[i].Value, factor, dtype))
                {
                    firstFailure = $"channel {c}: output {ys[i].Value} is not x · {factor} = {xs[i].Value} · {factor} in {dtype} (the channel's first value says {(isKept ? "kept" : "dropped")})";
                }
                else if ((dxs[i].Value == 0) != (ys[i].Value == 0))
                {
                    firstFailure = $"channel {c}: the gradient {dxs[i].Value} is not zero exactly where the output {ys[i].Value} is";
                }
                else if (dxs[i].Bits != Product(dys[i].Value, factor, dtype))
                {
                    firstFailure = $"channel {c}: gradient {dxs[i].Value} is not dy · {factor} = {dys[i].Value} · {factor} in {dtype}";
                }
            }
        }

        Assert.That(firstFailure, Is.Null, source);
        double n = channels;
        double sd = Math.Sqrt(n * p * (1 - p));
        Assert.That(kept, Is.InRange((n * (1 - p)) - (Sigmas * sd), (n * (1 - p)) + (Sigmas * sd)), $"kept {kept} of {channels} channels at p = {p}, {source}");
    }

    /// <summary>|values| in [0.5, 1.5) with random signs: never zero, so a zero output means a dropped channel.</summary>
    private static Tensor NonZeroValues(long[] shape, ScalarType dtype)
    {
        using Scalar half = 0.5;
        var magnitude = rand(shape, dtype).Plus(0.5);
        var sign = (rand(shape, dtype) < half).to(dtype).Times(2).Minus(1);
        return magnitude * sign;
    }

    /// <summary>The bits of a · b computed in the dtype.</summary>
    private static long Product(double a, double b, ScalarType dtype) =>
        dtype == ScalarType.Float32 ? BitConverter.SingleToInt32Bits((float)a * (float)b) : BitConverter.DoubleToInt64Bits(a * b);
}
