using System;
using System.Globalization;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The ranks a batch normalisation layer takes, with TorchSharp's words for any other, and how an input of any rank
/// becomes the 4-D planes the kernels read: (N, C, d₂, …, dₖ) as (N, C, d₂·…·dₖ₋₁, dₖ), the same memory.
/// </summary>
/// <param name="Minimum">The smallest rank taken.</param>
/// <param name="Maximum">The largest rank taken.</param>
/// <param name="Expected">What the refusal says is expected, as in "expected 4D input".</param>
internal sealed record BatchNormRanks(int Minimum, int Maximum, string Expected)
{
    /// <summary>BatchNorm1d: (N, C) or (N, C, L).</summary>
    public static BatchNormRanks One { get; } = new(2, 3, "2D or 3D");

    /// <summary>BatchNorm2d: (N, C, H, W).</summary>
    public static BatchNormRanks Two { get; } = new(4, 4, "4D");

    /// <summary>BatchNorm3d: (N, C, D, H, W).</summary>
    public static BatchNormRanks Three { get; } = new(5, 5, "5D");

    /// <summary>The functional forms: (N, C, …) of any rank from 2, as libtorch's <c>batch_norm</c>.</summary>
    public static BatchNormRanks Any { get; } = new(2, int.MaxValue, "at least 2D");

    /// <summary>Refuses a rank outside the range, as TorchSharp words it.</summary>
    public void Check(long[] shape, string name)
    {
        if (shape.Length < Minimum || shape.Length > Maximum)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"expected {Expected} input, but got {shape.Length}D input."), name);
        }
    }

    /// <summary>The 4-D planes (N, C, H, W) of a shape (N, C, …): (N, C) is (N, C, 1, 1), (N, C, L) is (N, C, 1, L).</summary>
    public static long[] Planes(long[] shape)
    {
        if (shape.Length == 4)
        {
            return shape;
        }

        if (shape.Length == 2)
        {
            return [shape[0], shape[1], 1, 1];
        }

        long middle = 1;
        for (int d = 2; d < shape.Length - 1; d++)
        {
            middle *= shape[d];
        }

        return [shape[0], shape[1], middle, shape[^1]];
    }

    /// <summary>
    /// <paramref name="x"/> as its planes: itself when 4-D, otherwise a view of the same memory where the strides allow
    /// one (contiguous, channels-last-3d), a contiguous copy where they do not. The caller disposes what is not <paramref name="x"/>.
    /// </summary>
    public static Tensor AsPlanes(Tensor x, long[] shape, long[] planes) => shape.Length == 4 ? x : x.reshape(planes);

    /// <summary>A result computed on the planes, given the input's shape again (a view; the planes' handle is disposed).</summary>
    public static Tensor FromPlanes(Tensor planes, long[] shape)
    {
        if (shape.Length == 4)
        {
            return planes;
        }

        var result = planes.view(shape);
        planes.Dispose();
        return result;
    }
}
