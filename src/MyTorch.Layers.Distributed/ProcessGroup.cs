using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Runtime.InteropServices;
using System.Threading;
using MyTorch.Layers.Distributed.Mpi;
using MyTorch.Layers.Functional;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed;

/// <summary>The reduction of <see cref="ProcessGroup.AllReduce"/>.</summary>
public enum ReduceOp
{
    /// <summary>The sum over the processes.</summary>
    Sum,

    /// <summary>The largest value.</summary>
    Max,

    /// <summary>The smallest value.</summary>
    Min,
}

/// <summary>
/// Processes that communicate through MPI: <see cref="World"/>, every process <c>mpiexec</c> started, or a subset made
/// with <see cref="NewGroup"/>. The data-parallel layers and helpers (<see cref="SyncBatchNorm"/>,
/// <see cref="DataParallel"/>) take one; every process of the group must make the same calls in the same order.
/// </summary>
/// <remarks>
/// MPI is the MPICH ABI (MPICH, Intel MPI, MVAPICH), loaded on first use of <see cref="World"/>, which initialises
/// MPI unless the application already has, and finalises it at exit if it did. A program not started by
/// <c>mpiexec</c> is a world of one process. Each collective waits at most <see cref="Timeout"/>: a process that
/// stopped or took another path makes the others throw <see cref="TimeoutException"/>, after which the group can only
/// <see cref="Abort"/>. Calls are serialised: one collective at a time per process.
/// </remarks>
public sealed class ProcessGroup
{
    private static readonly Lazy<ProcessGroup> WorldGroup = new(StartWorld, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lock Gate = new();
    private static bool ownsMpi;
    private static bool broken;

    private readonly int communicator;

    private unsafe ProcessGroup(int communicator)
    {
        this.communicator = communicator;
        Rank = Query(&Mpich.MPI_Comm_rank, communicator, "MPI_Comm_rank");
        Size = Query(&Mpich.MPI_Comm_size, communicator, "MPI_Comm_size");
    }

    /// <summary>Every process that <c>mpiexec</c> started; initialises MPI on first use.</summary>
    /// <exception cref="DllNotFoundException">No MPI library of the MPICH ABI is installed.</exception>
    /// <exception cref="InvalidOperationException">MPI could not be initialised.</exception>
    public static ProcessGroup World => WorldGroup.Value;

    /// <summary>Whether <see cref="World"/> has been used, as PyTorch's <c>torch.distributed.is_initialized()</c>.</summary>
    public static bool IsInitialized => WorldGroup.IsValueCreated;

    /// <summary>Whether an MPI library of the MPICH ABI can be loaded on this machine.</summary>
    public static bool IsAvailable => Mpich.Available();

    /// <summary>This process's rank in the group, from 0.</summary>
    public int Rank { get; }

    /// <summary>The number of processes in the group.</summary>
    public int Size { get; }

    /// <summary>The time this process has spent in the group's collectives, waiting for the others included.</summary>
    public TimeSpan CollectiveTime { get; private set; }

    /// <summary>How long a collective waits for the other processes before it throws <see cref="TimeoutException"/>; 30 minutes, as PyTorch's default.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>
    /// A group of the processes of this group whose ranks are <paramref name="ranks"/> (in that order, which gives their
    /// new ranks). Every process of this group must call it with the same ranks; those not in them get null. It is MPI's
    /// blocking <c>MPI_Comm_create</c>: unlike the collectives, it has no timeout.
    /// </summary>
    /// <exception cref="ArgumentException">The ranks are empty, repeated or not ranks of this group.</exception>
    public ProcessGroup? NewGroup(IReadOnlyList<int> ranks)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (ranks.Count == 0 || ranks.Distinct().Count() != ranks.Count || ranks.Any(r => r < 0 || r >= Size))
        {
            throw new ArgumentException($"ranks must be distinct ranks of the group, 0 to {Size - 1}; got [{string.Join(", ", ranks)}].", nameof(ranks));
        }

        lock (Gate)
        {
            ThrowIfBroken();
            unsafe
            {
                int group, subset, created;
                int[] members = [.. ranks];
                Mpich.Check(Mpich.MPI_Comm_group(communicator, &group), "MPI_Comm_group");
                fixed (int* m = members)
                {
                    Mpich.Check(Mpich.MPI_Group_incl(group, members.Length, m, &subset), "MPI_Group_incl");
                }

                Mpich.Check(Mpich.MPI_Comm_create(communicator, subset, &created), "MPI_Comm_create");
                Mpich.Check(Mpich.MPI_Group_free(&subset), "MPI_Group_free");
                Mpich.Check(Mpich.MPI_Group_free(&group), "MPI_Group_free");
                if (created == Mpich.CommNull)
                {
                    return null;
                }

                Mpich.Check(Mpich.MPI_Comm_set_errhandler(created, Mpich.ErrorsReturn), "MPI_Comm_set_errhandler");
                return new ProcessGroup(created);
            }
        }
    }

