using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Channel dropout on bfloat16 and float16 values, kept as their bits (<see cref="IHalfPrecision"/>). Every product is
/// libtorch's for these dtypes: both factors widened to float32, multiplied (exactly), rounded once to the format.
/// </summary>
internal static partial class ChannelDropoutKernels
{
    /// <summary>
    /// Bernoulli(<paramref name="keepProbability"/>) draws in the format, each exactly 0 or 1: the draws
    /// <see cref="DrawMask{T}"/> makes, since libtorch's <c>bernoulli_</c> draws the same numbers for every dtype.
    /// </summary>
    public static void DrawHalfPrecisionMask<TFormat>(ref MersenneTwister generator, Span<ushort> mask, double keepProbability)
        where TFormat : struct, IHalfPrecision
    {
        // Drawn in float32 parts by the vector draw (drawing in parts, in order, gives the same values), then narrowed.
        ushort one = TFormat.Narrow(1f);
        Span<float> part = stackalloc float[Math.Min(mask.Length, DrawPartValues)];
        for (int start = 0; start < mask.Length; start += part.Length)
        {
            var drawn = part[..Math.Min(part.Length, mask.Length - start)];
            DrawMask(ref generator, drawn, keepProbability);
            // Each draw is exactly 0 or 1: a product, not a branch, which random draws would mispredict half the time.
            int k = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var oneVector = Vector256.Create(one);
                ref float d = ref MemoryMarshal.GetReference(drawn);
                ref ushort m = ref mask[start];
                for (; k <= drawn.Length - Vector256<ushort>.Count; k += Vector256<ushort>.Count)
                {
                    var lower = Vector256.ConvertToInt32(Vector256.LoadUnsafe(ref d, (nuint)k));
                    var upper = Vector256.ConvertToInt32(Vector256.LoadUnsafe(ref d, (nuint)(k + Vector256<int>.Count)));
                    (Vector256.Narrow(lower, upper).AsUInt16() * oneVector).StoreUnsafe(ref m, (nuint)k);
                }
            }

            for (; k < drawn.Length; k++)
            {
                mask[start + k] = (ushort)(one * (int)drawn[k]);
            }
        }
    }

    /// <summary>
    /// Turns draws (each exactly 0 or 1) into channel factors as libtorch's <c>noise.div_(1 - p)</c> does for a 16-bit
    /// dtype: the divisor taken to float32, the quotient computed in float32 and rounded to the format.
    /// </summary>
    public static void ScaleHalfPrecisionMask<TFormat>(Span<ushort> mask, double keepProbability)
        where TFormat : struct, IHalfPrecision
    {
        Debug.Assert(keepProbability > 0 && keepProbability <= 1);
        // A draw of 0 has the bits 0 in both formats; a draw of 1 becomes the one kept factor. Selected in vectors, not
        // by a branch, which random draws would mispredict half the time.
        ushort kept = TFormat.Narrow(1f / (float)keepProbability);
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var keptVector = Vector256.Create(kept);
            ref ushort m = ref MemoryMarshal.GetReference(mask);
            for (; i <= mask.Length - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var draws = Vector256.LoadUnsafe(ref m, (nuint)i);
                Vector256.AndNot(keptVector, Vector256.Equals(draws, Vector256<ushort>.Zero)).StoreUnsafe(ref m, (nuint)i);
            }
        }

        for (; i < mask.Length; i++)
        {
            Debug.Assert(mask[i] == 0 || mask[i] == TFormat.Narrow(1f));
            mask[i] = (ushort)(kept * Unsafe.BitCast<bool, byte>(mask[i] != 0));
        }
    }

    /// <summary>
    /// y[n, c, s] = x[n, c, s] · mask[n·C + c] in the format, on up to <paramref name="threads"/> threads (each product
    /// is independent, so the thread count cannot change a bit). <paramref name="y"/> may be <paramref name="x"/> itself.
    /// Also the input gradient, dx = dy · mask.
    /// </summary>
    /// <remarks>
    /// NCHW planes that take 512-bit steps write y with streaming stores if <c>streamingStores</c> says so, and by default
    /// when the pass spans at least <see cref="StreamingStores.MinimumPassBytes"/> (<see cref="StreamingStores.For{T}"/>):
    /// a step is then one whole cache line. That changes no bit of the result.
    /// </remarks>
    public static unsafe void ApplyHalfPrecisionMask<TFormat>(ReadOnlySpan<ushort> x, Span<ushort> y, PlaneLayout layout, ReadOnlySpan<ushort> mask, int threads = 1, bool? streamingStores = null)
        where TFormat : struct, IHalfPrecision
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels);
        if (layout.Length == 0)
        {
            return;
        }

        fixed (ushort* px = x)
        fixed (ushort* py = y)
        fixed (ushort* pm = mask)
        {
            var job = HalfPrecisionMaskJob<TFormat>.For(px, py, pm, layout, streamingStores);
            ChunkScheduler.Run(ref job, ChunkScheduler.ChunkCount(job.Units, job.UnitsPerChunk), ChunkScheduler.ThreadsFor(layout.Length, threads));
        }
    }

    /// <summary>
    /// <see cref="DrawHalfPrecisionMask{TFormat}"/>, <see cref="ScaleHalfPrecisionMask{TFormat}"/> and
    /// <see cref="ApplyHalfPrecisionMask{TFormat}"/> at once, as <see cref="DrawAndApplyMask{T}"/> does them in float32:
    /// one thread draws the mask part by part while the others apply the parts drawn. The same mask, y and generator
    /// state, bit for bit. <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    public static unsafe void DrawAndApplyHalfPrecisionMask<TFormat>(
        ReadOnlySpan<ushort> x,
        Span<ushort> y,
        PlaneLayout layout,
        Span<ushort> mask,
        double keepProbability,
        ref MersenneTwister generator,
        int threads)
        where TFormat : struct, IHalfPrecision
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels && keepProbability > 0 && keepProbability <= 1);
        fixed (ushort* px = x)
        fixed (ushort* py = y)
        fixed (ushort* pm = mask)
        fixed (MersenneTwister* pg = &generator)
        {
            var apply = HalfPrecisionMaskJob<TFormat>.For(px, py, pm, layout, streamingStores: null);
            var job = new DrawAndApplyJob<HalfPrecisionMaskJob<TFormat>, ushort, HalfPrecisionMaskDrawing<TFormat>>(
                apply, apply.Units, apply.UnitsPerChunk, layout, pg, pm, keepProbability);
            ChunkScheduler.Run(ref job, 1 + job.Chunks, threads);
        }
    }

    /// <summary>A 16-bit mask, as <see cref="DrawHalfPrecisionMask{TFormat}"/> and <see cref="ScaleHalfPrecisionMask{TFormat}"/> make it.</summary>
    private readonly struct HalfPrecisionMaskDrawing<TFormat> : IMaskDrawing<ushort>
        where TFormat : struct, IHalfPrecision
    {
        public static void DrawAndScale(ref MersenneTwister generator, Span<ushort> part, double keep)
        {
            DrawHalfPrecisionMask<TFormat>(ref generator, part, keep);
            ScaleHalfPrecisionMask<TFormat>(part, keep);
        }
    }

    /// <summary>
    /// Units [chunk · UnitsPerChunk, …) of <see cref="ApplyHalfPrecisionMask{TFormat}"/>: a unit is a plane (n, c) of S values
    /// under one factor in NCHW, a row (n, s) of C values under sample n's C factors in NHWC.
    /// </summary>
    private unsafe struct HalfPrecisionMaskJob<TFormat> : IChunkJob
        where TFormat : struct, IHalfPrecision
    {
        public ushort* X;
        public ushort* Y;
        public ushort* Mask;
        public PlaneLayout Layout;
        public int Units;
        public int UnitsPerChunk;
        public bool Streaming;

        /// <summary>The job over <paramref name="layout"/>: streaming stores as <see cref="ApplyHalfPrecisionMask{TFormat}"/> says.</summary>
        public static HalfPrecisionMaskJob<TFormat> For(ushort* x, ushort* y, ushort* mask, PlaneLayout layout, bool? streamingStores)
        {
            int unitLength = layout.ChannelsLast ? layout.Channels : layout.Spatial;
            return new HalfPrecisionMaskJob<TFormat>
            {
                X = x,
                Y = y,
                Mask = mask,
                Layout = layout,
                Units = layout.Length / unitLength,
                UnitsPerChunk = ChunkScheduler.UnitsPerChunk(unitLength),
                Streaming = !layout.ChannelsLast && WidePlanes<TFormat>(layout.Spatial)
                    && (streamingStores ?? StreamingStores.For<ushort>(layout.Length, PlaneBoundaries.RunLength(layout.Spatial, Vector512<ushort>.Count), tensors: 2)),
            };
        }

        public readonly void Run(int chunk)
        {
            int first = chunk * UnitsPerChunk;
            int end = Math.Min(Units, first + UnitsPerChunk);
            if (!Layout.ChannelsLast)
            {
                // NCHW: the chunk's planes are one contiguous run, each plane under one factor.
                long offset = (long)first * Layout.Spatial;
                bool keepsValues = TFormat.KeepValues(new ReadOnlySpan<ushort>(Mask + first, end - first));
                if (Streaming)
                {
                    ScaleHalfPrecisionPlanesWide<TFormat, StreamingStores>(X + offset, Mask + first, Y + offset, Layout.Spatial, (end - first) * Layout.Spatial, keepsValues);
                }
                else
                {
                    ScaleHalfPrecisionPlanes<TFormat>(X + offset, Mask + first, Y + offset, Layout.Spatial, (end - first) * Layout.Spatial, keepsValues);
                }

                return;
            }

            int channels = Layout.Channels;
            for (int row = first; row < end; row++)
            {
                long offset = (long)row * channels;
                Multiply<TFormat>(X + offset, Mask + ((long)(row / Layout.Spatial) * channels), Y + offset, channels);
            }
        }
    }

    /// <summary>
    /// y = x · factors[p] in the format over a run of whole planes of <paramref name="spatial"/> values, p the plane: one
    /// vector loop over the whole run where the format has vector conversions and a plane holds a step (see
    /// <see cref="PlaneBoundaries"/>), or, with AVX-512, 4×4 planes two to a step, so that small planes cost no call or
    /// scalar tail each. Where the factors keep the format's values (<see cref="IHalfPrecision.KeepValues"/>: bfloat16's
    /// 0 and 1 / (1 − p) for the default p = 0.5), <paramref name="keepsValues"/> has the 512-bit steps take the
    /// products' bits as they are, unless a product is infinite or NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ScaleHalfPrecisionPlanes<TFormat>(ushort* x, ushort* factors, ushort* y, int spatial, int length, bool keepsValues)
        where TFormat : struct, IHalfPrecision
    {
        int lanes = Vector256<ushort>.Count;
        int i = 0;
        if (WidePlanes<TFormat>(spatial))
        {
            ScaleHalfPrecisionPlanesWide<TFormat, PlainStores>(x, factors, y, spatial, length, keepsValues);
            return;
        }

        if (TFormat.Vectorized && Vector512.IsHardwareAccelerated && spatial == 16)
        {
            // 4×4 planes two at a time, as 16 pairs (see IHalfPrecision.WidenPairs): the lanes of the first 16 values,
            // the first eight, under one plane's factor, the other eight under the next plane's.
            for (; i <= length - (2 * 16); i += 2 * 16)
            {
                int plane = i / 16;
                Prefetch.Ahead(x + i, x + length);
                var (even, odd) = TFormat.WidenPairs(Vector512.Load(x + i).AsUInt32());
                var factor = BatchNormKernels.Joined(Vector256.Create(TFormat.Widen(factors[plane])), Vector256.Create(TFormat.Widen(factors[plane + 1])));
                ProductBits<TFormat>(even * factor, odd * factor, keepsValues).AsUInt16().Store(y + i);
            }
        }
        else if (TFormat.Vectorized && spatial >= lanes)
        {
            var planes = new PlaneBoundaries(spatial, 0, lanes);
            var factor = Vector256.Create(TFormat.Widen(factors[0]));
            var upperIndices = Vector256<float>.Indices + Vector256.Create((float)Vector256<float>.Count);
            for (; i <= length - lanes; i += lanes)
            {
                Prefetch.Ahead(x + i, x + length);
                var (lower, upper) = TFormat.Widen(Vector256.Load(x + i));
                var (lowerFactor, upperFactor) = (factor, factor);
                if (planes.Crosses(i, out int inPlane))
                {
                    // The step's first inPlane values belong to the plane it leaves, the others to the next one.
                    var next = Vector256.Create(TFormat.Widen(factors[planes.Plane]));
                    if (inPlane == 0)
                    {
                        (lowerFactor, upperFactor) = (next, next);
                    }
                    else
                    {
                        var count = Vector256.Create((float)inPlane);
                        lowerFactor = Vector256.ConditionalSelect(Vector256.LessThan(Vector256<float>.Indices, count), factor, next);
                        upperFactor = Vector256.ConditionalSelect(Vector256.LessThan(upperIndices, count), factor, next);
                    }

                    factor = next;
                }

                TFormat.Narrow(lower * lowerFactor, upper * upperFactor).Store(y + i);
            }
        }

        for (; i < length; i++)
        {
            y[i] = TFormat.Narrow(TFormat.Widen(x[i]) * TFormat.Widen(factors[i / spatial]));
        }
    }

    /// <summary>
    /// The bits of 16 pairs of float32 products in the format: taken as they are where <paramref name="keepsValues"/>
    /// and no product is infinite or NaN (<see cref="IHalfPrecision.TryPairsOfValues"/>), rounded otherwise.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> ProductBits<TFormat>(Vector512<float> even, Vector512<float> odd, bool keepsValues)
        where TFormat : struct, IHalfPrecision =>
        keepsValues && TFormat.TryPairsOfValues(even, odd, out var bits) ? bits : TFormat.NarrowPairs(even, odd);

    /// <summary>Whether NCHW planes of <paramref name="spatial"/> values take 512-bit steps of 32 values.</summary>
    private static bool WidePlanes<TFormat>(int spatial)
        where TFormat : struct, IHalfPrecision => TFormat.Vectorized && Vector512.IsHardwareAccelerated && spatial >= Vector512<ushort>.Count;

    /// <summary>
    /// <see cref="ScaleHalfPrecisionPlanes{TFormat}"/> in 512-bit steps of 32 values; with streaming stores, from the
    /// run's first whole cache line to its last, each step one line, the values outside computed one by one the same way.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ScaleHalfPrecisionPlanesWide<TFormat, TStore>(ushort* x, ushort* factors, ushort* y, int spatial, int length, bool keepsValues)
        where TFormat : struct, IHalfPrecision
        where TStore : struct, IStoreMode
    {
        int lanes = Vector512<ushort>.Count;
        (int start, int end) = TStore.Streaming ? StreamingStores.Body(y, length) : (0, length);
        int i = 0;
        for (; i < start; i++)
        {
            y[i] = TFormat.Narrow(TFormat.Widen(x[i]) * TFormat.Widen(factors[i / spatial]));
        }

        // A run too short for a whole aligned step starts its (empty) vector loop past its last plane: read no factor there.
        // The 32 values of a step are taken as 16 pairs (see IHalfPrecision.WidenPairs), so the lanes of the even values
        // hold places 0, 2, …, 30 of the step and those of the odd values places 1, 3, …, 31.
        var planes = new PlaneBoundaries(spatial, i, lanes);
        var factor = Vector512.Create(TFormat.Widen(factors[Math.Min(planes.Plane, (length - 1) / spatial)]));
        var evenPlaces = Vector512<float>.Indices * Vector512.Create(2f);
        var oddPlaces = evenPlaces + Vector512<float>.One;
        for (; i <= end - lanes; i += lanes)
        {
            Prefetch.Ahead(x + i, x + length);
            var (even, odd) = TFormat.WidenPairs(Vector512.Load(x + i).AsUInt32());
            var (evenFactor, oddFactor) = (factor, factor);
            if (planes.Crosses(i, out int inPlane))
            {
                var next = Vector512.Create(TFormat.Widen(factors[planes.Plane]));
                if (inPlane == 0)
                {
                    (evenFactor, oddFactor) = (next, next);
                }
                else
                {
                    var count = Vector512.Create((float)inPlane);
                    evenFactor = Vector512.ConditionalSelect(Vector512.LessThan(evenPlaces, count), factor, next);
                    oddFactor = Vector512.ConditionalSelect(Vector512.LessThan(oddPlaces, count), factor, next);
                }

                factor = next;
            }

            var bits = ProductBits<TFormat>(even * evenFactor, odd * oddFactor, keepsValues);
            if (TStore.Streaming)
            {
                bits.AsUInt16().StoreAlignedNonTemporal(y + i);
            }
            else
            {
                bits.AsUInt16().Store(y + i);
            }
        }

        for (; i < length; i++)
        {
            y[i] = TFormat.Narrow(TFormat.Widen(x[i]) * TFormat.Widen(factors[i / spatial]));
        }
    }

    /// <summary>y[i] = x[i] · factors[i] in the format, 16 values a step where the format has vector conversions.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe void Multiply<TFormat>(ushort* x, ushort* factors, ushort* y, int length)
        where TFormat : struct, IHalfPrecision
    {
        int i = 0;
        if (TFormat.Vectorized)
        {
            for (; i <= length - Vector256<ushort>.Count; i += Vector256<ushort>.Count)
            {
                var (lower, upper) = TFormat.Widen(Vector256.Load(x + i));
                var (lowerFactor, upperFactor) = TFormat.Widen(Vector256.Load(factors + i));
                TFormat.Narrow(lower * lowerFactor, upper * upperFactor).Store(y + i);
            }
        }

        for (; i < length; i++)
        {
            y[i] = TFormat.Narrow(TFormat.Widen(x[i]) * TFormat.Widen(factors[i]));
        }
    }
}
