using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>The memory layouts the oracle tests feed to both implementations.</summary>
public enum Layout
{
    /// <summary>Contiguous NCHW.</summary>
    Contiguous,

    /// <summary>Channels-last NHWC memory behind an NCHW view.</summary>
    ChannelsLast,

    /// <summary>Every other column of a wider tensor: non-unit innermost stride.</summary>
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

    /// <summary>The (N, C, H, W) view given to the layer.</summary>
    public Tensor View { get; }

    /// <summary>Builds the same values in the requested layout; <paramref name="values"/> is (N, C, H, W).</summary>
    public static LaidOutInput Create(Tensor values, Layout layout)
    {
        long n = values.shape[0], c = values.shape[1], h = values.shape[2], w = values.shape[3];
        Tensor leaf;
        Tensor view;
        switch (layout)
        {
            case Layout.Contiguous:
                leaf = values.detach().clone().requires_grad_(true);
                view = leaf;
                break;
            case Layout.ChannelsLast:
                leaf = values.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_(true);
                view = leaf;
                break;
            case Layout.StridedSlice:
                {
                    using var wide = zeros(n, c, h, 2 * w, values.dtype);
                    wide.slice(3, 0, 2 * w, 2).copy_(values);
                    leaf = wide.detach().clone().requires_grad_(true);
                    view = leaf.slice(3, 0, 2 * w, 2);
                    break;
                }

            case Layout.StorageOffset:
                {
                    using var taller = zeros(n + 1, c, h, w, values.dtype);
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
