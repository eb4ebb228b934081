using System;
using System.Diagnostics;
using System.Threading;

namespace MyTorch.Layers.Kernels;

/// <summary>One piece of a kernel's work, numbered 0 to count − 1; which thread runs it must not matter.</summary>
internal interface IChunkJob
{
    /// <summary>Does piece <paramref name="chunk"/>.</summary>
    void Run(int chunk);
}

/// <summary>
/// Runs the chunks of a job on up to a given number of threads: the calling thread and a few long-lived workers.
/// </summary>
/// <remarks>
/// Results cannot depend on the thread count because the callers fix the partition (chunk boundaries depend on the
/// shape only) and every chunk writes its own partial results, which the caller combines in chunk order afterwards.
/// A job is an unmanaged struct on the caller's stack, reached by the workers through a pointer while the caller
/// waits, so dispatching allocates nothing. One job runs at a time; a caller that finds the workers busy (another
/// thread's kernel) runs its chunks itself, which gives the same results.
/// </remarks>
internal static unsafe class ChunkScheduler
{
    /// <summary>About this many elements per chunk of work: large enough to amortise dispatch, small enough to balance.</summary>
    public const int ChunkElements = 1 << 15;

    /// <summary>Below this many elements, a kernel runs on the calling thread only.</summary>
    public const int ParallelThreshold = 1 << 16;

    /// <summary>How many units of <paramref name="unitLength"/> elements make one chunk: at least one.</summary>
    public static int UnitsPerChunk(int unitLength) => Math.Max(1, ChunkElements / Math.Max(1, unitLength));

    /// <summary>The number of chunks of <paramref name="unitsPerChunk"/> units that cover <paramref name="units"/>.</summary>
    public static int ChunkCount(int units, int unitsPerChunk) => (units + unitsPerChunk - 1) / unitsPerChunk;

    /// <summary>The threads a kernel over <paramref name="elements"/> elements uses: one below <see cref="ParallelThreshold"/>.</summary>
    public static int ThreadsFor(int elements, int threads) => elements < ParallelThreshold ? 1 : threads;

    private static readonly Lock Gate = new();
    private static readonly SemaphoreSlim Start = new(0);
    private static readonly ManualResetEventSlim Finished = new(false);
    private static int workerCount;

    private static delegate*<void*, int, void> currentRun;
    private static void* currentJob;
    private static int currentChunks;
    private static int nextChunk;
    private static int busyWorkers;

    /// <summary>Runs <c>job.Run(0 … chunks − 1)</c> on at most <paramref name="threads"/> threads and returns when all are done.</summary>
    public static void Run<TJob>(ref TJob job, int chunks, int threads)
        where TJob : unmanaged, IChunkJob
    {
        int workersNeeded = Math.Min(threads, chunks) - 1;
        if (workersNeeded <= 0 || !Gate.TryEnter())
        {
            for (int chunk = 0; chunk < chunks; chunk++)
            {
                job.Run(chunk);
            }

            return;
        }

        try
        {
            EnsureWorkers(workersNeeded);
            fixed (TJob* pointer = &job)
            {
                currentRun = &RunChunk<TJob>;
                currentJob = pointer;
                currentChunks = chunks;
                nextChunk = 0;
                busyWorkers = workersNeeded;
                Finished.Reset();
                Start.Release(workersNeeded);
                Work();
                Finished.Wait();
                currentJob = null;
            }
        }
        finally
        {
            Gate.Exit();
        }
    }

    private static void RunChunk<TJob>(void* job, int chunk)
        where TJob : unmanaged, IChunkJob => ((TJob*)job)->Run(chunk);

    /// <summary>Claims and runs chunks until none is left.</summary>
    private static void Work()
    {
        int chunk;
        while ((chunk = Interlocked.Increment(ref nextChunk) - 1) < currentChunks)
        {
            currentRun(currentJob, chunk);
        }
    }

    private static void EnsureWorkers(int count)
    {
        Debug.Assert(Gate.IsHeldByCurrentThread);
        for (; workerCount < count; workerCount++)
        {
            var thread = new Thread(WorkerLoop) { IsBackground = true, Name = "MyTorch.Layers kernel worker" };
            thread.Start();
        }
    }

    private static void WorkerLoop()
    {
        while (true)
        {
            Start.Wait();
            Work();
            if (Interlocked.Decrement(ref busyWorkers) == 0)
            {
                Finished.Set();
            }
        }
    }
}
