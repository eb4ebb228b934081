using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

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
            var job = new TailJob<T>(layout, py, new BlockTail { Active = true, Rectify = rectify, Mask = mask.IsEmpty ? null : pm }, gradient: false);
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>
    /// <see cref="Gradient{T}"/>, vectorised, on up to <paramref name="threads"/> threads. <paramref name="gradient"/>
    /// may be <paramref name="gradOutput"/> itself. <paramref name="thresholds"/>, if given, are the constants'
    /// <see cref="GateThresholds{T}"/>, and <paramref name="channelGate"/>, if given, their <see cref="ChannelGate{T}"/>.
    /// </summary>
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
        int threads,
        ReadOnlySpan<double> thresholds = default,
        ReadOnlySpan<T> channelGate = default)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(gradOutput.Length >= layout.Length && gradient.Length >= layout.Length);
        Debug.Assert(thresholds.IsEmpty || thresholds.Length >= layout.Channels);
        Debug.Assert(channelGate.IsEmpty || (!thresholds.IsEmpty && channelGate.Length >= 2 * layout.Channels));
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
        fixed (double* pc = thresholds)
        fixed (T* pgate = channelGate)
        {
            var tail = new BlockTail
            {
                Active = true,
                Rectify = rectify,
                Mask = mask.IsEmpty ? null : pm,
                GradOutput = pd,
                Source = pa,
                Offset = po,
                Scale = ps,
                Shift = pt,
                Threshold = thresholds.IsEmpty ? null : pc,
                ChannelGate = channelGate.IsEmpty ? null : pgate,
            };
            var job = new TailJob<T>(layout, pg, tail, gradient: true);
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>This thread's buffer for a chunk's values that never go to memory; on the pinned heap, grown as needed.</summary>
    [ThreadStatic]
    private static byte[]? chunkBuffer;

    /// <summary>
    /// A pointer p such that p[start .. start + length) is this thread's chunk buffer: a chunk of a tensor indexed as
    /// the tensor indexes it. The buffer is the thread's own and stays in cache between the passes over one chunk.
    /// </summary>
    public static T* ChunkScratch<T>(long start, int length)
        where T : unmanaged
    {
        long bytes = ((long)length * sizeof(T)) + CacheLine.Bytes;
        var buffer = chunkBuffer;
        if (buffer is null || buffer.Length < bytes)
        {
            // Allocated once per thread and size (a chunk is ChunkScheduler.ChunkElements values, or one larger plane).
            buffer = GC.AllocateUninitializedArray<byte>((int)Math.Max(bytes, (ChunkScheduler.ChunkElements * sizeof(double)) + CacheLine.Bytes), pinned: true);
            chunkBuffer = buffer;
        }

        // Aligned to a cache line, so that vector steps over it split no line.
        T* aligned = (T*)CacheLine.Start((byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(buffer)));
        return aligned - start;
    }

    /// <summary>destination[i] = source[i] for i &lt; length, with streaming stores where <paramref name="streaming"/>.</summary>
    public static void CopyOut<T>(T* source, T* destination, int length, bool streaming)
        where T : unmanaged
    {
        if (streaming)
        {
            StreamingStores.Copy(source, destination, length);
        }
        else
        {
            Buffer.MemoryCopy(source, destination, (long)length * sizeof(T), (long)length * sizeof(T));
        }
    }

    /// <summary>y = ReLU(y) · mask over the NCHW planes [first, end) of a buffer of planes of <paramref name="spatial"/> values.</summary>
    public static void FinishPlanes<T>(T* y, int spatial, int channels, int first, int end, in BlockTail tail)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            FinishPlanesOf((float*)y, spatial, first, end, tail);
        }
        else
        {
            Debug.Assert(typeof(T) == typeof(double));
            FinishPlanesOf((double*)y, spatial, first, end, tail);
        }
    }

    /// <summary>y = ReLU(y) · mask over the channels-last elements [start, start + length), whole rows of C values.</summary>
    public static void FinishRows<T>(T* y, long start, int length, int channels, int spatial, in BlockTail tail)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            FinishRowsOf((float*)y, start, length, channels, spatial, tail);
        }
        else
        {
            Debug.Assert(typeof(T) == typeof(double));
            FinishRowsOf((double*)y, start, length, channels, spatial, tail);
        }
    }

    /// <summary>The gradient <see cref="Gradient{T}"/> describes, written to g over the NCHW planes [first, end).</summary>
    public static void GatePlanes<T>(T* g, int spatial, int channels, int first, int end, in BlockTail tail)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            GatePlanesOf((float*)g, spatial, channels, first, end, tail);
        }
        else
        {
            Debug.Assert(typeof(T) == typeof(double));
            GatePlanesOf((double*)g, spatial, channels, first, end, tail);
        }
    }

    /// <summary>The gradient <see cref="Gradient{T}"/> describes, written to g over the channels-last elements [start, start + length).</summary>
    public static void GateRows<T>(T* g, long start, int length, int channels, int spatial, in BlockTail tail)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            GateRowsOf((float*)g, start, length, channels, spatial, tail);
        }
        else
        {
            Debug.Assert(typeof(T) == typeof(double));
            GateRowsOf((double*)g, start, length, channels, spatial, tail);
        }
    }

    private static void FinishPlanesOf<T>(T* y, int spatial, int first, int end, in BlockTail tail)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T* mask = (T*)tail.Mask;
        for (int plane = first; plane < end; plane++)
        {
            OutputPlane(y + ((long)plane * spatial), spatial, mask is null ? T.One : mask[plane], mask is not null, tail.Rectify);
        }
    }

    private static void FinishRowsOf<T>(T* y, long start, int length, int channels, int spatial, in BlockTail tail)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T* mask = (T*)tail.Mask;
        if (PeriodicRows<T>(channels))
        {
            FinishRowsPeriodic(y, start, length, channels, spatial, mask, tail.Rectify);
            return;
        }

        bool wide = WideGate<T>(channels);
        for (long row = start / channels, end = (start + length) / channels; row < end; row++)
        {
            T* at = y + (row * channels);
            T* factors = mask is null ? null : mask + ((row / spatial) * channels);
            int done = wide ? OutputRowWide(at, channels, factors, tail.Rectify) : 0;
            OutputRow(at + done, channels - done, factors is null ? null : factors + done, tail.Rectify);
        }
    }

    private static void GatePlanesOf<T>(T* g, int spatial, int channels, int first, int end, in BlockTail tail)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T* mask = (T*)tail.Mask;
        T* source = (T*)tail.Source;
        T* dy = (T*)tail.GradOutput;
        for (int plane = first; plane < end; plane++)
        {
            long at = (long)plane * spatial;
            int c = plane % channels;
            (double o, double s, double t) = tail.Rectify ? (tail.Offset[c], tail.Scale[c], tail.Shift[c]) : (0, 1, 0);
            T factor = mask is null ? T.One : mask[plane];
            double threshold = tail.Rectify && tail.Threshold is not null ? tail.Threshold[c] : double.NaN;
            if (WideGate<T>(spatial) && !double.IsNaN(threshold))
            {
                GatedPlaneWide(source + at, dy + at, g + at, spatial, T.CreateTruncating(threshold), s > 0, factor, mask is not null);
            }
            else if (WideGate<T>(spatial))
            {
                GradientPlaneWide(source + at, dy + at, g + at, spatial, o, s, t, factor, mask is not null, tail.Rectify);
            }
            else
            {
                GradientPlane(source + at, dy + at, g + at, spatial, o, s, t, factor, mask is not null, tail.Rectify);
            }
        }
    }

    private static void GateRowsOf<T>(T* g, long start, int length, int channels, int spatial, in BlockTail tail)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        T* mask = (T*)tail.Mask;
        T* source = (T*)tail.Source;
        T* dy = (T*)tail.GradOutput;
        if (PeriodicRows<T>(channels) && (!tail.Rectify || tail.ChannelGate is not null))
        {
            GateRowsPeriodic(source, dy, g, start, length, channels, spatial, mask, tail.Rectify ? (T*)tail.ChannelGate : null);
            return;
        }

        bool wide = tail.Rectify && tail.ChannelGate is not null && WideGate<T>(channels);
        for (long row = start / channels, end = (start + length) / channels; row < end; row++)
        {
            long at = row * channels;
            T* factors = mask is null ? null : mask + ((row / spatial) * channels);
            int done = wide ? GatedRowWide(source + at, dy + at, g + at, channels, (T*)tail.ChannelGate, factors) : 0;
            GradientRow(
                source + at + done, dy + at + done, g + at + done, channels - done, tail.Offset + done, tail.Scale + done, tail.Shift + done, factors is null ? null : factors + done, tail.Rectify);
        }
    }

    /// <summary>Units [chunk · UnitsPerChunk, …) of either stand-alone kernel: NCHW planes, or whole channels-last rows.</summary>
    private readonly struct TailJob<T> : IChunkJob
        where T : unmanaged
    {
        private readonly T* output;
        private readonly BlockTail tail;
        private readonly PlaneLayout layout;
        private readonly bool gradient;
        private readonly int unitLength;
        private readonly int units;
        private readonly int unitsPerChunk;

        public TailJob(PlaneLayout layout, T* output, BlockTail tail, bool gradient)
        {
            this.layout = layout;
            this.output = output;
            this.tail = tail;
            this.gradient = gradient;
            unitLength = layout.ChannelsLast ? layout.Channels : layout.Spatial;
            units = layout.Length / unitLength;
            unitsPerChunk = ChunkScheduler.UnitsPerChunk(unitLength);
        }

        public int Chunks => ChunkScheduler.ChunkCount(units, unitsPerChunk);

        public void Run(int chunk)
        {
            int first = chunk * unitsPerChunk;
            int end = Math.Min(units, first + unitsPerChunk);
            if (layout.ChannelsLast)
            {
                long start = (long)first * unitLength;
                int length = (end - first) * unitLength;
                if (gradient)
                {
                    GateRows(output, start, length, layout.Channels, layout.Spatial, tail);
                }
                else
                {
                    FinishRows(output, start, length, layout.Channels, layout.Spatial, tail);
                }
            }
            else if (gradient)
            {
                GatePlanes(output, layout.Spatial, layout.Channels, first, end, tail);
            }
            else
            {
                FinishPlanes(output, layout.Spatial, layout.Channels, first, end, tail);
            }
        }
    }

    /// <summary>y = ReLU(y) · factor over one plane, in place.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
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
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
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
