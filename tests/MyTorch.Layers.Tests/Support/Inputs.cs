using System;
using System.Linq;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>The memory layouts the oracle tests feed to both implementations, for an input (N, C, …) of any rank from 2.</summary>
public enum Layout
{
    /// <summary>Contiguous (N, C, …).</summary>
    Contiguous,

    /// <summary>
    /// The channels innermost in memory behind an (N, C, …) view: channels_last (NHWC) for 4-D, channels_last_3d (NDHWC)
    /// for 5-D, (N, L, C) for 3-D; for 2-D (N, C) this is the contiguous layout.
    /// </summary>
    ChannelsLast,

    /// <summary>Every other element of the last dimension of a wider tensor: non-unit innermost stride.</summary>
    StridedSlice,

    /// <summary>A contiguous view that starts one sample into a larger tensor: non-zero storage offset.</summary>
    StorageOffset,
}

/// <summary>
/// An input in a given layout, built as a view of a leaf tensor so that both implementations' gradients land in
/// <see cref="Leaf"/>.grad, whatever the view.
/// </summary>
internal sealed class LaidOutInput : IDisposable
{
    private LaidOutInput(Tensor leaf, Tensor view)
    {
        Leaf = leaf;
        View = view;
    }

    /// <summary>The tensor that requires grad.</summary>
    public Tensor Leaf { get; }

    /// <summary>The (N, C, …) view given to the layer, of the values' shape.</summary>
    public Tensor View { get; }

    /// <summary>Builds the same values in the requested layout; <paramref name="values"/> is (N, C, …), of rank 2 or more.</summary>
    public static LaidOutInput Create(Tensor values, Layout layout)
    {
        long[] shape = values.shape;
        int rank = shape.Length, last = rank - 1;
        long n = shape[0], w = shape[last];
        Tensor leaf;
        Tensor view;
        switch (layout)
        {
            case Layout.Contiguous:
                leaf = values.detach().clone().requires_grad_(true);
                view = leaf;
                break;
            case Layout.ChannelsLast:
                {
                    // (0, 2, …, r − 1, 1) puts the channels innermost; its inverse, (0, r − 1, 1, …, r − 2), gives back (N, C, …).
                    long[] toMemory = [0, .. Enumerable.Range(2, rank - 2).Select(d => (long)d), 1];
                    long[] back = [0, last, .. Enumerable.Range(1, rank - 2).Select(d => (long)d)];
                    leaf = values.detach().permute(toMemory).contiguous().permute(back).requires_grad_(true);
                    view = leaf;
                    break;
                }

            case Layout.StridedSlice:
                {
                    using var wide = zeros([.. shape[..last], 2 * w], values.dtype);
                    wide.slice(last, 0, 2 * w, 2).copy_(values);
                    leaf = wide.detach().clone().requires_grad_(true);
                    view = leaf.slice(last, 0, 2 * w, 2);
                    break;
                }

            case Layout.StorageOffset:
                {
                    using var taller = zeros([n + 1, .. shape[1..]], values.dtype);
                    taller.slice(0, 1, n + 1, 1).copy_(values);
                    leaf = taller.detach().clone().requires_grad_(true);
                    view = leaf.slice(0, 1, n + 1, 1);
                    break;
                }

            default:
                throw new ArgumentOutOfRangeException(nameof(layout), layout, null);
        }

        return new LaidOutInput(leaf, view);
    }

    /// <summary>
    /// An expanded (zero-stride) input: the leaf holds only index 0 of dimension <paramref name="dim"/> of
    /// <paramref name="values"/>, and the view repeats it along that dimension with stride 0, as <c>x.expand(...)</c> of a
    /// size-1 dimension gives. The view's values are therefore <paramref name="values"/> with that slice repeated.
    /// </summary>
    public static LaidOutInput CreateExpanded(Tensor values, int dim)
    {
        var leaf = values.detach().narrow(dim, 0, 1).clone().requires_grad_(true);
        return new LaidOutInput(leaf, leaf.expand(values.shape));
    }

    public void Dispose()
    {
        if (!ReferenceEquals(View, Leaf))
        {
            View.Dispose();
        }

        Leaf.Dispose();
    }
}