    /// <summary>Waits until every process of the group has called it.</summary>
    /// <exception cref="TimeoutException">Not every process arrived within <see cref="Timeout"/>.</exception>
    public unsafe void Barrier()
    {
        lock (Gate)
        {
            ThrowIfBroken();
            int request;
            Mpich.Check(Mpich.MPI_Ibarrier(communicator, &request), "MPI_Ibarrier");
            Wait(request, "Barrier");
        }
    }

    /// <summary>
    /// Replaces <paramref name="tensor"/>, on every process, by its reduction over the processes, element by element. MPI
    /// gives every process the same result.
    /// </summary>
    /// <param name="tensor">A contiguous CPU tensor of Float32, Float64, Int32 or Int64, of one shape on every process.</param>
    /// <param name="op">The reduction.</param>
    /// <exception cref="ArgumentException">The tensor is not contiguous, or of another dtype.</exception>
    /// <exception cref="TimeoutException">Not every process took part within <see cref="Timeout"/>.</exception>
    public unsafe void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        CheckTensor(tensor, nameof(tensor));
        int datatype = tensor.dtype switch
        {
            ScalarType.Float32 => Mpich.Float,
            ScalarType.Float64 => Mpich.Double,
            ScalarType.Int32 => Mpich.Int,
            ScalarType.Int64 => Mpich.Int64,
            _ => throw new ArgumentException($"AllReduce takes Float32, Float64, Int32 or Int64 tensors, got {tensor.dtype}.", nameof(tensor)),
        };
        int mpiOp = op switch
        {
            ReduceOp.Sum => Mpich.Sum,
            ReduceOp.Max => Mpich.Max,
            ReduceOp.Min => Mpich.Min,
            _ => throw new ArgumentOutOfRangeException(nameof(op), op, "not a ReduceOp."),
        };

