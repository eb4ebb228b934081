using System;
using MyTorch.Layers.Kernels;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>How a 4-D tensor's elements are laid out in memory.</summary>
internal enum MemoryLayout
{
    /// <summary>Contiguous NCHW: read in place.</summary>
    Contiguous,

    /// <summary>Channels-last NHWC, as <c>x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)</c> gives: read in place.</summary>
    ChannelsLast,

    /// <summary>Any other strides: read through a contiguous copy.</summary>
    Strided,
}

/// <summary>Classifies the memory of 4-D tensors and allocates tensors in a given layout.</summary>
internal static class Layouts
{
    private static readonly long[] NchwOrder = [0, 1, 2, 3];
    private static readonly long[] NhwcOrder = [0, 2, 3, 1];

    /// <summary>
    /// The layout of a 4-D tensor. As in PyTorch, the stride of a dimension of size 1 does not matter; a tensor that is
    /// both counts as contiguous (for example C = 1), except where each plane is one value (H·W = 1, as BatchNorm1d's
    /// (N, C) input is read): its rows of C values are then summed down their columns by the channels-last kernels, not
    /// one plane of one value at a time.
    /// </summary>
    private static MemoryLayout Classify(Tensor x, long[] shape)
    {
        long[] strides = x.stride();
        if (shape[2] * shape[3] == 1 && shape[1] > 1 && IsDense(shape, strides, NhwcOrder))
        {
            return MemoryLayout.ChannelsLast;
        }

        if (IsDense(shape, strides, NchwOrder))
        {
            return MemoryLayout.Contiguous;
        }

        return IsDense(shape, strides, NhwcOrder) ? MemoryLayout.ChannelsLast : MemoryLayout.Strided;
    }

    /// <summary>The (N, C, H·W) view the kernels use for a tensor in <paramref name="layout"/>.</summary>
    public static PlaneLayout Plane(long[] shape, MemoryLayout layout)
    {
        long spatial = shape[2] * shape[3];
        return new PlaneLayout(checked((int)shape[0]), checked((int)shape[1]), checked((int)spatial), layout == MemoryLayout.ChannelsLast);
    }

    /// <summary>
    /// <paramref name="shape"/> as a batch: a 3-D (C, H, W) shape becomes (1, C, H, W), the single sample it is;
    /// a 4-D shape is returned as it is.
    /// </summary>
    public static long[] AsBatch(long[] shape) => shape.Length == 3 ? [1, shape[0], shape[1], shape[2]] : shape;

    /// <summary>
    /// The layout of a 3-D (C, H, W) or 4-D (N, C, H, W) tensor, a 3-D tensor being read as one sample:
    /// contiguous, channels-last ((H, W, C) memory for 3-D) or strided. Here and below <paramref name="shape"/> is the
    /// tensor's shape as the caller has read it already: reading it through TorchSharp costs native calls each time.
    /// </summary>
    public static MemoryLayout ClassifyPlanes(Tensor x, long[] shape)
    {
        if (shape.Length == 4)
        {
            return Classify(x, shape);
        }

        shape = AsBatch(shape);
        long[] s = x.stride();
        long[] strides = [shape[1] * shape[2] * shape[3], s[0], s[1], s[2]];
        if (IsDense(shape, strides, NchwOrder))
        {
            return MemoryLayout.Contiguous;
        }

        return IsDense(shape, strides, NhwcOrder) ? MemoryLayout.ChannelsLast : MemoryLayout.Strided;
    }

    /// <summary>
    /// <paramref name="x"/>, 3-D or 4-D, itself when the kernels can read it in place, otherwise a contiguous copy
    /// (which the caller disposes); <paramref name="layout"/> tells which of the two readable layouts it is in.
    /// </summary>
    public static Tensor ReadablePlanes(Tensor x, long[] shape, out MemoryLayout layout)
    {
        layout = ClassifyPlanes(x, shape);
        if (layout != MemoryLayout.Strided)
        {
            return x;
        }

        layout = MemoryLayout.Contiguous;
        return x.contiguous();
    }

    /// <summary>
    /// <paramref name="x"/>, 3-D or 4-D, of a dtype the kernels take, itself when it is in <paramref name="layout"/>, otherwise a
    /// copy in that layout: made by <see cref="LayoutKernels"/> from the other readable layout, by libtorch from any
    /// other strides.
    /// </summary>
    public static Tensor PlanesInLayout(Tensor x, long[] shape, MemoryLayout layout)
    {
        var own = ClassifyPlanes(x, shape);
        if (own == layout)
        {
            return x;
        }

        if (own != MemoryLayout.Strided && layout != MemoryLayout.Strided)
        {
            var moved = EmptyPlanes(shape, x.dtype, layout);
            var from = Plane(AsBatch(shape), own);
            if (x.dtype == ScalarType.Float32)
            {
                LayoutKernels.ToOtherLayout<float>(TensorMemory.Span<float>(x, from), TensorMemory.Span<float>(moved, from), from, KernelThreads.Count);
            }
            else if (Check.IsHalfPrecision(x.dtype))
            {
                LayoutKernels.ToOtherLayout<ushort>(TensorMemory.Span<ushort>(x, from), TensorMemory.Span<ushort>(moved, from), from, KernelThreads.Count);
            }
            else
            {
                LayoutKernels.ToOtherLayout<double>(TensorMemory.Span<double>(x, from), TensorMemory.Span<double>(moved, from), from, KernelThreads.Count);
            }

            return moved;
        }

        if (layout != MemoryLayout.ChannelsLast)
        {
            return x.contiguous();
        }

        var copy = EmptyPlanes(shape, x.dtype, layout);
        copy.copy_(x);
        return copy;
    }

    /// <summary>
    /// An uninitialised 3-D or 4-D tensor in <paramref name="layout"/> (strided means contiguous), allocated with its
    /// strides rather than as a permuted view, so that autograd does not treat it as a view of a hidden base
    /// (a view returned from a custom autograd function cannot be modified in place afterwards). Large ones reuse the
    /// memory of earlier outputs (see <see cref="OutputMemory"/>).
    /// </summary>
    public static Tensor EmptyPlanes(long[] shape, ScalarType dtype, MemoryLayout layout)
    {
        if (OutputMemory.TryEmpty(shape, dtype, layout == MemoryLayout.ChannelsLast) is { } kept)
        {
            return kept;
        }

        long[] batch = AsBatch(shape);
        long c = batch[1], h = batch[2], w = batch[3];
        long[] strides = layout == MemoryLayout.ChannelsLast
            ? [h * w * c, 1, w * c, c]
            : [c * h * w, h * w, w, 1];
        return empty_strided(shape, shape.Length == 3 ? strides[1..] : strides, dtype);
    }

    private static bool IsDense(long[] shape, long[] strides, long[] order)
    {
        long expected = 1;
        for (int k = order.Length - 1; k >= 0; k--)
        {
            long d = order[k];
            if (shape[d] == 1)
            {
                continue;
            }

            if (strides[d] != expected)
            {
                return false;
            }

            expected *= shape[d];
        }

        return true;
    }

    /// <summary>The number of elements of a shape, refusing what a span cannot index.</summary>
    public static long CheckedLength(long[] shape)
    {
        long length = 1;
        foreach (long s in shape)
        {
            length *= s;
        }

        if (length > int.MaxValue)
        {
            throw new NotSupportedException($"Tensors of more than {int.MaxValue} elements are not supported (got {length}).");
        }

        return length;
    }
}
