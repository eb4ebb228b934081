using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The block's backward gate over NCHW planes a whole 512-bit vector a step on hardware with AVX-512: 16 float32 or 8
/// float64 values, each computed by the same operations as <see cref="GradientPlane{T}"/>'s <see cref="System.Numerics.Vector{T}"/>
/// loop (dy · factor in T; the ReLU's input recomputed as T(fma(a − o, s, t)) in double; compared with zero in T), or,
/// given the channel's threshold (<see cref="GateThresholds{T}"/>), by one comparison of a with it, so the bits are the same.
/// </summary>
/// <remarks>
/// Where the normalisation's sums and dx cannot take the gate in their own loops, it makes their dy from the block's
/// output gradient in a buffer, once for each; its 256-bit loop was the largest single item in a profile of the block's
/// step. A plane's last step overlaps the one before it instead of finishing value by value: each value depends only
/// on its own inputs, so writing one twice writes the same bits, unless the gate runs in place over dy.
/// </remarks>
internal static unsafe partial class BlockKernels
{
    /// <summary>Whether <see cref="GradientPlaneWide{T}"/> serves planes of <paramref name="spatial"/> values of <typeparamref name="T"/>.</summary>
    private static bool WideGate<T>(int spatial)
        where T : unmanaged =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated && spatial >= Vector512<T>.Count
        && (typeof(T) == typeof(float) || typeof(T) == typeof(double));

    /// <summary>
    /// <see cref="GradientPlane{T}"/> over a plane of at least one 512-bit vector; g may be dy itself (then the plane's
    /// last values go through <see cref="GradientPlane{T}"/>, since a step that overlapped would read values it wrote).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GradientPlaneWide<T>(T* a, T* dy, T* g, int length, double o, double s, double t, T factor, bool scaled, bool rectify)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        Debug.Assert(WideGate<T>(length));
        var vf = Vector512.Create(factor);
        var vo = Vector512.Create(o);
        var vs = Vector512.Create(s);
        var vt = Vector512.Create(t);
        int i = 0;
        for (; i <= length - lanes; i += lanes)
        {
            GateStep(a + i, dy + i, g + i, vf, vo, vs, vt, scaled, rectify);
        }

