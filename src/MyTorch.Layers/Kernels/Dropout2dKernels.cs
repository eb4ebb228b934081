using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The math of 2-d (channel) dropout over raw buffers. Every product is one multiplication in the element type,
/// as libtorch's <c>input * noise</c> is, so the results are bit for bit libtorch's.
/// Callers validate; these functions only assert.
/// </summary>
/// <remarks>
/// Notation: x is the input, p the drop probability, mask[n·C + c] the factor of channel (n, c): 0 for a dropped
/// channel, 1/(1 − p) for a kept one. A mask of zeros gives y = x · 0, which is libtorch's p = 1: NaN and ±∞
/// become NaN, negative values −0.0.
/// </remarks>
internal static class Dropout2dKernels
{
    /// <summary>
    /// Turns Bernoulli draws (each exactly 0 or 1) into channel factors: mask[i] = mask[i] / T(1 − p), the division
    /// done in T as libtorch's <c>noise.div_(1 - p)</c> does it, so that a kept channel's factor is T(1) / T(1 − p).
    /// </summary>
    /// <param name="mask">The draws, scaled in place.</param>
    /// <param name="keepProbability">1 − p, computed in <see cref="double"/> as libtorch does; in (0, 1].</param>
    public static void ScaleMask<T>(Span<T> mask, double keepProbability)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(keepProbability > 0 && keepProbability <= 1);
        T keep = T.CreateTruncating(keepProbability);
        for (int i = 0; i < mask.Length; i++)
        {
            mask[i] /= keep;
        }
    }

    /// <summary>
    /// y[n, c, s] = x[n, c, s] · mask[n·C + c]. <paramref name="y"/> may be <paramref name="x"/> itself (in-place dropout).
    /// </summary>
    public static void ApplyMask<T>(ReadOnlySpan<T> x, Span<T> y, PlaneLayout layout, ReadOnlySpan<T> mask)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels);
        int planes = layout.Batch * layout.Channels;
        if (!layout.ChannelsLast)
        {
            // NCHW: plane (n, c) is S contiguous values starting at (n·C + c)·S, all scaled by one factor.
            int spatial = layout.Spatial;
            for (int plane = 0; plane < planes; plane++)
            {
                int offset = plane * spatial;
                Scale(x.Slice(offset, spatial), mask[plane], y.Slice(offset, spatial));
            }

            return;
        }

        // NHWC: each spatial position of sample n holds C contiguous values, multiplied element-wise by that sample's C factors.
        int channels = layout.Channels;
        for (int n = 0; n < layout.Batch; n++)
        {
            var factors = mask.Slice(n * channels, channels);
            int sample = n * layout.BatchStride;
            for (int s = 0; s < layout.Spatial; s++)
            {
                int offset = sample + (s * channels);
                Multiply(x.Slice(offset, channels), factors, y.Slice(offset, channels));
            }
        }
    }

    /// <summary>
    /// Input gradient: dx[n, c, s] = dy[n, c, s] · mask[n·C + c], the derivative of <see cref="ApplyMask{T}"/>
    /// (and what libtorch's MulBackward computes). <paramref name="gradInput"/> may be <paramref name="gradOutput"/> itself.
    /// </summary>
    public static void Backward<T>(ReadOnlySpan<T> gradOutput, Span<T> gradInput, PlaneLayout layout, ReadOnlySpan<T> mask)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> => ApplyMask(gradOutput, gradInput, layout, mask);

    /// <summary>y[i] = x[i] · factor. <paramref name="y"/> may be <paramref name="x"/>; they must not partly overlap.</summary>
    private static void Scale<T>(ReadOnlySpan<T> x, T factor, Span<T> y)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported && x.Length >= Vector<T>.Count)
        {
            // An IEEE product is the same whatever the vector width, so this path and the scalar tail agree bit for bit.
            var vx = MemoryMarshal.Cast<T, Vector<T>>(x);
            var vy = MemoryMarshal.Cast<T, Vector<T>>(y);
            var f = new Vector<T>(factor);
            for (int k = 0; k < vx.Length; k++)
            {
                vy[k] = vx[k] * f;
            }

            i = vx.Length * Vector<T>.Count;
        }

        for (; i < x.Length; i++)
        {
            y[i] = x[i] * factor;
        }
    }

    /// <summary>y[i] = x[i] · factors[i]. <paramref name="y"/> may be <paramref name="x"/>; they must not partly overlap.</summary>
    private static void Multiply<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> factors, Span<T> y)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported && x.Length >= Vector<T>.Count)
        {
            var vx = MemoryMarshal.Cast<T, Vector<T>>(x);
            var vf = MemoryMarshal.Cast<T, Vector<T>>(factors);
            var vy = MemoryMarshal.Cast<T, Vector<T>>(y);
            for (int k = 0; k < vx.Length; k++)
            {
                vy[k] = vx[k] * vf[k];
            }

            i = vx.Length * Vector<T>.Count;
        }

        for (; i < x.Length; i++)
        {
            y[i] = x[i] * factors[i];
        }
    }
}
