using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;

namespace MyTorch.Layers.Kernels;

/// <summary>One piece of a kernel's work, numbered 0 to count − 1; which thread runs it must not matter.</summary>
internal interface IChunkJob
{
    /// <summary>Does piece <paramref name="chunk"/>.</summary>
    void Run(int chunk);
}

/// <summary>
/// Runs the chunks of a job on up to a given number of threads: the calling thread and either the threads of an
/// OpenMP-style team (see <see cref="UseTeam"/>) or, without one, a few long-lived workers of its own.
/// </summary>
/// <remarks>
/// Results cannot depend on the thread count because the callers fix the partition (chunk boundaries depend on the
/// shape only) and every chunk writes its own partial results, which the caller combines in chunk order afterwards.
/// Each of the n threads starts on its own n-th of the chunks, a contiguous range taken in order, so that each streams
/// through one region of memory as a single-threaded loop would; a thread that finishes its range helps with the
/// others', claiming chunks one at a time, so a thread that starts late or is descheduled holds up no more than a
/// chunk. Which thread runs a chunk does not matter. Each thread fences its streaming stores
/// (<see cref="StreamingStores.Fence"/>) when its work is done, so jobs need not.
/// A job is an unmanaged struct on the caller's stack, reached by the other threads through a pointer while the
/// caller waits, so dispatching allocates nothing. The own workers run one job at a time; a caller that finds them
/// busy (another thread's kernel) runs its chunks itself, which gives the same results.
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

    private static delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> team;

    /// <summary>The team given to <see cref="UseTeam"/>, or <see langword="null"/> when parallel chunks go to the own workers.</summary>
    public static delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> Team => team;

    /// <summary>
    /// Sends parallel work to a fork-join runtime with OpenMP's <c>GOMP_parallel(body, data, threads, flags)</c> contract:
    /// it calls <c>body(data)</c> once on each of up to <c>threads</c> threads, the caller among them, and returns when
    /// all calls have returned. <see langword="null"/> goes back to the own workers.
    /// </summary>
    /// <remarks>
    /// The point is to share threads with a library that already has a team: two busy pools on the same cores take
    /// time slices from each other, and a worker descheduled in the middle of a chunk keeps the caller waiting.
    /// </remarks>
    public static void UseTeam(delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> parallel) => team = parallel;

    private static readonly Lock Gate = new();
    private static readonly SemaphoreSlim Start = new(0);
    private static readonly ManualResetEventSlim Finished = new(false);
    private static int workerCount;

    private static Region* currentRegion;
    private static int busyWorkers;

    /// <summary>
    /// <see cref="Run{TJob}(ref TJob, int, int)"/> with <paramref name="side"/>, if present, as one more piece: the first,
    /// so that the thread that arrives first takes it while the others start on the chunks and then take its range's.
    /// </summary>
    public static void Run<TJob>(ref TJob job, int chunks, int threads, SidePiece side)
        where TJob : unmanaged, IChunkJob
    {
        if (!side.Present)
        {
            Run(ref job, chunks, threads);
            return;
        }

        var beside = new Beside<TJob> { Side = side, Job = job };
        Run(ref beside, chunks + 1, threads);
        job = beside.Job;
    }

    /// <summary>Runs <c>job.Run(0 … chunks − 1)</c> on at most <paramref name="threads"/> threads and returns when all are done.</summary>
    public static void Run<TJob>(ref TJob job, int chunks, int threads)
        where TJob : unmanaged, IChunkJob
    {
        int workersNeeded = Math.Min(threads, chunks) - 1;
        var parallel = team;
        if (workersNeeded > 0 && parallel != null)
        {
            RunOnTeam(ref job, chunks, workersNeeded + 1, parallel);
            return;
        }

        if (workersNeeded <= 0 || !Gate.TryEnter())
        {
            for (int chunk = 0; chunk < chunks; chunk++)
            {
                job.Run(chunk);
            }

            StreamingStores.Fence();
            return;
        }

        try
        {
            EnsureWorkers(workersNeeded);
            fixed (TJob* pointer = &job)
            {
                int threadCount = workersNeeded + 1;
                int* claims = stackalloc int[threadCount * Region.ClaimStride];
                var region = new Region(&RunChunk<TJob>, pointer, chunks, threadCount, claims);
                currentRegion = &region;
                busyWorkers = workersNeeded;
                Finished.Reset();
                Start.Release(workersNeeded);
                Work(&region);
                Finished.Wait();
                currentRegion = null;
            }
        }
        finally
        {
            Gate.Exit();
        }
    }

    /// <summary>A job's chunks after a side piece: piece 0 is the side piece, piece k + 1 the job's chunk k.</summary>
    private struct Beside<TJob> : IChunkJob
        where TJob : unmanaged, IChunkJob
    {
        public SidePiece Side;
        public TJob Job;

        public void Run(int chunk)
        {
            if (chunk == 0)
            {
                Side.Run();
            }
            else
            {
                Job.Run(chunk - 1);
            }
        }
    }

    private static void RunOnTeam<TJob>(
        ref TJob job,
        int chunks,
        int threads,
        delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> parallel)
        where TJob : unmanaged, IChunkJob
    {
        fixed (TJob* pointer = &job)
        {
            int* claims = stackalloc int[threads * Region.ClaimStride];
            var region = new Region(&RunChunk<TJob>, pointer, chunks, threads, claims);
            parallel(&TeamBody, &region, (uint)threads, 0);
            if (region.Failed != 0)
            {
                throw new InvalidOperationException("A kernel chunk failed on a thread of the parallel team.");
            }
        }
    }

    /// <summary>
    /// What the threads of one run share: the job, and for each of the n ranges of chunks (the i-th n-th of them, one
    /// range per thread) the next unclaimed chunk, each counter on its own cache line.
    /// </summary>
    private struct Region
    {
        /// <summary>Ints between two ranges' counters: a 64-byte cache line.</summary>
        public const int ClaimStride = 16;

        public delegate*<void*, int, void> Run;
        public void* Job;
        public int Chunks;
        public int Ranges;
        public int* Claims;
        public int Arrived;
        public int Failed;

        public Region(delegate*<void*, int, void> run, void* job, int chunks, int ranges, int* claims)
        {
            Run = run;
            Job = job;
            Chunks = chunks;
            Ranges = ranges;
            Claims = claims;
            for (int range = 0; range < ranges; range++)
            {
                claims[range * ClaimStride] = RangeStart(range);
            }
        }

        /// <summary>The first chunk of range <paramref name="range"/> (and the end of the one before).</summary>
        public readonly int RangeStart(int range) => (int)((long)range * Chunks / Ranges);
    }

    /// <summary>The team's body: a thread's share of the work. No exception may cross into the runtime.</summary>
    [UnmanagedCallersOnly]
    private static void TeamBody(void* data)
    {
        var region = (Region*)data;
        try
        {
            Work(region);
        }
        catch (Exception)
        {
            // Stop every thread claiming, and let the caller throw on its own thread.
            Volatile.Write(ref region->Failed, 1);
            for (int range = 0; range < region->Ranges; range++)
            {
                Interlocked.Exchange(ref region->Claims[range * Region.ClaimStride], region->Chunks);
            }
        }
    }

    private static void RunChunk<TJob>(void* job, int chunk)
        where TJob : unmanaged, IChunkJob => ((TJob*)job)->Run(chunk);

    /// <summary>
    /// A thread's work: the chunks of the range it arrives for (the first thread to arrive takes the first range), in
    /// order, then whatever is left of the others', claiming one chunk at a time.
    /// </summary>
    private static void Work(Region* region)
    {
        int ranges = region->Ranges;
        int own = (Interlocked.Increment(ref region->Arrived) - 1) % ranges;
        for (int k = 0; k < ranges; k++)
        {
            int range = own + k < ranges ? own + k : own + k - ranges;
            int end = region->RangeStart(range + 1);
            ref int next = ref region->Claims[range * Region.ClaimStride];
            int chunk;
            while ((chunk = Interlocked.Increment(ref next) - 1) < end)
            {
                region->Run(region->Job, chunk);
            }
        }

        StreamingStores.Fence();
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
            Work(currentRegion);
            if (Interlocked.Decrement(ref busyWorkers) == 0)
            {
                Finished.Set();
            }
        }
    }
}

/// <summary>
/// Work of its own to run as one piece beside a job's chunks (<see cref="ChunkScheduler.Run{TJob}(ref TJob, int, int, SidePiece)"/>):
/// a job whose piece 0 is the work, reached through a pointer, so it must stay where it is until the run returns.
/// The default is none.
/// </summary>
internal readonly unsafe struct SidePiece
{
    private readonly delegate*<void*, int, void> _run;
    private readonly void* _job;

    private SidePiece(delegate*<void*, int, void> run, void* job)
    {
        _run = run;
        _job = job;
    }

    /// <summary>Whether there is work at all.</summary>
    public bool Present => _run != null;

    /// <summary>Piece 0 of the job at <paramref name="job"/>.</summary>
    public static SidePiece Of<TJob>(TJob* job)
        where TJob : unmanaged, IChunkJob => new(&RunFirst<TJob>, job);

    /// <summary>Does the work.</summary>
    public void Run() => _run(_job, 0);

    private static void RunFirst<TJob>(void* job, int chunk)
        where TJob : unmanaged, IChunkJob => ((TJob*)job)->Run(chunk);
}