        if (i < length)
        {
            if (g != dy)
            {
                GateStep(a + length - lanes, dy + length - lanes, g + length - lanes, vf, vo, vs, vt, scaled, rectify);
            }
            else
            {
                GradientPlane(a + i, dy + i, g + i, length - i, o, s, t, factor, scaled, rectify);
            }
        }
    }

    /// <summary>One 512-bit step of <see cref="GradientPlaneWide{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GateStep<T>(
        T* a, T* dy, T* g, Vector512<T> factor, Vector512<double> offset, Vector512<double> scale, Vector512<double> shift, bool scaled, bool rectify)
        where T : unmanaged
    {
        var d = Vector512.Load(dy);
        if (scaled)
        {
            d *= factor;
        }

        if (rectify)
        {
            var y = Normalized512(Vector512.Load(a), offset, scale, shift);
            d = Vector512.ConditionalSelect(Vector512.LessThanOrEqual(y, Vector512<T>.Zero), Vector512<T>.Zero, d);
        }

        d.Store(g);
    }

    /// <summary>
    /// For each channel, the value of the source at which the gate closes: with scale &gt; 0 the largest a whose
    /// T(fma(a − offset, scale, shift)) is ≤ 0, so that the gate is closed exactly where a ≤ threshold; with scale &lt; 0
    /// the smallest such a, closed exactly where a ≥ threshold. NaN where the offset, scale or shift is not finite or
    /// the scale is 0, for which the gate is computed from the formula.
    /// </summary>
    /// <remarks>
    /// For finite constants and a non-zero scale, y(a) = T(fma(a − offset, scale, shift)) is monotonic in a: each step
    /// (the difference in double, the fused multiply-add, the rounding to T) is a correctly rounded monotonic function,
    /// and rounding keeps order. So the values a where y ≤ 0 are all the values on one side of a threshold, found by
    /// searching the ordered values of T with the formula itself, from the root; a NaN source fails both comparisons and
    /// passes, as its y is NaN. The gate then costs one comparison in T per value, with no conversion to double and back.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void GateThresholds<T>(ReadOnlySpan<double> offset, ReadOnlySpan<double> scale, ReadOnlySpan<double> shift, Span<double> thresholds)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        long lowest = OrderOf(T.NegativeInfinity), highest = OrderOf(T.PositiveInfinity);
        for (int c = 0; c < thresholds.Length; c++)
        {
            double o = offset[c], s = scale[c], t = shift[c];
            if (!double.IsFinite(o) || !double.IsFinite(s) || !double.IsFinite(t) || s == 0)
            {
                thresholds[c] = double.NaN;
                continue;
            }

            // y is −∞ (closed) at −∞ and +∞ (open) at +∞ when scale > 0, the other way round when scale < 0. Start at
            // the root o − t / s, which is at most a few values of T from the threshold, gallop away from it until the
            // gate changes, then bisect: a handful of evaluations of the formula per channel.
            long opening = s > 0 ? 1 : -1;
            double root = o - (t / s);
            long guess = double.IsNaN(root) ? 0 : OrderOf(T.CreateTruncating(root));
            long closed, open;
            if (IsClosed<T>(guess, o, s, t))
            {
                (closed, open) = Gallop<T>(guess, opening, lowest, highest, o, s, t, untilClosed: false);
            }
            else
            {
                (open, closed) = Gallop<T>(guess, -opening, lowest, highest, o, s, t, untilClosed: true);
            }

            while (Distance(closed, open) > 1)
            {
                long middle = Midpoint(closed, open);
                if (IsClosed<T>(middle, o, s, t))
                {
                    closed = middle;
                }
                else
                {
                    open = middle;
                }
            }

            thresholds[c] = double.CreateTruncating(ValueOf<T>(closed));
        }
    }

    /// <summary>Whether the gate is closed at the value of T at position <paramref name="order"/>.</summary>
    private static bool IsClosed<T>(long order, double o, double s, double t)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T> =>
        !(Normalized(ValueOf<T>(order), o, s, t) > T.Zero);

    /// <summary>
    /// From <paramref name="start"/>, steps of 1, 2, 4, … positions in <paramref name="direction"/> (kept within
    /// [<paramref name="lowest"/>, <paramref name="highest"/>]) until the gate is closed (or open, without
    /// <paramref name="untilClosed"/>). Returns the last position before the change and the first after it.
    /// </summary>
    private static (long Before, long After) Gallop<T>(long start, long direction, long lowest, long highest, double o, double s, double t, bool untilClosed)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        long before = start;
        ulong step = 1;
        while (true)
        {
            // The room left in that direction, as an unsigned distance: between −∞ and +∞ of float64 it passes long's range.
            ulong room = direction > 0 ? (ulong)(highest - before) : (ulong)(before - lowest);
            long after = step >= room ? (direction > 0 ? highest : lowest) : before + (direction * (long)step);
            if (IsClosed<T>(after, o, s, t) == untilClosed)
            {
                return (before, after);
            }

            before = after;
            step *= 2;
        }
    }

    /// <summary>|a − b| as an unsigned number, which it always fits.</summary>
    private static ulong Distance(long a, long b) => a > b ? (ulong)(a - b) : (ulong)(b - a);

    /// <summary>The position halfway between <paramref name="a"/> and <paramref name="b"/>, rounded towards a.</summary>
    private static long Midpoint(long a, long b) => a > b ? a - (long)(Distance(a, b) / 2) : a + (long)(Distance(a, b) / 2);

    /// <summary>The position of a non-NaN value of T among all of them in increasing order (−0.0 just below +0.0).</summary>
    private static long OrderOf<T>(T value)
        where T : unmanaged
    {
        long bits = typeof(T) == typeof(float) ? BitConverter.SingleToInt32Bits(Unsafe.As<T, float>(ref value)) : BitConverter.DoubleToInt64Bits(Unsafe.As<T, double>(ref value));
        long magnitude = bits & (typeof(T) == typeof(float) ? int.MaxValue : long.MaxValue);
        return bits < 0 ? -magnitude - 1 : magnitude;
    }

    /// <summary>The value at position <paramref name="order"/> of <see cref="OrderOf{T}"/>.</summary>
    private static T ValueOf<T>(long order)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            float f = BitConverter.Int32BitsToSingle(order < 0 ? (int)(-(order + 1)) | int.MinValue : (int)order);
            return Unsafe.As<float, T>(ref f);
        }

        double d = BitConverter.Int64BitsToDouble(order < 0 ? -(order + 1) | long.MinValue : order);
        return Unsafe.As<double, T>(ref d);
    }

    /// <summary>
    /// <see cref="GradientPlane{T}"/> with the ReLU over a plane of at least one 512-bit vector whose channel has a
    /// finite <paramref name="threshold"/> (<see cref="GateThresholds{T}"/>): closed where a ≤ threshold if
    /// <paramref name="rising"/>, where a ≥ threshold if not. g may be dy itself, as in <see cref="GradientPlaneWide{T}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GatedPlaneWide<T>(T* a, T* dy, T* g, int length, T threshold, bool rising, T factor, bool scaled)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        Debug.Assert(WideGate<T>(length));
        var gate = LaneGate<T>.Of(factor, double.CreateTruncating(threshold), rising);
        int i = 0;
        for (; i <= length - lanes; i += lanes)
        {
            gate.Apply(Vector512.Load(dy + i), Vector512.Load(a + i), scaled).Store(g + i);
        }

        if (i < length)
        {
            if (g != dy)
            {
                int last = length - lanes;
                gate.Apply(Vector512.Load(dy + last), Vector512.Load(a + last), scaled).Store(g + last);
            }
            else
            {
                for (; i < length; i++)
                {
                    g[i] = Closed(a[i], threshold, rising) ? T.Zero : (scaled ? dy[i] * factor : dy[i]);
                }
            }
        }
    }

    /// <summary>
    /// The gate over the whole 512-bit vectors of one channels-last row of C values, each lane with its channel's
    /// threshold from <paramref name="channelGate"/> (<see cref="BlockTail.ChannelGate"/>) and its factor from
    /// <paramref name="factors"/> (none if null). Returns how many values it gated; the rest take the formula.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GatedRowWide<T>(T* a, T* dy, T* g, int length, T* channelGate, T* factors)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        int i = 0;
        bool scaled = factors is not null;
        for (; i <= length - lanes; i += lanes)
        {
            var flip = Vector512.Load(channelGate + i);
            var bound = Vector512.Load(channelGate + length + i);
            var factor = scaled ? Vector512.Load(factors + i) : default;
            new LaneGate<T>(factor, flip, bound).Apply(Vector512.Load(dy + i), Vector512.Load(a + i), scaled).Store(g + i);
        }

        return i;
    }

    /// <summary>
    /// <see cref="OutputRow{T}"/> over the whole 512-bit vectors of one channels-last row, by the same operations;
    /// returns how many values it finished.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int OutputRowWide<T>(T* y, int length, T* factors, bool rectify)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        int i = 0;
        for (; i <= length - lanes; i += lanes)
        {
            var v = Vector512.Load(y + i);
            if (rectify)
            {
                v = Vector512.ConditionalSelect(Vector512.LessThan(v, Vector512<T>.Zero), Vector512<T>.Zero, v);
            }

            (factors is null ? v : v * Vector512.Load(factors + i)).Store(y + i);
        }

        return i;
    }

    /// <summary>The longest period <see cref="FinishRowsPeriodic{T}"/> and <see cref="GateRowsPeriodic{T}"/> take, in values.</summary>
    private const int MaxRowPeriod = 1024;

    /// <summary>
    /// The values after which channels-last rows of C channels meet the same channels in the same lanes of 512-bit
    /// vectors: lcm(C, lanes).
    /// </summary>
    private static int RowPeriod<T>(int channels)
        where T : unmanaged => channels / Math.Min(channels & -channels, Vector512<T>.Count) * Vector512<T>.Count;

    /// <summary>
    /// Whether channels-last rows of C = <paramref name="channels"/> values take the periodic loops: rows of one sample
    /// as one run of whole vectors, each lane with the constants of its position in the period (see <see cref="RowPeriod{T}"/>).
    /// </summary>
    /// <remarks>
    /// Taken row by row, a row shorter than a vector would go value by value through the double formula, and every row
    /// would pay a call; a run of a whole sample has one short end.
    /// </remarks>
    private static bool PeriodicRows<T>(int channels)
        where T : unmanaged =>
        WideGate<T>(Vector512<T>.Count) && RowPeriod<T>(channels) <= MaxRowPeriod;

    /// <summary>
    /// period[j] = row[j mod C] for j &lt; P (<see cref="BatchNormKernels.RepeatOverPeriod{T}"/>), or <paramref name="row"/>
    /// itself when P = C: a row of per-channel values laid out as the periodic loops read them.
    /// </summary>
    private static T* Repeated<T>(T* row, int channels, T* period, int length)
        where T : unmanaged
    {
        if (length == channels)
        {
            return row;
        }

        BatchNormKernels.RepeatOverPeriod(new ReadOnlySpan<T>(row, channels), period, length);
        return period;
    }

    /// <summary>
    /// <see cref="FinishRows{T}"/> by the periodic loops (<see cref="PeriodicRows{T}"/>): y = ReLU(y) · factor, each
    /// value by <see cref="OutputRow{T}"/>'s operations, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void FinishRowsPeriodic<T>(T* y, long start, int length, int channels, int spatial, T* mask, bool rectify)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int period = RowPeriod<T>(channels);
        T* repeated = stackalloc T[period];
        long end = start + length;
        for (long at = start; at < end;)
        {
            // One sample's rows share one row of factors.
            long sample = at / channels / spatial;
            long runEnd = Math.Min(end, (sample + 1) * spatial * channels);
            int count = (int)(runEnd - at);
            if (mask is null)
            {
                FinishRun(y + at, count, null, period, rectify, scaled: false);
            }
            else if (rectify)
            {
                FinishRun(y + at, count, Repeated(mask + (sample * channels), channels, repeated, period), period, rectify: true, scaled: true);
            }
            else
            {
                FinishRun(y + at, count, Repeated(mask + (sample * channels), channels, repeated, period), period, rectify: false, scaled: true);
            }

            at = runEnd;
        }
    }

    /// <summary>One run of <see cref="FinishRowsPeriodic{T}"/>, inlined with its flags constant so the loop has no branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FinishRun<T>(T* run, int count, T* factors, int period, bool rectify, bool scaled)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        int i = 0;
        for (int position = 0; i <= count - lanes; i += lanes)
        {
            var v = Vector512.Load(run + i);
            if (rectify)
            {
                v = Vector512.ConditionalSelect(Vector512.LessThan(v, Vector512<T>.Zero), Vector512<T>.Zero, v);
            }

            (scaled ? v * Vector512.Load(factors + position) : v).Store(run + i);
            position = position + lanes == period ? 0 : position + lanes;
        }

        for (; i < count; i++)
        {
            T v = rectify && run[i] < T.Zero ? T.Zero : run[i];
            run[i] = scaled ? v * factors[i % period] : v;
        }
    }

    /// <summary>
    /// <see cref="GateRows{T}"/> by the periodic loops (<see cref="PeriodicRows{T}"/>), with the ReLU only where
    /// <paramref name="channelGate"/> (<see cref="BlockTail.ChannelGate"/>) is given: each value as
    /// <see cref="LaneGate{T}"/> or <see cref="GradientRow{T}"/> without the ReLU computes it, so the same bits. g may
    /// be dy itself: each value is read before it is written, and no step overlaps another.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void GateRowsPeriodic<T>(T* a, T* dy, T* g, long start, int length, int channels, int spatial, T* mask, T* channelGate)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int period = RowPeriod<T>(channels);
        T* repeated = stackalloc T[3 * period];
        T* flips = channelGate is null ? null : Repeated(channelGate, channels, repeated + period, period);
        T* bounds = channelGate is null ? null : Repeated(channelGate + channels, channels, repeated + (2 * period), period);
        long end = start + length;
        for (long at = start; at < end;)
        {
            long sample = at / channels / spatial;
            long runEnd = Math.Min(end, (sample + 1) * spatial * channels);
            int count = (int)(runEnd - at);
            T* factors = mask is null ? null : Repeated(mask + (sample * channels), channels, repeated, period);
            if (channelGate is not null && mask is not null)
            {
                GateRun(a + at, dy + at, g + at, count, factors, flips, bounds, period, rectify: true, scaled: true);
            }
            else if (channelGate is not null)
            {
                GateRun(a + at, dy + at, g + at, count, null, flips, bounds, period, rectify: true, scaled: false);
            }
            else if (mask is not null)
            {
                GateRun(null, dy + at, g + at, count, factors, null, null, period, rectify: false, scaled: true);
            }
            else
            {
                GateRun(null, dy + at, g + at, count, null, null, null, period, rectify: false, scaled: false);
            }

            at = runEnd;
        }
    }

    /// <summary>One run of <see cref="GateRowsPeriodic{T}"/>, inlined with its flags constant so the loop has no branch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GateRun<T>(T* a, T* dy, T* g, int count, T* factors, T* flips, T* bounds, int period, bool rectify, bool scaled)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        int i = 0;
        for (int position = 0; i <= count - lanes; i += lanes)
        {
            var d = Vector512.Load(dy + i);
            var factor = scaled ? Vector512.Load(factors + position) : default;
            var gated = rectify
                ? new LaneGate<T>(factor, Vector512.Load(flips + position), Vector512.Load(bounds + position)).Apply(d, Vector512.Load(a + i), scaled)
                : scaled ? d * factor : d;
            gated.Store(g + i);
            position = position + lanes == period ? 0 : position + lanes;
        }

        for (; i < count; i++)
        {
            int position = i % period;
            T factor = scaled ? factors[position] : T.One;
            g[i] = rectify
                ? new LaneGate<T>(Vector512.Create(factor), Vector512.Create(flips[position]), Vector512.Create(bounds[position])).Apply(dy[i], a[i], scaled)
                : scaled ? dy[i] * factor : dy[i];
        }
    }

    /// <summary>
    /// <see cref="BlockTail.ChannelGate"/> for <paramref name="thresholds"/> (none NaN) and the scales' signs: the C
    /// sign flips, then the C flipped thresholds.
    /// </summary>
    public static void ChannelGate<T>(ReadOnlySpan<double> thresholds, ReadOnlySpan<double> scale, Span<T> channelGate)
        where T : unmanaged
    {
        int channels = thresholds.Length;
        for (int c = 0; c < channels; c++)
        {
            bool rising = scale[c] > 0;
            channelGate[c] = Element.FromDouble<T>(rising ? 0.0 : -0.0);
            channelGate[channels + c] = Element.FromDouble<T>(rising ? thresholds[c] : -thresholds[c]);
        }
    }

    /// <summary>
    /// <see cref="BlockTail.ChannelGate"/> for a tail without the ReLU: no flips, and NaN for every threshold, which no
    /// value is at or below, so that the gate passes dy · factor everywhere, as the dropout alone does.
    /// </summary>
    public static void OpenChannelGate<T>(Span<T> channelGate)
        where T : unmanaged
    {
        int channels = channelGate.Length / 2;
        channelGate[..channels].Fill(Element.FromDouble<T>(0.0));
        channelGate[channels..].Fill(Element.FromDouble<T>(double.NaN));
    }

    /// <summary>
    /// Whether the gate of a channel with <paramref name="threshold"/> (<see cref="GateThresholds{T}"/>) is closed for
    /// the source value <paramref name="a"/>: at or below the threshold for a <paramref name="rising"/> channel, at or
    /// above it for a falling one; never for NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool Closed<T>(T a, T threshold, bool rising)
        where T : System.Numerics.IBinaryFloatingPointIeee754<T> =>
        rising ? a <= threshold : a >= threshold;

    /// <summary>T(fma(a − o, s, t)), the fused multiply-add in double, for a 512-bit vector of T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Normalized512<T>(Vector512<T> a, Vector512<double> offset, Vector512<double> scale, Vector512<double> shift)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var x = a.AsSingle();
            var lo = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Double(x.GetLower()) - offset, scale, shift);
            var hi = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Double(x.GetUpper()) - offset, scale, shift);
            return BatchNormKernels.Joined(Avx512F.ConvertToVector256Single(lo), Avx512F.ConvertToVector256Single(hi)).As<float, T>();
        }

        Debug.Assert(typeof(T) == typeof(double));
        return Avx512F.FusedMultiplyAdd(a.AsDouble() - offset, scale, shift).As<double, T>();
    }
}

