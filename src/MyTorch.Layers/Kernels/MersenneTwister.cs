using System;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The 32-bit Mersenne Twister, MT19937 (Matsumoto and Nishimura, 1998), the engine of libtorch's CPU generator, with
/// libtorch's own count of where it is in its 624 words (<see cref="Left"/>, <see cref="Next"/>): started from a state
/// read off a generator it gives the numbers that generator would give, and ends in the state the generator would be in.
/// </summary>
/// <remarks>
/// Each number is word <see cref="Next"/>, tempered, after which <see cref="Next"/> moves on. <see cref="Left"/> is
/// decremented before each number; when it reaches 0 all 624 words are regenerated and the count starts again at word
/// 0 with <see cref="Left"/> = 624. A freshly seeded engine has <see cref="Left"/> = 1, so its first number regenerates.
/// </remarks>
internal struct MersenneTwister
{
    /// <summary>Words of state (n).</summary>
    public const int StateWords = 624;

    /// <summary>The offset of the word each regenerated word is mixed with (m).</summary>
    private const int Middle = 397;

    private const uint MatrixA = 0x9908b0df;

    private const uint UpperBit = 0x80000000;

    private const uint LowerBits = 0x7fffffff;

    private Words _words;

    /// <summary>Numbers until the words are regenerated, counting the one that regenerates them; 1 to 624.</summary>
    public int Left;

    /// <summary>The word the next number is made from, unless that number regenerates the words first.</summary>
    public int Next;

    /// <summary>The engine in the state given: 624 words and libtorch's two counters.</summary>
    public MersenneTwister(ReadOnlySpan<uint> words, int left, int next)
    {
        Debug.Assert(words.Length == StateWords && IsUsable(left, next));
        words.CopyTo(_words);
        Left = left;
        Next = next;
    }

    /// <summary>
    /// Whether counters read off a generator can be run: every number made before the next regeneration reads a word
    /// that exists (libtorch itself checks only 1 ≤ left ≤ 624 and next ≤ 624).
    /// </summary>
    public static bool IsUsable(long left, long next) => left is >= 1 and <= StateWords && next >= 0 && next + left <= StateWords + 1;

    /// <summary>Copies the 624 words out, for the generator to take back.</summary>
    public readonly void CopyWordsTo(Span<uint> destination) => ((ReadOnlySpan<uint>)_words).CopyTo(destination);

    /// <summary>Numbers the engine gives before its words are regenerated: <see cref="Left"/> − 1.</summary>
    public readonly int Ready => Left - 1;

    /// <summary>The next 32-bit number.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint NextUInt32()
    {
        if (--Left == 0)
        {
            Regenerate();
        }

        return Temper(_words[Next++]);
    }

    /// <summary>
    /// The words of the next <paramref name="count"/> numbers, at most <see cref="Ready"/>, not yet tempered (number i is
    /// <see cref="Temper(uint)"/> of word i); the engine moves past them.
    /// </summary>
    [UnscopedRef]
    public ReadOnlySpan<uint> TakeWords(int count)
    {
        Debug.Assert(count >= 0 && count <= Ready);
        ReadOnlySpan<uint> words = ((ReadOnlySpan<uint>)_words).Slice(Next, count);
        Next += count;
        Left -= count;
        return words;
    }

    /// <summary>MT19937's tempering, which makes a number of a word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Temper(uint y)
    {
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        return y ^ (y >> 18);
    }

    /// <summary><see cref="Temper(uint)"/> of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Temper(Vector256<uint> y)
    {
        y ^= y >> 11;
        y ^= (y << 7) & Vector256.Create(0x9d2c5680u);
        y ^= (y << 15) & Vector256.Create(0xefc60000u);
        return y ^ (y >> 18);
    }

    /// <summary><see cref="Temper(uint)"/> of each lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Temper(Vector512<uint> y)
    {
        y ^= y >> 11;
        y ^= (y << 7) & Vector512.Create(0x9d2c5680u);
        y ^= (y << 15) & Vector512.Create(0xefc60000u);
        return y ^ (y >> 18);
    }

    /// <summary>
    /// Word k becomes word k + m (mod n) xor the twist of the top bit of word k and the low 31 bits of word k + 1;
    /// words are replaced in order, so from k = n − m on, word k + m − n is already a new one. Sixteen or eight words at
    /// a time where vectors serve: each of sixteen consecutive words depends only on words that are either not yet
    /// replaced (k + 1 and up) or replaced at least n − m = 227 words before.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private void Regenerate()
    {
        Span<uint> w = _words;
        ref uint w0 = ref MemoryMarshal.GetReference(w);
        int k = 0;
        Mix(ref w0, ref k, StateWords - Middle, Middle);
        Mix(ref w0, ref k, StateWords - 1, Middle - StateWords);
        w[StateWords - 1] = w[Middle - 1] ^ Twist(w[StateWords - 1], w[0]);
        Left = StateWords;
        Next = 0;
    }

    /// <summary>
    /// Words k up to <paramref name="end"/> become word k + <paramref name="offset"/> xor the twist of words k and k + 1,
    /// as many as vectors take at a time (see <see cref="Regenerate"/>), the rest one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Mix(ref uint w0, ref int k, int end, int offset)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            for (; k <= end - Vector512<uint>.Count; k += Vector512<uint>.Count)
            {
                var mixed = Vector512.LoadUnsafe(ref w0, (nuint)(k + offset)) ^ Twist(Vector512.LoadUnsafe(ref w0, (nuint)k), Vector512.LoadUnsafe(ref w0, (nuint)(k + 1)));
                mixed.StoreUnsafe(ref w0, (nuint)k);
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            for (; k <= end - Vector256<uint>.Count; k += Vector256<uint>.Count)
            {
                var mixed = Vector256.LoadUnsafe(ref w0, (nuint)(k + offset)) ^ Twist(Vector256.LoadUnsafe(ref w0, (nuint)k), Vector256.LoadUnsafe(ref w0, (nuint)(k + 1)));
                mixed.StoreUnsafe(ref w0, (nuint)k);
            }
        }

        for (; k < end; k++)
        {
            Unsafe.Add(ref w0, k) = Unsafe.Add(ref w0, k + offset) ^ Twist(Unsafe.Add(ref w0, k), Unsafe.Add(ref w0, k + 1));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Twist(uint upper, uint lower) =>
        (((upper & UpperBit) | (lower & LowerBits)) >> 1) ^ ((lower & 1) != 0 ? MatrixA : 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Twist(Vector256<uint> upper, Vector256<uint> lower) =>
        (((upper & Vector256.Create(UpperBit)) | (lower & Vector256.Create(LowerBits))) >> 1)
        ^ ((Vector256<uint>.Zero - (lower & Vector256<uint>.One)) & Vector256.Create(MatrixA));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> Twist(Vector512<uint> upper, Vector512<uint> lower) =>
        (((upper & Vector512.Create(UpperBit)) | (lower & Vector512.Create(LowerBits))) >> 1)
        ^ ((Vector512<uint>.Zero - (lower & Vector512<uint>.One)) & Vector512.Create(MatrixA));

    [InlineArray(StateWords)]
    private struct Words
    {
        private uint _word;
    }
}
