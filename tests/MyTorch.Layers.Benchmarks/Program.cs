using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// MyTorch.Layers' BatchNorm and channel Dropout layers against TorchSharp's, and a copy of the same bytes as the roofline.
/// <c>--quick</c> for a short run, <c>--threads N</c> for TorchSharp's thread count (all cores by default); every
/// other argument goes to BenchmarkDotNet (<c>--filter *Eval*</c>, <c>--list flat</c>, ...). Exit code 1 when a
/// benchmark failed.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        var passThrough = new List<string>();
        bool quick = false;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick":
                    quick = true;
                    break;
                case "--threads" when i + 1 < args.Length && int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int threads) && threads > 0:
                    Threads.Count = threads;
                    i++;
                    break;
                case "--threads":
                    Console.Error.WriteLine("error: --threads takes a positive integer.");
                    return 2;
                default:
                    passThrough.Add(args[i]);
                    break;
            }
        }

        if (passThrough.Any(a => a is "--help" or "-h" or "-?"))
        {
            Console.Out.WriteLine("MyTorch.Layers.Benchmarks [--quick] [--threads N] [BenchmarkDotNet options]");
            Console.Out.WriteLine("  --quick      3 warm-ups and 9 iterations of 4 calls per benchmark instead of 5 and 75 of about 50 ms");
            Console.Out.WriteLine("  --threads N  TorchSharp's intra-op threads, which MyTorch.Layers follows (default: all cores)");
            Console.Out.WriteLine("BenchmarkDotNet's options follow.");
        }

        // Without a filter BenchmarkSwitcher asks interactively; run everything instead.
        if (!passThrough.Any(a => a is "--filter" or "-f" || a.StartsWith("--filter=", StringComparison.Ordinal)))
        {
            passThrough.AddRange(["--filter", "*"]);
        }

        string? load = LoadAverage();
        if (load is not null && double.TryParse(load, NumberStyles.Float, CultureInfo.InvariantCulture, out double busy) && busy >= 1.0)
        {
            // With every core in the thread pool, one busy core makes each parallel region wait for a time slice.
            Console.Error.WriteLine($"warning: load average {load} on {Environment.ProcessorCount} cores before the run; other processes will skew the times.");
        }

        var start = Stopwatch.GetTimestamp();
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run([.. passThrough], CreateConfig(quick)).ToList();
        var elapsed = Stopwatch.GetElapsedTime(start);

        if (summaries.Count > 0 && summaries.SelectMany(s => s.Reports).Any())
        {
            string markdown = SummaryTable.Markdown(summaries, quick ? "quick" : "full", Threads.Count, load, elapsed);
            string path = SummaryTable.Write(summaries, markdown);
            Console.Out.WriteLine();
            Console.Out.WriteLine(markdown);
            Console.Out.WriteLine($"Written to {path}");
        }

        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Total time: {elapsed.TotalMinutes:F1} min"));
        bool failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
        return failed ? 1 : 0;
    }

    /// <summary>The one-minute load average, where the system reports one.</summary>
    private static string? LoadAverage()
    {
        const string path = "/proc/loadavg";
        return File.Exists(path) ? File.ReadAllText(path).Split(' ')[0] : null;
    }

    /// <summary>
    /// In process, so that the benchmarks run in this already-built application with its patched native library
    /// (BenchmarkDotNet would otherwise generate and build a project per run, without the repository's build step).
    /// </summary>
    private static ManualConfig CreateConfig(bool quick)
    {
        var toolchain = new InProcessEmitToolchain(TimeSpan.FromMinutes(30), logOutput: true);

        // UnrollFactor 1: a step takes milliseconds, so BenchmarkDotNet's default of 16 calls per loop turn would only
        // force long iterations on the slowest cases. Many short iterations rather than a few long ones: on a shared
        // machine the slow spells come and go within a fraction of a second, and a median of short iterations leaves
        // out those that fell in one, where every long iteration would average some in.
        var job = quick
            ? Job.Default.WithId("Quick").WithWarmupCount(3).WithIterationCount(9).WithInvocationCount(4).WithUnrollFactor(1)
            : Job.Default.WithId("Full").WithWarmupCount(5).WithIterationCount(75).WithIterationTime(TimeInterval.FromMilliseconds(50)).WithUnrollFactor(1);

        return ManualConfig.Create(DefaultConfig.Instance)
            .AddJob(job.WithToolchain(toolchain))
            .AddColumn(StatisticColumn.Median)
            .WithSummaryStyle(SummaryStyle.Default.WithTimeUnit(TimeUnit.Millisecond).WithMaxParameterColumnWidth(40));
    }
}
