using System;
using MyTorch.Layers.Kernels;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The kernels' MT19937 against the algorithm's published check value and against a plain implementation of its
/// definition here (<see cref="Reference"/>), through many regenerations and whatever the counters start at.
/// </summary>
[TestFixture]
public class MersenneTwisterTests
{
    /// <summary>The engine seeded as MT19937 (and libtorch) seed it: left = 1, next = 0, so the first number regenerates.</summary>
    internal static MersenneTwister Seeded(uint seed) => new(SeededWords(seed), left: 1, next: 0);

    internal static uint[] SeededWords(uint seed)
    {
        uint[] words = new uint[MersenneTwister.StateWords];
        words[0] = seed;
        for (int i = 1; i < words.Length; i++)
        {
            words[i] = (1812433253u * (words[i - 1] ^ (words[i - 1] >> 30))) + (uint)i;
        }

        return words;
    }

    internal static void AssertSameState(MersenneTwister actual, MersenneTwister expected, string at)
    {
        Assert.That(actual.Left, Is.EqualTo(expected.Left), at + ": left");
        Assert.That(actual.Next, Is.EqualTo(expected.Next), at + ": next");
        uint[] actualWords = new uint[MersenneTwister.StateWords];
        uint[] expectedWords = new uint[MersenneTwister.StateWords];
        actual.CopyWordsTo(actualWords);
        expected.CopyWordsTo(expectedWords);
        Assert.That(actualWords, Is.EqualTo(expectedWords), at + ": words");
    }

    [Test]
    public void SeededWith5489_ItsTenThousandthNumberIs4123659995()
    {
        // The check value that C++'s std::mt19937 is specified by.
        var generator = Seeded(5489);
        for (int i = 1; i < 10_000; i++)
        {
            generator.NextUInt32();
        }

        Assert.That(generator.NextUInt32(), Is.EqualTo(4123659995u));
    }

    [Test]
    public void Numbers_AreTheDefinitions_ThroughManyRegenerations([Values(0u, 1u, 42u, 4294967295u)] uint seed)
    {
        var generator = Seeded(seed);
        var reference = new Reference(SeededWords(seed));
        for (int i = 0; i < 5 * MersenneTwister.StateWords; i++)
        {
            Assert.That(generator.NextUInt32(), Is.EqualTo(reference.Next()), $"number {i}");
        }
    }

    [Test]
    public void TakeWords_TemperedAreTheNextNumbers_AndTheEngineMovesPastThem([Values(0, 1, 7, 623)] int count)
    {
        var generator = Seeded(3);
        generator.NextUInt32();
        var copy = generator;
        Assert.That(generator.Ready, Is.EqualTo(MersenneTwister.StateWords - 1), "after the first number: 623 more before a regeneration");
        uint[] taken = generator.TakeWords(count).ToArray();
        for (int i = 0; i < count; i++)
        {
            Assert.That(MersenneTwister.Temper(taken[i]), Is.EqualTo(copy.NextUInt32()), $"word {i}");
        }

        AssertSameState(generator, copy, "after the words taken");
        Assert.That(generator.NextUInt32(), Is.EqualTo(copy.NextUInt32()), "the number after them");
    }

    [Test]
    public void VectorTempering_IsTemperingOfEachLane()
    {
        var random = new Random(5);
        for (int trial = 0; trial < 100; trial++)
        {
            uint[] words = new uint[8];
            for (int i = 0; i < words.Length; i++)
            {
                words[i] = (uint)random.NextInt64(0, 1L << 32);
            }

            var tempered = MersenneTwister.Temper(System.Runtime.Intrinsics.Vector256.Create(words));
            for (int i = 0; i < words.Length; i++)
            {
                Assert.That(tempered[i], Is.EqualTo(MersenneTwister.Temper(words[i])), $"lane {i} of {words[i]}");
            }
        }
    }

    [TestCase(1, 0, true)]
    [TestCase(624, 1, true)]
    [TestCase(2, 623, true)]
    [TestCase(0, 0, false)]
    [TestCase(625, 0, false)]
    [TestCase(3, 623, false)]
    [TestCase(5, -1, false)]
    public void IsUsable_AcceptsOnlyCountersWhoseReadsStayInTheWords(int left, long next, bool usable) =>
        Assert.That(MersenneTwister.IsUsable(left, next), Is.EqualTo(usable));

    /// <summary>MT19937 as Matsumoto and Nishimura define it, all words regenerated at once when the last one is used.</summary>
    private sealed class Reference(uint[] words)
    {
        private int _index = MersenneTwister.StateWords;

        public uint Next()
        {
            if (_index == MersenneTwister.StateWords)
            {
                for (int k = 0; k < MersenneTwister.StateWords; k++)
                {
                    uint y = (words[k] & 0x80000000u) | (words[(k + 1) % MersenneTwister.StateWords] & 0x7fffffffu);
                    words[k] = words[(k + 397) % MersenneTwister.StateWords] ^ (y >> 1) ^ ((y & 1) == 0 ? 0 : 0x9908b0dfu);
                }

                _index = 0;
            }

            uint z = words[_index++];
            z ^= z >> 11;
            z ^= (z << 7) & 0x9d2c5680u;
            z ^= (z << 15) & 0xefc60000u;
            return z ^ (z >> 18);
        }
    }
}
