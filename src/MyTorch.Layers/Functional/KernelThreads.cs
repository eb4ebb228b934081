using System;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using TorchSharp;

namespace MyTorch.Layers.Functional;

/// <summary>How many threads the kernels may use, and whose threads they are.</summary>
internal static unsafe class KernelThreads
{
    /// <summary>The native library whose OpenMP runtime libtorch's CPU operators run on, on Linux.</summary>
    private const string LibTorchCpu = "/libtorch_cpu.so";

    static KernelThreads()
    {
        // libtorch runs its parallel operators on an OpenMP team whose threads spin for a while after each region.
        // Kernels on threads of their own would then share the cores with spinning threads; on libtorch's team they
        // reuse those threads instead, as libtorch's own operators do.
        OpenMpParallel = FindOpenMpParallel();
        if (OpenMpParallel != null && Environment.GetEnvironmentVariable("MYTORCH_LAYERS_OPENMP") != "0")
        {
            ChunkScheduler.UseTeam(OpenMpParallel);
        }
    }

    /// <summary><c>GOMP_parallel</c> of libtorch's OpenMP runtime, or <see langword="null"/> where it was not found.</summary>
    public static delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> OpenMpParallel { get; }

    /// <summary>
    /// TorchSharp's intra-op thread count (<c>torch.get_num_threads()</c>), so that one setting governs both libraries.
    /// The kernels' results do not depend on it.
    /// </summary>
    public static int Count => Math.Max(1, torch.get_num_threads());

    /// <summary>
    /// <c>GOMP_parallel</c> of the OpenMP runtime libtorch's CPU library was linked with, if TorchSharp has loaded that
    /// library: the lookup starts from the file already mapped into the process, so it finds the runtime libtorch uses
    /// and never loads a second copy of anything.
    /// </summary>
    private static delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> FindOpenMpParallel()
    {
        _ = torch.get_num_threads(); // makes TorchSharp load libtorch first
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        string? path;
        try
        {
            path = File.ReadLines("/proc/self/maps")
                .Select(line => line[(line.IndexOf('/', StringComparison.Ordinal) is var slash && slash < 0 ? line.Length : slash)..])
                .FirstOrDefault(file => file.EndsWith(LibTorchCpu, StringComparison.Ordinal));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A process that may not read its own map keeps the kernels on their own workers.
            return null;
        }

        if (path is null || !NativeLibrary.TryLoad(path, out var library))
        {
            return null;
        }

        return NativeLibrary.TryGetExport(library, "GOMP_parallel", out var parallel)
            ? (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel
            : null;
    }
}
