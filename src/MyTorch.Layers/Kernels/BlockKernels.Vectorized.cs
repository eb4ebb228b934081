using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The block's kernels vectorised and spread over threads: each value is computed as the reference computes it, so
/// neither the vector width nor the thread count changes a bit; the tests hold them to the reference.
/// </summary>
/// <remarks>
/// Work is split into units, an (n, c) plane of S values in NCHW memory or a row of C values in NHWC memory; a plane
/// meets one channel's constants and one factor, a row every channel's constants and sample n's row of factors.
/// </remarks>
internal static unsafe partial class BlockKernels
{
    /// <summary><see cref="RectifyAndScale{T}"/>, vectorised, on up to <paramref name="threads"/> threads.</summary>
    public static void RectifyAndScaleVectorized<T>(Span<T> y, PlaneLayout layout, ReadOnlySpan<T> mask, bool rectify, int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(y.Length >= layout.Length && (mask.IsEmpty || mask.Length >= layout.Batch * layout.Channels));
        if (layout.Length == 0)
        {
            return;
        }

        fixed (T* py = y)
        fixed (T* pm = mask)
        {
            var job = new BlockJob<T>(layout, rectify, gradient: false)
            {
                Output = py,
                Mask = mask.IsEmpty ? null : pm,
            };
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary><see cref="Gradient{T}"/>, vectorised, on up to <paramref name="threads"/> threads.</summary>
    public static void GradientVectorized<T>(
        ReadOnlySpan<T> a,
        ReadOnlySpan<T> gradOutput,
        Span<T> gradient,
        PlaneLayout layout,
        ReadOnlySpan<double> offset,
        ReadOnlySpan<double> scale,
        ReadOnlySpan<double> shift,
        ReadOnlySpan<T> mask,
        bool rectify,
        int threads)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length >= layout.Length && gradient.Length >= layout.Length);
        Debug.Assert(!rectify || (a.Length >= layout.Length && offset.Length >= layout.Channels && scale.Length >= layout.Channels && shift.Length >= layout.Channels));
        if (layout.Length == 0)
        {
            return;
        }

        fixed (T* pa = a)
        fixed (T* pd = gradOutput)
        fixed (T* pg = gradient)
        fixed (T* pm = mask)
        fixed (double* po = offset)
        fixed (double* ps = scale)
        fixed (double* pt = shift)
        {
            var job = new BlockJob<T>(layout, rectify, gradient: true)
            {
                A = pa,
                GradOutput = pd,
                Output = pg,
                Mask = mask.IsEmpty ? null : pm,
                Offset = po,
                Scale = ps,
                Shift = pt,
            };
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>Units [chunk · UnitsPerChunk, …) of either kernel.</summary>
    private struct BlockJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public T* A;
        public T* GradOutput;
        public T* Output;
        public T* Mask;
        public double* Offset;
        public double* Scale;
        public double* Shift;
        private readonly PlaneLayout layout;
        private readonly bool rectify;
        private readonly bool gradient;
        private readonly int unitLength;
        private readonly int units;
        private readonly int unitsPerChunk;

        public BlockJob(PlaneLayout layout, bool rectify, bool gradient)
        {
            this.layout = layout;
            this.rectify = rectify;
            this.gradient = gradient;
            unitLength = layout.ChannelsLast ? layout.Channels : layout.Spatial;
            units = layout.Length / unitLength;
            unitsPerChunk = ChunkScheduler.UnitsPerChunk(unitLength);
        }

        public readonly int Chunks => ChunkScheduler.ChunkCount(units, unitsPerChunk);

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Run(int chunk)
        {
            int first = chunk * unitsPerChunk;
            int end = Math.Min(units, first + unitsPerChunk);
            int channels = layout.Channels;
            for (int unit = first; unit < end; unit++)
            {
                long at = (long)unit * unitLength;
                if (!layout.ChannelsLast)
                {
                    int c = unit % channels;
                    bool scaled = Mask is not null;
                    T factor = scaled ? Mask[unit] : T.One;
                    if (gradient)
                    {
                        double o = rectify ? Offset[c] : 0, s = rectify ? Scale[c] : 1, t = rectify ? Shift[c] : 0;
                        GradientPlane(A + at, GradOutput + at, Output + at, unitLength, o, s, t, factor, scaled, rectify);
                    }
                    else
                    {
                        OutputPlane(Output + at, unitLength, factor, scaled, rectify);
                    }
                }
                else
                {
                    T* factors = Mask is null ? null : Mask + ((long)(unit / layout.Spatial) * channels);
                    if (gradient)
                    {
                        GradientRow(A + at, GradOutput + at, Output + at, unitLength, Offset, Scale, Shift, factors, rectify);
                    }
                    else
                    {
                        OutputRow(Output + at, unitLength, factors, rectify);
                    }
                }
            }
        }
    }

    /// <summary>y = ReLU(y) · factor over one plane, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OutputPlane<T>(T* y, int length, T factor, bool scaled, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vf = new Vector<T>(factor);
            for (; i <= length - Vector<T>.Count; i += Vector<T>.Count)
            {
                var v = Vector.Load(y + i);
                if (rectify)
                {
                    v = Rectified(v);
                }

                (scaled ? v * vf : v).Store(y + i);
            }
        }

