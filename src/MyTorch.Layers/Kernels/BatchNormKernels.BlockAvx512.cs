using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// A BatchNorm2d → ReLU → Dropout2d block's training step over NCHW planes, its tail taken in the normalisation's own
/// 16-value loops. Forward, each y is rounded to T, rectified and multiplied by its plane's factor on its way to memory,
/// as <see cref="BlockKernels.RectifyAndScale{T}"/> does after the fact; backward, the sums and dx gate the block's
/// output gradient as they load it, as <see cref="BlockKernels.Gradient{T}"/> describes, where its channels have a
/// threshold for the gate (<see cref="BlockKernels.GateThresholds{T}"/>); other chunks still go through the buffer.
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
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
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

        if (spatial == RegisterStep && i == 0)
        {
            // Planes of one step each (4×4): each step takes its own plane's constants and factor, with no boundary to cross.
            for (int plane = firstPlane, channel = plane % parameters.Count; i <= end - RegisterStep; i += RegisterStep, plane++, channel = channel + 1 == parameters.Count ? 0 : channel + 1)
            {
                PrefetchStep(a + i, a + length);
                Load16(a + i, out var lo, out var hi);
                var vo = Vector512.Create(parameters.Offset[channel]);
                var vs = Vector512.Create(parameters.Scale[channel]);
                var vt = Vector512.Create(parameters.Shift[channel]);
                double factor = Factor(mask, plane);
                StoreFinished<T, TStore>(
                    Avx512F.FusedMultiplyAdd(lo - vo, vs, vt), Avx512F.FusedMultiplyAdd(hi - vo, vs, vt), output + i, rectify, mask is not null, factor, factor, RegisterStep);
            }
        }
        else
        {
            AffineFinishedAcrossPlanes<T, TStore>(a, output, ref i, end, length, spatial, firstPlane, parameters, mask, rectify);
        }

        for (; i < length; i++)
        {
            output[i] = FinishedValue(a, i, spatial, firstPlane, parameters, mask, rectify);
        }
    }

    /// <summary>
    /// The vector steps of <see cref="AffinePlanesFinished{T, TStore}"/> from run offset <paramref name="i"/> to
    /// <paramref name="end"/>, plane by plane as <see cref="GatedGradientAcrossPlanes{T, TStore}"/> walks them: the
    /// steps within a plane, then the step that reaches across its end, each lane with its own plane's constants and factor.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AffineFinishedAcrossPlanes<T, TStore>(
        T* a, T* output, ref int i, int end, int length, int spatial, int firstPlane, ChannelParameters parameters, T* mask, bool rectify)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        bool scaled = mask is not null;
        int plane = firstPlane + (i / spatial);
        int planeEnd = ((i / spatial) + 1) * spatial;
        int channel = plane % parameters.Count;
        while (i <= end - RegisterStep)
        {
            var vo = Vector512.Create(parameters.Offset[channel]);
            var vs = Vector512.Create(parameters.Scale[channel]);
            var vt = Vector512.Create(parameters.Shift[channel]);
            double factor = Factor(mask, plane);
            for (int stop = Math.Min(planeEnd, end); i <= stop - RegisterStep; i += RegisterStep)
            {
                PrefetchStep(a + i, a + length);
                Load16(a + i, out var lo, out var hi);
                StoreFinished<T, TStore>(
                    Avx512F.FusedMultiplyAdd(lo - vo, vs, vt), Avx512F.FusedMultiplyAdd(hi - vo, vs, vt), output + i, rectify, scaled, factor, factor, RegisterStep);
            }

            int nextChannel = channel + 1 == parameters.Count ? 0 : channel + 1;
            if (i < planeEnd && i <= end - RegisterStep)
            {
                // Its first planeEnd − i lanes in this plane, the others in the next, whose constants and factor they take.
                int inPlane = planeEnd - i;
                Load16(a + i, out var lo, out var hi);
                int across = channel;
                AffineAcrossPlanes(true, inPlane, ref across, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
                StoreFinished<T, TStore>(lo, hi, output + i, rectify, scaled, factor, Factor(mask, plane + 1), inPlane);
                i += RegisterStep;
            }

            plane++;
            channel = nextChannel;
            planeEnd += spatial;
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

            StoreHalves<TStore>(low, high, (float*)destination);
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

        Store16<T, TStore>(lo, hi, destination);
    }

    /// <summary>
    /// Whether the backward sums over a chunk of NCHW planes of <paramref name="spatial"/> values take the block's gate
    /// in their own loop: float32 or float64 on AVX-512, planes of at least a 16-value step that are not summed four at
    /// a time, and the gate given as thresholds (<see cref="BlockKernels.GateThresholds{T}"/>).
    /// </summary>
    private static bool SumsGateInLoop<T>(int spatial, in BlockTail tail)
        where T : unmanaged =>
        HasGate(tail) && FinishesInLoop<T>(spatial) && !SumsSmallPlanesInColumns(spatial);

    /// <summary>
    /// Whether the tail gives its gate to the loops: a <see cref="BlockTail.ChannelGate"/> (the ReLU's, or one that never
    /// closes, for the dropout alone), or the ReLU's thresholds.
    /// </summary>
    private static bool HasGate(in BlockTail tail) => tail.ChannelGate is not null || (tail.Rectify && tail.Threshold is not null);

    /// <summary>
    /// (Σg, Σg·(x − r)) over one NCHW plane, g = 0 where <paramref name="gate"/> is closed for the source and
    /// dy · factor (dy without <paramref name="scaled"/>) elsewhere, in T: the sums <see cref="ProductSums{T}"/> takes
    /// over the gate's output, in the same order, so the same bits, with g never written anywhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static (double Sum, double Products) GatedProductSums<T>(T* dy, T* source, T* x, int length, double r, int readable, LaneGate<T> gate, bool scaled)
        where T : unmanaged
    {
        Debug.Assert(length >= RegisterStep && (typeof(T) == typeof(float) || typeof(T) == typeof(double)));
        var vr = Vector512.Create(r);
        Vector512<double> s0 = default, s1 = default, p0 = default, p1 = default;
        T* endA = dy + readable;
        T* endB = x + readable;
        int i = 0;
        for (; i <= length - RegisterStep; i += RegisterStep)
        {
            Prefetch.Ahead(dy + i, endA);
            Prefetch.Ahead(x + i, endB);
            GatedLoad16(dy + i, source + i, gate, gate, RegisterStep, scaled, out var alo, out var ahi);
            Load16(x + i, out var blo, out var bhi);
            s0 += alo;
            s1 += ahi;
            p0 = Avx512F.FusedMultiplyAdd(alo, blo - vr, p0);
            p1 = Avx512F.FusedMultiplyAdd(ahi, bhi - vr, p1);
        }

        if (i <= length - 8)
        {
            var value = Gated8(dy + i, source + i, gate, scaled);
            s0 += value;
            p0 = Avx512F.FusedMultiplyAdd(value, Load8(x + i) - vr, p0);
            i += 8;
        }

        double sum = AddAcross(s0, s1);
        double products = AddAcross(p0, p1);
        for (; i < length; i++)
        {
            double value = Element.ToDouble(gate.Apply(dy[i], source[i], scaled));
            sum += value;
            products += value * (Element.ToDouble(x[i]) - r);
        }

        return (sum, products);
    }

    /// <summary>8 gated values as one vector of doubles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> Gated8<T>(T* dy, T* source, LaneGate<T> gate, bool scaled)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var d = Vector256.Load((float*)dy);
            if (scaled)
            {
                d *= gate.Factor.AsSingle().GetLower();
            }

            var closed = Vector256.LessThanOrEqual(Vector256.Load((float*)source) ^ gate.Flip.AsSingle().GetLower(), gate.Bound.AsSingle().GetLower());
            return Avx512F.ConvertToVector512Double(Vector256.ConditionalSelect(closed, Vector256<float>.Zero, d));
        }

        return gate.Apply(Vector512.Load(dy), Vector512.Load(source), scaled).AsDouble();
    }

    /// <summary>
    /// Whether dx over the NCHW planes [<paramref name="first"/>, <paramref name="end"/>) takes the block's gate in its
    /// own loop: as <see cref="SumsGateInLoop{T}"/> (planes of 4×4 included), with a threshold for every channel the
    /// planes meet.
    /// </summary>
    private static bool GradientGateInLoop<T>(int spatial, in BlockTail tail, int channels, int first, int end)
        where T : unmanaged
    {
        if (!HasGate(tail) || !FinishesInLoop<T>(spatial))
        {
            return false;
        }

        if (tail.ChannelGate is not null)
        {
            return true;
        }

        for (int plane = first; plane < Math.Min(end, first + channels); plane++)
        {
            if (double.IsNaN(tail.Threshold[plane % channels]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// <see cref="GradientPlanes{T, TStore}"/> over a run of whole NCHW planes from plane <paramref name="firstPlane"/>
    /// with a as the block's gate makes it from <paramref name="blockGradOutput"/> (see <see cref="GatedProductSums{T}"/>),
    /// each lane with its own plane's factor and channel's threshold: the values the buffer path writes and reads, so the
    /// same bits, with none of them written anywhere.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedGradientPlanes<T, TStore>(
        T* blockGradOutput, T* source, T* b, T* output, int length, int spatial, int firstPlane, ChannelParameters parameters, BlockTail tail)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int channels = parameters.Count;
        T* mask = (T*)tail.Mask;
        (int start, int end) = VectorBody<T, TStore>(output, length);
        int i = 0;
        for (; i < start; i++)
        {
            output[i] = GatedGradientValue(blockGradOutput, source, b, i, spatial, firstPlane, parameters, tail);
        }

        if (spatial == RegisterStep && i == 0)
        {
            // Planes of one step each (4×4): each step takes its own plane's constants, with no boundary to cross.
            bool scaled = mask is not null;
            for (int plane = firstPlane, channel = plane % channels; i <= end - RegisterStep; i += RegisterStep, plane++, channel = channel + 1 == channels ? 0 : channel + 1)
            {
                PrefetchStep(blockGradOutput + i, blockGradOutput + length);
                PrefetchStep(b + i, b + length);
                var gate = GateOf(tail, mask, plane, channel, channels);
                GatedLoad16(blockGradOutput + i, source + i, gate, gate, RegisterStep, scaled, out var alo, out var ahi);
                Load16(b + i, out var blo, out var bhi);
                var vo = Vector512.Create(parameters.Offset[channel]);
                var vs = Vector512.Create(parameters.Scale[channel]);
                var vt = Vector512.Create(parameters.Shift[channel]);
                var vp = Vector512.Create(parameters.Projection[channel]);
                Store16<T, TStore>((alo - vt - ((blo - vo) * vp)) * vs, (ahi - vt - ((bhi - vo) * vp)) * vs, output + i);
            }
        }
        else
        {
            GatedGradientAcrossPlanes<T, TStore>(blockGradOutput, source, b, output, ref i, end, length, spatial, firstPlane, parameters, tail);
        }

        for (; i < length; i++)
        {
            output[i] = GatedGradientValue(blockGradOutput, source, b, i, spatial, firstPlane, parameters, tail);
        }
    }

    /// <summary>
    /// The vector steps of <see cref="GatedGradientPlanes{T, TStore}"/> from run offset <paramref name="i"/> to
    /// <paramref name="end"/>, plane by plane: the steps within a plane with its constants and gate held in registers,
    /// then the step that reaches across its end, each lane with its own plane's constants and gate.
    /// </summary>
    /// <remarks>
    /// Asking at every step whether it crosses a boundary, as <see cref="PlaneBoundaries"/> does, left the JIT a loop of
    /// branches with the gate spilled to the stack; walking plane by plane keeps the common step branch-free.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatedGradientAcrossPlanes<T, TStore>(
        T* blockGradOutput, T* source, T* b, T* output, ref int i, int end, int length, int spatial, int firstPlane, ChannelParameters parameters, in BlockTail tail)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int channels = parameters.Count;
        T* mask = (T*)tail.Mask;
        bool scaled = mask is not null;
        int plane = firstPlane + (i / spatial);
        int planeEnd = ((i / spatial) + 1) * spatial;
        int channel = plane % channels;
        while (i <= end - RegisterStep)
        {
            var vo = Vector512.Create(parameters.Offset[channel]);
            var vs = Vector512.Create(parameters.Scale[channel]);
            var vt = Vector512.Create(parameters.Shift[channel]);
            var vp = Vector512.Create(parameters.Projection[channel]);
            var gate = GateOf(tail, mask, plane, channel, channels);
            for (int stop = Math.Min(planeEnd, end); i <= stop - RegisterStep; i += RegisterStep)
            {
                PrefetchStep(blockGradOutput + i, blockGradOutput + length);
                PrefetchStep(b + i, b + length);
                GatedLoad16(blockGradOutput + i, source + i, gate, gate, RegisterStep, scaled, out var alo, out var ahi);
                Load16(b + i, out var blo, out var bhi);
                Store16<T, TStore>((alo - vt - ((blo - vo) * vp)) * vs, (ahi - vt - ((bhi - vo) * vp)) * vs, output + i);
            }

            int nextChannel = channel + 1 == channels ? 0 : channel + 1;
            if (i < planeEnd && i <= end - RegisterStep)
            {
                // Its first planeEnd − i lanes in this plane, the others in the next.
                int inPlane = planeEnd - i;
                var next = GateOf(tail, mask, plane + 1, nextChannel, channels);
                GatedLoad16(blockGradOutput + i, source + i, gate, next, inPlane, scaled, out var alo, out var ahi);
                Load16(b + i, out var blo, out var bhi);
                int across = channel;
                GradientAcrossPlanes(true, inPlane, ref across, parameters, ref vo, ref vs, ref vt, ref vp, ref alo, ref ahi, blo, bhi);
                Store16<T, TStore>(alo, ahi, output + i);
                i += RegisterStep;
            }

            plane++;
            channel = nextChannel;
            planeEnd += spatial;
        }
    }

    /// <summary>The gate of NCHW plane <paramref name="plane"/>, of channel <paramref name="channel"/>, in every lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static LaneGate<T> GateOf<T>(in BlockTail tail, T* mask, int plane, int channel, int channels)
        where T : unmanaged
    {
        T factor = mask is null ? Element.FromDouble<T>(1) : mask[plane];
        if (tail.ChannelGate is null)
        {
            return LaneGate<T>.Of(factor, tail.Threshold[channel], tail.Scale[channel] > 0);
        }

        // The flip and threshold ready in T: two broadcasts from memory, with no conversion and no branch on the direction.
        T* gate = (T*)tail.ChannelGate;
        return new(Vector512.Create(factor), Vector512.Create(gate[channel]), Vector512.Create(gate[channels + channel]));
    }

    /// <summary>
    /// 16 gated values as two vectors of doubles, the first <paramref name="inCurrent"/> through <paramref name="current"/>'s
    /// gate and the rest through <paramref name="next"/>'s.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatedLoad16<T>(T* dy, T* source, LaneGate<T> current, LaneGate<T> next, int inCurrent, bool scaled, out Vector512<double> lo, out Vector512<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var gate = inCurrent >= RegisterStep ? current : current.Across(Leading<T>(inCurrent), next);
            var g = gate.Apply(Vector512.Load(dy), Vector512.Load(source), scaled).AsSingle();
            lo = Avx512F.ConvertToVector512Double(g.GetLower());
            hi = Avx512F.ConvertToVector512Double(g.GetUpper());
            return;
        }

        var low = inCurrent >= 8 ? current : current.Across(Leading<T>(inCurrent), next);
        var high = inCurrent >= RegisterStep ? current : current.Across(Leading<T>(inCurrent - 8), next);
        lo = low.Apply(Vector512.Load(dy), Vector512.Load(source), scaled).AsDouble();
        hi = high.Apply(Vector512.Load(dy + 8), Vector512.Load(source + 8), scaled).AsDouble();
    }

    /// <summary>All bits set in the first <paramref name="count"/> lanes of a vector of T (none if count ≤ 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Leading<T>(int count)
        where T : unmanaged =>
        Vector512.LessThan(Vector512<T>.Indices, Vector512.Create(Element.FromDouble<T>(count)));

    /// <summary>dx at run offset <paramref name="i"/> of <see cref="GatedGradientPlanes{T, TStore}"/>, value by value.</summary>
    private static T GatedGradientValue<T>(T* blockGradOutput, T* source, T* b, int i, int spatial, int firstPlane, ChannelParameters parameters, in BlockTail tail)
        where T : unmanaged
    {
        int plane = firstPlane + (i / spatial);
        int c = plane % parameters.Count;
        T g = GateOf(tail, (T*)tail.Mask, plane, c, parameters.Count).Apply(blockGradOutput[i], source[i], tail.Mask is not null);
        return Gradient(g, b[i], parameters.Offset[c], parameters.Scale[c], parameters.Shift[c], parameters.Projection[c]);
    }

    /// <summary>
    /// Whether the channels-last sums and dx over rows of <paramref name="period"/> values take the block's gate in their
    /// own loops: where they would go period by period 16 values a step (a row of C channels, C a whole number of steps,
    /// at least 512 bytes long) and every channel has a threshold (<see cref="BlockTail.ChannelGate"/>).
    /// </summary>
    private static bool RowsGateInLoop<T>(in BlockTail tail, int period, int channels)
        where T : unmanaged =>
        tail.ChannelGate is not null && tail.GradOutput is not null && RowsPeriodByPeriodWide<T>(period, channels);

    /// <summary>
    /// Whether the channels-last sums and dx over rows of <paramref name="period"/> values take the block's gate in the
    /// loops that hold a period's constants in registers (<see cref="RowsInRegisters{T}"/>), where every channel has a
    /// threshold (<see cref="BlockTail.ChannelGate"/>).
    /// </summary>
    private static bool RowsGateInRegisters<T>(in BlockTail tail, int period, int channels, int spatial)
        where T : unmanaged =>
        tail.ChannelGate is not null && tail.GradOutput is not null && RowsInRegisters<T>(period, channels, spatial);

    /// <summary>
    /// Whether the channels-last forward over rows of <paramref name="period"/> values finishes y (ReLU, factors) in its
    /// own loop: where it would go period by period 16 values a step, as <see cref="RowsGateInLoop{T}"/>.
    /// </summary>
    private static bool RowsFinishInLoop<T>(in BlockTail tail, int period, int channels)
        where T : unmanaged =>
        tail.Active && tail.GradOutput is null && RowsPeriodByPeriodWide<T>(period, channels);

    /// <summary>
    /// Whether the channels-last forward over rows of <paramref name="period"/> values finishes y in the loop that holds
    /// a period's constants in registers (<see cref="RowsInRegisters{T}"/>).
    /// </summary>
    private static bool RowsFinishInRegisters<T>(in BlockTail tail, int period, int channels, int spatial)
        where T : unmanaged =>
        tail.Active && tail.GradOutput is null && RowsInRegisters<T>(period, channels, spatial);

    /// <summary>Whether the channels-last loops take rows of C = <paramref name="period"/> values period by period, 16 values a step.</summary>
    private static bool RowsPeriodByPeriodWide<T>(int period, int channels)
        where T : unmanaged =>
        period == channels && (typeof(T) == typeof(float) || typeof(T) == typeof(double))
        && WidePeriods(period) && RegisterSteps(period) == 0 && period != 3 * Lanes && PeriodsPerPass<T>(period) == 1;

    /// <summary>
    /// <see cref="AffinePeriodByPeriodWide{T, TStore}"/> over channels-last rows from row <paramref name="firstRow"/>, each
    /// value rounded to T, rectified and multiplied by its lane's factor as <see cref="BlockKernels.FinishRows{T}"/> does
    /// in the buffer, then stored: the same operations, so the same bits.
    /// </summary>
    private static void AffineFinishedPeriodByPeriodWide<T, TStore>(T* a, T* output, int length, ChannelParameters parameters, long firstRow, in BlockTail tail, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        T* mask = (T*)tail.Mask;
        if (tail.Rectify && mask is not null)
        {
            AffineFinishedRows<T, TStore, Rectified, ByFactors>(a, output, length, parameters, firstRow, mask, spatial);
        }
        else if (tail.Rectify)
        {
            AffineFinishedRows<T, TStore, Rectified, NotByFactors>(a, output, length, parameters, firstRow, null, spatial);
        }
        else if (mask is not null)
        {
            AffineFinishedRows<T, TStore, NotRectified, ByFactors>(a, output, length, parameters, firstRow, mask, spatial);
        }
        else
        {
            AffineFinishedRows<T, TStore, NotRectified, NotByFactors>(a, output, length, parameters, firstRow, null, spatial);
        }
    }

    /// <summary><see cref="AffineFinishedPeriodByPeriodWide{T, TStore}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AffineFinishedRows<T, TStore, TRectifying, TScaling>(T* a, T* output, int length, ChannelParameters parameters, long firstRow, T* mask, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TRectifying : struct, IRectifying
        where TScaling : struct, IScaling
    {
        bool rectify = TRectifying.Rectifies;
        bool scaled = TScaling.Scaled;
        int period = parameters.Count;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift;
        T* end = a + length;

        // Row by row, the sample's factors moved on with no division, as in GatedGradientPeriodByPeriodWide.
        T* factors = scaled ? mask + ((firstRow / spatial) * period) : null;
        for (long inSample = firstRow % spatial; a <= end - period; a += period, output += period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                FinishedStep<T, TStore>(a + k, end, output + k, Load8(o + k), Load8(o + k + 8), Load8(c + k), Load8(c + k + 8), Load8(t + k), Load8(t + k + 8), rectify, factors + k, scaled);
            }

            // The next sample's factors from its first row on, with no division per row.
            if (scaled && ++inSample == spatial)
            {
                inSample = 0;
                factors += period;
            }
        }
    }

    /// <summary>
    /// The channels-last block's finished forward over rows [<paramref name="start"/>, + <paramref name="length"/>) of C =
    /// parameters.Count values, in registers where <see cref="RowsFinishInRegisters{T}"/> says so, else period by period
    /// (<see cref="AffineFinishedPeriodByPeriodWide{T, TStore}"/>); the pointers are at the rows' start.
    /// </summary>
    private static void FinishedRowAffine<T, TStore>(T* a, T* output, long start, int length, ChannelParameters parameters, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        if (period == 3 * Lanes)
        {
            AffineFinishedThreeSteps<T, TStore>(a, output, start, length, parameters, tail, channels, spatial);
            return;
        }

        switch (RegisterSteps(period))
        {
            case 0:
                AffineFinishedPeriodByPeriodWide<T, TStore>(a, output, length, parameters, start / period, tail, spatial);
                break;
            case 1:
                AffineFinishedInRegisters<T, TStore, OneStep>(a, output, start, length, parameters, tail, spatial);
                break;
            case 2:
                AffineFinishedInRegisters<T, TStore, TwoSteps>(a, output, start, length, parameters, tail, spatial);
                break;
            case 3:
                AffineFinishedInRegisters<T, TStore, ThreeRegisterSteps>(a, output, start, length, parameters, tail, spatial);
                break;
            default:
                AffineFinishedInRegisters<T, TStore, FourSteps>(a, output, start, length, parameters, tail, spatial);
                break;
        }
    }

    /// <summary>
    /// <see cref="AffineInRegisters{T, TStore, TSteps}"/> over channels-last rows of one period each, each y rounded to T,
    /// rectified and multiplied by its lane's factor as <see cref="BlockKernels.FinishRows{T}"/> does in the buffer, each
    /// sample's rows with that sample's factors: the same operations, so the same bits.
    /// </summary>
    private static void AffineFinishedInRegisters<T, TStore, TSteps>(T* a, T* output, long start, int length, ChannelParameters parameters, in BlockTail tail, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
    {
        T* mask = (T*)tail.Mask;
        if (tail.Rectify && mask is not null)
        {
            AffineFinishedRegisterRuns<T, TStore, TSteps, Rectified, ByFactors>(a, output, start, length, parameters, mask, spatial);
        }
        else if (tail.Rectify)
        {
            AffineFinishedRegisterRuns<T, TStore, TSteps, Rectified, NotByFactors>(a, output, start, length, parameters, null, spatial);
        }
        else if (mask is not null)
        {
            AffineFinishedRegisterRuns<T, TStore, TSteps, NotRectified, ByFactors>(a, output, start, length, parameters, mask, spatial);
        }
        else
        {
            AffineFinishedRegisterRuns<T, TStore, TSteps, NotRectified, NotByFactors>(a, output, start, length, parameters, null, spatial);
        }
    }

    /// <summary><see cref="AffineFinishedInRegisters{T, TStore, TSteps}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void AffineFinishedRegisterRuns<T, TStore, TSteps, TRectifying, TScaling>(
        T* a, T* output, long start, int length, ChannelParameters parameters, T* mask, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
        where TRectifying : struct, IRectifying
        where TScaling : struct, IScaling
    {
        bool rectify = TRectifying.Rectifies;
        bool scaled = TScaling.Scaled;
        int period = TSteps.Count * RegisterStep;
        Debug.Assert(period == parameters.Count && start % period == 0 && length % period == 0);
        var (o0, o1, o2, o3, o4, o5, o6, o7) = LoadRow<TSteps>(parameters.Offset);
        var (c0, c1, c2, c3, c4, c5, c6, c7) = LoadRow<TSteps>(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5, t6, t7) = LoadRow<TSteps>(parameters.Shift);
        T* end = a + length;
        long sampleLength = (long)spatial * period;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            // A sample's rows at a time, with its factors: a sample is a whole number of periods.
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            T* factors = scaled ? mask + (sample * period) : null;
            for (; i < runEnd; i += period)
            {
                FinishedStep<T, TStore>(a + i, end, output + i, o0, o1, c0, c1, t0, t1, rectify, factors, scaled);
                if (TSteps.Count > 1)
                {
                    FinishedStep<T, TStore>(a + i + 16, end, output + i + 16, o2, o3, c2, c3, t2, t3, rectify, factors + 16, scaled);
                }

                if (TSteps.Count > 2)
                {
                    FinishedStep<T, TStore>(a + i + 32, end, output + i + 32, o4, o5, c4, c5, t4, t5, rectify, factors + 32, scaled);
                }

                if (TSteps.Count > 3)
                {
                    FinishedStep<T, TStore>(a + i + 48, end, output + i + 48, o6, o7, c6, c7, t6, t7, rectify, factors + 48, scaled);
                }
            }
        }
    }

    /// <summary>
    /// One step of the finished forward: <see cref="AffineStep{T, TStore}"/>'s y, finished by
    /// <see cref="StoreFinishedLanes{T, TStore}"/> on its way to memory.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FinishedStep<T, TStore>(
        T* a,
        T* end,
        T* output,
        Vector512<double> offsetLo,
        Vector512<double> offsetHi,
        Vector512<double> scaleLo,
        Vector512<double> scaleHi,
        Vector512<double> shiftLo,
        Vector512<double> shiftHi,
        bool rectify,
        T* factors,
        bool scaled)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        PrefetchStep(a, end);
        Load16(a, out var lo, out var hi);
        StoreFinishedLanes<T, TStore>(Avx512F.FusedMultiplyAdd(lo - offsetLo, scaleLo, shiftLo), Avx512F.FusedMultiplyAdd(hi - offsetHi, scaleHi, shiftHi), output, rectify, factors, scaled);
    }

    /// <summary>
    /// Rounds 16 values to T, rectifies them and, if <paramref name="scaled"/>, multiplies them by their own factors from
    /// <paramref name="factors"/> in T, then stores them, plainly or streaming.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFinishedLanes<T, TStore>(Vector512<double> lo, Vector512<double> hi, T* destination, bool rectify, T* factors, bool scaled)
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
                low *= Vector256.Load((float*)factors);
                high *= Vector256.Load((float*)factors + 8);
            }

            StoreHalves<TStore>(low, high, (float*)destination);
            return;
        }

        if (rectify)
        {
            lo = Vector512.ConditionalSelect(Vector512.LessThan(lo, Vector512<double>.Zero), Vector512<double>.Zero, lo);
            hi = Vector512.ConditionalSelect(Vector512.LessThan(hi, Vector512<double>.Zero), Vector512<double>.Zero, hi);
        }

        if (scaled)
        {
            lo *= Vector512.Load((double*)factors);
            hi *= Vector512.Load((double*)factors + 8);
        }

        Store16<T, TStore>(lo, hi, destination);
    }

    /// <summary>
    /// <see cref="ProductSumsPeriodByPeriodWide{T}"/> over channels-last rows from row <paramref name="firstRow"/>, with a
    /// the block's gate makes it from <paramref name="dy"/> (<see cref="RowGated16{T}"/>): the values the buffer would
    /// hold, into the same lanes in the same order, so the same bits.
    /// </summary>
    private static void GatedProductSumsPeriodByPeriodWide<T>(
        T* dy, T* source, T* x, int length, int period, double* r, double* sum, double* products, long firstRow, in BlockTail tail, int spatial)
        where T : unmanaged
    {
        T* mask = (T*)tail.Mask;
        if (mask is not null)
        {
            GatedProductSumsRows<T, ByFactors>(dy, source, x, length, period, r, sum, products, firstRow, mask, (T*)tail.ChannelGate, spatial);
        }
        else
        {
            GatedProductSumsRows<T, NotByFactors>(dy, source, x, length, period, r, sum, products, firstRow, null, (T*)tail.ChannelGate, spatial);
        }
    }

    /// <summary><see cref="GatedProductSumsPeriodByPeriodWide{T}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedProductSumsRows<T, TScaling>(
        T* dy, T* source, T* x, int length, int period, double* r, double* sum, double* products, long firstRow, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        T* endA = dy + length;
        T* endB = x + length;
        T* bound = flip + period;

        // Row by row, the sample's factors moved on with no division, as in GatedGradientPeriodByPeriodWide.
        T* factors = scaled ? mask + ((firstRow / spatial) * period) : null;
        for (long inSample = firstRow % spatial; dy <= endA - period; dy += period, source += period, x += period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                Vector512<double> s0 = Load8(sum + k), s1 = Load8(sum + k + 8), p0 = Load8(products + k), p1 = Load8(products + k + 8);
                AddGatedProducts(dy + k, source + k, x + k, endA, endB, flip + k, bound + k, factors + k, scaled, Load8(r + k), Load8(r + k + 8), ref s0, ref s1, ref p0, ref p1);
                Store8(s0, s1, sum + k);
                Store8(p0, p1, products + k);
            }

            // The next sample's factors from its first row on, with no division per row.
            if (scaled && ++inSample == spatial)
            {
                inSample = 0;
                factors += period;
            }
        }
    }

    /// <summary>
    /// One step of the gated sums: <see cref="ProductSumsInRegisters{T, TSteps}"/>'s step with a the block's gate makes from <paramref name="dy"/>
    /// (<see cref="RowGated16{T}"/>), each value added as there.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddGatedProducts<T>(
        T* dy,
        T* source,
        T* x,
        T* endA,
        T* endB,
        T* flip,
        T* bound,
        T* factors,
        bool scaled,
        Vector512<double> rLo,
        Vector512<double> rHi,
        ref Vector512<double> sumLo,
        ref Vector512<double> sumHi,
        ref Vector512<double> productsLo,
        ref Vector512<double> productsHi)
        where T : unmanaged
    {
        PrefetchStep(dy, endA);
        PrefetchStep(x, endB);
        RowGated16(dy, source, flip, bound, factors, scaled, out var alo, out var ahi);
        Load16(x, out var blo, out var bhi);
        AccumulateProducts(alo, ahi, blo, bhi, rLo, rHi, ref sumLo, ref sumHi, ref productsLo, ref productsHi);
    }

    /// <summary>
    /// The channels-last block's gated sums over rows [<paramref name="start"/>, + <paramref name="length"/>) of C =
    /// <paramref name="period"/> values, in registers where <see cref="RowsGateInRegisters{T}"/> says so, else period by
    /// period (<see cref="GatedProductSumsPeriodByPeriodWide{T}"/>); dy, source and x point at the rows' start.
    /// </summary>
    private static void GatedRowSums<T>(
        T* dy, T* source, T* x, long start, int length, int period, double* r, double* sum, double* products, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
    {
        if (period == 3 * Lanes)
        {
            GatedProductSumsThreeSteps(dy, source, x, start, length, r, sum, products, tail, channels, spatial);
            return;
        }

        if (RegisterSteps(period) == 0)
        {
            GatedProductSumsPeriodByPeriodWide(dy, source, x, length, period, r, sum, products, start / period, tail, spatial);
            return;
        }

        T* mask = (T*)tail.Mask;
        T* flip = (T*)tail.ChannelGate;
        switch (period / RegisterStep)
        {
            case 1:
                GatedProductSumsInRegisters<T, OneStep>(dy, source, x, start, length, r, sum, products, mask, flip, spatial);
                break;
            case 2:
                GatedProductSumsInRegisters<T, TwoSteps>(dy, source, x, start, length, r, sum, products, mask, flip, spatial);
                break;
            case 3:
                GatedProductSumsInRegisters<T, ThreeRegisterSteps>(dy, source, x, start, length, r, sum, products, mask, flip, spatial);
                break;
            default:
                GatedProductSumsInRegisters<T, FourSteps>(dy, source, x, start, length, r, sum, products, mask, flip, spatial);
                break;
        }
    }

    /// <summary>
    /// <see cref="ProductSumsInRegisters{T, TSteps}"/> over channels-last rows of one period each, with a the block's gate
    /// makes it from <paramref name="dy"/>, each sample's rows with that sample's factors: the values the buffer would
    /// hold, into the same lanes in the same order, so the same bits.
    /// </summary>
    private static void GatedProductSumsInRegisters<T, TSteps>(
        T* dy, T* source, T* x, long start, int length, double* r, double* sum, double* products, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TSteps : struct, IStepCount
    {
        if (mask is not null)
        {
            GatedProductSumsRegisterRuns<T, TSteps, ByFactors>(dy, source, x, start, length, r, sum, products, mask, flip, spatial);
        }
        else
        {
            GatedProductSumsRegisterRuns<T, TSteps, NotByFactors>(dy, source, x, start, length, r, sum, products, null, flip, spatial);
        }
    }

    /// <summary><see cref="GatedProductSumsInRegisters{T, TSteps}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedProductSumsRegisterRuns<T, TSteps, TScaling>(
        T* dy, T* source, T* x, long start, int length, double* r, double* sum, double* products, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TSteps : struct, IStepCount
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        int period = TSteps.Count * RegisterStep;
        Debug.Assert(start % period == 0 && length % period == 0);
        T* bound = flip + period;
        var (r0, r1, r2, r3, r4, r5, r6, r7) = LoadRow<TSteps>(r);
        var (s0, s1, s2, s3, s4, s5, s6, s7) = LoadRow<TSteps>(sum);
        var (p0, p1, p2, p3, p4, p5, p6, p7) = LoadRow<TSteps>(products);
        T* endA = dy + length;
        T* endB = x + length;
        long sampleLength = (long)spatial * period;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            // A sample's rows at a time, with its factors: a sample is a whole number of periods.
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            T* factors = scaled ? mask + (sample * period) : null;
            for (; i < runEnd; i += period)
            {
                AddGatedProducts(dy + i, source + i, x + i, endA, endB, flip, bound, factors, scaled, r0, r1, ref s0, ref s1, ref p0, ref p1);
                if (TSteps.Count > 1)
                {
                    AddGatedProducts(dy + i + 16, source + i + 16, x + i + 16, endA, endB, flip + 16, bound + 16, factors + 16, scaled, r2, r3, ref s2, ref s3, ref p2, ref p3);
                }

                if (TSteps.Count > 2)
                {
                    AddGatedProducts(dy + i + 32, source + i + 32, x + i + 32, endA, endB, flip + 32, bound + 32, factors + 32, scaled, r4, r5, ref s4, ref s5, ref p4, ref p5);
                }

                if (TSteps.Count > 3)
                {
                    AddGatedProducts(dy + i + 48, source + i + 48, x + i + 48, endA, endB, flip + 48, bound + 48, factors + 48, scaled, r6, r7, ref s6, ref s7, ref p6, ref p7);
                }
            }
        }

        StoreRow<TSteps>(sum, s0, s1, s2, s3, s4, s5, s6, s7);
        StoreRow<TSteps>(products, p0, p1, p2, p3, p4, p5, p6, p7);
    }

    /// <summary>
    /// The channels-last block's gated dx over rows [<paramref name="start"/>, + <paramref name="length"/>) of C =
    /// parameters.Count values, in registers where <see cref="RowsGateInRegisters{T}"/> says so, else period by period
    /// (<see cref="GatedGradientPeriodByPeriodWide{T, TStore}"/>); the pointers are at the rows' start.
    /// </summary>
    private static void GatedRowGradient<T, TStore>(
        T* dy, T* source, T* x, T* output, long start, int length, ChannelParameters parameters, in BlockTail tail, int channels, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        if (period == 3 * Lanes)
        {
            GatedGradientThreeSteps<T, TStore>(dy, source, x, output, start, length, parameters, tail, channels, spatial);
            return;
        }

        if (RegisterSteps(period) == 0)
        {
            GatedGradientPeriodByPeriodWide<T, TStore>(dy, source, x, output, length, parameters, start / period, tail, spatial);
            return;
        }

        T* mask = (T*)tail.Mask;
        T* flip = (T*)tail.ChannelGate;
        switch (period / RegisterStep)
        {
            case 1:
                GatedGradientInRegisters<T, TStore, OneStep>(dy, source, x, output, start, length, parameters, mask, flip, spatial);
                break;
            case 2:
                GatedGradientInRegisters<T, TStore, TwoSteps>(dy, source, x, output, start, length, parameters, mask, flip, spatial);
                break;
            case 3:
                GatedGradientInRegisters<T, TStore, ThreeRegisterSteps>(dy, source, x, output, start, length, parameters, mask, flip, spatial);
                break;
            default:
                GatedGradientInRegisters<T, TStore, FourSteps>(dy, source, x, output, start, length, parameters, mask, flip, spatial);
                break;
        }
    }

    /// <summary>
    /// <see cref="GradientInRegisters{T, TStore, TSteps}"/> over channels-last rows of one period each, with a the block's
    /// gate makes it from <paramref name="dy"/>, each sample's rows with that sample's factors, each value computed as there.
    /// </summary>
    private static void GatedGradientInRegisters<T, TStore, TSteps>(
        T* dy, T* source, T* x, T* output, long start, int length, ChannelParameters parameters, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
    {
        if (mask is not null)
        {
            GatedGradientRegisterRuns<T, TStore, TSteps, ByFactors>(dy, source, x, output, start, length, parameters, mask, flip, spatial);
        }
        else
        {
            GatedGradientRegisterRuns<T, TStore, TSteps, NotByFactors>(dy, source, x, output, start, length, parameters, null, flip, spatial);
        }
    }

    /// <summary><see cref="GatedGradientInRegisters{T, TStore, TSteps}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedGradientRegisterRuns<T, TStore, TSteps, TScaling>(
        T* dy, T* source, T* x, T* output, long start, int length, ChannelParameters parameters, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        int period = TSteps.Count * RegisterStep;
        Debug.Assert(period == parameters.Count && start % period == 0 && length % period == 0);
        T* bound = flip + period;
        var (o0, o1, o2, o3, o4, o5, o6, o7) = LoadRow<TSteps>(parameters.Offset);
        var (c0, c1, c2, c3, c4, c5, c6, c7) = LoadRow<TSteps>(parameters.Scale);
        var (t0, t1, t2, t3, t4, t5, t6, t7) = LoadRow<TSteps>(parameters.Shift);
        var (p0, p1, p2, p3, p4, p5, p6, p7) = LoadRow<TSteps>(parameters.Projection);
        T* endA = dy + length;
        T* endB = x + length;
        long sampleLength = (long)spatial * period;
        for (long sample = start / sampleLength, i = 0; i < length; sample++)
        {
            long runEnd = Math.Min(length, ((sample + 1) * sampleLength) - start);
            T* factors = scaled ? mask + (sample * period) : null;
            for (; i < runEnd; i += period)
            {
                GatedGradientStep<T, TStore>(dy + i, source + i, x + i, endA, endB, output + i, flip, bound, factors, scaled, o0, o1, c0, c1, t0, t1, p0, p1);
                if (TSteps.Count > 1)
                {
                    GatedGradientStep<T, TStore>(
                        dy + i + 16, source + i + 16, x + i + 16, endA, endB, output + i + 16, flip + 16, bound + 16, factors + 16, scaled, o2, o3, c2, c3, t2, t3, p2, p3);
                }

                if (TSteps.Count > 2)
                {
                    GatedGradientStep<T, TStore>(
                        dy + i + 32, source + i + 32, x + i + 32, endA, endB, output + i + 32, flip + 32, bound + 32, factors + 32, scaled, o4, o5, c4, c5, t4, t5, p4, p5);
                }

                if (TSteps.Count > 3)
                {
                    GatedGradientStep<T, TStore>(
                        dy + i + 48, source + i + 48, x + i + 48, endA, endB, output + i + 48, flip + 48, bound + 48, factors + 48, scaled, o6, o7, c6, c7, t6, t7, p6, p7);
                }
            }
        }
    }

    /// <summary>
    /// <see cref="GradientPeriodByPeriodWide{T, TStore}"/> over channels-last rows from row <paramref name="firstRow"/>,
    /// with a the block's gate makes it from <paramref name="dy"/> (<see cref="RowGated16{T}"/>), each value computed as there.
    /// </summary>
    private static void GatedGradientPeriodByPeriodWide<T, TStore>(
        T* dy, T* source, T* x, T* output, int length, ChannelParameters parameters, long firstRow, in BlockTail tail, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        T* mask = (T*)tail.Mask;
        if (mask is not null)
        {
            GatedGradientRows<T, TStore, ByFactors>(dy, source, x, output, length, parameters, firstRow, mask, (T*)tail.ChannelGate, spatial);
        }
        else
        {
            GatedGradientRows<T, TStore, NotByFactors>(dy, source, x, output, length, parameters, firstRow, null, (T*)tail.ChannelGate, spatial);
        }
    }

    /// <summary><see cref="GatedGradientPeriodByPeriodWide{T, TStore}"/>'s loop, compiled for each case.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedGradientRows<T, TStore, TScaling>(
        T* dy, T* source, T* x, T* output, int length, ChannelParameters parameters, long firstRow, T* mask, T* flip, int spatial)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TScaling : struct, IScaling
    {
        bool scaled = TScaling.Scaled;
        int period = parameters.Count;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift, p = parameters.Projection;
        T* endA = dy + length;
        T* endB = x + length;
        T* bound = flip + period;

        // Two rows a step, with the rows' pointers moved on rather than offsets added: each channel's constants are
        // loaded once for both rows, and no value lives on the stack.
        T* factors = scaled ? mask + ((firstRow / spatial) * period) : null;
        long inSample = firstRow % spatial;
        for (; dy <= endA - (2 * period); dy += 2 * period, source += 2 * period, x += 2 * period, output += 2 * period)
        {
            // The second row's factors are the next sample's where the first row ends its sample.
            T* second = scaled && inSample + 1 == spatial ? factors + period : factors;
            for (int k = 0; k < period; k += RegisterStep)
            {
                Vector512<double> oLo = Load8(o + k), oHi = Load8(o + k + 8), cLo = Load8(c + k), cHi = Load8(c + k + 8);
                Vector512<double> tLo = Load8(t + k), tHi = Load8(t + k + 8), pLo = Load8(p + k), pHi = Load8(p + k + 8);
                GatedGradientStep<T, TStore>(dy + k, source + k, x + k, endA, endB, output + k, flip + k, bound + k, factors + k, scaled, oLo, oHi, cLo, cHi, tLo, tHi, pLo, pHi);
                int j = period + k;
                GatedGradientStep<T, TStore>(dy + j, source + j, x + j, endA, endB, output + j, flip + k, bound + k, second + k, scaled, oLo, oHi, cLo, cHi, tLo, tHi, pLo, pHi);
            }

            // The next rows' sample, with no division per row (a sample may be a single row).
            if (scaled)
            {
                for (inSample += 2; inSample >= spatial; inSample -= spatial)
                {
                    factors += period;
                }
            }
        }

        // A last row of its own.
        if (dy <= endA - period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                GatedGradientStep<T, TStore>(
                    dy + k, source + k, x + k, endA, endB, output + k, flip + k, bound + k, factors + k, scaled, Load8(o + k), Load8(o + k + 8), Load8(c + k), Load8(c + k + 8), Load8(t + k), Load8(t + k + 8), Load8(p + k), Load8(p + k + 8));
            }
        }
    }

    /// <summary>
    /// One step of <see cref="GatedGradientRows{T, TStore, TScaling}"/>: <see cref="GradientStep{T, TStore}"/> with a the block's
    /// gate makes from <paramref name="dy"/> (<see cref="RowGated16{T}"/>), each value computed as there.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GatedGradientStep<T, TStore>(
        T* dy,
        T* source,
        T* x,
        T* endA,
        T* endB,
        T* output,
        T* flip,
        T* bound,
        T* factors,
        bool scaled,
        Vector512<double> offsetLo,
        Vector512<double> offsetHi,
        Vector512<double> scaleLo,
        Vector512<double> scaleHi,
        Vector512<double> shiftLo,
        Vector512<double> shiftHi,
        Vector512<double> projectionLo,
        Vector512<double> projectionHi)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        PrefetchStep(dy, endA);
        PrefetchStep(x, endB);
        RowGated16(dy, source, flip, bound, factors, scaled, out var alo, out var ahi);
        Load16(x, out var blo, out var bhi);
        StoreGradient<T, TStore>(alo, ahi, blo, bhi, output, offsetLo, offsetHi, scaleLo, scaleHi, shiftLo, shiftHi, projectionLo, projectionHi);
    }

    /// <summary>
    /// 16 gated values of a channels-last row as two vectors of doubles, each lane with its channel's sign flip and
    /// threshold (<paramref name="flip"/>, <paramref name="bound"/>) and, if <paramref name="scaled"/>, its factor from <paramref name="factors"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowGated16<T>(T* dy, T* source, T* flip, T* bound, T* factors, bool scaled, out Vector512<double> lo, out Vector512<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var f = scaled ? Vector512.Load(factors) : default;
            var sign = Vector512.Load(flip);
            var limit = Vector512.Load(bound);
            var g = new LaneGate<T>(f, sign, limit).Apply(Vector512.Load(dy), Vector512.Load(source), scaled).AsSingle();
            lo = Avx512F.ConvertToVector512Double(g.GetLower());
            hi = Avx512F.ConvertToVector512Double(g.GetUpper());
            return;
        }

        var f0 = scaled ? Vector512.Load(factors) : default;
        var f1 = scaled ? Vector512.Load(factors + 8) : default;
        var sign0 = Vector512.Load(flip);
        var sign1 = Vector512.Load(flip + 8);
        var limit0 = Vector512.Load(bound);
        var limit1 = Vector512.Load(bound + 8);
        lo = new LaneGate<T>(f0, sign0, limit0).Apply(Vector512.Load(dy), Vector512.Load(source), scaled).AsDouble();
        hi = new LaneGate<T>(f1, sign1, limit1).Apply(Vector512.Load(dy + 8), Vector512.Load(source + 8), scaled).AsDouble();
    }
}
