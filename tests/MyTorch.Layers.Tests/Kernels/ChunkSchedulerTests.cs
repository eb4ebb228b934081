using System;
using System.Threading;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The scheduler under every kernel: each chunk runs exactly once, whatever the numbers of chunks and threads and
/// whichever threads run them, and a chunk that fails on the team's threads surfaces on the caller's.
/// </summary>
[TestFixture]
[NonParallelizable]
public unsafe class ChunkSchedulerTests
{
    [Test]
    public void Run_RunsEveryChunkExactlyOnce(
        [Values(1, 2, 3, 5, 8)] int threads,
        [Values(false, true)] bool openMpTeam)
    {
        foreach (int chunks in new[] { 0, 1, 2, 3, 7, 16, 101 })
        {
            int[] runs = new int[chunks + 1];
            fixed (int* counts = runs)
            {
                var job = new CountingJob { Counts = counts, Failing = -1 };
                KernelTeams.Run(openMpTeam, () => ChunkScheduler.Run(ref job, chunks, threads));
            }

            for (int chunk = 0; chunk < chunks; chunk++)
            {
                Assert.That(runs[chunk], Is.EqualTo(1), $"{chunks} chunks on {threads} threads: chunk {chunk}");
            }

            Assert.That(runs[chunks], Is.Zero, $"{chunks} chunks on {threads} threads: no chunk past the last");
        }
    }

    [Test]
    public void Run_OnTheTeam_AChunkThatThrows_FailsTheCallWithoutRunningTheRestTwice()
    {
        int[] runs = new int[64];
        fixed (int* counts = runs)
        {
            var job = new CountingJob { Counts = counts, Failing = 5 };
            Assert.That(
                () => KernelTeams.Run(openMpTeam: true, () => ChunkScheduler.Run(ref job, 64, 2)),
                Throws.InvalidOperationException.With.Message.Contains("failed on a thread of the parallel team"));
        }

        Assert.That(runs, Has.All.LessThanOrEqualTo(1), "no chunk runs twice");
        Assert.That(runs[5], Is.EqualTo(1), "the failing chunk ran once");
    }

    /// <summary>Counts the runs of each chunk; chunk <see cref="Failing"/> throws after counting.</summary>
    private struct CountingJob : IChunkJob
    {
        public int* Counts;
        public int Failing;

        public readonly void Run(int chunk)
        {
            Interlocked.Increment(ref Counts[chunk]);
            if (chunk == Failing)
            {
                throw new InvalidOperationException("chunk failed on purpose");
            }
        }
    }
}
