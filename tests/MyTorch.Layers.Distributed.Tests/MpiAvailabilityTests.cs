using System.Collections.Generic;
using NUnit.Framework;

namespace MyTorch.Layers.Distributed.Tests;

/// <summary>
/// One test whose name says whether this machine runs the two-rank tests and, if not, why and what to install: `dotnet
/// test` prints a skipped test's name, not its reason.
/// </summary>
[TestFixture]
public sealed class MpiAvailabilityTests
{
    private static IEnumerable<TestCaseData> Machine()
    {
        yield return new TestCaseData(MpiRun.Missing ?? string.Empty).SetName(MpiRun.Missing is null
            ? "Mpich_IsInstalled_TheTwoRankTestsRun"
            : $"Mpich_IsMissing_TheTwoRankTestsAreSkipped ({MpiRun.Missing}; apt-get install mpich runs them)");
    }

    [TestCaseSource(nameof(Machine))]
    public void TwoRankTests_NeedMpich(string missing)
    {
        MpiRun.RequireMpi();
        // With MPI here, MPI must start in this process too: a world of one, as a program started without mpiexec.
        Assert.That(ProcessGroup.World.Size, Is.EqualTo(1), missing);
    }
}
