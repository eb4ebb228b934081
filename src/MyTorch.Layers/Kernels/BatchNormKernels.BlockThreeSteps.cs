using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// A BatchNorm2d → ReLU → Dropout2d block's tail in the channels-last loops whose period is three vector steps (rows of
/// 3, 6, 12 or 24 channels with 256-bit vectors), as <see cref="ShiftedSumsThreeSteps{T}"/> and its kin hold it in
/// registers: forward, each y is rounded to T, rectified and multiplied by its lane's factor on its way to memory;
/// backward, the sums and dx gate the block's output gradient as they load it. Each lane takes its position's flip and
/// threshold, laid out over the period once a call, and its factor, laid out once a sample (a sample is a whole number
/// of periods there); each value goes through the buffer path's operations in its order, so the bits are the buffer
/// path's.
/// </summary>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>
    /// Whether the channels-last loops over rows of <paramref name="channels"/> values, <paramref name="period"/> values
    /// a period, hold the period in registers with the block's tail: float32 or float64 rows that are a period each of
    /// 16 to 64 values on AVX-512 (<see cref="RegisterSteps"/>), or whose period is three vector steps and whose samples
    /// of <paramref name="spatial"/> rows are a whole number of periods.
    /// </summary>
    private static bool RowsInRegisters<T>(int period, int channels, int spatial)
        where T : unmanaged =>
        (typeof(T) == typeof(float) || typeof(T) == typeof(double))
        && (period == 3 * Lanes
            ? Vector.IsHardwareAccelerated && (long)spatial * channels % period == 0
            : period == channels && RegisterSteps(period) > 0);

    /// <summary>
    /// <see cref="ProductSumsThreeSteps{T}"/> over channels-last rows [<paramref name="start"/>, + <paramref name="length"/>)
    /// with a the block's gate makes it from <paramref name="dy"/>: the values the buffer would hold, into the same lanes
    /// in the same order, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedProductSumsThreeSteps<T>(
        T* dy, T* source, T* x, long start, int length, double* r, double* sum, double* products, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
    {
        int period = 3 * Lanes;
        T* lanes = stackalloc T[3 * period];
        T* mask = (T*)tail.Mask;
        T* flip = lanes + period;
        T* bound = flip + period;
        PeriodGate(tail, channels, flip, period);
        if (mask is not null)
        {
            GatedProductSumsThreeStepRuns<T, ByFactors>(dy, source, x, start, length, r, sum, products, mask, lanes, flip, bound, channels, spatial);
        }
        else
        {
            GatedProductSumsThreeStepRuns<T, NotByFactors>(dy, source, x, start, length, r, sum, products, null, null, flip, bound, channels, spatial);
        }
    }

    /// <summary><see cref="GatedProductSumsThreeSteps{T}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedProductSumsThreeStepRuns<T, TScaling>(
        T* dy, T* source, T* x, long start, int length, double* r, double* sum, double* products, T* mask, T* factors, T* flip, T* bound, int channels, int spatial)
        where T : unmanaged
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        int period = 3 * Lanes;
        Debug.Assert(start % period == 0 && length % period == 0);
        var (r0, r1, r2, r3, r4, r5) = ThreeSteps(r);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(sum);
        var (p0, p1, p2, p3, p4, p5) = ThreeSteps(products);
        T* endA = dy + length;
        T* endB = x + length;
        long sampleLength = (long)spatial * channels;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            if (scaled)
            {
                RepeatOverPeriod(new ReadOnlySpan<T>(mask + (sample * channels), channels), factors, period);
            }

            for (; i < runEnd; i += period)
            {
                PrefetchThreeSteps(dy + i, endA);
                PrefetchThreeSteps(x + i, endB);
                GatedLoad(dy + i, source + i, flip, bound, factors, scaled, out var a0, out var a1);
                Load(x + i, out var b0, out var b1);
                s0 += a0;
                s1 += a1;
                p0 = Vector.FusedMultiplyAdd(a0, b0 - r0, p0);
                p1 = Vector.FusedMultiplyAdd(a1, b1 - r1, p1);
                GatedLoad(dy + i + Lanes, source + i + Lanes, flip + Lanes, bound + Lanes, factors + Lanes, scaled, out var a2, out var a3);
                Load(x + i + Lanes, out var b2, out var b3);
                s2 += a2;
                s3 += a3;
                p2 = Vector.FusedMultiplyAdd(a2, b2 - r2, p2);
                p3 = Vector.FusedMultiplyAdd(a3, b3 - r3, p3);
                GatedLoad(dy + i + (2 * Lanes), source + i + (2 * Lanes), flip + (2 * Lanes), bound + (2 * Lanes), factors + (2 * Lanes), scaled, out var a4, out var a5);
                Load(x + i + (2 * Lanes), out var b4, out var b5);
                s4 += a4;
                s5 += a5;
                p4 = Vector.FusedMultiplyAdd(a4, b4 - r4, p4);
                p5 = Vector.FusedMultiplyAdd(a5, b5 - r5, p5);
            }
        }

        StoreThreeSteps(sum, s0, s1, s2, s3, s4, s5);
        StoreThreeSteps(products, p0, p1, p2, p3, p4, p5);
    }

    /// <summary>
    /// <see cref="GradientThreeSteps{T, TStore}"/> over channels-last rows [<paramref name="start"/>, + <paramref name="length"/>)
    /// with a the block's gate makes it from <paramref name="dy"/>, each value computed as there.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedGradientThreeSteps<T, TStore>(
        T* dy, T* source, T* x, T* output, long start, int length, ChannelParameters parameters, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = 3 * Lanes;
        T* lanes = stackalloc T[3 * period];
        T* mask = (T*)tail.Mask;
        T* flip = lanes + period;
        T* bound = flip + period;
        PeriodGate(tail, channels, flip, period);
        if (mask is not null)
        {
            GatedGradientThreeStepRuns<T, TStore, ByFactors>(dy, source, x, output, start, length, parameters, mask, lanes, flip, bound, channels, spatial);
        }
        else
        {
            GatedGradientThreeStepRuns<T, TStore, NotByFactors>(dy, source, x, output, start, length, parameters, null, null, flip, bound, channels, spatial);
        }
    }

    /// <summary><see cref="GatedGradientThreeSteps{T, TStore}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedGradientThreeStepRuns<T, TStore, TScaling>(
        T* dy, T* source, T* x, T* output, long start, int length, ChannelParameters parameters, T* mask, T* factors, T* flip, T* bound, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        int period = 3 * Lanes;
        Debug.Assert(parameters.Count == period && start % period == 0 && length % period == 0);
        var (o0, o1, o2, o3, o4, o5) = ThreeSteps(parameters.Offset);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5) = ThreeSteps(parameters.Shift);
        var (p0, p1, p2, p3, p4, p5) = ThreeSteps(parameters.Projection);
        T* endA = dy + length;
        T* endB = x + length;
        long sampleLength = (long)spatial * channels;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            if (scaled)
            {
                RepeatOverPeriod(new ReadOnlySpan<T>(mask + (sample * channels), channels), factors, period);
            }

            for (; i < runEnd; i += period)
            {
                PrefetchThreeSteps(dy + i, endA);
                PrefetchThreeSteps(x + i, endB);
                GatedLoad(dy + i, source + i, flip, bound, factors, scaled, out var a0, out var a1);
                Load(x + i, out var b0, out var b1);
                Store<T, TStore>((a0 - t0 - ((b0 - o0) * p0)) * s0, (a1 - t1 - ((b1 - o1) * p1)) * s1, output + i);
                GatedLoad(dy + i + Lanes, source + i + Lanes, flip + Lanes, bound + Lanes, factors + Lanes, scaled, out var a2, out var a3);
                Load(x + i + Lanes, out var b2, out var b3);
                Store<T, TStore>((a2 - t2 - ((b2 - o2) * p2)) * s2, (a3 - t3 - ((b3 - o3) * p3)) * s3, output + i + Lanes);
                GatedLoad(dy + i + (2 * Lanes), source + i + (2 * Lanes), flip + (2 * Lanes), bound + (2 * Lanes), factors + (2 * Lanes), scaled, out var a4, out var a5);
                Load(x + i + (2 * Lanes), out var b4, out var b5);
                Store<T, TStore>((a4 - t4 - ((b4 - o4) * p4)) * s4, (a5 - t5 - ((b5 - o5) * p5)) * s5, output + i + (2 * Lanes));
            }
        }
    }

    /// <summary>
    /// <see cref="AffineThreeSteps{T, TStore}"/> over channels-last rows [<paramref name="start"/>, + <paramref name="length"/>),
    /// each y rounded to T, rectified and multiplied by its lane's factor as <see cref="BlockKernels.FinishRows{T}"/>
    /// does in the buffer: the same operations, so the same bits.
    /// </summary>
    private static void AffineFinishedThreeSteps<T, TStore>(T* a, T* output, long start, int length, ChannelParameters parameters, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        T* mask = (T*)tail.Mask;
        if (tail.Rectify && mask is not null)
        {
            AffineFinishedThreeStepRuns<T, TStore, Rectified, ByFactors>(a, output, start, length, parameters, mask, channels, spatial);
        }
        else if (tail.Rectify)
        {
            AffineFinishedThreeStepRuns<T, TStore, Rectified, NotByFactors>(a, output, start, length, parameters, null, channels, spatial);
        }
        else if (mask is not null)
        {
            AffineFinishedThreeStepRuns<T, TStore, NotRectified, ByFactors>(a, output, start, length, parameters, mask, channels, spatial);
        }
        else
        {
            AffineFinishedThreeStepRuns<T, TStore, NotRectified, NotByFactors>(a, output, start, length, parameters, null, channels, spatial);
        }
    }

    /// <summary><see cref="AffineFinishedThreeSteps{T, TStore}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AffineFinishedThreeStepRuns<T, TStore, TRectifying, TScaling>(
        T* a, T* output, long start, int length, ChannelParameters parameters, T* mask, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TRectifying : struct, IRectifying
        where TScaling : struct, IScaling
    {
        bool rectify = TRectifying.Rectifies;
        bool scaled = TScaling.Scaled;
        T* factors = stackalloc T[3 * Lanes];
        int period = 3 * Lanes;
        Debug.Assert(parameters.Count == period && start % period == 0 && length % period == 0);
        var (o0, o1, o2, o3, o4, o5) = ThreeSteps(parameters.Offset);
        var (s0, s1, s2, s3, s4, s5) = ThreeSteps(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5) = ThreeSteps(parameters.Shift);
        T* end = a + length;
        long sampleLength = (long)spatial * channels;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            if (scaled)
            {
                RepeatOverPeriod(new ReadOnlySpan<T>(mask + (sample * channels), channels), factors, period);
            }

            for (; i < runEnd; i += period)
            {
                PrefetchThreeSteps(a + i, end);
                Load(a + i, out var x0, out var x1);
                Load(a + i + Lanes, out var x2, out var x3);
                Load(a + i + (2 * Lanes), out var x4, out var x5);
                StoreFinishedVectors<T, TStore>(Vector.FusedMultiplyAdd(x0 - o0, s0, t0), Vector.FusedMultiplyAdd(x1 - o1, s1, t1), output + i, rectify, factors, scaled);
                StoreFinishedVectors<T, TStore>(Vector.FusedMultiplyAdd(x2 - o2, s2, t2), Vector.FusedMultiplyAdd(x3 - o3, s3, t3), output + i + Lanes, rectify, factors + Lanes, scaled);
                StoreFinishedVectors<T, TStore>(
                    Vector.FusedMultiplyAdd(x4 - o4, s4, t4), Vector.FusedMultiplyAdd(x5 - o5, s5, t5), output + i + (2 * Lanes), rectify, factors + (2 * Lanes), scaled);
            }
        }
    }

    /// <summary>The tail's flips, then its thresholds, each laid out over a period of <paramref name="period"/> lanes from <paramref name="lanes"/>.</summary>
    private static void PeriodGate<T>(in BlockTail tail, int channels, T* lanes, int period)
        where T : unmanaged
    {
        T* gate = (T*)tail.ChannelGate;
        RepeatOverPeriod(new ReadOnlySpan<T>(gate, channels), lanes, period);
        RepeatOverPeriod(new ReadOnlySpan<T>(gate + channels, channels), lanes + period, period);
    }

    /// <summary>
    /// Lanes gated values as two vectors of doubles: 0 where the lane's gate is closed for the source ((a ^ flip) ≤ bound,
    /// as <see cref="LaneGate{T}"/>), dy · factor (dy without <paramref name="scaled"/>) in T elsewhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatedLoad<T>(T* dy, T* source, T* flip, T* bound, T* factors, bool scaled, out Vector<double> lo, out Vector<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var d = Vector.Load((float*)dy);
            if (scaled)
            {
                d *= Vector.Load((float*)factors);
            }

            var closed = Vector.LessThanOrEqual(Vector.Load((float*)source) ^ Vector.Load((float*)flip), Vector.Load((float*)bound));
            Vector.Widen(Vector.ConditionalSelect(closed, Vector<float>.Zero, d), out lo, out hi);
            return;
        }

        int half = Vector<double>.Count;
        lo = GatedHalf((double*)dy, (double*)source, (double*)flip, (double*)bound, (double*)factors, scaled);
        hi = GatedHalf((double*)dy + half, (double*)source + half, (double*)flip + half, (double*)bound + half, (double*)factors + half, scaled);
    }

    /// <summary>One vector of float64 gated values, as <see cref="GatedLoad{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<double> GatedHalf(double* dy, double* source, double* flip, double* bound, double* factors, bool scaled)
    {
        var d = Vector.Load(dy);
        if (scaled)
        {
            d *= Vector.Load(factors);
        }

        return Vector.ConditionalSelect(Vector.LessThanOrEqual(Vector.Load(source) ^ Vector.Load(flip), Vector.Load(bound)), Vector<double>.Zero, d);
    }

    /// <summary>
    /// Rounds Lanes values to T, rectifies them and, if <paramref name="scaled"/>, multiplies them by their own factors
    /// from <paramref name="factors"/> in T, then stores them, plainly or streaming.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFinishedVectors<T, TStore>(Vector<double> lo, Vector<double> hi, T* destination, bool rectify, T* factors, bool scaled)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(float))
        {
            var v = Vector.Narrow(lo, hi);
            if (rectify)
            {
                v = Vector.ConditionalSelect(Vector.LessThan(v, Vector<float>.Zero), Vector<float>.Zero, v);
            }

            if (scaled)
            {
                v *= Vector.Load((float*)factors);
            }

            StreamingStores.Store<float, TStore>(v, (float*)destination);
            return;
        }

        if (rectify)
        {
            lo = Vector.ConditionalSelect(Vector.LessThan(lo, Vector<double>.Zero), Vector<double>.Zero, lo);
            hi = Vector.ConditionalSelect(Vector.LessThan(hi, Vector<double>.Zero), Vector<double>.Zero, hi);
        }

        if (scaled)
        {
            lo *= Vector.Load((double*)factors);
            hi *= Vector.Load((double*)factors + Vector<double>.Count);
        }

        Store<T, TStore>(lo, hi, destination);
    }

    /// <summary>
    /// Whether a block's loop multiplies by the dropout's factors, fixed at compile time: the loops are too long for the
    /// JIT to inline a copy per case within its budget (when it runs out, it silently calls the loop with its flags as
    /// arguments), so each case is its own instantiation instead.
    /// </summary>
    private interface IScaling
    {
        static abstract bool Scaled { get; }
    }

    private readonly struct ByFactors : IScaling
    {
        public static bool Scaled => true;
    }

    private readonly struct NotByFactors : IScaling
    {
        public static bool Scaled => false;
    }

    /// <summary>Whether a finished forward's loop applies the ReLU, fixed at compile time as <see cref="IScaling"/> is.</summary>
    private interface IRectifying
    {
        static abstract bool Rectifies { get; }
    }

    private readonly struct Rectified : IRectifying
    {
        public static bool Rectifies => true;
    }

    private readonly struct NotRectified : IRectifying
    {
        public static bool Rectifies => false;
    }
}
