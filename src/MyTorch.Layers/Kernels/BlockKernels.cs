using System;
using System.Diagnostics;
using System.Numerics;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// What a BatchNorm2d → ReLU → Dropout2d block adds to batch normalisation, over raw buffers: the rectifier and the
/// channel factors applied to the normalised values, and the gradient that reaches the normalisation from the block's
/// output gradient. Each value is computed as the three layers compute it one after another, so the block's results are
/// bit for bit theirs. Callers validate; these functions only assert.
/// </summary>
/// <remarks>
/// Notation: y is batch normalisation's output in the element type T, mask[n·C + c] the dropout factor of channel (n, c)
/// (0, or T(1)/T(1 − p)), ReLU(y) = 0 where y &lt; 0 and y otherwise (so −0.0 and NaN pass unchanged, as libtorch's
/// <c>relu</c> does). An empty mask means no dropout.
/// </remarks>
internal static partial class BlockKernels
{
    /// <summary>
    /// y = ReLU(y) · mask[n·C + c] in place, one multiplication in T as dropout's <c>input * mask</c>; without
    /// <paramref name="rectify"/> the ReLU is left out, without a mask the multiplication.
    /// </summary>
    public static void RectifyAndScale<T>(Span<T> y, PlaneLayout layout, ReadOnlySpan<T> mask, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(y.Length >= layout.Length && (mask.IsEmpty || mask.Length >= layout.Batch * layout.Channels));
        for (int n = 0; n < layout.Batch; n++)
        {
            for (int c = 0; c < layout.Channels; c++)
            {
                int offset = (n * layout.BatchStride) + (c * layout.ChannelStride);
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offset + (s * layout.SpatialStride);
                    y[i] = Output(y[i], mask, (n * layout.Channels) + c, rectify);
                }
            }
        }
    }

    /// <summary>
    /// The gradient the block hands to batch normalisation: g = 0 where <paramref name="rectify"/> and
    /// T((a − offset[c]) · scale[c] + shift[c]) ≤ 0 (one fused multiply-add in double, rounded once to T: batch
    /// normalisation's output recomputed from its input, or, with offset 0, scale 1 and shift 0, read from a ReLU output
    /// given as a), otherwise g = dy · mask[n·C + c] (dy itself without a mask). This is dropout's backward, dy · mask,
    /// followed by ReLU's, which passes the gradient only where its output is not ≤ 0 (NaN passes).
    /// <paramref name="gradient"/> may be <paramref name="gradOutput"/> itself.
    /// </summary>
    public static void Gradient<T>(
        ReadOnlySpan<T> a,
        ReadOnlySpan<T> gradOutput,
        Span<T> gradient,
        PlaneLayout layout,
        ReadOnlySpan<double> offset,
        ReadOnlySpan<double> scale,
        ReadOnlySpan<double> shift,
        ReadOnlySpan<T> mask,
        bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length >= layout.Length && gradient.Length >= layout.Length);
        Debug.Assert(!rectify || (a.Length >= layout.Length && offset.Length >= layout.Channels && scale.Length >= layout.Channels && shift.Length >= layout.Channels));
        for (int n = 0; n < layout.Batch; n++)
        {
            for (int c = 0; c < layout.Channels; c++)
            {
                int offsetOfPlane = (n * layout.BatchStride) + (c * layout.ChannelStride);
                for (int s = 0; s < layout.Spatial; s++)
                {
                    int i = offsetOfPlane + (s * layout.SpatialStride);
                    bool passes = !rectify || !(Normalized(a[i], offset[c], scale[c], shift[c]) <= T.Zero);
                    gradient[i] = passes ? Scaled(gradOutput[i], mask, (n * layout.Channels) + c) : T.Zero;
                }
            }
        }
    }

    /// <summary>ReLU(y) · mask[unit] for one value.</summary>
    private static T Output<T>(T y, ReadOnlySpan<T> mask, int unit, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (rectify && y < T.Zero)
        {
            y = T.Zero;
        }

        return Scaled(y, mask, unit);
    }

    /// <summary>v · mask[unit], or v without a mask.</summary>
    private static T Scaled<T>(T v, ReadOnlySpan<T> mask, int unit)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> => mask.IsEmpty ? v : v * mask[unit];

    /// <summary>T((a − offset) · scale + shift), one fused multiply-add in double rounded once, as the normalisation computes y.</summary>
    private static T Normalized<T>(T a, double offset, double scale, double shift)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        T.CreateTruncating(double.FusedMultiplyAdd(double.CreateTruncating(a) - offset, scale, shift));
}

/// <summary>
/// The ReLU and channel factors that follow a normalisation in a BatchNorm2d → ReLU → Dropout2d block, for the
/// normalisation's own kernels to apply chunk by chunk while each chunk is in cache: forward, finishing y as
/// <see cref="BlockKernels.RectifyAndScale{T}"/> does; backward, writing the gradient <see cref="BlockKernels.Gradient{T}"/>
/// describes before summing it. The default (<see cref="Active"/> false) is no tail. Pointers are to the element type,
/// float32 or float64.
/// </summary>
internal unsafe struct BlockTail
{
    /// <summary>Whether there is a tail at all.</summary>
    public bool Active;

    /// <summary>Whether the ReLU is applied.</summary>
    public bool Rectify;

    /// <summary>The N·C channel factors, or null for no dropout.</summary>
    public void* Mask;

    /// <summary>Backward: the block's output gradient, in the layout of the tensor the kernel walks.</summary>
    public void* GradOutput;

    /// <summary>Backward: where the ReLU's input is recomputed from (x, with the constants below) or its output read (constants 0, 1, 0).</summary>
    public void* Source;

    /// <summary>Backward, per channel: the normalisation's offset, scale and shift (see <see cref="BlockKernels.Gradient{T}"/>).</summary>
    public double* Offset;

    /// <inheritdoc cref="Offset"/>
    public double* Scale;

    /// <inheritdoc cref="Offset"/>
    public double* Shift;

    /// <summary>
    /// Backward, per channel, or null: where the gate closes in terms of the source value itself (see
    /// <see cref="BlockKernels.GateThresholds{T}"/>); NaN for a channel whose gate must be computed from the formula.
    /// </summary>
    public double* Threshold;

    /// <summary>
    /// Backward, or null: C values of T that flip the sign of a falling channel's values (−0, 0 for a rising one), then
    /// the C thresholds so flipped (see <see cref="LaneGate{T}"/>), ready for the loops to broadcast or load a row of;
    /// null unless every channel has a threshold, so that no chunk need look for one without. Without the ReLU, one that
    /// never closes (<see cref="BlockKernels.OpenChannelGate{T}"/>), so that the loops take the dropout's factors alone.
    /// </summary>
    public void* ChannelGate;
}
