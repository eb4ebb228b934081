using System;
using System.Diagnostics;
using System.Globalization;
using CsCheck;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Support;

/// <summary>
/// Runs generated cases from a fixed seed, so that every run checks the same cases, and hands a failure to CsCheck,
/// which shrinks it and prints the seed of the smallest failing case.
/// </summary>
/// <remarks>
/// CsCheck's own <c>Sample</c> draws every case after the first from a time-based seed; here case i is drawn from
/// <c>new PCG(stream, i)</c>, so a run of N cases is the same on every machine. Environment variables:
/// <list type="bullet">
/// <item><c>MYTORCH_LAYERS_GENERATED_CASES</c>: the number of cases of each generated test (default: the test's own).</item>
/// <item><c>MYTORCH_LAYERS_GENERATED_SEED</c>: a seed printed by a failure; only that case runs.</item>
/// </list>
/// </remarks>
internal static class GeneratedCases
{
    public const string CountVariable = "MYTORCH_LAYERS_GENERATED_CASES";
    public const string SeedVariable = "MYTORCH_LAYERS_GENERATED_SEED";

    /// <summary>How many failing cases CsCheck tries after the first, looking for a smaller one.</summary>
    private const int ShrinkIterations = 300;

    /// <summary>The number of cases to run: the environment's, or <paramref name="ciDefault"/>.</summary>
    public static int Count(int ciDefault)
    {
        string? text = Environment.GetEnvironmentVariable(CountVariable);
        return string.IsNullOrWhiteSpace(text) ? ciDefault : int.Parse(text, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Checks <paramref name="count"/> cases of <paramref name="gen"/> drawn from PCG stream <paramref name="stream"/>;
    /// or, when <see cref="SeedVariable"/> is set, only the case of that seed.
    /// </summary>
    public static void Run<T>(Gen<T> gen, Action<T> check, int stream, int count, Func<T, string> print)
    {
        string? replay = Environment.GetEnvironmentVariable(SeedVariable);
        if (!string.IsNullOrWhiteSpace(replay))
        {
            var pcg = PCG.Parse(replay);
            var only = gen.Generate(pcg, null, out _);
            TestContext.Out.WriteLine($"replaying {replay}: {print(only)}");
            check(only);
            return;
        }

        var clock = Stopwatch.StartNew();
        for (int i = 0; i < count; i++)
        {
            var pcg = new PCG((uint)stream, (ulong)i);
            string seed = pcg.ToString();
            var value = gen.Generate(pcg, null, out _);
            try
            {
                check(value);
            }
            catch (Exception failure) when (failure is not OutOfMemoryException)
            {
                Shrink(gen, check, seed, print, i, value, failure);
                throw;
            }
        }

        TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{count} generated cases from stream {stream} in {clock.Elapsed.TotalSeconds:F1} s"));
    }

    /// <summary>Reports the failing case and lets CsCheck look for a smaller one from its seed; throws what CsCheck found.</summary>
    private static void Shrink<T>(Gen<T> gen, Action<T> check, string seed, Func<T, string> print, int index, T value, Exception failure)
    {
        TestContext.Out.WriteLine($"case {index} failed: {print(value)}");
        TestContext.Out.WriteLine($"seed {seed}; replay with {SeedVariable}={seed}");
        TestContext.Out.WriteLine(failure.Message);
        try
        {
            gen.Sample(check, seed: seed, iter: ShrinkIterations, threads: 1, print: print);
        }
        catch (Exception shrunk) when (shrunk is not OutOfMemoryException)
        {
            // CsCheck's message carries the smallest failing case it found and its seed (CsCheck_Seed = "...").
            throw new AssertionException($"case {index} (seed {seed}) failed: {print(value)}\n{failure.Message}\n\nShrunk by CsCheck:\n{shrunk.Message}", shrunk);
        }
    }
}
