using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Loops for hardware with AVX-512, 16 values a step as two vectors of 8 doubles: channels-last loops whose whole
/// period fits in the 32 registers (periods of 16, 32, 48 or 64 values: rows of 16, 32, 48 or 64 channels, and counts
/// whose period lcm(C, 8) is one of those), for the sums and the element-wise passes; channels-last loops that go
/// period by period (longer periods of whole steps, such as rows of 128 or more channels); the NCHW element-wise
/// passes over runs of planes of 16 values or more; and the NCHW sums over a plane.
/// </summary>
/// <remarks>
/// <para>
/// A period of up to 64 values is up to 8 vectors of 8 doubles, so the sums' accumulators (two sums each) and
/// references take at most 24 of the 32 registers, and y's three constants as many; dx's four take all 32, and the
/// compiler keeps what does not fit on the stack. The loops go row after row through the block in memory order,
/// loading nothing but the values, where the general loops, with 256-bit vectors, load the constants again every pass
/// of a few rows (and the sums store and load their accumulators) around an inner loop only a few iterations long.
/// Each lane still adds the values of its own period position in row order, and each value is computed by the same
/// operations, so no bit changes.
/// </para>
/// <para>
/// The NCHW element-wise loops do what the 8-value loops do, a step that reaches across two planes taking each lane's
/// constants from its own plane, with half as many steps, prefetches and plane-boundary checks. The period-by-period
/// loops load and store what the 8-value loops do, 16 values at a time, the statistics four rows per load of their
/// accumulators (see <see cref="RowsPerTile"/>). The NCHW sums keep the 8-value loop's four accumulators of 4
/// doubles as two of 8 and add them up the same way, so they too give the same bits. At the kernel alone on the
/// AVX-512 machine measured, each of these loops was faster than its 8-value counterpart on most shapes and slower on
/// none (see docs/performance.md).
/// </para>
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Values per step of the register loops: two vectors of 8 doubles.</summary>
    private const int RegisterStep = 16;

    /// <summary>Whether the loops of this file run: AVX-512 with 512-bit vectors accelerated.</summary>
    private static bool Avx512 => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>
    /// How many steps of <see cref="RegisterStep"/> values one period is, if the register loops take it: 1 to 4 on
    /// hardware with AVX-512, 0 otherwise.
    /// </summary>
    private static int RegisterSteps(int period) =>
        Avx512 && period % RegisterStep == 0 && period <= 4 * RegisterStep
            ? period / RegisterStep
            : 0;

    /// <summary>
    /// The whole periods of <see cref="PeriodicShiftedSums{T}"/> with the period's accumulators and references in
    /// registers (see <see cref="RegisterSteps"/>). Returns how many values it read.
    /// </summary>
    private static int ShiftedSumsInRegisters<T>(T* x, int length, int period, double* r, double* sum, double* squares)
        where T : unmanaged => (period / RegisterStep) switch
        {
            1 => ShiftedSumsInRegisters<T, OneStep>(x, length, r, sum, squares),
            2 => ShiftedSumsInRegisters<T, TwoSteps>(x, length, r, sum, squares),
            3 => ShiftedSumsInRegisters<T, ThreeRegisterSteps>(x, length, r, sum, squares),
            _ => ShiftedSumsInRegisters<T, FourSteps>(x, length, r, sum, squares),
        };

    /// <summary>
    /// The whole periods of <see cref="PeriodicProductSums{T}"/> with the period's accumulators and references in
    /// registers, as <see cref="ShiftedSumsInRegisters{T}"/>. Returns how many values it read.
    /// </summary>
    private static int ProductSumsInRegisters<T>(T* a, T* b, int length, int period, double* r, double* sum, double* products)
        where T : unmanaged => (period / RegisterStep) switch
        {
            1 => ProductSumsInRegisters<T, OneStep>(a, b, length, r, sum, products),
            2 => ProductSumsInRegisters<T, TwoSteps>(a, b, length, r, sum, products),
            3 => ProductSumsInRegisters<T, ThreeRegisterSteps>(a, b, length, r, sum, products),
            _ => ProductSumsInRegisters<T, FourSteps>(a, b, length, r, sum, products),
        };

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ShiftedSumsInRegisters<T, TSteps>(T* x, int length, double* r, double* sum, double* squares)
        where T : unmanaged
        where TSteps : struct, IStepCount
    {
        int period = TSteps.Count * RegisterStep;
        var (r0, r1, r2, r3, r4, r5, r6, r7) = LoadRow<TSteps>(r);
        var (s0, s1, s2, s3, s4, s5, s6, s7) = LoadRow<TSteps>(sum);
        var (q0, q1, q2, q3, q4, q5, q6, q7) = LoadRow<TSteps>(squares);

        T* end = x + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            T* row = x + i;
            AddShifted(row, end, r0, r1, ref s0, ref s1, ref q0, ref q1);
            if (TSteps.Count > 1)
            {
                AddShifted(row + 16, end, r2, r3, ref s2, ref s3, ref q2, ref q3);
            }

            if (TSteps.Count > 2)
            {
                AddShifted(row + 32, end, r4, r5, ref s4, ref s5, ref q4, ref q5);
            }

            if (TSteps.Count > 3)
            {
                AddShifted(row + 48, end, r6, r7, ref s6, ref s7, ref q6, ref q7);
            }
        }

        StoreRow<TSteps>(sum, s0, s1, s2, s3, s4, s5, s6, s7);
        StoreRow<TSteps>(squares, q0, q1, q2, q3, q4, q5, q6, q7);
        return i;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ProductSumsInRegisters<T, TSteps>(T* a, T* b, int length, double* r, double* sum, double* products)
        where T : unmanaged
        where TSteps : struct, IStepCount
    {
        int period = TSteps.Count * RegisterStep;
        var (r0, r1, r2, r3, r4, r5, r6, r7) = LoadRow<TSteps>(r);
        var (s0, s1, s2, s3, s4, s5, s6, s7) = LoadRow<TSteps>(sum);
        var (p0, p1, p2, p3, p4, p5, p6, p7) = LoadRow<TSteps>(products);

        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            AddProducts(a + i, b + i, endA, endB, r0, r1, ref s0, ref s1, ref p0, ref p1);
            if (TSteps.Count > 1)
            {
                AddProducts(a + i + 16, b + i + 16, endA, endB, r2, r3, ref s2, ref s3, ref p2, ref p3);
            }

            if (TSteps.Count > 2)
            {
                AddProducts(a + i + 32, b + i + 32, endA, endB, r4, r5, ref s4, ref s5, ref p4, ref p5);
            }

            if (TSteps.Count > 3)
            {
                AddProducts(a + i + 48, b + i + 48, endA, endB, r6, r7, ref s6, ref s7, ref p6, ref p7);
            }
        }

        StoreRow<TSteps>(sum, s0, s1, s2, s3, s4, s5, s6, s7);
        StoreRow<TSteps>(products, p0, p1, p2, p3, p4, p5, p6, p7);
        return i;
    }

    /// <summary>
    /// The whole periods of <see cref="AffinePeriodic{T, TStore}"/> with the period's constants in registers (see
    /// <see cref="RegisterSteps"/>): each value computed as in the general loop. Returns how many values it wrote.
    /// </summary>
    private static int AffineInRegisters<T, TStore>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode => (parameters.Count / RegisterStep) switch
        {
            1 => AffineInRegisters<T, TStore, OneStep>(a, output, length, parameters),
            2 => AffineInRegisters<T, TStore, TwoSteps>(a, output, length, parameters),
            3 => AffineInRegisters<T, TStore, ThreeRegisterSteps>(a, output, length, parameters),
            _ => AffineInRegisters<T, TStore, FourSteps>(a, output, length, parameters),
        };

    /// <summary>
    /// The whole periods of <see cref="GradientPeriodic{T, TStore}"/> with the period's constants in registers, as
    /// <see cref="AffineInRegisters{T, TStore}"/>. Returns how many values it wrote.
    /// </summary>
    private static int GradientInRegisters<T, TStore>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode => (parameters.Count / RegisterStep) switch
        {
            1 => GradientInRegisters<T, TStore, OneStep>(a, b, output, length, parameters),
            2 => GradientInRegisters<T, TStore, TwoSteps>(a, b, output, length, parameters),
            3 => GradientInRegisters<T, TStore, ThreeRegisterSteps>(a, b, output, length, parameters),
            _ => GradientInRegisters<T, TStore, FourSteps>(a, b, output, length, parameters),
        };

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffineInRegisters<T, TStore, TSteps>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
    {
        int period = TSteps.Count * RegisterStep;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift;
        var (o0, o1, o2, o3, o4, o5, o6, o7) = LoadRow<TSteps>(o);
        var (c0, c1, c2, c3, c4, c5, c6, c7) = LoadRow<TSteps>(c);
        var (t0, t1, t2, t3, t4, t5, t6, t7) = LoadRow<TSteps>(t);

        T* end = a + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            AffineStep<T, TStore>(a + i, end, output + i, o0, o1, c0, c1, t0, t1);
            if (TSteps.Count > 1)
            {
                AffineStep<T, TStore>(a + i + 16, end, output + i + 16, o2, o3, c2, c3, t2, t3);
            }

            if (TSteps.Count > 2)
            {
                AffineStep<T, TStore>(a + i + 32, end, output + i + 32, o4, o5, c4, c5, t4, t5);
            }

            if (TSteps.Count > 3)
            {
                AffineStep<T, TStore>(a + i + 48, end, output + i + 48, o6, o7, c6, c7, t6, t7);
            }
        }

        return i;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientInRegisters<T, TStore, TSteps>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
        where TSteps : struct, IStepCount
    {
        int period = TSteps.Count * RegisterStep;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift, p = parameters.Projection;
        var (o0, o1, o2, o3, o4, o5, o6, o7) = LoadRow<TSteps>(o);
        var (c0, c1, c2, c3, c4, c5, c6, c7) = LoadRow<TSteps>(c);
        var (t0, t1, t2, t3, t4, t5, t6, t7) = LoadRow<TSteps>(t);
        var (p0, p1, p2, p3, p4, p5, p6, p7) = LoadRow<TSteps>(p);

        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            GradientStep<T, TStore>(a + i, b + i, endA, endB, output + i, o0, o1, c0, c1, t0, t1, p0, p1);
            if (TSteps.Count > 1)
            {
                GradientStep<T, TStore>(a + i + 16, b + i + 16, endA, endB, output + i + 16, o2, o3, c2, c3, t2, t3, p2, p3);
            }

            if (TSteps.Count > 2)
            {
                GradientStep<T, TStore>(a + i + 32, b + i + 32, endA, endB, output + i + 32, o4, o5, c4, c5, t4, t5, p4, p5);
            }

            if (TSteps.Count > 3)
            {
                GradientStep<T, TStore>(a + i + 48, b + i + 48, endA, endB, output + i + 48, o6, o7, c6, c7, t6, t7, p6, p7);
            }
        }

        return i;
    }

    /// <summary>
    /// One step of <see cref="AffineInRegisters{T, TStore, TSteps}"/>: out = (a − offset) · scale + shift for 16 values,
    /// prefetching ahead of them within <paramref name="end"/> (not at all with a null one).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AffineStep<T, TStore>(
        T* a, T* end, T* output, Vector512<double> offsetLo, Vector512<double> offsetHi, Vector512<double> scaleLo, Vector512<double> scaleHi, Vector512<double> shiftLo, Vector512<double> shiftHi)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        PrefetchStep(a, end);
        Load16(a, out var lo, out var hi);
        Store16<T, TStore>(Avx512F.FusedMultiplyAdd(lo - offsetLo, scaleLo, shiftLo), Avx512F.FusedMultiplyAdd(hi - offsetHi, scaleHi, shiftHi), output);
    }

    /// <summary>
    /// One step of <see cref="GradientInRegisters{T, TStore, TSteps}"/>: out = (a − shift − (b − offset) · projection) · scale
    /// for 16 values, prefetching as <see cref="AffineStep{T, TStore}"/> does.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientStep<T, TStore>(
        T* a,
        T* b,
        T* endA,
        T* endB,
        T* output,
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
        PrefetchStep(a, endA);
        PrefetchStep(b, endB);
        Load16(a, out var alo, out var ahi);
        Load16(b, out var blo, out var bhi);
        StoreGradient<T, TStore>(alo, ahi, blo, bhi, output, offsetLo, offsetHi, scaleLo, scaleHi, shiftLo, shiftHi, projectionLo, projectionHi);
    }

    /// <summary>
    /// out = (a − shift − (b − offset) · projection) · scale for 16 values already loaded as doubles, stored as T: the
    /// arithmetic of <see cref="GradientStep{T, TStore}"/> and of the block's gated step, written once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreGradient<T, TStore>(
        Vector512<double> aLo,
        Vector512<double> aHi,
        Vector512<double> bLo,
        Vector512<double> bHi,
        T* output,
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
        var lo = (aLo - shiftLo - ((bLo - offsetLo) * projectionLo)) * scaleLo;
        var hi = (aHi - shiftHi - ((bHi - offsetHi) * projectionHi)) * scaleHi;
        Store16<T, TStore>(lo, hi, output);
    }

    /// <summary>Stores two vectors of 8 doubles as 16 values of T (rounded as <see cref="Element.FromDouble{T}"/> rounds), plainly or streaming.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16<T, TStore>(Vector512<double> lo, Vector512<double> hi, T* destination)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(float))
        {
            StoreHalves<TStore>(Avx512F.ConvertToVector256Single(lo), Avx512F.ConvertToVector256Single(hi), (float*)destination);
        }
        else if (typeof(T) != typeof(double))
        {
            // The 16 floats as one vector, rounded to the 16-bit type in one go.
            var values = Joined(Avx512F.ConvertToVector256Single(lo), Avx512F.ConvertToVector256Single(hi));
            var bits = typeof(T) == typeof(BFloat16) ? BFloat16Bits.Narrow16(values) : Float16Bits.Narrow16(values);
            if (TStore.Streaming)
            {
                Avx.StoreAlignedNonTemporal((ushort*)destination, bits);
            }
            else
            {
                bits.Store((ushort*)destination);
            }
        }
        else if (TStore.Streaming)
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
    /// <paramref name="lower"/> and <paramref name="upper"/> as one vector: the upper half put into the lower's register.
    /// <c>Vector512.Create(lower, upper)</c> puts both into one register that the JIT keeps from step to step, a
    /// dependency carried through every step of a loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Joined(Vector256<float> lower, Vector256<float> upper) =>
        Avx512F.InsertVector256(lower.ToVector512Unsafe(), upper, 1);

    /// <summary>Stores 16 float32 values held as two halves, plainly or streaming.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreHalves<TStore>(Vector256<float> low, Vector256<float> high, float* destination)
        where TStore : struct, IStoreMode
    {
        if (TStore.Streaming)
        {
            Avx.StoreAlignedNonTemporal(destination, low);
            Avx.StoreAlignedNonTemporal(destination + 8, high);
        }
        else
        {
            low.Store(destination);
            high.Store(destination + 8);
        }
    }

    /// <summary>Whether the NCHW element-wise loops go 16 values at a time: with AVX-512, on planes of 16 values or more.</summary>
    private static bool WidePlanes(int spatial) => Avx512 && spatial >= RegisterStep;

    /// <summary>
    /// The vector body of <see cref="AffinePlanes{T, TStore}"/> from <paramref name="i"/>, 16 values at a time, as far as
    /// whole steps reach before <paramref name="end"/>; each value computed as in the 8-value loop. Returns where it stopped.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffinePlanesWide<T, TStore>(T* a, T* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(BFloat16) && parameters.Single is not null)
        {
            return spatial == RegisterStep && i % RegisterStep == 0
                ? AffineTwoPlanes<TStore>((BFloat16*)a, (BFloat16*)output, i, end, length, firstChannel, parameters)
                : SinglePairs(spatial) && i % 2 == 0
                ? AffinePlanesPairs<TStore>((BFloat16*)a, (BFloat16*)output, i, end, length, spatial, firstChannel, parameters)
                : AffinePlanesSingle<TStore>((BFloat16*)a, (BFloat16*)output, i, end, length, spatial, firstChannel, parameters);
        }

        var planes = new PlaneBoundaries(spatial, i, RegisterStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var vo = Vector512.Create(parameters.Offset[channel]);
        var vs = Vector512.Create(parameters.Scale[channel]);
        var vt = Vector512.Create(parameters.Shift[channel]);
        for (; i <= end - RegisterStep; i += RegisterStep)
        {
            PrefetchStep(a + i, a + length);
            Load16(a + i, out var lo, out var hi);
            AffineAcrossPlanes(planes.Crosses(i, out int inPlane), inPlane, ref channel, parameters, ref vo, ref vs, ref vt, ref lo, ref hi);
            Store16<T, TStore>(lo, hi, output + i);
        }

        return i;
    }

    /// <summary>
    /// (lo, hi) = (a − offset) · scale + shift for the 16 values of an NCHW step, each lane with its own plane's
    /// constants: a step that <paramref name="crosses"/> into the next plane (its first <paramref name="inPlane"/> lanes
    /// in the plane before) moves <paramref name="channel"/> and the constants on to it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AffineAcrossPlanes(
        bool crosses,
        int inPlane,
        ref int channel,
        ChannelParameters parameters,
        ref Vector512<double> vo,
        ref Vector512<double> vs,
        ref Vector512<double> vt,
        ref Vector512<double> lo,
        ref Vector512<double> hi)
    {
        if (!crosses)
        {
            lo = Avx512F.FusedMultiplyAdd(lo - vo, vs, vt);
            hi = Avx512F.FusedMultiplyAdd(hi - vo, vs, vt);
            return;
        }

        channel = channel + 1 == parameters.Count ? 0 : channel + 1;
        var no = Vector512.Create(parameters.Offset[channel]);
        var ns = Vector512.Create(parameters.Scale[channel]);
        var nt = Vector512.Create(parameters.Shift[channel]);
        var low = Leading8(inPlane);
        var high = Leading8(inPlane - 8);
        lo = Avx512F.FusedMultiplyAdd(lo - Vector512.ConditionalSelect(low, vo, no), Vector512.ConditionalSelect(low, vs, ns), Vector512.ConditionalSelect(low, vt, nt));
        hi = Avx512F.FusedMultiplyAdd(hi - Vector512.ConditionalSelect(high, vo, no), Vector512.ConditionalSelect(high, vs, ns), Vector512.ConditionalSelect(high, vt, nt));
        (vo, vs, vt) = (no, ns, nt);
    }

    /// <summary>The vector body of <see cref="GradientPlanes{T, TStore}"/> 16 values at a time, as <see cref="AffinePlanesWide{T, TStore}"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientPlanesWide<T, TStore>(T* a, T* b, T* output, int i, int end, int length, int spatial, int firstChannel, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (typeof(T) == typeof(BFloat16) && parameters.Single is not null)
        {
            return spatial == RegisterStep && i % RegisterStep == 0
                ? GradientTwoPlanes<TStore>((BFloat16*)a, (BFloat16*)b, (BFloat16*)output, i, end, length, firstChannel, parameters)
                : SinglePairs(spatial) && i % 2 == 0
                ? GradientPlanesPairs<TStore>((BFloat16*)a, (BFloat16*)b, (BFloat16*)output, i, end, length, spatial, firstChannel, parameters)
                : GradientPlanesSingle<TStore>((BFloat16*)a, (BFloat16*)b, (BFloat16*)output, i, end, length, spatial, firstChannel, parameters);
        }

        var planes = new PlaneBoundaries(spatial, i, RegisterStep);
        int channel = (firstChannel + planes.Plane) % parameters.Count;
        var vo = Vector512.Create(parameters.Offset[channel]);
        var vs = Vector512.Create(parameters.Scale[channel]);
        var vt = Vector512.Create(parameters.Shift[channel]);
        var vp = Vector512.Create(parameters.Projection[channel]);
        for (; i <= end - RegisterStep; i += RegisterStep)
        {
            PrefetchStep(a + i, a + length);
            PrefetchStep(b + i, b + length);
            Load16(a + i, out var alo, out var ahi);
            Load16(b + i, out var blo, out var bhi);
            bool crosses = planes.Crosses(i, out int inPlane);
            GradientAcrossPlanes(crosses, inPlane, ref channel, parameters, ref vo, ref vs, ref vt, ref vp, ref alo, ref ahi, blo, bhi);
            Store16<T, TStore>(alo, ahi, output + i);
        }

        return i;
    }

    /// <summary>
    /// (lo, hi) = (a − shift − (b − offset) · projection) · scale for the 16 values of an NCHW step, each lane with its
    /// own plane's constants: a step that <paramref name="crosses"/> into the next plane (its first
    /// <paramref name="inPlane"/> lanes in the plane before) moves <paramref name="channel"/> and the constants on to it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientAcrossPlanes(
        bool crosses,
        int inPlane,
        ref int channel,
        ChannelParameters parameters,
        ref Vector512<double> vo,
        ref Vector512<double> vs,
        ref Vector512<double> vt,
        ref Vector512<double> vp,
        ref Vector512<double> lo,
        ref Vector512<double> hi,
        Vector512<double> blo,
        Vector512<double> bhi)
    {
        if (!crosses)
        {
            lo = (lo - vt - ((blo - vo) * vp)) * vs;
            hi = (hi - vt - ((bhi - vo) * vp)) * vs;
            return;
        }

        channel = channel + 1 == parameters.Count ? 0 : channel + 1;
        var no = Vector512.Create(parameters.Offset[channel]);
        var ns = Vector512.Create(parameters.Scale[channel]);
        var nt = Vector512.Create(parameters.Shift[channel]);
        var np = Vector512.Create(parameters.Projection[channel]);
        var low = Leading8(inPlane);
        var high = Leading8(inPlane - 8);
        lo = (lo - Vector512.ConditionalSelect(low, vt, nt) - ((blo - Vector512.ConditionalSelect(low, vo, no)) * Vector512.ConditionalSelect(low, vp, np))) * Vector512.ConditionalSelect(low, vs, ns);
        hi = (hi - Vector512.ConditionalSelect(high, vt, nt) - ((bhi - Vector512.ConditionalSelect(high, vo, no)) * Vector512.ConditionalSelect(high, vp, np))) * Vector512.ConditionalSelect(high, vs, ns);
        (vo, vs, vt, vp) = (no, ns, nt, np);
    }

    /// <summary>A mask of the first <paramref name="count"/> of 8 lanes (none if count ≤ 0, all if count ≥ 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> Leading8(int count) => Vector512.LessThan(Vector512<double>.Indices, Vector512.Create((double)count));

    /// <summary>Whether the sums over contiguous runs go 16 values a step: with AVX-512.</summary>
    private static bool WideSums => Avx512;

    /// <summary>
    /// The vector part of <see cref="ShiftedSums{T}"/> 16 values a step, for a run of at least 8: each vector of 8
    /// doubles holds two of that loop's four accumulators side by side, takes the same values in the same order, and is
    /// added across as there, so the same bits. bfloat16 is the exception: its steps hold a step's values at even places
    /// and at odd places (<see cref="LoadForSums16{T}"/>), so its sums may differ from that loop's in the last bits.
    /// Returns how many values it read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ShiftedSumsWide<T>(T* x, int length, double r, int readable, out double sum, out double squares)
        where T : unmanaged
    {
        var vr = Vector512.Create(r);
        Vector512<double> s0 = default, s1 = default, q0 = default, q1 = default;
        T* end = x + readable;
        int i = 0;
        for (; i <= length - RegisterStep; i += RegisterStep)
        {
            Prefetch.Ahead(x + i, end);
            LoadForSums16(x + i, out var lo, out var hi);
            lo -= vr;
            hi -= vr;
            s0 += lo;
            s1 += hi;
            q0 = Avx512F.FusedMultiplyAdd(lo, lo, q0);
            q1 = Avx512F.FusedMultiplyAdd(hi, hi, q1);
        }

        if (i <= length - 8)
        {
            var lo = Load8(x + i) - vr;
            s0 += lo;
            q0 = Avx512F.FusedMultiplyAdd(lo, lo, q0);
            i += 8;
        }

        sum = AddAcross(s0, s1);
        squares = AddAcross(q0, q1);
        return i;
    }

    /// <summary>The vector part of <see cref="ProductSums{T}"/> 16 values a step, as <see cref="ShiftedSumsWide{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ProductSumsWide<T>(T* a, T* b, int length, double r, int readable, out double sum, out double products)
        where T : unmanaged
    {
        var vr = Vector512.Create(r);
        Vector512<double> s0 = default, s1 = default, p0 = default, p1 = default;
        T* endA = a + readable;
        T* endB = b + readable;
        int i = 0;
        for (; i <= length - RegisterStep; i += RegisterStep)
        {
            Prefetch.Ahead(a + i, endA);
            Prefetch.Ahead(b + i, endB);
            LoadForSums16(a + i, out var alo, out var ahi);
            LoadForSums16(b + i, out var blo, out var bhi);
            s0 += alo;
            s1 += ahi;
            p0 = Avx512F.FusedMultiplyAdd(alo, blo - vr, p0);
            p1 = Avx512F.FusedMultiplyAdd(ahi, bhi - vr, p1);
        }

        if (i <= length - 8)
        {
            var value = Load8(a + i);
            s0 += value;
            p0 = Avx512F.FusedMultiplyAdd(value, Load8(b + i) - vr, p0);
            i += 8;
        }

        sum = AddAcross(s0, s1);
        products = AddAcross(p0, p1);
        return i;
    }

    /// <summary>
    /// The 8-value loops' Vector.Sum((s0 + s1) + (s2 + s3)) of four vectors of 4 doubles, held as halves: s0 and s1 in
    /// <paramref name="low"/>, s2 and s3 in <paramref name="high"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double AddAcross(Vector512<double> low, Vector512<double> high) =>
        System.Numerics.Vector.Sum(((low.GetLower() + low.GetUpper()) + (high.GetLower() + high.GetUpper())).AsVector());

    /// <summary>8 values from <paramref name="source"/> as one vector of doubles (float32 converted as it is loaded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<double> Load8<T>(T* source)
        where T : unmanaged =>
        typeof(T) == typeof(float) ? Avx512F.ConvertToVector512Double(Vector256.Load((float*)source))
        : typeof(T) == typeof(double) ? Vector512.Load((double*)source)
        : typeof(T) == typeof(BFloat16) ? Avx512F.ConvertToVector512Double(BFloat16Bits.Widen(Vector128.Load((ushort*)source)))
        : Avx512F.ConvertToVector512Double(Float16Bits.Widen(Vector128.Load((ushort*)source)));

    /// <summary>Whether the period-by-period loops go 16 values a step: with AVX-512, for periods of whole steps.</summary>
    private static bool WidePeriods(int period) => Avx512 && period % RegisterStep == 0;

    /// <summary>
    /// The rows the statistics' period-by-period loop takes per load of its accumulators: each 16-value step goes down
    /// this many rows, so the loads and stores around it are shared by four rows' values.
    /// </summary>
    /// <remarks>
    /// With a long period (a row of 128 channels or more) every step of the one-row loop loaded and stored four
    /// accumulators for one vector of values. Four rows are four sequential runs read side by side, and each lane still
    /// takes its values in row order. The element-wise loops and the backward sums keep one row: with their constants
    /// on cache lines (<see cref="CacheLine"/>) they were faster so (kernels alone, on the AVX-512 machine measured).
    /// </remarks>
    private const int RowsPerTile = 4;

    /// <summary><see cref="ShiftedSumsPeriodByPeriod{T}"/> 16 values a step: the same values into the same lanes in the same order.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ShiftedSumsPeriodByPeriodWide<T>(T* x, int length, int period, double* r, double* sum, double* squares)
        where T : unmanaged
    {
        T* end = x + length;
        int tile = RowsPerTile * period;
        int i = 0;
        for (; i <= length - tile; i += tile)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                Vector512<double> s0 = Load8(sum + k), s1 = Load8(sum + k + 8), q0 = Load8(squares + k), q1 = Load8(squares + k + 8);
                Vector512<double> r0 = Load8(r + k), r1 = Load8(r + k + 8);
                for (T* step = x + i + k, last = step + tile; step < last; step += period)
                {
                    PrefetchAt(step + tile, end);
                    AddShifted(step, null, r0, r1, ref s0, ref s1, ref q0, ref q1);
                }

                Store8(s0, s1, sum + k);
                Store8(q0, q1, squares + k);
            }
        }

        for (; i <= length - period; i += period)
        {
            T* row = x + i;
            for (int k = 0; k < period; k += RegisterStep)
            {
                Vector512<double> s0 = Load8(sum + k), s1 = Load8(sum + k + 8), q0 = Load8(squares + k), q1 = Load8(squares + k + 8);
                AddShifted(row + k, end, Load8(r + k), Load8(r + k + 8), ref s0, ref s1, ref q0, ref q1);
                Store8(s0, s1, sum + k);
                Store8(q0, q1, squares + k);
            }
        }

        return i;
    }

    /// <summary><see cref="ProductSumsPeriodByPeriod{T}"/> 16 values a step: the same values into the same lanes in the same order.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int ProductSumsPeriodByPeriodWide<T>(T* a, T* b, int length, int period, double* r, double* sum, double* products)
        where T : unmanaged
    {
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                Vector512<double> s0 = Load8(sum + k), s1 = Load8(sum + k + 8), p0 = Load8(products + k), p1 = Load8(products + k + 8);
                AddProducts(a + i + k, b + i + k, endA, endB, Load8(r + k), Load8(r + k + 8), ref s0, ref s1, ref p0, ref p1);
                Store8(s0, s1, sum + k);
                Store8(p0, p1, products + k);
            }
        }

        return i;
    }

    /// <summary><see cref="AffinePeriodByPeriod{T, TStore}"/> 16 values a step, each value computed as there.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int AffinePeriodByPeriodWide<T, TStore>(T* a, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift;
        T* end = a + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                AffineStep<T, TStore>(a + i + k, end, output + i + k, Load8(o + k), Load8(o + k + 8), Load8(c + k), Load8(c + k + 8), Load8(t + k), Load8(t + k + 8));
            }
        }

        return i;
    }

    /// <summary><see cref="GradientPeriodByPeriod{T, TStore}"/> 16 values a step, each value computed as there.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int GradientPeriodByPeriodWide<T, TStore>(T* a, T* b, T* output, int length, ChannelParameters parameters)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        int period = parameters.Count;
        double* o = parameters.Offset, c = parameters.Scale, t = parameters.Shift, p = parameters.Projection;
        T* endA = a + length;
        T* endB = b + length;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            for (int k = 0; k < period; k += RegisterStep)
            {
                GradientStep<T, TStore>(
                    a + i + k, b + i + k, endA, endB, output + i + k, Load8(o + k), Load8(o + k + 8), Load8(c + k), Load8(c + k + 8), Load8(t + k), Load8(t + k + 8), Load8(p + k), Load8(p + k + 8));
            }
        }

        return i;
    }

    /// <summary>
    /// The vectors of a periodic row of <typeparamref name="TSteps"/> steps (2 per step), those past the period default.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<double>, Vector512<double>, Vector512<double>, Vector512<double>, Vector512<double>, Vector512<double>, Vector512<double>, Vector512<double>) LoadRow<TSteps>(double* row)
        where TSteps : struct, IStepCount =>
        (Load8(row), Load8(row + 8),
            TSteps.Count > 1 ? Load8(row + 16) : default, TSteps.Count > 1 ? Load8(row + 24) : default,
            TSteps.Count > 2 ? Load8(row + 32) : default, TSteps.Count > 2 ? Load8(row + 40) : default,
            TSteps.Count > 3 ? Load8(row + 48) : default, TSteps.Count > 3 ? Load8(row + 56) : default);

    /// <summary>Stores the vectors of a periodic row of <typeparamref name="TSteps"/> steps, as <see cref="LoadRow{TSteps}"/> loads them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow<TSteps>(
        double* row, Vector512<double> v0, Vector512<double> v1, Vector512<double> v2, Vector512<double> v3, Vector512<double> v4, Vector512<double> v5, Vector512<double> v6, Vector512<double> v7)
        where TSteps : struct, IStepCount
    {
        Store8(v0, v1, row);
        if (TSteps.Count > 1)
        {
            Store8(v2, v3, row + 16);
        }

        if (TSteps.Count > 2)
        {
            Store8(v4, v5, row + 32);
        }

        if (TSteps.Count > 3)
        {
            Store8(v6, v7, row + 48);
        }
    }

    /// <summary>
    /// One step of <see cref="ShiftedSumsInRegisters{T, TSteps}"/>: 16 values from <paramref name="x"/>, prefetching ahead
    /// of them within <paramref name="end"/> (not at all with a null one).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddShifted<T>(
        T* x, T* end, Vector512<double> rLo, Vector512<double> rHi, ref Vector512<double> sumLo, ref Vector512<double> sumHi, ref Vector512<double> squaresLo, ref Vector512<double> squaresHi)
        where T : unmanaged
    {
        PrefetchStep(x, end);
        Load16(x, out var lo, out var hi);
        lo -= rLo;
        hi -= rHi;
        sumLo += lo;
        sumHi += hi;
        squaresLo = Avx512F.FusedMultiplyAdd(lo, lo, squaresLo);
        squaresHi = Avx512F.FusedMultiplyAdd(hi, hi, squaresHi);
    }

    /// <summary>
    /// One step of <see cref="ProductSumsInRegisters{T, TSteps}"/>: 16 values from each of <paramref name="a"/> and
    /// <paramref name="b"/>, prefetching ahead of them within their ends (not at all with null ones).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddProducts<T>(
        T* a, T* b, T* endA, T* endB, Vector512<double> rLo, Vector512<double> rHi, ref Vector512<double> sumLo, ref Vector512<double> sumHi, ref Vector512<double> productsLo, ref Vector512<double> productsHi)
        where T : unmanaged
    {
        PrefetchStep(a, endA);
        PrefetchStep(b, endB);
        Load16(a, out var alo, out var ahi);
        Load16(b, out var blo, out var bhi);
        AccumulateProducts(alo, ahi, blo, bhi, rLo, rHi, ref sumLo, ref sumHi, ref productsLo, ref productsHi);
    }

    /// <summary>
    /// sum += a and products += a · (b − r) for 16 values already loaded as doubles: the arithmetic of
    /// <see cref="ProductSumsInRegisters{T, TSteps}"/>'s step and of the block's gated step, written once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AccumulateProducts(
        Vector512<double> aLo,
        Vector512<double> aHi,
        Vector512<double> bLo,
        Vector512<double> bHi,
        Vector512<double> rLo,
        Vector512<double> rHi,
        ref Vector512<double> sumLo,
        ref Vector512<double> sumHi,
        ref Vector512<double> productsLo,
        ref Vector512<double> productsHi)
    {
        sumLo += aLo;
        sumHi += aHi;
        productsLo = Avx512F.FusedMultiplyAdd(aLo, bLo - rLo, productsLo);
        productsHi = Avx512F.FusedMultiplyAdd(aHi, bHi - rHi, productsHi);
    }

    /// <summary>Prefetches the lines of the step <see cref="Prefetch.DistanceBytes"/> ahead of <paramref name="current"/> (see <see cref="PrefetchAt{T}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchStep<T>(T* current, T* end)
        where T : unmanaged => PrefetchAt((T*)((byte*)current + Prefetch.DistanceBytes), end);

    /// <summary>
    /// Prefetches, into L2, the lines of the step that starts at <paramref name="step"/>, if it lies before
    /// <paramref name="end"/>: one line of float32, two of float64, and of 16-bit values only for a step that starts a
    /// line's first half.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchAt<T>(T* step, T* end)
        where T : unmanaged
    {
        if (sizeof(T) == 2 && ((nuint)step & 32) != 0)
        {
            return;
        }

        Prefetch.IntoL2(step, end);
        if (sizeof(T) == sizeof(double))
        {
            Prefetch.IntoL2(step + 8, end);
        }
    }

    /// <summary>16 values from <paramref name="source"/> as two vectors of 8 doubles (float32 converted as it is loaded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Load16<T>(T* source, out Vector512<double> lo, out Vector512<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            lo = Avx512F.ConvertToVector512Double(Vector256.Load((float*)source));
            hi = Avx512F.ConvertToVector512Double(Vector256.Load((float*)source + 8));
        }
        else if (typeof(T) == typeof(double))
        {
            lo = Vector512.Load((double*)source);
            hi = Vector512.Load((double*)source + 8);
        }
        else if (typeof(T) == typeof(BFloat16))
        {
            // Each half widened from its own 128-bit load: no 512-bit widening and no extraction of its upper half.
            lo = Avx512F.ConvertToVector512Double(BFloat16Bits.Widen(Vector128.Load((ushort*)source)));
            hi = Avx512F.ConvertToVector512Double(BFloat16Bits.Widen(Vector128.Load((ushort*)source + 8)));
        }
        else
        {
            var values = Float16Bits.Widen16(Vector256.Load((ushort*)source));
            lo = Avx512F.ConvertToVector512Double(values.GetLower());
            hi = Avx512F.ConvertToVector512Double(values.GetUpper());
        }
    }

    /// <summary>
    /// 16 values from <paramref name="source"/> as two vectors of 8 doubles, for a sum in which a value's lane does not
    /// matter: bfloat16 as its values at even places and at odd places (<see cref="BFloat16Bits.WidenPairs(Vector256{uint})"/>,
    /// no shuffle), any other type as <see cref="Load16{T}"/> gives them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadForSums16<T>(T* source, out Vector512<double> lo, out Vector512<double> hi)
        where T : unmanaged
    {
        if (typeof(T) == typeof(BFloat16))
        {
            var (even, odd) = BFloat16Bits.WidenPairs(Vector256.Load((uint*)source));
            lo = Avx512F.ConvertToVector512Double(even);
            hi = Avx512F.ConvertToVector512Double(odd);
        }
        else
        {
            Load16(source, out lo, out hi);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8(Vector512<double> lo, Vector512<double> hi, double* destination)
    {
        lo.Store(destination);
        hi.Store(destination + 8);
    }

    /// <summary>A number of steps fixed at compile time, so that each loop is compiled with exactly its registers.</summary>
    private interface IStepCount
    {
        static abstract int Count { get; }
    }

    private readonly struct OneStep : IStepCount
    {
        public static int Count => 1;
    }

    private readonly struct TwoSteps : IStepCount
    {
        public static int Count => 2;
    }

    private readonly struct ThreeRegisterSteps : IStepCount
    {
        public static int Count => 3;
    }

    private readonly struct FourSteps : IStepCount
    {
        public static int Count => 4;
    }
}
