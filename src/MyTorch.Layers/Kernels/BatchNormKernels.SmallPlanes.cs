using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The per-plane sums of NCHW planes of exactly two vector steps (4×4 = 16 values with 256-bit vectors), four
/// planes at a time.
/// </summary>
/// <remarks>
/// <para>
/// Summed one by one, a 16-value plane costs a call and two horizontal additions of a vector for two vector steps of
/// arithmetic, so a 256×512×4×4 batch spends most of its statistics and backward sums on that overhead. Here each
/// plane's four vectors v0…v3 of shifted values (or products) are added as (v0 + v1) + (v2 + v3), giving a vector t,
/// and four planes' t are added across at once: t0 + t1 and t2 + t3 lane by lane pairs (one horizontal add for two
/// planes), then the halves, so that each plane's sum is (t[0] + t[1]) + (t[2] + t[3]).
/// </para>
/// <para>
/// A plane left over at the end of a chunk is summed alone in that same order, so every plane's sums are the same bits
/// wherever it falls, and, chunks depending on the shape only, whatever the thread count. The order differs from the
/// one <see cref="ShiftedSums{T}"/> uses for other plane lengths; the tests hold both to the reference.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Whether planes of <paramref name="spatial"/> values are summed here: two steps of 256-bit vectors, on AVX.</summary>
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
    /// loads and stores after it were left as calls.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SmallPlaneSums<T, TGate>(T* a, T* b, double* reference, int channels, int begin, int end, double* first, double* second, BlockTail tail = default)
        where T : unmanaged
    {
        const int Spatial = 16;
        T* aEnd = a + ((long)end * Spatial);
        T* bEnd = b + ((long)end * Spatial);
        int plane = begin;
        int c = begin % channels;
        for (; plane <= end - 4; plane += 4)
        {
            Vector256<double> s0, s1, s2, s3, q0, q1, q2, q3;
            (s0, q0) = PlaneVectors<T, TGate>(a, b, plane, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s1, q1) = PlaneVectors<T, TGate>(a, b, plane + 1, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s2, q2) = PlaneVectors<T, TGate>(a, b, plane + 2, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            (s3, q3) = PlaneVectors<T, TGate>(a, b, plane + 3, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            Across(s0, s1, s2, s3).Store(first + plane);
            Across(q0, q1, q2, q3).Store(second + plane);
        }

        for (; plane < end; plane++)
        {
            (var s, var q) = PlaneVectors<T, TGate>(a, b, plane, c, channels, reference, aEnd, bEnd, tail);
            c = c + 1 == channels ? 0 : c + 1;
            first[plane] = (s[0] + s[1]) + (s[2] + s[3]);
            second[plane] = (q[0] + q[1]) + (q[2] + q[3]);
        }
    }

    /// <summary>
    /// Whether the backward sums over NCHW planes [<paramref name="first"/>, <paramref name="end"/>) summed here take the
    /// block's gate in their own loop: as dx does (<see cref="GradientGateInLoop{T}"/>).
    /// </summary>
    private static bool SmallSumsGateInLoop<T>(int spatial, in BlockTail tail, int channels, int first, int end)
        where T : unmanaged =>
        SumsFourPlanesAtOnce(spatial) && GradientGateInLoop<T>(spatial, tail, channels, first, end);

    /// <summary>
    /// One plane's two vectors t (see the remarks): of a − r and (a − r)² without <paramref name="b"/>, of a and
    /// a·(b − r) with it; a gated from the block's output gradient with an active <paramref name="tail"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<double> First, Vector256<double> Second) PlaneVectors<T, TGate>(T* a, T* b, int plane, int channel, int channels, double* reference, T* aEnd, T* bEnd, in BlockTail tail)
        where T : unmanaged
    {
        long start = (long)plane * 16;
        var vr = new Vector<double>(reference[channel]);
        Prefetch.Ahead(a + start, aEnd);
        Vector<double> a0, a1, a2, a3;
        if (typeof(TGate) == typeof(Gated))
        {
            // Widening is exact, so these are the values Load would give from the buffer's gated plane.
            GatedLoad16(a + start, (T*)tail.Source + start, GateOf(tail, (T*)tail.Mask, plane, channel, channels), default, RegisterStep, tail.Mask is not null, out var low, out var high);
            (a0, a1, a2, a3) = (low.GetLower().AsVector(), low.GetUpper().AsVector(), high.GetLower().AsVector(), high.GetUpper().AsVector());
        }
        else
        {
            Load(a + start, out a0, out a1);
            Load(a + start + Lanes, out a2, out a3);
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
        Load(b + start, out var b0, out var b1);
        Load(b + start + Lanes, out var b2, out var b3);
        if (sizeof(T) == sizeof(double))
        {
            Prefetch.Ahead(b + start + Lanes, bEnd);
        }

        var plain = (a0 + a1) + (a2 + a3);
        var products = ((a0 * (b0 - vr)) + (a1 * (b1 - vr))) + ((a2 * (b2 - vr)) + (a3 * (b3 - vr)));
        return (plain.AsVector256(), products.AsVector256());
    }

    /// <summary>A type argument: the loop reads the block's output gradient through its gate.</summary>
    private readonly struct Gated;

    /// <summary>A type argument: the loop reads its input as it is.</summary>
    private readonly struct Ungated;

    /// <summary>(t[0] + t[1]) + (t[2] + t[3]) of each of four vectors, as one vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<double> Across(Vector256<double> t0, Vector256<double> t1, Vector256<double> t2, Vector256<double> t3)
    {
        // [t0[0]+t0[1], t1[0]+t1[1], t0[2]+t0[3], t1[2]+t1[3]] and the same for t2, t3.
        var low = Avx.HorizontalAdd(t0, t1);
        var high = Avx.HorizontalAdd(t2, t3);
        return Avx.Permute2x128(low, high, 0x20) + Avx.Permute2x128(low, high, 0x31);
    }
}
