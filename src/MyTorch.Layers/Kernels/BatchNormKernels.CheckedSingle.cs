using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// bfloat16 y and dx over NCHW planes in float32 arithmetic, each step checked to round to the bits the float64
/// arithmetic gives, and computed in float64 where it may not.
/// </summary>
/// <remarks>
/// The float64 loops convert every value to double and back, which made a bfloat16 pass as slow as a float32 one on
/// half the bytes. Here a step computes y = x · a + b (dx = dy · k₁ + x · k₂ + k₃) in float32 from the constants rounded
/// to float32, with a bound E on its distance from the float64 result (<see cref="SingleConstants"/>), grown by three
/// float32 steps of the result. If every float32 value within E rounds to the same finite bfloat16 bits
/// (<see cref="BFloat16Bits.TryNarrowWithin"/>), so does the float64 result, which lies strictly inside; otherwise the
/// step runs in float64, as the other loops do. Either way each output has the float64 loops' bits. Planes of an even
/// length go 16 pairs a step (<see cref="BFloat16Bits.WidenPairs(Vector512{uint})"/>), 4×4 planes two a step, others 16 values. float16
/// stays in float64: its check fails about 8 times as often, and its integer rounding costs what the conversions do.
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Floats per channel in <see cref="ChannelParameters.Single"/>: y's four constants or dx's six, padded.</summary>
    private const int SingleStride = 8;

    /// <summary>The doubles of scratch that <see cref="SingleConstants"/> needs for <paramref name="channels"/>.</summary>
    private static int SingleScratchLength(int channels) => channels * SingleStride / 2;

    /// <summary>2⁻²⁰: E's factor on the terms that the float32 arithmetic rounds.</summary>
    private const float RoundingBound = 1f / (1 << 20);

    /// <summary>2⁻⁴⁸: E's factor on the terms that only the float64 arithmetic rounds.</summary>
    private const double DoubleBound = 1.0 / (1L << 48);

    /// <summary>2⁻¹²⁶, float32's smallest normal value.</summary>
    private const float SmallestNormal = 1.17549435e-38f;

    /// <summary>Whether an NCHW element-wise pass over <typeparamref name="T"/> takes the checked float32 loops.</summary>
    private static bool CheckedSingle<T>(int spatial)
        where T : unmanaged => typeof(T) == typeof(BFloat16) && WidePlanes(spatial);

    /// <summary>
    /// Fills <see cref="ChannelParameters.Single"/> per channel: for y (no projection) a, b, E's factor on |x| and its
    /// fixed part; for dx k₁, k₂, k₃, E's factors on |dy| and |x| and its fixed part.
    /// </summary>
    /// <remarks>
    /// For y, the constants' rounding costs at most 2⁻²⁴(|x·a| + |b|), the float64 arithmetic 2⁻⁵³(|x·s| + |o·s| + |y|)
    /// (o and s the float64 offset and scale), three float32 steps of y 3·2⁻²³(|x·a| + |b|): E = 2⁻²⁰(|x|·|a| + |b|) +
    /// 2⁻⁴⁸|o·s| + 2⁻¹²⁶ covers it twice over. dx's E, 2⁻²⁰(|dy|·|k₁| + |x|·|k₂| + |k₃|) + 2⁻⁴⁸(|shift·scale| +
    /// |offset·projection·scale|) + 2⁻¹²⁶, also covers the rounding of x · k₂ + k₃. A factor float32 cannot hold to its
    /// relative precision (subnormal, or beyond its range) makes E infinite: its channel runs in float64.
    /// </remarks>
    private static void SingleConstants(ChannelParameters parameters)
    {
        for (int c = 0; c < parameters.Count; c++)
        {
            float* k = parameters.Single + (c * SingleStride);
            double offset = parameters.Offset[c];
            double scale = parameters.Scale[c];
            double shift = parameters.Shift[c];
            if (parameters.Projection is null)
            {
                // y = (x − offset) · scale + shift = x · scale + (shift − offset · scale).
                float a = (float)scale;
                float b = (float)double.FusedMultiplyAdd(-offset, scale, shift);
                k[0] = a;
                k[1] = b;
                k[2] = Holds(scale, a) && float.IsFinite(b) ? RoundingBound * Math.Abs(a) : float.PositiveInfinity;
                k[3] = Fixed(RoundingBound * Math.Abs(b), DoubleBound * Math.Abs(offset * scale));
                continue;
            }

            // dx = (dy − shift − (x − offset) · projection) · scale = dy · k₁ + x · k₂ + k₃.
            double projection = parameters.Projection[c];
            float k1 = (float)scale;
            float k2 = (float)(-projection * scale);
            float k3 = (float)(((offset * projection) - shift) * scale);
            k[0] = k1;
            k[1] = k2;
            k[2] = k3;
            bool holds = Holds(scale, k1) && Holds(-projection * scale, k2) && float.IsFinite(k3);
            k[3] = holds ? RoundingBound * Math.Abs(k1) : float.PositiveInfinity;
            k[4] = RoundingBound * Math.Abs(k2);
            k[5] = Fixed(RoundingBound * Math.Abs(k3), DoubleBound * (Math.Abs(shift * scale) + Math.Abs(offset * projection * scale)));
        }

        // A factor float32 holds to 2⁻²⁴ of itself: zero exactly, or normal and finite. A summand (b, k₃) need only be
        // finite: the fixed part's 2⁻¹²⁶ covers a subnormal's rounding.
        static bool Holds(double exact, float rounded) => (rounded == 0 && exact == 0) || float.IsNormal(rounded);

        static float Fixed(float rounded, double fromDoubles) => (float)(rounded + fromDoubles + SmallestNormal);
    }

    /// <summary>
    /// <see cref="AffinePlanesWide{T, TStore}"/> for bfloat16: each step in checked float32 arithmetic (see the type's
    /// remarks), in float64 where the check fails and where a step reaches across two planes.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffinePlanesSingle<TStore>(BFloat16* a, BFloat16* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        var planes = new PlaneBoundaries(spatial, i, RegisterStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var constants = new AffineSingle(parameters.Single + (channel * SingleStride));
        for (; i <= end - RegisterStep; i += RegisterStep)
        {
            PrefetchStep(a + i, a + length);
            if (planes.Crosses(i, out int inPlane))
            {
                if (inPlane != 0)
                {
                    // The step's lanes from two planes: in float64, as the other loops compute it.
                    var vo = Vector512.Create(parameters.Offset[channel]);
                    var vs = Vector512.Create(parameters.Scale[channel]);
                    var vt = Vector512.Create(parameters.Shift[channel]);
                    Load16(a + i, out var lo, out var hi);
                    AffineAcrossPlanes(true, inPlane, ref channel, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
                    Store16<BFloat16, TStore>(lo, hi, output + i);
                }
                else
                {
                    channel = channel + 1 == parameters.Count ? 0 : channel + 1;
                }

                constants = new AffineSingle(parameters.Single + (channel * SingleStride));
                if (inPlane != 0)
                {
                    continue;
                }
            }

            var x = BFloat16Bits.Widen16(Vector256.Load((ushort*)(a + i)));
            var y = Avx512F.FusedMultiplyAdd(x, constants.Scale, constants.Shift);
            var bound = Avx512F.FusedMultiplyAdd(Vector512.Abs(x), constants.PerValue, constants.Fixed);
            if (BFloat16Bits.TryNarrowWithin(y, bound, out var bits))
            {
                StoreBits<TStore>(bits, output + i);
            }
            else
            {
                AffineInDoubles<TStore>(a + i, output + i, parameters, channel);
            }
        }

        return i;
    }

    /// <summary>
    /// <see cref="GradientPlanesWide{T, TStore}"/> for bfloat16, checked as <see cref="AffinePlanesSingle{TStore}"/>
    /// checks: out = a · k₁ + b · k₂ + k₃.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientPlanesSingle<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        var planes = new PlaneBoundaries(spatial, i, RegisterStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var constants = new GradientSingle(parameters.Single + (channel * SingleStride));
        for (; i <= end - RegisterStep; i += RegisterStep)
        {
            PrefetchStep(a + i, a + length);
            PrefetchStep(b + i, b + length);
            if (planes.Crosses(i, out int inPlane))
            {
                if (inPlane != 0)
                {
                    var vo = Vector512.Create(parameters.Offset[channel]);
                    var vs = Vector512.Create(parameters.Scale[channel]);
                    var vt = Vector512.Create(parameters.Shift[channel]);
                    var vp = Vector512.Create(parameters.Projection[channel]);
                    Load16(a + i, out var alo, out var ahi);
                    Load16(b + i, out var blo, out var bhi);
                    GradientAcrossPlanes(true, inPlane, ref channel, parameters, ref vo, ref vs, ref vt, ref vp, ref alo, ref ahi, blo, bhi);
                    Store16<BFloat16, TStore>(alo, ahi, output + i);
                }
                else
                {
                    channel = channel + 1 == parameters.Count ? 0 : channel + 1;
                }

                constants = new GradientSingle(parameters.Single + (channel * SingleStride));
                if (inPlane != 0)
                {
                    continue;
                }
            }

            var va = BFloat16Bits.Widen16(Vector256.Load((ushort*)(a + i)));
            var vb = BFloat16Bits.Widen16(Vector256.Load((ushort*)(b + i)));
            var d = Avx512F.FusedMultiplyAdd(va, constants.K1, Avx512F.FusedMultiplyAdd(vb, constants.K2, constants.K3));
            var bound = Avx512F.FusedMultiplyAdd(Vector512.Abs(va), constants.PerA, Avx512F.FusedMultiplyAdd(Vector512.Abs(vb), constants.PerB, constants.Fixed));
            if (BFloat16Bits.TryNarrowWithin(d, bound, out var bits))
            {
                StoreBits<TStore>(bits, output + i);
            }
            else
            {
                GradientInDoubles<TStore>(a + i, b + i, output + i, parameters, channel);
            }
        }

        return i;
    }

    /// <summary>Values per step of the pair loops: 16 pairs.</summary>
    private const int PairStep = 32;

    /// <summary>
    /// Whether the checked loops take 32 values a step as 16 pairs (<see cref="BFloat16Bits.WidenPairs(Vector512{uint})"/>): on planes of
    /// an even length of a step or more, where no plane boundary falls inside a pair that starts at an even offset.
    /// </summary>
    private static bool SinglePairs(int spatial) => spatial >= PairStep && spatial % 2 == 0;

    /// <summary>
    /// <see cref="AffinePlanesSingle{TStore}"/> 32 values a step, as 16 pairs: half the steps, with no shuffle to widen
    /// or narrow. A step that reaches across two planes takes each pair's constants from its own plane.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffinePlanesPairs<TStore>(BFloat16* a, BFloat16* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        Debug.Assert(i % 2 == 0 && SinglePairs(spatial));
        var planes = new PlaneBoundaries(spatial, i, PairStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var constants = new AffineSingle(parameters.Single + (channel * SingleStride));
        for (; i <= end - PairStep; i += PairStep)
        {
            Prefetch.Ahead(a + i, a + length);
            if (planes.Crosses(i, out int inPlane))
            {
                int next = channel + 1 == parameters.Count ? 0 : channel + 1;
                var nextConstants = new AffineSingle(parameters.Single + (next * SingleStride));
                if (inPlane != 0)
                {
                    var before = Vector512.LessThan(Vector512<uint>.Indices, Vector512.Create((uint)inPlane / 2)).AsSingle();
                    if (!AffinePair<TStore>(a + i, output + i, AffineSingle.Select(before, constants, nextConstants)))
                    {
                        AffinePairInDoubles<TStore>(a + i, output + i, parameters, channel, inPlane);
                    }
                }

                (channel, constants) = (next, nextConstants);
                if (inPlane != 0)
                {
                    continue;
                }

                inPlane = PairStep;
            }

            if (!AffinePair<TStore>(a + i, output + i, constants))
            {
                AffinePairInDoubles<TStore>(a + i, output + i, parameters, channel, inPlane);
            }
        }

        return i;
    }

    /// <summary>
    /// <see cref="GradientPlanesSingle{TStore}"/> 32 values a step, as 16 pairs, as <see cref="AffinePlanesPairs{TStore}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientPlanesPairs<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        Debug.Assert(i % 2 == 0 && SinglePairs(spatial));
        var planes = new PlaneBoundaries(spatial, i, PairStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var constants = new GradientSingle(parameters.Single + (channel * SingleStride));
        for (; i <= end - PairStep; i += PairStep)
        {
            Prefetch.Ahead(a + i, a + length);
            Prefetch.Ahead(b + i, b + length);
            if (planes.Crosses(i, out int inPlane))
            {
                int next = channel + 1 == parameters.Count ? 0 : channel + 1;
                var nextConstants = new GradientSingle(parameters.Single + (next * SingleStride));
                if (inPlane != 0)
                {
                    var before = Vector512.LessThan(Vector512<uint>.Indices, Vector512.Create((uint)inPlane / 2)).AsSingle();
                    if (!GradientPair<TStore>(a + i, b + i, output + i, GradientSingle.Select(before, constants, nextConstants)))
                    {
                        GradientPairInDoubles<TStore>(a + i, b + i, output + i, parameters, channel, inPlane);
                    }
                }

                (channel, constants) = (next, nextConstants);
                if (inPlane != 0)
                {
                    continue;
                }

                inPlane = PairStep;
            }

            if (!GradientPair<TStore>(a + i, b + i, output + i, constants))
            {
                GradientPairInDoubles<TStore>(a + i, b + i, output + i, parameters, channel, inPlane);
            }
        }

        return i;
    }

    /// <summary>
    /// <see cref="AffinePlanesPairs{TStore}"/> for planes of 16 values: two whole planes a step, the first 8 pairs of
    /// one channel and the last 8 of the next, each pair's constants moved into its lanes from the two channels' rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffineTwoPlanes<TStore>(BFloat16* a, BFloat16* output, int i, int end, int length, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        Debug.Assert(i % RegisterStep == 0);
        int channel = (firstChannel + (i / RegisterStep)) % parameters.Count;
        for (; i <= end - PairStep; i += PairStep)
        {
            Prefetch.Ahead(a + i, a + length);
            int next = channel + 1 == parameters.Count ? 0 : channel + 1;
            var rows = TwoRows(parameters.Single, channel, next);
            if (!AffinePair<TStore>(a + i, output + i, new AffineSingle(rows)))
            {
                AffineInDoubles<TStore>(a + i, output + i, parameters, channel);
                AffineInDoubles<TStore>(a + i + RegisterStep, output + i + RegisterStep, parameters, next);
            }

            channel = next + 1 == parameters.Count ? 0 : next + 1;
        }

        return i;
    }

    /// <summary><see cref="GradientPlanesPairs{TStore}"/> for planes of 16 values, as <see cref="AffineTwoPlanes{TStore}"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientTwoPlanes<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, int i, int end, int length, int firstChannel, ChannelParameters parameters)
        where TStore : struct, IStoreMode
    {
        Debug.Assert(i % RegisterStep == 0);
        int channel = (firstChannel + (i / RegisterStep)) % parameters.Count;
        for (; i <= end - PairStep; i += PairStep)
        {
            Prefetch.Ahead(a + i, a + length);
            Prefetch.Ahead(b + i, b + length);
            int next = channel + 1 == parameters.Count ? 0 : channel + 1;
            var rows = TwoRows(parameters.Single, channel, next);
            if (!GradientPair<TStore>(a + i, b + i, output + i, new GradientSingle(rows)))
            {
                GradientInDoubles<TStore>(a + i, b + i, output + i, parameters, channel);
                GradientInDoubles<TStore>(a + i + RegisterStep, b + i + RegisterStep, output + i + RegisterStep, parameters, next);
            }

            channel = next + 1 == parameters.Count ? 0 : next + 1;
        }

        return i;
    }

    /// <summary>The float32 constants of <paramref name="first"/> in the lower half, those of <paramref name="second"/> in the upper.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> TwoRows(float* single, int first, int second) =>
        Joined(Vector256.Load(single + (first * SingleStride)), Vector256.Load(single + (second * SingleStride)));

    /// <summary>Constant <paramref name="index"/> of each half's row across that half's 8 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Spread(Vector512<float> rows, int index) =>
        Avx512F.PermuteVar16x32(rows, Vector512.Create(index, index, index, index, index, index, index, index, 8 + index, 8 + index, 8 + index, 8 + index, 8 + index, 8 + index, 8 + index, 8 + index));

    /// <summary>y's float32 constants for a step's lanes (see <see cref="SingleConstants"/>).</summary>
    private readonly struct AffineSingle
    {
        public readonly Vector512<float> Scale, Shift, PerValue, Fixed;

        /// <summary>Each half's constants from its row of <see cref="TwoRows"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public AffineSingle(Vector512<float> rows) =>
            (Scale, Shift, PerValue, Fixed) = (Spread(rows, 0), Spread(rows, 1), Spread(rows, 2), Spread(rows, 3));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public AffineSingle(float* k) =>
            (Scale, Shift, PerValue, Fixed) = (Vector512.Create(k[0]), Vector512.Create(k[1]), Vector512.Create(k[2]), Vector512.Create(k[3]));

        private AffineSingle(Vector512<float> scale, Vector512<float> shift, Vector512<float> perValue, Vector512<float> fixedPart) =>
            (Scale, Shift, PerValue, Fixed) = (scale, shift, perValue, fixedPart);

        /// <summary>The lanes of <paramref name="first"/> where <paramref name="mask"/> is set, of <paramref name="second"/> elsewhere.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static AffineSingle Select(Vector512<float> mask, AffineSingle first, AffineSingle second) => new(
            Vector512.ConditionalSelect(mask, first.Scale, second.Scale),
            Vector512.ConditionalSelect(mask, first.Shift, second.Shift),
            Vector512.ConditionalSelect(mask, first.PerValue, second.PerValue),
            Vector512.ConditionalSelect(mask, first.Fixed, second.Fixed));
    }

    /// <summary>dx's float32 constants for a step's lanes (see <see cref="SingleConstants"/>).</summary>
    private readonly struct GradientSingle
    {
        public readonly Vector512<float> K1, K2, K3, PerA, PerB, Fixed;

        /// <summary>Each half's constants from its row of <see cref="TwoRows"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public GradientSingle(Vector512<float> rows)
        {
            (K1, K2, K3) = (Spread(rows, 0), Spread(rows, 1), Spread(rows, 2));
            (PerA, PerB, Fixed) = (Spread(rows, 3), Spread(rows, 4), Spread(rows, 5));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public GradientSingle(float* k)
        {
            (K1, K2, K3) = (Vector512.Create(k[0]), Vector512.Create(k[1]), Vector512.Create(k[2]));
            (PerA, PerB, Fixed) = (Vector512.Create(k[3]), Vector512.Create(k[4]), Vector512.Create(k[5]));
        }

        private GradientSingle(Vector512<float> k1, Vector512<float> k2, Vector512<float> k3, Vector512<float> perA, Vector512<float> perB, Vector512<float> fixedPart) =>
            (K1, K2, K3, PerA, PerB, Fixed) = (k1, k2, k3, perA, perB, fixedPart);

        /// <summary>The lanes of <paramref name="first"/> where <paramref name="mask"/> is set, of <paramref name="second"/> elsewhere.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static GradientSingle Select(Vector512<float> mask, GradientSingle first, GradientSingle second) => new(
            Vector512.ConditionalSelect(mask, first.K1, second.K1),
            Vector512.ConditionalSelect(mask, first.K2, second.K2),
            Vector512.ConditionalSelect(mask, first.K3, second.K3),
            Vector512.ConditionalSelect(mask, first.PerA, second.PerA),
            Vector512.ConditionalSelect(mask, first.PerB, second.PerB),
            Vector512.ConditionalSelect(mask, first.Fixed, second.Fixed));
    }

    /// <summary>y of one pair step in checked float32: false, with nothing stored, where the check fails.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AffinePair<TStore>(BFloat16* a, BFloat16* output, AffineSingle k)
        where TStore : struct, IStoreMode
    {
        var (even, odd) = BFloat16Bits.WidenPairs(Vector512.Load((uint*)a));
        var evenY = Avx512F.FusedMultiplyAdd(even, k.Scale, k.Shift);
        var oddY = Avx512F.FusedMultiplyAdd(odd, k.Scale, k.Shift);
        var evenBound = Avx512F.FusedMultiplyAdd(Vector512.Abs(even), k.PerValue, k.Fixed);
        var oddBound = Avx512F.FusedMultiplyAdd(Vector512.Abs(odd), k.PerValue, k.Fixed);
        if (!BFloat16Bits.TryNarrowPairsWithin(evenY, evenBound, oddY, oddBound, out var bits))
        {
            return false;
        }

        StorePair<TStore>(bits, output);
        return true;
    }

    /// <summary>dx of one pair step in checked float32, as <see cref="AffinePair{TStore}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool GradientPair<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, GradientSingle k)
        where TStore : struct, IStoreMode
    {
        var (evenA, oddA) = BFloat16Bits.WidenPairs(Vector512.Load((uint*)a));
        var (evenB, oddB) = BFloat16Bits.WidenPairs(Vector512.Load((uint*)b));
        var even = Avx512F.FusedMultiplyAdd(evenA, k.K1, Avx512F.FusedMultiplyAdd(evenB, k.K2, k.K3));
        var odd = Avx512F.FusedMultiplyAdd(oddA, k.K1, Avx512F.FusedMultiplyAdd(oddB, k.K2, k.K3));
        var evenBound = Avx512F.FusedMultiplyAdd(Vector512.Abs(evenA), k.PerA, Avx512F.FusedMultiplyAdd(Vector512.Abs(evenB), k.PerB, k.Fixed));
        var oddBound = Avx512F.FusedMultiplyAdd(Vector512.Abs(oddA), k.PerA, Avx512F.FusedMultiplyAdd(Vector512.Abs(oddB), k.PerB, k.Fixed));
        if (!BFloat16Bits.TryNarrowPairsWithin(even, evenBound, odd, oddBound, out var bits))
        {
            return false;
        }

        StorePair<TStore>(bits, output);
        return true;
    }

    /// <summary>
    /// y of one pair step in float64, as two 16-value steps: the first <paramref name="inPlane"/> values of
    /// <paramref name="channel"/>, the rest of the next channel. Inlined, as <see cref="AffineInDoubles{TStore}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AffinePairInDoubles<TStore>(BFloat16* a, BFloat16* output, ChannelParameters parameters, int channel, int inPlane)
        where TStore : struct, IStoreMode
    {
        for (int half = 0; half < PairStep; half += RegisterStep)
        {
            int current = channel;
            var vo = Vector512.Create(parameters.Offset[current]);
            var vs = Vector512.Create(parameters.Scale[current]);
            var vt = Vector512.Create(parameters.Shift[current]);
            Load16(a + half, out var lo, out var hi);
            AffineAcrossPlanes(inPlane - half < RegisterStep, inPlane - half, ref current, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
            Store16<BFloat16, TStore>(lo, hi, output + half);
        }
    }

    /// <summary>dx of one pair step in float64, as <see cref="AffinePairInDoubles{TStore}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientPairInDoubles<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, ChannelParameters parameters, int channel, int inPlane)
        where TStore : struct, IStoreMode
    {
        for (int half = 0; half < PairStep; half += RegisterStep)
        {
            int current = channel;
            var vo = Vector512.Create(parameters.Offset[current]);
            var vs = Vector512.Create(parameters.Scale[current]);
            var vt = Vector512.Create(parameters.Shift[current]);
            var vp = Vector512.Create(parameters.Projection[current]);
            Load16(a + half, out var alo, out var ahi);
            Load16(b + half, out var blo, out var bhi);
            GradientAcrossPlanes(inPlane - half < RegisterStep, inPlane - half, ref current, parameters, ref vo, ref vs, ref vt, ref vp, ref alo, ref ahi, blo, bhi);
            Store16<BFloat16, TStore>(alo, ahi, output + half);
        }
    }

    /// <summary>Stores 16 pairs of bfloat16 bits, plainly or streaming.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StorePair<TStore>(Vector512<uint> bits, BFloat16* destination)
        where TStore : struct, IStoreMode
    {
        if (TStore.Streaming)
        {
            Avx512F.StoreAlignedNonTemporal((uint*)destination, bits);
        }
        else
        {
            bits.Store((uint*)destination);
        }
    }

    /// <summary>
    /// One step of <paramref name="channel"/>'s y in float64, where the float32 check failed. Inlined: a call in the
    /// loop would have the compiler store the loop's vector registers at every step, since no vector register
    /// survives a call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AffineInDoubles<TStore>(BFloat16* a, BFloat16* output, ChannelParameters parameters, int channel)
        where TStore : struct, IStoreMode
    {
        var vo = Vector512.Create(parameters.Offset[channel]);
        var vs = Vector512.Create(parameters.Scale[channel]);
        var vt = Vector512.Create(parameters.Shift[channel]);
        Load16(a, out var lo, out var hi);
        AffineAcrossPlanes(false, RegisterStep, ref channel, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
        Store16<BFloat16, TStore>(lo, hi, output);
    }

    /// <summary>One step of <paramref name="channel"/>'s dx in float64, where the float32 check failed; inlined, as <see cref="AffineInDoubles{TStore}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientInDoubles<TStore>(BFloat16* a, BFloat16* b, BFloat16* output, ChannelParameters parameters, int channel)
        where TStore : struct, IStoreMode
    {
        var vo = Vector512.Create(parameters.Offset[channel]);
        var vs = Vector512.Create(parameters.Scale[channel]);
        var vt = Vector512.Create(parameters.Shift[channel]);
        var vp = Vector512.Create(parameters.Projection[channel]);
        Load16(a, out var alo, out var ahi);
        Load16(b, out var blo, out var bhi);
        GradientAcrossPlanes(false, RegisterStep, ref channel, parameters, ref vo, ref vs, ref vt, ref vp, ref alo, ref ahi, blo, bhi);
        Store16<BFloat16, TStore>(alo, ahi, output);
    }

    /// <summary>Stores 16 bfloat16 values' bits, plainly or streaming.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreBits<TStore>(Vector256<ushort> bits, BFloat16* destination)
        where TStore : struct, IStoreMode
    {
        if (TStore.Streaming)
        {
            Avx.StoreAlignedNonTemporal((ushort*)destination, bits);
        }
        else
        {
            bits.Store((ushort*)destination);
        }
    }
}
