using System;
using System.IO;
using MyTorch.Layers.Distributed.Tests.Worker;

namespace MyTorch.Layers.Distributed.Tests;

/// <summary>
/// The multi-process tests' worker: <c>mpiexec -n 2 dotnet MyTorch.Layers.Distributed.Tests.dll worker SCENARIO DIR</c>
/// runs one scenario on every rank, each writing what it measured to DIR/rank{r}.json for the NUnit tests to judge.
/// </summary>
public static class Program
{
    /// <summary>Runs a scenario as one rank.</summary>
    /// <param name="args">"worker", the scenario, the report folder.</param>
    /// <returns>0 when the scenario ran to its end (its findings are in the report), 1 otherwise.</returns>
    public static int Main(string[] args)
    {
        if (args.Length != 3 || args[0] != "worker")
        {
            Console.Error.WriteLine("usage: MyTorch.Layers.Distributed.Tests worker SCENARIO DIR (run by the tests under mpiexec)");
            return 2;
        }

        var report = new RankReport();
        var group = ProcessGroup.World;
        report.Rank = group.Rank;
        report.Size = group.Size;
        string path = Path.Combine(args[2], $"rank{group.Rank}.json");
        try
        {
            Scenarios.Run(args[1], group, report, () => report.Save(path));
        }
        catch (Exception e)
        {
            report.Failure = e.ToString();
            report.Save(path);
            return 1;
        }

        report.Save(path);
        return 0;
    }
}
