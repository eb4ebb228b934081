using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
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
    /// y[n, c, s] = x[n, c, s] · mask[n·C + c], on up to <paramref name="threads"/> threads (each product is independent,
    /// so the thread count cannot change a bit). <paramref name="y"/> may be <paramref name="x"/> itself (in-place dropout).
    /// </summary>
    public static unsafe void ApplyMask<T>(ReadOnlySpan<T> x, Span<T> y, PlaneLayout layout, ReadOnlySpan<T> mask, int threads = 1)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels);
        if (layout.Length == 0)
        {
            return;
        }

        // A unit is a plane (n, c) of S values in NCHW, a row (n, s) of C values in NHWC.
        int unitLength = layout.ChannelsLast ? layout.Channels : layout.Spatial;
        int units = layout.Length / unitLength;
        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pm = mask)
        {
            var job = new ApplyMaskJob<T>
            {
                X = px,
                Y = py,
                Mask = pm,
                Layout = layout,
                Units = units,
                UnitsPerChunk = ChunkScheduler.UnitsPerChunk(unitLength),
            };
            ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(units, job.UnitsPerChunk), ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>
    /// Input gradient: dx[n, c, s] = dy[n, c, s] · mask[n·C + c], the derivative of <see cref="ApplyMask{T}"/>
    /// (and what libtorch's MulBackward computes). <paramref name="gradInput"/> may be <paramref name="gradOutput"/> itself.
    /// </summary>
    public static void Backward<T>(ReadOnlySpan<T> gradOutput, Span<T> gradInput, PlaneLayout layout, ReadOnlySpan<T> mask, int threads = 1)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> => ApplyMask(gradOutput, gradInput, layout, mask, threads);

    /// <summary>Units [chunk · UnitsPerChunk, …) of <see cref="ApplyMask{T}"/>.</summary>
    private unsafe struct ApplyMaskJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* X;
        public T* Y;
        public T* Mask;
        public PlaneLayout Layout;
        public int Units;
        public int UnitsPerChunk;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Run(int chunk)
        {
            int first = chunk * UnitsPerChunk;
            int end = Math.Min(Units, first + UnitsPerChunk);
            if (!Layout.ChannelsLast)
            {
                // NCHW: plane (n, c) is S contiguous values starting at (n·C + c)·S, all scaled by one factor.
                int spatial = Layout.Spatial;
                if (Vector.IsHardwareAccelerated && Vector<T>.IsSupported && spatial % Vector<T>.Count == 0)
                {
                    // Whole vectors per plane (every usual H·W): the loop stays here, because small planes
                    // (4×4 = 16 values) would otherwise spend more time entering a call than multiplying.
                    for (int plane = first; plane < end; plane++)
                    {
                        long offset = (long)plane * spatial;
                        var factor = new Vector<T>(Mask[plane]);
                        for (int k = 0; k < spatial; k += Vector<T>.Count)
                        {
                            Vector.Store(Vector.Load(X + offset + k) * factor, Y + offset + k);
                        }
                    }

                    return;
                }

                for (int plane = first; plane < end; plane++)
                {
                    long offset = (long)plane * spatial;
                    Scale(new ReadOnlySpan<T>(X + offset, spatial), Mask[plane], new Span<T>(Y + offset, spatial));
                }

                return;
            }

            // NHWC: row (n, s) holds C contiguous values, multiplied element-wise by sample n's C factors.
            int channels = Layout.Channels;
            for (int row = first; row < end; row++)
            {
                long offset = (long)row * channels;
                var factors = new ReadOnlySpan<T>(Mask + ((long)(row / Layout.Spatial) * channels), channels);
                Multiply(new ReadOnlySpan<T>(X + offset, channels), factors, new Span<T>(Y + offset, channels));
            }
        }
    }

    /// <summary>y[i] = x[i] · factor. <paramref name="y"/> may be <paramref name="x"/>; they must not partly overlap.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
