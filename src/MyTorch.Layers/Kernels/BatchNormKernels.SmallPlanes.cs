using System;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The per-channel sums of NCHW planes of exactly 16 values (4×4), taken in columns: four channels at a time, down a
/// group of up to <see cref="SmallPlaneGroup"/> samples.
/// </summary>
/// <remarks>
/// <para>
/// Summed one by one, a 16-value plane costs a horizontal addition of a vector for a few vector steps of arithmetic,
/// so a 256×512×4×4 batch spent most of its statistics and backward sums on that overhead, even with four planes
/// added across at once. Here each plane's shifted values (or products) are added lane by lane into one vector t, the
/// t of a channel's planes in the group are added lane by lane in sample order, and four channels' vectors are then
/// added across at once (<see cref="IPlaneVectors{TVector}.Across"/>): with 256-bit vectors, t = (v0 + v1) + (v2 + v3)
/// of the plane's four vectors v0…v3 and each sum (t[0] + t[1]) + (t[2] + t[3]); with AVX-512, t = lo + hi of its two
/// vectors of 8 doubles and each sum ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])).
/// </para>
/// <para>
/// A unit of work is one group and four channels, a row's last channels fewer (the row's last channel read again in
/// place of the missing ones, their results not stored); each channel's sums are its own lanes' whatever its place
/// among the four, and each group's sums come whole from one unit, so they are the same bits for any thread count.
/// The groups' sums are then added in group order. The order differs from the one <see cref="ShiftedSums{T}"/> uses for
/// other plane lengths; the tests hold both to the reference.
/// </para>
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>The samples a column of 4×4 planes goes down before its sums are added across: one horizontal addition per 8 planes.</summary>
    private const int SmallPlaneGroup = 8;

    /// <summary>Whether planes of <paramref name="spatial"/> values are summed here: 16 values, on AVX.</summary>
    private static bool SumsSmallPlanesInColumns(int spatial) =>
        Avx.IsSupported && Vector.IsHardwareAccelerated && Vector<double>.Count == Vector256<double>.Count && spatial == 2 * Lanes;

    /// <summary>The groups of <see cref="SmallPlaneGroup"/> samples (the last one fewer) of a batch of <paramref name="batch"/>.</summary>
    private static int SmallPlaneGroups(int batch) => (batch + SmallPlaneGroup - 1) / SmallPlaneGroup;

    /// <summary>
    /// The sums of NCHW planes of 16 values by group and channel: for group g and channel c, first[g·C + c] and
    /// second[g·C + c] over the group's samples, with <see cref="B"/> null Σ(a − r) and Σ(a − r)², otherwise Σa and
    /// Σa·(b − r), r the channel's reference. With an active tail, a is the block's output gradient through its gate
    /// (<see cref="LaneGate{T}"/>), as the buffer would hold it.
    /// </summary>
    private struct SmallPlaneColumnsJob<T> : IChunkJob
        where T : unmanaged
    {
        public T* A;
        public T* B;
        public double* Reference;
        public double* First;
        public double* Second;
        public int Batch;
        public int Channels;
        public BlockTail Tail;

        /// <summary>Units of work: a group of samples and four channels (a row's last channels fewer).</summary>
        public readonly int Units => SmallPlaneGroups(Batch) * Quads;

        /// <summary>Units per chunk: about <see cref="ChunkScheduler.ChunkElements"/> values each.</summary>
        public static int UnitsPerChunk => ChunkScheduler.UnitsPerChunk(SmallPlaneGroup * 4 * 16);

        private readonly int Quads => (Channels + 3) / 4;

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public readonly void Run(int chunk)
        {
            int end = Math.Min(Units, (chunk + 1) * UnitsPerChunk);
            for (int unit = chunk * UnitsPerChunk; unit < end; unit++)
            {
                int group = unit / Quads;
                var column = new SmallPlaneColumn(group * SmallPlaneGroup, Math.Min(SmallPlaneGroup, Batch - (group * SmallPlaneGroup)), (unit % Quads) * 4, Channels);
                double* first = First + ((long)group * Channels);
                double* second = Second + ((long)group * Channels);
                if (!Tail.Active)
                {
                    SmallPlaneColumnSums<T, Ungated>(A, column.Row, B, column, Reference, first, second, default);
                }
                else if (SmallSumsGateInLoop<T>(16, Tail, Channels, column.Channel, column.Channel + column.Count))
                {
                    SmallPlaneColumnSums<T, Gated>((T*)Tail.GradOutput, column.Row, B, column, Reference, first, second, Tail);
                }
                else
                {
                    // The column's dy, made by the tail in a buffer that stays in cache, one row of four planes per
                    // sample; GatePlanes writes plane p at p·16 from the pointer it is given.
                    T* buffer = BlockKernels.ChunkScratch<T>(0, SmallPlaneGroup * 4 * 16);
                    for (int i = 0; i < column.Samples; i++)
                    {
                        int plane = column.Plane(i, 0);
                        BlockKernels.GatePlanes(buffer + (((long)i * 4 * 16) - ((long)plane * 16)), 16, Channels, plane, plane + column.Count, Tail);
                    }

                    SmallPlaneColumnSums<T, Ungated>(buffer - ((long)column.Plane(0, 0) * 16), 4 * 16, B, column, Reference, first, second, default);
                }
            }
        }
    }

    /// <summary>
    /// A unit of <see cref="SmallPlaneColumnsJob{T}"/>: <see cref="Samples"/> samples from <see cref="Sample"/>, and
    /// <see cref="Count"/> channels (1 to 4) from <see cref="Channel"/>, of a tensor of <see cref="Channels"/> channels.
    /// </summary>
    private readonly record struct SmallPlaneColumn(int Sample, int Samples, int Channel, int Channels)
    {
        public int Count => Math.Min(4, Channels - Channel);

        /// <summary>Values between one sample's planes and the next's, in the tensor.</summary>
        public long Row => (long)Channels * 16;

        /// <summary>The tensor's plane of the unit's sample <paramref name="i"/> and channel <paramref name="j"/> (a missing channel as the last).</summary>
        public int Plane(int i, int j) => ((Sample + i) * Channels) + Channel + Math.Min(j, Count - 1);
    }

    /// <summary>
    /// The sums of one column: a's plane of sample i and channel j at a + (column's first plane)·16 + i·<paramref name="aRow"/>
    /// + j·16 (<paramref name="aRow"/> the column's <see cref="SmallPlaneColumn.Row"/> where a is the tensor), b's as in
    /// the tensor; sums stored at first[c] and second[c] for the column's channels c.
    /// </summary>
    /// <remarks>
    /// <typeparamref name="TGate"/> is <see cref="Gated"/> or <see cref="Ungated"/>, so that the loop without the gate is
    /// compiled without its code: for 16-bit types, the gate's inlined code used up the JIT's inlining budget, and the
    /// loads and stores after it were left as calls. With AVX-512 a plane is two vectors of 8 doubles, otherwise four of 4.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SmallPlaneColumnSums<T, TGate>(T* a, long aRow, T* b, SmallPlaneColumn column, double* reference, double* first, double* second, BlockTail tail)
        where T : unmanaged
    {
        if (Avx512)
        {
            SmallPlaneColumnSums<T, TGate, PlaneVectors512, Vector512<double>>(a, aRow, b, column, reference, first, second, tail);
        }
        else
        {
            SmallPlaneColumnSums<T, TGate, PlaneVectors256, Vector256<double>>(a, aRow, b, column, reference, first, second, tail);
        }
    }

    /// <summary><see cref="SmallPlaneColumnSums{T, TGate}"/> with the planes' vectors of <typeparamref name="TPlane"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void SmallPlaneColumnSums<T, TGate, TPlane, TVector>(T* a, long aRow, T* b, SmallPlaneColumn column, double* reference, double* first, double* second, BlockTail tail)
        where T : unmanaged
        where TPlane : struct, IPlaneVectors<TVector>
        where TVector : struct
    {
        int channels = column.Channels;
        int last = column.Count - 1;
        int c0 = column.Channel, c1 = c0 + Math.Min(1, last), c2 = c0 + Math.Min(2, last), c3 = c0 + Math.Min(3, last);
        double r0 = reference[c0], r1 = reference[c1], r2 = reference[c2], r3 = reference[c3];
        long firstPlane = column.Plane(0, 0);
        T* aPlanes = a + (firstPlane * 16);
        T* bPlanes = b == null ? null : b + (firstPlane * 16);
        long bRow = column.Row;
        bool aInTensor = aRow == column.Row;
        TVector s0 = default, s1 = default, s2 = default, s3 = default, q0 = default, q1 = default, q2 = default, q3 = default;
        for (int i = 0; i < column.Samples; i++)
        {
            T* ai = aPlanes + (i * aRow);
            T* bi = b == null ? null : bPlanes + (i * bRow);
            int plane = column.Plane(i, 0);

            // A sample's row is read unit after unit, four planes at a time: ahead along each row read from the tensor,
            // up to the row's end.
            int rest = (channels - c0) * 16;
            for (int line = 0; line < 4 * 16 * sizeof(T); line += CacheLine.Bytes)
            {
                if (aInTensor)
                {
                    Prefetch.Ahead((byte*)ai + line, ai + rest);
                }

                if (b != null)
                {
                    Prefetch.Ahead((byte*)bi + line, bi + rest);
                }
            }

            TPlane.Add(ref s0, ref q0, TPlane.Of<T, TGate>(ai, bi, plane, c0, channels, r0, tail));
            TPlane.Add(ref s1, ref q1, TPlane.Of<T, TGate>(ai + ((c1 - c0) * 16), b == null ? null : bi + ((c1 - c0) * 16), plane + (c1 - c0), c1, channels, r1, tail));
            TPlane.Add(ref s2, ref q2, TPlane.Of<T, TGate>(ai + ((c2 - c0) * 16), b == null ? null : bi + ((c2 - c0) * 16), plane + (c2 - c0), c2, channels, r2, tail));
            TPlane.Add(ref s3, ref q3, TPlane.Of<T, TGate>(ai + ((c3 - c0) * 16), b == null ? null : bi + ((c3 - c0) * 16), plane + (c3 - c0), c3, channels, r3, tail));
        }

        var sums = TPlane.Across(s0, s1, s2, s3);
        var seconds = TPlane.Across(q0, q1, q2, q3);
        if (last == 3)
        {
            sums.Store(first + c0);
            seconds.Store(second + c0);
            return;
        }

        for (int j = 0; j <= last; j++)
        {
            first[c0 + j] = sums.GetElement(j);
            second[c0 + j] = seconds.GetElement(j);
        }
    }

    /// <summary>
    /// Whether the backward sums over NCHW planes [<paramref name="first"/>, <paramref name="end"/>) summed here take the
    /// block's gate in their own loop: as dx does (<see cref="GradientGateInLoop{T}"/>). A column passes its channels as
    /// the planes of sample 0: only the planes' channels matter.
    /// </summary>
    private static bool SmallSumsGateInLoop<T>(int spatial, in BlockTail tail, int channels, int first, int end)
        where T : unmanaged =>
        SumsSmallPlanesInColumns(spatial) && GradientGateInLoop<T>(spatial, tail, channels, first, end);

    /// <summary>A type argument: the loop reads the block's output gradient through its gate.</summary>
    private readonly struct Gated;

    /// <summary>A type argument: the loop reads its input as it is.</summary>
    private readonly struct Ungated;

    /// <summary>How <see cref="SmallPlaneColumnSums{T, TGate, TPlane, TVector}"/> holds and adds a plane: a vector width.</summary>
    private interface IPlaneVectors<TVector>
    {
        /// <summary>
        /// The two vectors t of the plane at <paramref name="a"/> (and <paramref name="b"/>): of a − r and (a − r)² without
        /// b, of a and a·(b − r) with it; a gated from the block's output gradient with <see cref="Gated"/>, the gate
        /// that of the tensor's plane <paramref name="plane"/>. Widening is exact, so gated values are those a load would
        /// give from the buffer's gated plane.
        /// </summary>
        static abstract (TVector First, TVector Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double r, in BlockTail tail)
            where T : unmanaged;

        /// <summary>s += t.First and q += t.Second, lane by lane.</summary>
        static abstract void Add(ref TVector s, ref TVector q, (TVector First, TVector Second) t);

        /// <summary>The lanes of each of four vectors added in a fixed order: the four sums, as one vector.</summary>
        static abstract Vector256<double> Across(TVector t0, TVector t1, TVector t2, TVector t3);
    }

    /// <summary>
    /// A plane as four vectors of 4 doubles v0…v3 (for bfloat16 each half's values at even and at odd places, see
    /// <see cref="LoadForSums{T}"/>), t = (v0 + v1) + (v2 + v3), summed (t[0] + t[1]) + (t[2] + t[3]).
    /// </summary>
    private readonly struct PlaneVectors256 : IPlaneVectors<Vector256<double>>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static (Vector256<double> First, Vector256<double> Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double r, in BlockTail tail)
            where T : unmanaged
        {
            var vr = new Vector<double>(r);
            Vector<double> a0, a1, a2, a3;
            if (typeof(TGate) == typeof(Gated))
            {
                GatedLoad16(a, (T*)tail.Source + ((long)plane * 16), GateOf(tail, (T*)tail.Mask, plane, channel, channels), default, RegisterStep, tail.Mask is not null, out var low, out var high);
                (a0, a1, a2, a3) = (low.GetLower().AsVector(), low.GetUpper().AsVector(), high.GetLower().AsVector(), high.GetUpper().AsVector());
            }
            else
            {
                LoadForSums(ref *a, 0, out a0, out a1);
                LoadForSums(ref *a, (nuint)Lanes, out a2, out a3);
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

            LoadForSums(ref *b, 0, out var b0, out var b1);
            LoadForSums(ref *b, (nuint)Lanes, out var b2, out var b3);
            var plain = (a0 + a1) + (a2 + a3);
            var products = ((a0 * (b0 - vr)) + (a1 * (b1 - vr))) + ((a2 * (b2 - vr)) + (a3 * (b3 - vr)));
            return (plain.AsVector256(), products.AsVector256());
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Add(ref Vector256<double> s, ref Vector256<double> q, (Vector256<double> First, Vector256<double> Second) t)
        {
            s += t.First;
            q += t.Second;
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
        public static (Vector512<double> First, Vector512<double> Second) Of<T, TGate>(T* a, T* b, int plane, int channel, int channels, double r, in BlockTail tail)
            where T : unmanaged
        {
            var vr = Vector512.Create(r);
            Vector512<double> lo, hi;
            if (typeof(TGate) == typeof(Gated))
            {
                GatedLoad16(a, (T*)tail.Source + ((long)plane * 16), GateOf(tail, (T*)tail.Mask, plane, channel, channels), default, RegisterStep, tail.Mask is not null, out lo, out hi);
            }
            else
            {
                LoadForSums16(a, out lo, out hi);
            }

            if (b == null)
            {
                lo -= vr;
                hi -= vr;
                return (lo + hi, Avx512F.FusedMultiplyAdd(hi, hi, lo * lo));
            }

            LoadForSums16(b, out var blo, out var bhi);
            return (lo + hi, Avx512F.FusedMultiplyAdd(hi, bhi - vr, lo * (blo - vr)));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Add(ref Vector512<double> s, ref Vector512<double> q, (Vector512<double> First, Vector512<double> Second) t)
        {
            s += t.First;
            q += t.Second;
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
