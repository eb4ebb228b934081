using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The per-plane sums of NCHW planes of exactly 16 values (4×4), four planes at a time.
/// </summary>
/// <remarks>
/// <para>
/// Summed one by one, a 16-value plane costs a call and horizontal additions of a vector for a few vector steps of
/// arithmetic, so a 256×512×4×4 batch spends most of its statistics and backward sums on that overhead. Here each
/// plane's shifted values (or products) are added lane by lane into one vector t, and four planes' t are added across
/// at once (<see cref="IPlaneVectors{TVector}.Across"/>): with 256-bit vectors, t = (v0 + v1) + (v2 + v3) of the plane's
/// four vectors v0…v3 and each sum (t[0] + t[1]) + (t[2] + t[3]); with AVX-512, t = lo + hi of its two vectors of 8
/// doubles and each sum ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])).
/// </para>
/// <para>
/// A plane left over at the end of a chunk is summed alone in that same order, so every plane's sums are the same bits
/// wherever it falls, and, chunks depending on the shape only, whatever the thread count. The order differs from the
/// one <see cref="ShiftedSums{T}"/> uses for other plane lengths; the tests hold both to the reference.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Whether planes of <paramref name="spatial"/> values are summed here: 16 values, on AVX.</summary>
    private static bool SumsFourPlanesAtOnce(int spatial) =>
        Avx.IsSupported && Vector.IsHardwareAccelerated && Vector<double>.Count == Vector256<double>.Count && spatial == 2 * Lanes;

    /// <summary>
    /// first[p] and second[p] for planes p in [<paramref name="begin"/>, <paramref name="end"/>) of 2·Lanes values:
    /// with <paramref name="b"/> null, Σ(a − r) and Σ(a − r)²; otherwise Σa and Σa·(b − r); r the plane's channel's reference.
    /// With an active <paramref name="tail"/> (see <see cref="SmallSumsGateInLoop{T}"/>), a is the block's output
    /// gradient, and the sums are of the gated values the buffer would hold (<see cref="LaneGate{T}"/>).
    /// </summary>
    /// <remarks>
    /// <typeparamref name="TGate"/> is <see cref="Gated"/> or <see cref="Ungated"/>, so that the loop without the gate is
    /// compiled without its code: for 16-bit types, the gate's inlined code used up the JIT's inlining budget, and the
    /// loads and stores after it were left as calls. With AVX-512 a plane is two vectors of 8 doubles, otherwise four of 4.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SmallPlaneSums<T, TGate>(T* a, T* b, double* reference, int channels, int begin, int end, double* first, double* second, BlockTail tail = default)
        where T : unmanaged
    {
        if (Avx512)
        {
            SmallPlaneSums<T, TGate, PlaneVectors512, Vector512<double>>(a, b, reference, channels, begin, end, first, second, tail);
        }
        else
        {
            SmallPlaneSums<T, TGate, PlaneVectors256, Vector256<double>>(a, b, reference, channels, begin, end, first, second, tail);
        }
    }

    /// <summary><see cref="SmallPlaneSums{T, TGate}"/> with the planes' vectors of <typeparamref name="TPlane"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SmallPlaneSums<T, TGate, TPlane, TVector>(T* a, T* b, double* reference, int channels, int begin, int end, double* first, double* second, BlockTail tail)
        where T : unmanaged
        where TPlane : struct, IPlaneVectors<TVector>
    {
        const int Spatial = 16;
        T* aEnd = a + ((long)end * Spatial);
        T* bEnd = b + ((long)end * Spatial);
        int plane = begin;
        int c = begin % channels;
        for (; plane <= end - 4; plane += 4)
        {
            TVector s0, s1, s2, s3, q0, q1, q2, q3;
            (s0, q0) = TPlane.Of<T, TGate>(a, b, plane, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s1, q1) = TPlane.Of<T, TGate>(a, b, plane + 1, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s2, q2) = TPlane.Of<T, TGate>(a, b, plane + 2, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s3, q3) = TPlane.Of<T, TGate>(a, b, plane + 3, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            TPlane.Across(s0, s1, s2, s3).Store(first + plane);
            TPlane.Across(q0, q1, q2, q3).Store(second + plane);
        }

        for (; plane < end; plane++)
        {
            // A plane alone takes the same additions as in a group of four.
            (var s, var q) = TPlane.Of<T, TGate>(a, b, plane, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            first[plane] = TPlane.Across(s, s, s, s).ToScalar();
            second[plane] = TPlane.Across(q, q, q, q).ToScalar();
        }
    }

    /// <summary>
    /// Whether the backward sums over NCHW planes [<paramref name="first"/>, <paramref name="end"/>) summed here take the
    /// block's gate in their own loop: as dx does (<see cref="GradientGateInLoop{T}"/>).
    /// </summary>
    private static bool SmallSumsGateInLoop<T>(int spatial, in BlockTail tail, int channels, int first, int end)
        where T : unmanaged =>
        SumsFourPlanesAtOnce(spatial) && GradientGateInLoop<T>(spatial, tail, channels, first, end);

    /// <summary>A type argument: the loop reads the block's output gradient through its gate.</summary>
    private readonly struct Gated;

    /// <summary>A type argument: the loop reads its input as it is.</summary>
    private readonly struct Ungated;

    /// <summary>How <see cref="SmallPlaneSums{T, TGate, TPlane, TVector}"/> holds and adds a plane: a vector width.</summary>
    private interface IPlaneVectors<TVector>
    {
        /// <summary>
        /// One plane's two vectors t: of a − r and (a − r)² without <paramref name="b"/>, of a and a·(b − r) with it;
        /// a gated from the block's output gradient with <see cref="Gated"/>. Widening is exact, so gated values are
        /// those a load would give from the buffer's gated plane.
        /// </summary>
        static abstract (TVector First, TVector Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double* reference, T* aEnd, T* bEnd, in BlockTail tail)
            where T : unmanaged;

        /// <summary>The lanes of each of four planes' t added in a fixed order: the four sums, as one vector.</summary>
        static abstract Vector256<double> Across(TVector t0, TVector t1, TVector t2, TVector t3);
    }

    /// <summary>
    /// A plane as four vectors of 4 doubles v0…v3 (for bfloat16 each half's values at even and at odd places, see
    /// <see cref="LoadForSums{T}"/>), t = (v0 + v1) + (v2 + v3), summed (t[0] + t[1]) + (t[2] + t[3]).
    /// </summary>
    private readonly struct PlaneVectors256 : IPlaneVectors<Vector256<double>>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static (Vector256<double> First, Vector256<double> Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double* reference, T* aEnd, T* bEnd, in BlockTail tail)
            where T : unmanaged
        {
            long start = (long)plane * 16;
            var vr = new Vector<double>(reference[channel]);
            Prefetch.Ahead(a + start, aEnd);
            Vector<double> a0, a1, a2, a3;
            if (typeof(TGate) == typeof(Gated))
            {
                GatedLoad16(a + start, (T*)tail.Source + start, GateOf(tail, (T*)tail.Mask, plane, channel, channels), default, RegisterStep, tail.Mask is not null, out var low, out var high);
                (a0, a1, a2, a3) = (low.GetLower().AsVector(), low.GetUpper().AsVector(), high.GetLower().AsVector(), high.GetUpper().AsVector());
            }
            else
            {
                LoadForSums(ref a[start], 0, out a0, out a1);
                LoadForSums(ref a[start + Lanes], 0, out a2, out a3);
            }

            if (sizeof(T) == sizeof(double))
            {
                Prefetch.Ahead(a + start + Lanes, aEnd);
            }

            if (b == null)
            {
                a0 -= vr;
                a1 -= vr;
                a2 -= vr;
                a3 -= vr;
                var sum = (a0 + a1) + (a2 + a3);
                var squares = ((a0 * a0) + (a1 * a1)) + ((a2 * a2) + (a3 * a3));
                return (sum.AsVector256(), squares.AsVector256());
            }

            Prefetch.Ahead(b + start, bEnd);
            LoadForSums(ref b[start], 0, out var b0, out var b1);
            LoadForSums(ref b[start + Lanes], 0, out var b2, out var b3);
            if (sizeof(T) == sizeof(double))
            {
                Prefetch.Ahead(b + start + Lanes, bEnd);
            }

            var plain = (a0 + a1) + (a2 + a3);
            var products = ((a0 * (b0 - vr)) + (a1 * (b1 - vr))) + ((a2 * (b2 - vr)) + (a3 * (b3 - vr)));
            return (plain.AsVector256(), products.AsVector256());
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<double> Across(Vector256<double> t0, Vector256<double> t1, Vector256<double> t2, Vector256<double> t3)
        {
            // [t0[0]+t0[1], t1[0]+t1[1], t0[2]+t0[3], t1[2]+t1[3]] and the same for t2, t3.
            var low = Avx.HorizontalAdd(t0, t1);
            var high = Avx.HorizontalAdd(t2, t3);
            return Avx.Permute2x128(low, high, 0x20) + Avx.Permute2x128(low, high, 0x31);
        }
    }

    /// <summary>
    /// A plane as two vectors of 8 doubles, lo and hi (for bfloat16 its values at even and at odd places, see
    /// <see cref="LoadForSums16{T}"/>), t = lo + hi (the squares and products with one rounding fewer, as a fused
    /// multiply-add), summed ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])).
    /// </summary>
    private readonly struct PlaneVectors512 : IPlaneVectors<Vector512<double>>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static (Vector512<double> First, Vector512<double> Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double* reference, T* aEnd, T* bEnd, in BlockTail tail)
            where T : unmanaged
        {
            long start = (long)plane * 16;
            var vr = Vector512.Create(reference[channel]);
            Prefetch.Ahead(a + start, aEnd);
            Vector512<double> lo, hi;
            if (typeof(TGate) == typeof(Gated))
            {
                GatedLoad16(a + start, (T*)tail.Source + start, GateOf(tail, (T*)tail.Mask, plane, channel, channels), default, RegisterStep, tail.Mask is not null, out lo, out hi);
            }
            else
            {
                LoadForSums16(a + start, out lo, out hi);
            }

            if (sizeof(T) == sizeof(double))
            {
                Prefetch.Ahead(a + start + 8, aEnd);
            }

            if (b == null)
            {
                lo -= vr;
                hi -= vr;
                return (lo + hi, Avx512F.FusedMultiplyAdd(hi, hi, lo * lo));
            }

            Prefetch.Ahead(b + start, bEnd);
            LoadForSums16(b + start, out var blo, out var bhi);
            if (sizeof(T) == sizeof(double))
            {
                Prefetch.Ahead(b + start + 8, bEnd);
            }

            return (lo + hi, Avx512F.FusedMultiplyAdd(hi, bhi - vr, lo * (blo - vr)));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<double> Across(Vector512<double> t0, Vector512<double> t1, Vector512<double> t2, Vector512<double> t3)
        {
            // In each 128-bit lane k: [t0[2k] + t0[2k+1], t1[2k] + t1[2k+1]], and the same for t2, t3.
            var pairs01 = Avx512F.UnpackLow(t0, t1) + Avx512F.UnpackHigh(t0, t1);
            var pairs23 = Avx512F.UnpackLow(t2, t3) + Avx512F.UnpackHigh(t2, t3);

            // Lanes 0 + 1 and 2 + 3 of each: [t0, t1 pairs 0 + 1 | t0, t1 pairs 2 + 3 | t2, t3 pairs 0 + 1 | t2, t3 pairs 2 + 3].
            var quads = Avx512F.Shuffle4x128(pairs01, pairs23, 0b10_00_10_00) + Avx512F.Shuffle4x128(pairs01, pairs23, 0b11_01_11_01);

            // (pairs 0 + 1) + (pairs 2 + 3) of each plane, in the lower half.
            return (Avx512F.Shuffle4x128(quads, quads, 0b10_00) + Avx512F.Shuffle4x128(quads, quads, 0b11_01)).GetLower();
        }
    }
}
