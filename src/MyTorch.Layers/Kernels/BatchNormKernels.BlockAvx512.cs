using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// A BatchNorm2d → ReLU → Dropout2d block's training forward over NCHW planes, finished in the normalisation's own
/// 16-value loop: each y is rounded to T, rectified and multiplied by its plane's factor on its way to memory, as
/// <see cref="BlockKernels.RectifyAndScale{T}"/> does after the fact, so no chunk goes through a buffer first.
/// </summary>
/// <remarks>
/// Through the buffer, each chunk of y was written to cache, read and written again by the ReLU and the factors, then
/// read once more and copied out: three passes over the chunk beside the normalisation's one. Each value here goes
/// through the same operations in the same order (the fused multiply-add in double rounded once to T, the comparison
/// with zero in T, one multiplication in T), so the bits are the buffer path's.
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>
    /// Whether a chunk of NCHW planes of <paramref name="spatial"/> values with a tail of <typeparamref name="T"/> can
    /// be finished in the normalisation's loop: float32 or float64 on AVX-512, planes at least one 16-value step long.
    /// </summary>
    private static bool FinishesInLoop<T>(int spatial)
        where T : unmanaged =>
        WidePlanes(spatial) && (typeof(T) == typeof(float) || typeof(T) == typeof(double));

    /// <summary>
    /// out = ReLU(T((a − offset[c]) · scale[c] + shift[c])) · factor[p] over a run of whole NCHW planes, p the plane
    /// (counted over the tensor from <paramref name="firstPlane"/>) and c its channel; without the tail's ReLU or factors,
    /// without that operation. The run's ends, outside whole steps (and whole lines for streaming stores), value by value.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AffinePlanesFinished<T, TStore>(T* a, T* output, int length, int spatial, int firstPlane, ChannelParameters parameters, BlockTail tail)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        Debug.Assert(FinishesInLoop<T>(spatial) && tail.Active && tail.GradOutput is null);
        T* mask = (T*)tail.Mask;
        bool rectify = tail.Rectify;
        (int start, int end) = VectorBody<T, TStore>(output, length);
        int i = 0;
        for (; i < start; i++)
        {
            output[i] = FinishedValue(a, i, spatial, firstPlane, parameters, mask, rectify);
        }

        var planes = new PlaneBoundaries(spatial, i, RegisterStep);
        int plane = firstPlane + planes.Plane;
        int channel = plane % parameters.Count;
        var vo = Vector512.Create(parameters.Offset[channel]);
        var vs = Vector512.Create(parameters.Scale[channel]);
        var vt = Vector512.Create(parameters.Shift[channel]);
        double factor = Factor(mask, plane);
        for (; i <= end - RegisterStep; i += RegisterStep)
        {
            PrefetchStep(a + i, a + length);
            Load16(a + i, out var lo, out var hi);
            int inPlane = AffineAcrossPlanes(ref planes, i, ref channel, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
            if (inPlane < RegisterStep)
            {
                // The step reached into the next plane, whose factor its other lanes take.
                double next = Factor(mask, ++plane);
                StoreFinished<T, TStore>(lo, hi, output + i, rectify, mask is not null, factor, next, inPlane);
                factor = next;
            }
            else
            {
                StoreFinished<T, TStore>(lo, hi, output + i, rectify, mask is not null, factor, factor, RegisterStep);
            }
        }

        for (; i < length; i++)
        {
            output[i] = FinishedValue(a, i, spatial, firstPlane, parameters, mask, rectify);
        }
    }

    /// <summary>The factor of plane <paramref name="plane"/> as a double (exact for float32 and float64), 1 without a mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double Factor<T>(T* mask, int plane)
        where T : unmanaged => mask is null ? 1.0 : Element.ToDouble(mask[plane]);

    /// <summary>One value of <see cref="AffinePlanesFinished{T, TStore}"/>, at run offset <paramref name="i"/>.</summary>
    private static T FinishedValue<T>(T* a, int i, int spatial, int firstPlane, ChannelParameters parameters, T* mask, bool rectify)
        where T : unmanaged
    {
        int plane = firstPlane + (i / spatial);
        int c = plane % parameters.Count;
        T y = Affine(a[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c]);
        if (typeof(T) == typeof(float))
        {
            float v = Unsafe.As<T, float>(ref y);
            v = rectify && v < 0 ? 0 : v;
            v = mask is null ? v : v * ((float*)mask)[plane];
            return Unsafe.As<float, T>(ref v);
        }
        else
        {
            double v = Unsafe.As<T, double>(ref y);
            v = rectify && v < 0 ? 0 : v;
            v = mask is null ? v : v * ((double*)mask)[plane];
            return Unsafe.As<double, T>(ref v);
        }
    }

    /// <summary>
    /// Rounds 16 values to T, rectifies them and multiplies them by the factor (<paramref name="current"/> for the first
    /// <paramref name="inCurrent"/> lanes, <paramref name="next"/> for the rest) in T, then stores them, plainly or streaming.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFinished<T, TStore>(
        Vector512<double> lo, Vector512<double> hi, T* destination, bool rectify, bool scaled, double current, double next, int inCurrent)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(float))
        {
            var low = Avx512F.ConvertToVector256Single(lo);
            var high = Avx512F.ConvertToVector256Single(hi);
            if (rectify)
            {
                low = Vector256.ConditionalSelect(Vector256.LessThan(low, Vector256<float>.Zero), Vector256<float>.Zero, low);
                high = Vector256.ConditionalSelect(Vector256.LessThan(high, Vector256<float>.Zero), Vector256<float>.Zero, high);
            }

            if (scaled)
            {
                var f = Vector256.Create((float)current);
                var g = Vector256.Create((float)next);
                var indices = Vector256<float>.Indices;
                low *= Vector256.ConditionalSelect(Vector256.LessThan(indices, Vector256.Create((float)inCurrent)), f, g);
                high *= Vector256.ConditionalSelect(Vector256.LessThan(indices, Vector256.Create((float)(inCurrent - 8))), f, g);
            }

            if (TStore.Streaming)
            {
                Avx.StoreAlignedNonTemporal((float*)destination, low);
                Avx.StoreAlignedNonTemporal((float*)destination + 8, high);
            }
            else
            {
                low.Store((float*)destination);
                high.Store((float*)destination + 8);
            }

            return;
        }

        Debug.Assert(typeof(T) == typeof(double));
        if (rectify)
        {
            lo = Vector512.ConditionalSelect(Vector512.LessThan(lo, Vector512<double>.Zero), Vector512<double>.Zero, lo);
            hi = Vector512.ConditionalSelect(Vector512.LessThan(hi, Vector512<double>.Zero), Vector512<double>.Zero, hi);
        }

        if (scaled)
        {
            var f = Vector512.Create(current);
            var g = Vector512.Create(next);
            lo *= Vector512.ConditionalSelect(Leading8(inCurrent), f, g);
            hi *= Vector512.ConditionalSelect(Leading8(inCurrent - 8), f, g);
        }

        if (TStore.Streaming)
        {
            Avx512F.StoreAlignedNonTemporal((double*)destination, lo);
            Avx512F.StoreAlignedNonTemporal((double*)destination + 8, hi);
        }
        else
        {
            Store8(lo, hi, (double*)destination);
        }
    }
    /// <summary>
    /// Whether the backward sums over a chunk of NCHW planes of <paramref name="spatial"/> values take the block's gate
    /// in their own loop: float32 or float64 on AVX-512, planes of at least a 16-value step that are not summed four at
    /// a time, and the gate given as thresholds (<see cref="BlockKernels.GateThresholds{T}"/>).
    /// </summary>
    private static bool SumsGateInLoop<T>(int spatial, in BlockTail tail)
        where T : unmanaged =>
        tail.Rectify && tail.Threshold is not null && FinishesInLoop<T>(spatial) && !SumsFourPlanesAtOnce(spatial);

    /// <summary>
    /// (Σg, Σg·(x − r)) over one NCHW plane, g = 0 where the gate is closed (source ≤ threshold if <paramref name="rising"/>,
    /// source ≥ threshold if not) and dy · factor (dy without <paramref name="scaled"/>) elsewhere, in T: the sums
    /// <see cref="ProductSums{T}"/> takes over the gate's output, in the same order, so the same bits, with g never
    /// written anywhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (double Sum, double Products) GatedProductSums<T>(
        T* dy, T* source, T* x, int length, double r, int readable, T factor, bool scaled, T threshold, bool rising)
        where T : unmanaged
    {
        Debug.Assert(length >= RegisterStep && (typeof(T) == typeof(float) || typeof(T) == typeof(double)));
        var vr = Vector512.Create(r);
        var vf = Vector512.Create(factor);
        var vc = Vector512.Create(threshold);
        Vector512<double> s0 = default, s1 = default, p0 = default, p1 = default;
        T* endA = dy + readable;
        T* endB = x + readable;
        int i = 0;
        for (; i <= length - RegisterStep; i += RegisterStep)
        {
            Prefetch.Ahead(dy + i, endA);
            Prefetch.Ahead(x + i, endB);
            Gated16(dy + i, source + i, vf, vc, scaled, rising, out var alo, out var ahi);
            Load16(x + i, out var blo, out var bhi);
            s0 += alo;
            s1 += ahi;
            p0 = Avx512F.FusedMultiplyAdd(alo, blo - vr, p0);
            p1 = Avx512F.FusedMultiplyAdd(ahi, bhi - vr, p1);
        }

        if (i <= length - 8)
        {
            var value = Gated8(dy + i, source + i, factor, scaled, threshold, rising);
            s0 += value;
            p0 = Avx512F.FusedMultiplyAdd(value, Load8(x + i) - vr, p0);
            i += 8;
        }

        double sum = AddAcross(s0, s1);
        double products = AddAcross(p0, p1);
        for (; i < length; i++)
        {
            double value = Element.ToDouble(GatedValue(dy[i], source[i], factor, scaled, threshold, rising));
            sum += value;
            products += value * (Element.ToDouble(x[i]) - r);
        }

        return (sum, products);
    }

    /// <summary>16 gated values (see <see cref="GatedProductSums{T}"/>) as two vectors of doubles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Gated16<T>(T* dy, T* x, Vector512<T> factor, Vector512<T> threshold, bool scaled, bool rising, out Vector512<double> lo, out Vector512<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var g = Gate(Vector512.Load(dy), Vector512.Load(x), factor, threshold, scaled, rising).AsSingle();
            lo = Avx512F.ConvertToVector512Double(g.GetLower());
            hi = Avx512F.ConvertToVector512Double(g.GetUpper());
            return;
        }

        lo = Gate(Vector512.Load(dy), Vector512.Load(x), factor, threshold, scaled, rising).AsDouble();
        hi = Gate(Vector512.Load(dy + 8), Vector512.Load(x + 8), factor, threshold, scaled, rising).AsDouble();
    }

    /// <summary>8 gated values as one vector of doubles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> Gated8<T>(T* dy, T* x, T factor, bool scaled, T threshold, bool rising)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var d = Vector256.Load((float*)dy);
            if (scaled)
            {
                d *= Vector256.Create(Unsafe.As<T, float>(ref factor));
            }

            var v = Vector256.Load((float*)x);
            var c = Vector256.Create(Unsafe.As<T, float>(ref threshold));
            var closed = rising ? Vector256.LessThanOrEqual(v, c) : Vector256.GreaterThanOrEqual(v, c);
            return Avx512F.ConvertToVector512Double(Vector256.ConditionalSelect(closed, Vector256<float>.Zero, d));
        }

        return Gate(Vector512.Load(dy), Vector512.Load(x), Vector512.Create(factor), Vector512.Create(threshold), scaled, rising).AsDouble();
    }

    /// <summary>The gate on a vector: 0 where closed, dy · factor (or dy) elsewhere, in T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Gate<T>(Vector512<T> dy, Vector512<T> x, Vector512<T> factor, Vector512<T> threshold, bool scaled, bool rising)
        where T : unmanaged
    {
        if (scaled)
        {
            dy *= factor;
        }

        var closed = rising ? Vector512.LessThanOrEqual(x, threshold) : Vector512.GreaterThanOrEqual(x, threshold);
        return Vector512.ConditionalSelect(closed, Vector512<T>.Zero, dy);
    }

    /// <summary>The gate on one value, in T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T GatedValue<T>(T dy, T x, T factor, bool scaled, T threshold, bool rising)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            float v = Unsafe.As<T, float>(ref x), c = Unsafe.As<T, float>(ref threshold);
            float g = (rising ? v <= c : v >= c) ? 0 : scaled ? Unsafe.As<T, float>(ref dy) * Unsafe.As<T, float>(ref factor) : Unsafe.As<T, float>(ref dy);
            return Unsafe.As<float, T>(ref g);
        }
        else
        {
            double v = Unsafe.As<T, double>(ref x), c = Unsafe.As<T, double>(ref threshold);
            double g = (rising ? v <= c : v >= c) ? 0 : scaled ? Unsafe.As<T, double>(ref dy) * Unsafe.As<T, double>(ref factor) : Unsafe.As<T, double>(ref dy);
            return Unsafe.As<double, T>(ref g);
        }
    }
}
