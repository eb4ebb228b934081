using System;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Threading;

namespace MyTorch.Layers.Kernels;

/// <summary>The mask's Bernoulli draws, and the forward with the mask drawn while it is applied.</summary>
/// <remarks>
/// The draws are libtorch's, made from its generator's own state (see <see cref="MersenneTwister"/>): libtorch's CPU
/// <c>bernoulli_(keep)</c>, where it does not hand the draw to MKL, takes two 32-bit numbers per value, one value after
/// another in memory order, on one thread. Each value takes the next numbers of the sequence, so drawing a mask in
/// parts, in order, gives the same values and ends in the same state, and one thread can draw while the others apply
/// the parts already drawn.
/// </remarks>
internal static partial class ChannelDropoutKernels
{
    /// <summary>About this many mask values per part of a drawn mask (whole samples, at least one).</summary>
    public const int DrawPartValues = 4096;

    /// <summary>2⁵³: a draw keeps the low 53 bits of its two numbers and scales them into [0, 1).</summary>
    private const double TwoToThe53 = 9007199254740992.0;

    private const ulong Low53Bits = (1UL << 53) - 1;

    /// <summary>
    /// Bernoulli(<paramref name="keepProbability"/>) draws, each exactly 0 or 1, from <paramref name="generator"/>, as
    /// libtorch's CPU <c>bernoulli_(keep)</c> makes them: value i is 1 if uᵢ &lt; keep, uᵢ = (h·2³² + l mod 2⁵³) · 2⁻⁵³ in
    /// <see cref="double"/>, h and l the generator's next two numbers (<see cref="DrawOne{T}"/>).
    /// </summary>
    /// <remarks>
    /// The pairs of numbers that come before the generator's next regeneration are drawn from the words themselves,
    /// tempered in vectors where vectors serve (<see cref="DrawPairs{T}"/>); a pair that the regeneration splits is
    /// drawn through the generator.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static void DrawMask<T>(ref MersenneTwister generator, Span<T> mask, double keepProbability)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        int i = 0;
        while (i < mask.Length)
        {
            int pairs = Math.Min(generator.Ready / 2, mask.Length - i);
            if (pairs > 0)
            {
                DrawPairs(generator.TakeWords(2 * pairs), mask.Slice(i, pairs), keepProbability);
                i += pairs;
                continue;
            }

            mask[i++] = DrawOne<T>(ref generator, keepProbability);
        }
    }

    /// <summary>One Bernoulli(<paramref name="keepProbability"/>) draw, libtorch's: 1 if u &lt; keep, else 0 (see <see cref="DrawMask{T}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T DrawOne<T>(ref MersenneTwister generator, double keepProbability)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        ulong high = generator.NextUInt32();
        ulong low = generator.NextUInt32();
        double u = (((high << 32) | low) & Low53Bits) * (1 / TwoToThe53);
        return u < keepProbability ? T.One : T.Zero;
    }

    /// <summary>
    /// mask[j] = 1 if the pair of numbers made of words 2j and 2j + 1 draws below keep: whole vectors of mask values at a
    /// time where vectors serve, then value by value. A 64-bit lane over two words holds word 2j + 1 in its high half, so
    /// the halves are swapped to give h·2³² + l.
    /// u &lt; keep compares in integers: v · 2⁻⁵³ &lt; keep is v &lt; keep · 2⁵³ (both scalings exact), and for an integer v
    /// that is v &lt; ⌈keep · 2⁵³⌉.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void DrawPairs<T>(ReadOnlySpan<uint> words, Span<T> mask, double keepProbability)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(words.Length == 2 * mask.Length);
        long threshold = (long)Math.Ceiling(keepProbability * TwoToThe53);
        ref uint w = ref MemoryMarshal.GetReference(words);
        int j = 0;
        if (typeof(T) == typeof(float))
        {
            ref float m = ref Unsafe.As<T, float>(ref MemoryMarshal.GetReference(mask));
            if (Vector512.IsHardwareAccelerated)
            {
                // 16 values from 32 words a step; then 8 from 16 for what is left, as where vectors are 256 bits.
                var one = Vector512.Create(1f).AsInt32();
                for (; j <= mask.Length - 16; j += 16)
                {
                    var first = Kept(Vector512.LoadUnsafe(ref w, (nuint)(2 * j)), threshold);
                    var second = Kept(Vector512.LoadUnsafe(ref w, (nuint)((2 * j) + 16)), threshold);
                    (Vector512.Narrow(first, second) & one).AsSingle().StoreUnsafe(ref m, (nuint)j);
                }
            }

            var one8 = Vector256.Create(1f).AsInt32();
            for (; Vector256.IsHardwareAccelerated && j <= mask.Length - 8; j += 8)
            {
                var first = Kept(Vector256.LoadUnsafe(ref w, (nuint)(2 * j)), threshold);
                var second = Kept(Vector256.LoadUnsafe(ref w, (nuint)((2 * j) + 8)), threshold);
                (Vector256.Narrow(first, second) & one8).AsSingle().StoreUnsafe(ref m, (nuint)j);
            }
        }
        else
        {
            ref double m = ref Unsafe.As<T, double>(ref MemoryMarshal.GetReference(mask));
            if (Vector512.IsHardwareAccelerated)
            {
                var one = Vector512.Create(1d).AsInt64();
                for (; j <= mask.Length - 8; j += 8)
                {
                    (Kept(Vector512.LoadUnsafe(ref w, (nuint)(2 * j)), threshold) & one).AsDouble().StoreUnsafe(ref m, (nuint)j);
                }
            }

            var one4 = Vector256.Create(1d).AsInt64();
            for (; Vector256.IsHardwareAccelerated && j <= mask.Length - 4; j += 4)
            {
                (Kept(Vector256.LoadUnsafe(ref w, (nuint)(2 * j)), threshold) & one4).AsDouble().StoreUnsafe(ref m, (nuint)j);
            }
        }

        for (; j < mask.Length; j++)
        {
            ulong value = (((ulong)MersenneTwister.Temper(words[2 * j]) << 32) | MersenneTwister.Temper(words[(2 * j) + 1])) & Low53Bits;
            mask[j] = (long)value < threshold ? T.One : T.Zero;
        }
    }

    /// <summary>For four pairs of words: all ones where the pair's draw is below the threshold, zero elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<long> Kept(Vector256<uint> words, long threshold)
    {
        var pairs = MersenneTwister.Temper(words).AsUInt64();
        var value = ((pairs << 32) | (pairs >> 32)) & Vector256.Create(Low53Bits);
        return Vector256.LessThan(value.AsInt64(), Vector256.Create(threshold));
    }

    /// <summary><see cref="Kept(Vector256{uint}, long)"/> for eight pairs of words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<long> Kept(Vector512<uint> words, long threshold)
    {
        var pairs = MersenneTwister.Temper(words).AsUInt64();
        var value = ((pairs << 32) | (pairs >> 32)) & Vector512.Create(Low53Bits);
        return Vector512.LessThan(value.AsInt64(), Vector512.Create(threshold));
    }

    /// <summary>
    /// Whether <see cref="DrawAndApplyMask{T}"/> pays for <paramref name="layout"/> on <paramref name="threads"/> threads:
    /// the mask has at least two parts and the input is large enough for the kernels to use more than one thread.
    /// </summary>
    public static bool DrawWhileApplying(PlaneLayout layout, int threads) =>
        threads > 1
        && ChunkScheduler.ThreadsFor(layout.Length, threads) > 1
        && (long)layout.Batch * layout.Channels >= 2 * DrawPartValues
        && layout.Batch >= 2;

    /// <summary>
    /// Draws the mask and applies it: one thread fills the mask part by part, whole samples in order, as
    /// <see cref="DrawMask{T}"/> would fill it at once, and scales each part as <see cref="ScaleMask{T}"/> does;
    /// meanwhile the other threads compute y[n, c, s] = x[n, c, s] · mask[n·C + c], as <see cref="ApplyMask{T}"/> does,
    /// over the chunks whose samples are drawn, in memory order. The mask, y and the generator's state afterwards are what
    /// <see cref="DrawMask{T}"/>, <see cref="ScaleMask{T}"/> and <see cref="ApplyMask{T}"/> give, bit for bit.
    /// <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    public static unsafe void DrawAndApplyMask<T>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        Span<T> mask,
        double keepProbability,
        ref MersenneTwister generator,
        int threads,
        bool? streamingStores = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels && keepProbability > 0 && keepProbability <= 1);
        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pm = mask)
        fixed (MersenneTwister* pg = &generator)
        {
            var apply = ApplyMaskJob<T>.For(px, py, pm, layout, streamingStores);
            var job = new DrawAndApplyJob<ApplyMaskJob<T>, T, MaskDrawing<T>>(apply, apply.Units, apply.UnitsPerChunk, layout, pg, pm, keepProbability);

            // Piece 0 draws; each of the others applies the next chunk of the input whose samples are drawn.
            ChunkScheduler.Run(ref job, 1 + job.Chunks, threads);
        }
    }

    /// <summary>How a part of a mask is drawn and scaled, for <see cref="DrawAndApplyJob{TApply, TElement, TDrawing}"/>.</summary>
    private interface IMaskDrawing<TElement>
        where TElement : unmanaged
    {
        /// <summary>Draws <paramref name="part"/>, the next values in the generator's order, and scales them.</summary>
        static abstract void DrawAndScale(ref MersenneTwister generator, Span<TElement> part, double keep);
    }

    /// <summary>A float32 or float64 mask, as <see cref="DrawMask{T}"/> and <see cref="ScaleMask{T}"/> make it.</summary>
    private readonly struct MaskDrawing<T> : IMaskDrawing<T>
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public static void DrawAndScale(ref MersenneTwister generator, Span<T> part, double keep)
        {
            DrawMask(ref generator, part, keep);
            ScaleMask(part, keep);
        }
    }

    /// <summary>
    /// Piece 0 draws the mask part by part, whole samples at a time, and publishes how many samples are drawn; each of
    /// the other pieces, one per chunk of the apply job, claims the next chunk in order and waits for its samples.
    /// </summary>
    private unsafe struct DrawAndApplyJob<TApply, TElement, TDrawing> : IChunkJob
        where TApply : struct, IChunkJob
        where TElement : unmanaged
        where TDrawing : struct, IMaskDrawing<TElement>
    {
        private readonly TApply _apply;
        private readonly int _units;
        private readonly int _unitsPerChunk;
        private readonly MersenneTwister* _generator;
        private readonly TElement* _mask;
        private readonly double _keep;
        private readonly int _batch;
        private readonly int _channels;
        private readonly int _samplesPerPart;
        private readonly int _unitsPerSample;

        /// <summary>Samples whose mask values are drawn and scaled, published after their values.</summary>
        private int _drawnSamples;

        /// <summary>The next chunk of the apply job to claim.</summary>
        private int _nextChunk;

        /// <summary>
        /// <paramref name="apply"/>'s <paramref name="units"/> (planes in NCHW, rows in NHWC), <paramref name="unitsPerChunk"/>
        /// to a chunk, over <paramref name="layout"/>, with the mask at <paramref name="mask"/> drawn from <paramref name="generator"/>.
        /// </summary>
        public DrawAndApplyJob(TApply apply, int units, int unitsPerChunk, PlaneLayout layout, MersenneTwister* generator, TElement* mask, double keep)
        {
            _apply = apply;
            _units = units;
            _unitsPerChunk = unitsPerChunk;
            _generator = generator;
            _mask = mask;
            _keep = keep;
            _batch = layout.Batch;
            _channels = layout.Channels;
            _samplesPerPart = Math.Max(1, DrawPartValues / Math.Max(1, layout.Channels));
            _unitsPerSample = layout.ChannelsLast ? layout.Spatial : layout.Channels;
        }

        /// <summary>The chunks of the apply job.</summary>
        public readonly int Chunks => _units == 0 ? 0 : ChunkScheduler.ChunkCount(_units, _unitsPerChunk);

        public void Run(int chunk)
        {
            if (chunk == 0)
            {
                for (int first = 0; first < _batch; first += _samplesPerPart)
                {
                    int samples = Math.Min(_samplesPerPart, _batch - first);
                    TDrawing.DrawAndScale(ref *_generator, new Span<TElement>(_mask + ((long)first * _channels), samples * _channels), _keep);
                    Volatile.Write(ref _drawnSamples, first + samples);
                }

                return;
            }

            // Pieces may run in any order on any thread; chunks are claimed in memory order, so each waits for the least.
            int claimed = Interlocked.Increment(ref _nextChunk) - 1;
            int lastUnit = Math.Min(_units, (claimed + 1) * _unitsPerChunk) - 1;
            int needed = (lastUnit / _unitsPerSample) + 1;
            var spin = default(SpinWait);
            while (Volatile.Read(ref _drawnSamples) < needed)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            _apply.Run(claimed);
        }
    }

    /// <summary>
    /// A mask drawn and scaled as <see cref="DrawMask{T}"/> and <see cref="ScaleMask{T}"/> make it, as one piece of work
    /// (<see cref="SidePiece"/>) that runs beside another kernel's chunks: the fused block's forward draws its dropout
    /// mask while its statistics are summed, which do not need it.
    /// </summary>
    public unsafe struct MaskDraw<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        private readonly MersenneTwister* _generator;
        private readonly T* _mask;
        private readonly int _length;
        private readonly double _keep;

        /// <summary>The draw into <paramref name="length"/> values at <paramref name="mask"/>, from <paramref name="generator"/>; keep in (0, 1].</summary>
        public MaskDraw(MersenneTwister* generator, T* mask, int length, double keep)
        {
            _generator = generator;
            _mask = mask;
            _length = length;
            _keep = keep;
        }

        /// <summary>Draws and scales the whole mask, whatever the piece.</summary>
        public readonly void Run(int chunk)
        {
            MaskDrawing<T>.DrawAndScale(ref *_generator, new Span<T>(_mask, _length), _keep);
        }
    }
}
