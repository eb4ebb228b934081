using System;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Threading;
using MyTorch.Layers.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// A CPU generator's state as the kernels' <see cref="MersenneTwister"/>: read with <c>get_state</c>, run by the
/// kernels, written back with <c>set_state</c>, so that the kernels make libtorch's own draws and leave the generator
/// where libtorch would.
/// </summary>
/// <remarks>
/// <para>
/// The state is libtorch's <c>CPUGeneratorImplState</c>, 5,056 bytes: the initial seed (8 bytes), the engine's
/// <c>left</c> and <c>seeded</c> (4 each), <c>next</c> (8), the 624 words of the Mersenne Twister (8 bytes each, the
/// value in the low 4), then the cached normal samples, which the draws neither read nor change.
/// </para>
/// <para>
/// This holds only where libtorch draws with that engine. libtorch built with MKL can instead seed an MKL stream from
/// one number of the generator in <c>bernoulli_(p)</c> (its source does so on Intel processors that its cpuinfo
/// recognises; on a 2-core Intel Xeon virtual machine libtorch 2.10 drew from the engine), and then its values are not
/// the engine's. Hence <see cref="TryRead"/> works only after a first draw made both ways, from two generators with the
/// same seed, has given the same values and the same state (<see cref="Works"/>); otherwise the caller draws with
/// libtorch's <c>bernoulli_</c>, in one call.
/// </para>
/// <para>
/// libtorch takes a generator's lock for each of its operations; reading, running and writing back the state is three
/// steps, which <see cref="Gate"/> makes one for MyTorch.Layers' draws. A libtorch operation on another thread that
/// draws from the same generator between the read and the write is not seen by it, and its numbers are drawn again.
/// </para>
/// </remarks>
internal static class GeneratorState
{
    /// <summary>Bytes of libtorch's CPU generator state.</summary>
    private const int StateBytes = 5056;

    private const int LeftOffset = 8;
    private const int SeededOffset = 12;
    private const int NextOffset = 16;
    private const int WordsOffset = 24;

    /// <summary>Held from <see cref="TryRead"/> to <see cref="Write"/>, so that two draws from MyTorch.Layers do not interleave.</summary>
    public static readonly Lock Gate = new();

    private static readonly Lazy<bool> Checked = new(SelfCheck);

    /// <summary>One handle on TorchSharp's default CPU generator (each <see cref="Generator.Default"/> makes a new one).</summary>
    private static readonly Lazy<Generator> Default = new(() => Generator.Default);

    /// <summary>Whether the kernels' draws are libtorch's on this machine (see the remarks).</summary>
    public static bool Works => Checked.Value;

    /// <summary>
    /// Whether <see cref="TryRead"/> lets the kernels draw where they can; when false, libtorch's <c>bernoulli_</c> always
    /// does, as where <see cref="Works"/> is false (the tests check that path this way).
    /// </summary>
    internal static bool KernelDraws { get; set; } = true;

    /// <summary>
    /// The state of <paramref name="generator"/> (or of TorchSharp's default CPU generator) as a twister, and as the
    /// byte tensor to give back to <see cref="Write"/>; <see langword="null"/> if the kernels cannot make this
    /// generator's draws: <see cref="Works"/> is false, or the state is not a CPU generator's state in the layout above.
    /// </summary>
    public static Tensor? TryRead(Generator? generator, out MersenneTwister twister)
    {
        twister = default;
        if (!KernelDraws || !Works || (generator is not null && (generator.Handle == IntPtr.Zero || generator.device.type != DeviceType.CPU)))
        {
            return null;
        }

        var state = (generator ?? Default.Value).get_state();
        if (!TryParse(state, out twister))
        {
            state.Dispose();
            return null;
        }

        return state;
    }

    /// <summary>Writes <paramref name="twister"/> into <paramref name="state"/> and makes it the generator's state.</summary>
    public static void Write(Generator? generator, Tensor state, in MersenneTwister twister)
    {
        Span<byte> bytes = TensorMemory.Vector<byte>(state);
        BinaryPrimitives.WriteInt32LittleEndian(bytes[LeftOffset..], twister.Left);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes[NextOffset..], (ulong)twister.Next);
        Span<uint> words = stackalloc uint[MersenneTwister.StateWords];
        twister.CopyWordsTo(words);
        for (int i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(bytes[(WordsOffset + (8 * i))..], words[i]);
        }

        (generator ?? Default.Value).set_state(state);
    }

    private static bool TryParse(Tensor state, out MersenneTwister twister)
    {
        twister = default;
        if (state.dtype != ScalarType.Byte || state.device_type != DeviceType.CPU || state.Dimensions != 1 || state.numel() != StateBytes || !state.is_contiguous())
        {
            return false;
        }

        ReadOnlySpan<byte> bytes = TensorMemory.Vector<byte>(state);
        int left = BinaryPrimitives.ReadInt32LittleEndian(bytes[LeftOffset..]);
        int seeded = BinaryPrimitives.ReadInt32LittleEndian(bytes[SeededOffset..]);
        ulong next = BinaryPrimitives.ReadUInt64LittleEndian(bytes[NextOffset..]);
        if (seeded == 0 || !MersenneTwister.IsUsable(left, (long)next))
        {
            return false;
        }

        Span<uint> words = stackalloc uint[MersenneTwister.StateWords];
        for (int i = 0; i < words.Length; i++)
        {
            ulong word = BinaryPrimitives.ReadUInt64LittleEndian(bytes[(WordsOffset + (8 * i))..]);
            if (word > uint.MaxValue)
            {
                return false;
            }

            words[i] = (uint)word;
        }

        twister = new MersenneTwister(words, left, (int)next);
        return true;
    }

    /// <summary>
    /// Draws 1,001 values with libtorch's <c>bernoulli_</c> from one generator and with the kernel from the state of
    /// another with the same seed, both first advanced by an odd number of 32-bit numbers: the same values, in float32
    /// and float64, and the same state afterwards, or the kernels' draws are not used.
    /// </summary>
    private static bool SelfCheck()
    {
        try
        {
            using var scope = NewDisposeScope();
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
            {
                using var theirs = new Generator(20_241_201);
                using var ours = new Generator(20_241_201);
                rand([3], generator: theirs);
                rand([3], generator: ours);
                const double keep = 0.3;
                var expected = empty([1001], dtype).bernoulli_(keep, theirs).to_type(ScalarType.Float64);

                var state = ours.get_state();
                if (!TryParse(state, out var twister))
                {
                    return false;
                }

                double[] drawn = new double[1001];
                ChannelDropoutKernels.DrawMask<double>(ref twister, drawn, keep);
                Write(ours, state, twister);
                if (!expected.data<double>().ToArray().AsSpan().SequenceEqual(drawn)
                    || !theirs.get_state().data<byte>().ToArray().AsSpan().SequenceEqual(ours.get_state().data<byte>().ToArray()))
                {
                    return false;
                }
            }

            return true;
        }
        catch (Exception e) when (e is ExternalException or InvalidOperationException or NotSupportedException or ArgumentException)
        {
            return false;
        }
    }
}
