using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using MyTorch.Layers.Distributed;
using MyTorch.Layers.Examples;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// The examples app's --distributed mode as a user starts it, on two ranks: it must say that data-parallel training
/// equals single-process training on the whole batch at every step, and exit 0. Skipped without MPI on the machine,
/// unless MYTORCH_REQUIRE_MPI=1 requires it.
/// </summary>
[TestFixture]
[NonParallelizable]
public class DistributedExamplesAppTests
{
    [Test]
    public void Options_DistributedMode_KeepsItsOwnDefaults()
    {
        var plain = TrainingOptions.Parse([]).Options!;
        var distributed = TrainingOptions.Parse(["--distributed"]).Options!;
        var given = TrainingOptions.Parse(["--distributed", "--epochs", "3", "--threads", "1"]).Options!;

        Assert.That(plain.Distributed, Is.False);
        Assert.That(distributed.Distributed, Is.True);
        Assert.That((distributed.EpochsGiven, distributed.ThreadsGiven), Is.EqualTo((false, false)));
        Assert.That((given.Epochs, given.EpochsGiven, given.Threads, given.ThreadsGiven), Is.EqualTo((3, true, 1, true)));
    }

    [Test]
    public void ExamplesApp_Distributed_OnTwoRanks_EqualsSingleProcessTraining_AtEveryStep()
    {
        string? mpiexec = Environment.GetEnvironmentVariable("PATH")?.Split(Path.PathSeparator)
            .Select(folder => Path.Combine(folder, "mpiexec"))
            .FirstOrDefault(File.Exists);
        if (mpiexec is null || !ProcessGroup.IsAvailable)
        {
            const string Message = "No mpiexec on PATH or no MPI library of the MPICH ABI: install MPICH (apt-get install mpich).";
            if (Environment.GetEnvironmentVariable("MYTORCH_REQUIRE_MPI") == "1")
            {
                Assert.Fail(Message + " MYTORCH_REQUIRE_MPI=1 requires it.");
            }

            Assert.Ignore(Message);
        }

        var (exitCode, text) = ChildProcess.Run(
            mpiexec, ["-n", "2", "dotnet", typeof(StepCheck).Assembly.Location, "--distributed", "--quick"], TimeSpan.FromMinutes(5));
        Assert.That(exitCode, Is.Zero, "exit code");
        Assert.That(text, Does.Contain("2 processes (ProcessGroup.World)"));
        Assert.That(text, Does.Contain("2 BatchNorm2d converted by SyncBatchNorm.convert_sync_batchnorm"));
        Assert.That(text, Does.Contain("each holds rank 0's bit for bit: yes"));
        Assert.That(text, Does.Contain("Step-by-step check (16 steps, 1 evaluation)"));
        Assert.That(text, Does.Match(@"rank 1: data-parallel step [\d.]+ ms, of which [\d.]+ ms \(\d+%\) in collectives"));
        Assert.That(text, Does.Contain("Result: data-parallel training with SyncBatchNorm equals single-process training on the whole batch at every step."));

        // Rank 0 alone prints the report.
        Assert.That(text.Split('\n').Count(line => line.StartsWith("Result:", StringComparison.Ordinal)), Is.EqualTo(1));
    }
}