        for (; i < length; i++)
        {
            T v = rectify && y[i] < T.Zero ? T.Zero : y[i];
            y[i] = scaled ? v * factor : v;
        }
    }

    /// <summary>y[c] = ReLU(y[c]) · factors[c] over one row of C values, in place (no multiplication without factors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OutputRow<T>(T* y, int length, T* factors, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i <= length - Vector<T>.Count; i += Vector<T>.Count)
            {
                var v = Vector.Load(y + i);
                if (rectify)
                {
                    v = Rectified(v);
                }

                (factors is null ? v : v * Vector.Load(factors + i)).Store(y + i);
            }
        }

        for (; i < length; i++)
        {
            T v = rectify && y[i] < T.Zero ? T.Zero : y[i];
            y[i] = factors is null ? v : v * factors[i];
        }
    }

    /// <summary>g = 0 where rectified and T(fma(a − o, s, t)) ≤ 0, else dy · factor, over one plane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientPlane<T>(T* a, T* dy, T* g, int length, double o, double s, double t, T factor, bool scaled, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vf = new Vector<T>(factor);
            var vo = new Vector<double>(o);
            var vs = new Vector<double>(s);
            var vt = new Vector<double>(t);
            for (; i <= length - Vector<T>.Count; i += Vector<T>.Count)
            {
                var d = Vector.Load(dy + i);
                if (scaled)
                {
                    d *= vf;
                }

                if (rectify)
                {
                    var y = Normalized(Vector.Load(a + i), vo, vo, vs, vs, vt, vt);
                    d = Vector.ConditionalSelect(Vector.LessThanOrEqual(y, Vector<T>.Zero), Vector<T>.Zero, d);
                }

                d.Store(g + i);
            }
        }

        for (; i < length; i++)
        {
            bool passes = !rectify || !(Normalized(a[i], o, s, t) <= T.Zero);
            g[i] = passes ? (scaled ? dy[i] * factor : dy[i]) : T.Zero;
        }
    }

    /// <summary>The gradient over one row of C values, channel c meeting constants [c] and factors[c] (none if null).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientRow<T>(T* a, T* dy, T* g, int length, double* o, double* s, double* t, T* factors, bool rectify)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int half = Vector<double>.Count;
            for (; i <= length - Vector<T>.Count; i += Vector<T>.Count)
            {
                var d = Vector.Load(dy + i);
                if (factors is not null)
                {
                    d *= Vector.Load(factors + i);
                }

                if (rectify)
                {
                    // For float32 the second half of the constants is lanes [half, 2·half); for float64 it is not read.
                    int second = typeof(T) == typeof(float) ? i + half : i;
                    var y = Normalized(
                        Vector.Load(a + i), Vector.Load(o + i), Vector.Load(o + second), Vector.Load(s + i), Vector.Load(s + second), Vector.Load(t + i), Vector.Load(t + second));
                    d = Vector.ConditionalSelect(Vector.LessThanOrEqual(y, Vector<T>.Zero), Vector<T>.Zero, d);
                }

                d.Store(g + i);
            }
        }

        for (; i < length; i++)
        {
            bool passes = !rectify || !(Normalized(a[i], o[i], s[i], t[i]) <= T.Zero);
            g[i] = passes ? (factors is null ? dy[i] : dy[i] * factors[i]) : T.Zero;
        }
    }

    /// <summary>ReLU of a vector: 0 where v &lt; 0, v elsewhere (−0.0 and NaN unchanged).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Rectified<T>(Vector<T> v)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        Vector.ConditionalSelect(Vector.LessThan(v, Vector<T>.Zero), Vector<T>.Zero, v);

    /// <summary>
    /// <see cref="Normalized{T}(T, double, double, double)"/> of a vector: float32 widened to two vectors of doubles
    /// (constants lo for the first half of the lanes, hi for the second), float64 taking the lo constants.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Normalized<T>(
        Vector<T> a, Vector<double> offsetLo, Vector<double> offsetHi, Vector<double> scaleLo, Vector<double> scaleHi, Vector<double> shiftLo, Vector<double> shiftHi)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            Vector.Widen(a.As<T, float>(), out var lo, out var hi);
            lo = Vector.FusedMultiplyAdd(lo - offsetLo, scaleLo, shiftLo);
            hi = Vector.FusedMultiplyAdd(hi - offsetHi, scaleHi, shiftHi);
            return Vector.Narrow(lo, hi).As<float, T>();
        }

        Debug.Assert(typeof(T) == typeof(double));
        return Vector.FusedMultiplyAdd(a.As<T, double>() - offsetLo, scaleLo, shiftLo).As<double, T>();
    }
}