        lock (Gate)
        {
            ThrowIfBroken();
            long count = tensor.numel();
            if (count == 0)
            {
                return;
            }

            byte* data = (byte*)TensorMemory.Address(tensor);
            long size = tensor.element_size();
            for (long done = 0; done < count; done += int.MaxValue)
            {
                int part = (int)Math.Min(count - done, int.MaxValue);
                int request;
                Mpich.Check(Mpich.MPI_Iallreduce(Mpich.InPlace, data + (done * size), part, datatype, mpiOp, communicator, &request), "MPI_Iallreduce");
                Wait(request, "AllReduce");
            }
        }
    }

    /// <summary>Copies <paramref name="tensor"/> of the process <paramref name="root"/> into the same tensor of every other process.</summary>
    /// <param name="tensor">A contiguous CPU tensor of any dtype, of one shape and dtype on every process.</param>
    /// <param name="root">The rank whose tensor is sent.</param>
    /// <exception cref="ArgumentException">The tensor is not a contiguous CPU tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="root"/> is not a rank of the group.</exception>
    /// <exception cref="TimeoutException">Not every process took part within <see cref="Timeout"/>.</exception>
    public unsafe void Broadcast(Tensor tensor, int root = 0)
    {
        CheckTensor(tensor, nameof(tensor));
        CheckRank(root, nameof(root));
        lock (Gate)
        {
            ThrowIfBroken();
            long bytes = tensor.numel() * tensor.element_size();
            if (bytes == 0)
            {
                return;
            }

            byte* data = (byte*)TensorMemory.Address(tensor);
            for (long done = 0; done < bytes; done += int.MaxValue)
            {
                int part = (int)Math.Min(bytes - done, int.MaxValue);
                int request;
                Mpich.Check(Mpich.MPI_Ibcast(data + done, part, Mpich.Byte, root, communicator, &request), "MPI_Ibcast");
                Wait(request, "Broadcast");
            }
        }
    }

    /// <summary>Ends every process of the world, with <paramref name="errorCode"/> as the exit code <c>mpiexec</c> reports: the way out after a failure that leaves the processes out of step.</summary>
    /// <param name="errorCode">The exit code.</param>
    public void Abort(int errorCode = 1)
    {
        // Without the lock: a timed-out collective may still hold MPI's state, and abort is the way out of it.
        _ = Mpich.MPI_Abort(communicator, errorCode);
    }

    /// <summary>
    /// Every process's <paramref name="local"/> (of one length on all), in rank order, into <paramref name="all"/>: the
    /// same on every process.
    /// </summary>
    internal unsafe void AllGather(ReadOnlySpan<double> local, Span<double> all)
    {
        Debug.Assert(all.Length == local.Length * Size);
        lock (Gate)
        {
            ThrowIfBroken();
            // The buffers live in native memory, so that a collective given up on by a timeout never writes into freed
            // or moved memory; after a timeout they are left to the process's end.
            nuint bytes = (nuint)(local.Length * sizeof(double));
            double* buffers = (double*)NativeMemory.Alloc(bytes * (nuint)(Size + 1));
            var send = new Span<double>(buffers, local.Length);
            local.CopyTo(send);
            int request;
            Mpich.Check(
                Mpich.MPI_Iallgather(buffers, local.Length, Mpich.Double, buffers + local.Length, local.Length, Mpich.Double, communicator, &request),
                "MPI_Iallgather");
            Wait(request, "AllGather");
            new ReadOnlySpan<double>(buffers + local.Length, all.Length).CopyTo(all);
            NativeMemory.Free(buffers);
        }
    }

    private static ProcessGroup StartWorld()
    {
        lock (Gate)
        {
            unsafe
            {
                int initialized;
                Mpich.Check(Mpich.MPI_Initialized(&initialized), "MPI_Initialized");
                if (initialized == 0)
                {
                    int provided;
                    Mpich.Check(Mpich.MPI_Init_thread(null, null, Mpich.ThreadSerialized, &provided), "MPI_Init_thread");
                    ownsMpi = true;
                    AppDomain.CurrentDomain.ProcessExit += (_, _) => Finish();
                }

                // Errors come back as codes, which become exceptions, instead of ending the process.
                Mpich.Check(Mpich.MPI_Comm_set_errhandler(Mpich.CommWorld, Mpich.ErrorsReturn), "MPI_Comm_set_errhandler");
            }
        }

        return new ProcessGroup(Mpich.CommWorld);
    }

    /// <summary>Finalises MPI at exit if this library initialised it, unless a timed-out collective may still be pending.</summary>
    private static unsafe void Finish()
    {
        lock (Gate)
        {
            int finalized;
            if (ownsMpi && !broken && Mpich.MPI_Finalized(&finalized) == Mpich.Success && finalized == 0)
            {
                _ = Mpich.MPI_Finalize();
            }
        }
    }

    private static unsafe int Query(delegate*<int, int*, int> call, int communicator, string name)
    {
        int value;
        Mpich.Check(call(communicator, &value), name);
        return value;
    }

    private static void ThrowIfBroken()
    {
        if (broken)
        {
            throw new InvalidOperationException(
                "An earlier collective timed out, so the processes are out of step and MPI cannot be used any more; end them with Abort().");
        }
    }

    private static void CheckTensor(Tensor tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (tensor.device_type != TorchSharp.DeviceType.CPU || !tensor.is_contiguous())
        {
            throw new ArgumentException($"'{name}' must be a contiguous CPU tensor.", name);
        }
    }

    private void CheckRank(int rank, string name)
    {
        if (rank < 0 || rank >= Size)
        {
            throw new ArgumentOutOfRangeException(name, rank, $"not a rank of the group of {Size}.");
        }
    }

    /// <summary>Waits for a collective, busy at first (they take microseconds), then sleeping between checks.</summary>
    private unsafe void Wait(int request, string operation)
    {
        var clock = Stopwatch.StartNew();
        var spin = default(SpinWait);
        while (true)
        {
            int done;
            Mpich.Check(Mpich.MPI_Test(&request, &done, Mpich.StatusIgnore), "MPI_Test");
            if (done != 0)
            {
                CollectiveTime += clock.Elapsed;
                return;
            }

            var waited = clock.Elapsed;
            if (waited > Timeout)
            {
                broken = true;
                throw new TimeoutException(
                    $"{operation} on rank {Rank} of {Size} waited {waited.TotalSeconds:F1} s for the other processes: one of them stopped, failed or " +
                    "took another path. The processes are out of step; end them with Abort().");
            }

            if (waited.TotalMilliseconds < 100)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
            else
            {
                Thread.Sleep(1);
            }
        }
    }
}
