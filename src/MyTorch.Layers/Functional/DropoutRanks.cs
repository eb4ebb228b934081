using System;
using System.Globalization;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The ranks a channel dropout layer takes, batched and unbatched, and how an input becomes the (N, C, H, W) or (C, H, W)
/// planes Dropout2d's kernels read: the same memory, the same mask over N·C channels, so the same draws as TorchSharp's.
/// </summary>
/// <param name="Layer">The layer's name, for messages.</param>
/// <param name="Batched">The batched rank: (N, C, …).</param>
/// <param name="Shapes">How the refusal names the two shapes, as in "a 2-D (C, L) or 3-D (N, C, L) input".</param>
internal sealed record DropoutRanks(string Layer, int Batched, string Shapes)
{
    /// <summary>Dropout1d: (N, C, L), or (C, L) as one sample.</summary>
    public static DropoutRanks One { get; } = new("Dropout1d", 3, "a 2-D (C, L) or 3-D (N, C, L)");

    /// <summary>Dropout3d: (N, C, D, H, W), or (C, D, H, W) as one sample.</summary>
    public static DropoutRanks Three { get; } = new("Dropout3d", 5, "a 4-D (C, D, H, W) or 5-D (N, C, D, H, W)");

    /// <summary>Refuses a rank other than the two; returns the input's shape.</summary>
    public long[] Check(Tensor input, string name)
    {
        Functional.Check.Alive(input, name);
        long[] shape = input.shape;
        if (shape.Length != Batched && shape.Length != Batched - 1)
        {
            throw new ArgumentException(
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"{Layer} expects {Shapes} input, got a {shape.Length}-D input of size {Functional.Check.Format(shape)}. ") +
                $"PyTorch has deprecated other ranks for {Layer.ToLowerInvariant()} and MyTorch.Layers refuses them.",
                name);
        }

        return shape;
    }

    /// <summary>
    /// The planes of a shape this layer takes: (N, C, L) as (N, C, 1, L) and (C, L) as (C, 1, L); (N, C, D, H, W) as
    /// (N, C, D·H, W) and (C, D, H, W) as (C, D·H, W).
    /// </summary>
    public long[] Planes(long[] shape)
    {
        bool batched = shape.Length == Batched;
        int channels = batched ? 1 : 0;
        long middle = 1;
        for (int d = channels + 1; d < shape.Length - 1; d++)
        {
            middle *= shape[d];
        }

        return batched ? [shape[0], shape[1], middle, shape[^1]] : [shape[0], middle, shape[^1]];
    }

    /// <summary>
    /// <paramref name="input"/> as its <paramref name="planes"/> (<see cref="Planes"/>): a view of the same memory where
    /// the strides allow one (contiguous, channels-last-3d), otherwise a contiguous copy. In place the output must be
    /// written into the input's memory, so a copy will not do and such strides are refused. The caller disposes the result.
    /// </summary>
    public Tensor AsPlanes(Tensor input, long[] planes, bool inplace, string name)
    {
        try
        {
            return input.view(planes);
        }
        catch (ExternalException) when (!inplace)
        {
            return input.reshape(planes);
        }
        catch (ExternalException e)
        {
            throw new ArgumentException(
                $"{Layer} in place needs an input whose memory can be viewed as {Functional.Check.Format(planes)} (contiguous, or channels-last-3d); this one's strides cannot. Call contiguous() first.",
                name,
                e);
        }
    }

    /// <summary>A result computed on the planes, given the layer's <paramref name="shape"/> again: a view; the planes' handle is disposed.</summary>
    public static Tensor FromPlanes(Tensor planes, long[] shape)
    {
        var result = planes.view(shape);
        planes.Dispose();
        return result;
    }

    /// <summary>The mask's shape for an input of <paramref name="shape"/>: (N, C, 1, …, 1) or (C, 1, …, 1).</summary>
    public long[] MaskShape(long[] shape)
    {
        int channels = shape.Length == Batched ? 2 : 1;
        var mask = new long[shape.Length];
        for (int d = 0; d < shape.Length; d++)
        {
            mask[d] = d < channels ? shape[d] : 1;
        }

        return mask;
    }
}
