using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using MyTorch.Layers.Distributed.Tests.Worker;
using NUnit.Framework;

namespace MyTorch.Layers.Distributed.Tests;

/// <summary>
/// Starts this assembly as the worker of a scenario on two ranks with <c>mpiexec -n 2</c>, and reads each rank's
/// report. Without MPI on the machine the multi-process tests are skipped, saying why, unless
/// <c>MYTORCH_REQUIRE_MPI=1</c> (as <c>.ci/run</c> sets it) makes that a failure.
/// </summary>
internal sealed class MpiRun
{
    public const int Ranks = 2;

    private MpiRun(int exitCode, string output, IReadOnlyList<RankReport> reports)
    {
        ExitCode = exitCode;
        Output = output;
        Reports = reports;
    }

    public int ExitCode { get; }

    public string Output { get; }

    public IReadOnlyList<RankReport> Reports { get; }

    /// <summary>Why this machine cannot start ranks, or null when it can.</summary>
    public static string? Missing { get; } =
        FindOnPath("mpiexec") is null ? "mpiexec is not on PATH"
        : !ProcessGroup.IsAvailable ? "no MPI library of the MPICH ABI (libmpi.so.12, libmpich.so.12) loads"
        : null;

    /// <summary>Skips (or, where MPI is required, fails) the test when this machine has no MPI to start ranks with.</summary>
    public static void RequireMpi()
    {
        if (Missing is null)
        {
            return;
        }

        string message = $"Multi-process tests skipped: {Missing}. Install MPICH (Debian and Ubuntu: apt-get install mpich) to run them; .ci/run does.";
        if (Environment.GetEnvironmentVariable("MYTORCH_REQUIRE_MPI") == "1")
        {
            Assert.Fail(message + " MYTORCH_REQUIRE_MPI=1 requires them.");
        }

        Assert.Ignore(message);
    }

    /// <summary>Runs <paramref name="scenario"/> on two ranks and waits for it (ten minutes at most).</summary>
    public static MpiRun Launch(string scenario)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"mytorch-mpi-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            var start = new ProcessStartInfo(FindOnPath("mpiexec")!)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string argument in new[] { "-n", Ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "dotnet", typeof(MpiRun).Assembly.Location, "worker", scenario, folder })
            {
                start.ArgumentList.Add(argument);
            }

            using var process = Process.Start(start)!;
            var error = process.StandardError.ReadToEndAsync();
            string output = process.StandardOutput.ReadToEnd();
            if (!process.WaitForExit(TimeSpan.FromMinutes(10)))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"mpiexec did not finish '{scenario}' within ten minutes.");
            }

            output += error.Result;
            var reports = Enumerable.Range(0, Ranks)
                .Select(r => Path.Combine(folder, $"rank{r}.json"))
                .Where(File.Exists)
                .Select(RankReport.Load)
                .OrderBy(r => r.Rank)
                .ToList();
            return new MpiRun(process.ExitCode, output, reports);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>Fails unless both ranks reported, from one world of two processes, without a failure.</summary>
    public void AssertRanOnTwoRanks()
    {
        Assert.That(Reports.Select(r => r.Rank), Is.EqualTo(Enumerable.Range(0, Ranks)), $"a report from every rank; mpiexec said:\n{Output}");
        Assert.That(Reports.Select(r => r.Size), Is.All.EqualTo(Ranks), "every rank in one world of two processes (an mpiexec of another MPI starts separate worlds of one)");
        Assert.That(Reports.Select(r => r.Failure), Is.All.Null, "the scenario ran to its end on every rank");
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator)
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
