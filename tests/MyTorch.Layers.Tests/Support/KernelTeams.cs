using System;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Kernels;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Support;

/// <summary>
/// The two ways kernels run their chunks in parallel: on libtorch's OpenMP team (what the library does on Linux) or
/// on the kernels' own workers (where no OpenMP runtime is found, or with MYTORCH_LAYERS_OPENMP=0).
/// </summary>
internal static unsafe class KernelTeams
{
    /// <summary>Runs <paramref name="action"/> with parallel chunks on libtorch's OpenMP team or on the own workers.</summary>
    public static void Run(bool openMpTeam, Action action)
    {
        var parallel = openMpTeam ? OpenMpParallel() : null;
        var saved = ChunkScheduler.Team;
        ChunkScheduler.UseTeam(parallel);
        try
        {
            action();
        }
        finally
        {
            ChunkScheduler.UseTeam(saved);
        }
    }

    /// <summary>libtorch's <c>GOMP_parallel</c>; it must be found on Linux, where TorchSharp's CPU build links libgomp.</summary>
    private static delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> OpenMpParallel()
    {
        var parallel = KernelThreads.OpenMpParallel;
        if (parallel == null)
        {
            Assert.That(OperatingSystem.IsLinux(), Is.False, "on Linux, libtorch's OpenMP runtime (GOMP_parallel) must be found");
            Assert.Ignore("No OpenMP runtime of libtorch's on this platform; the kernels use their own workers.");
        }

        return parallel;
    }
}