/// <summary>
/// The block's backward gate for a 512-bit vector of values whose channels have thresholds
/// (<see cref="BlockKernels.GateThresholds{T}"/>): g = 0 where the gate is closed for the source value a, dy · factor (dy
/// unscaled) elsewhere, each lane with its own factor and threshold: its plane's over NCHW planes, its channel's and
/// sample's over channels-last rows.
/// </summary>
/// <remarks>
/// Closed is one comparison whichever way the channel faces: a ≤ threshold for a rising channel, and for a falling one
/// a ≥ threshold, which is −a ≤ −threshold. Negation is exact (the sign bit flipped), so a falling channel compares its
/// values with their sign bits flipped (<see cref="Flip"/> is −0, 0 otherwise) against the negated threshold, with no
/// branch in the loop; NaN fails the comparison either way and passes, as in <see cref="BlockKernels.Closed{T}"/>.
/// </remarks>
internal readonly struct LaneGate<T>(Vector512<T> factor, Vector512<T> flip, Vector512<T> bound)
    where T : unmanaged
{
    /// <summary>Each lane's dropout factor.</summary>
    public Vector512<T> Factor { get; } = factor;

    /// <summary>−0 in the lanes of a falling channel, whose values the comparison takes negated; 0 for a rising one.</summary>
    public Vector512<T> Flip { get; } = flip;

    /// <summary>Each lane's threshold, negated for a falling channel.</summary>
    public Vector512<T> Bound { get; } = bound;

    /// <summary>The gate of a plane, in every lane: its dropout factor <paramref name="factor"/> and its channel's threshold.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static LaneGate<T> Of(T factor, double threshold, bool rising) =>
        new(Vector512.Create(factor), Vector512.Create(Element.FromDouble<T>(rising ? 0.0 : -0.0)), Vector512.Create(Element.FromDouble<T>(rising ? threshold : -threshold)));

    /// <summary>The gated value of one <paramref name="dy"/> at source value <paramref name="a"/>, as <see cref="Apply(Vector512{T}, Vector512{T}, bool)"/> gives it.</summary>
    public T Apply(T dy, T a, bool scaled) => Apply(Vector512.Create(dy), Vector512.Create(a), scaled).ToScalar();

    /// <summary>All lanes set where the gate is closed for <paramref name="a"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<T> Closed(Vector512<T> a) => Vector512.LessThanOrEqual(a ^ Flip, Bound);

    /// <summary>The gated values: 0 where closed, dy · factor elsewhere (dy without <paramref name="scaled"/>), in T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector512<T> Apply(Vector512<T> dy, Vector512<T> a, bool scaled) =>
        Vector512.ConditionalSelect(Closed(a), Vector512<T>.Zero, scaled ? dy * Factor : dy);

    /// <summary>This gate in the lanes set in <paramref name="lanes"/>, <paramref name="next"/>'s in the others.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public LaneGate<T> Across(Vector512<T> lanes, LaneGate<T> next) =>
        new(Vector512.ConditionalSelect(lanes, Factor, next.Factor), Vector512.ConditionalSelect(lanes, Flip, next.Flip), Vector512.ConditionalSelect(lanes, Bound, next.Bound));
}
