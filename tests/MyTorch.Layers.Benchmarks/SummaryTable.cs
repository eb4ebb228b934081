using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using BenchmarkDotNet.Reports;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// The results as docs/performance.md shows them: per step and case, the medians of ours and TorchSharp's, their ratio, and
/// how close ours comes to the roofline (the copy's median × passes / 2).
/// </summary>
internal static class SummaryTable
{
    private const string FileName = "summary.md";

    private const string Missing = "–";

    public static string Markdown(IReadOnlyList<Summary> summaries, string mode, int threads, string? loadAverage, TimeSpan elapsed)
    {
        var reports = summaries.SelectMany(s => s.Reports).ToList();
        var copies = new Dictionary<TensorCase, double>();
        foreach (var report in reports)
        {
            if (report.BenchmarkCase.Descriptor.Type == typeof(CopyRoofline) && CaseOf(report) is { } c && MedianMs(report) is { } ms)
            {
                copies[c] = ms;
            }
        }

        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Medians in milliseconds; {mode} run, {threads} threads, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription.Trim()}, {RuntimeInformation.FrameworkDescription}; load average {loadAverage ?? "unknown"} before the run; {elapsed.TotalMinutes:F1} min.");
        text.AppendLine("Ratio: ours / TorchSharp (below 1 is faster). Roofline: copy median × passes / 2. Fraction of roofline: roofline / ours (1 = as fast as memory allows).");

        foreach (var group in reports.GroupBy(r => r.BenchmarkCase.Descriptor.Type).OrderBy(g => Order(g.Key)))
        {
            if (!typeof(LayerBenchmark).IsAssignableFrom(group.Key))
            {
                continue;
            }

            var step = (LayerBenchmark)Activator.CreateInstance(group.Key)!;
            text.AppendLine();
            text.AppendLine(CultureInfo.InvariantCulture, $"### {step.Title} ({step.Passes} passes)");
            text.AppendLine();
            text.AppendLine("| shape | layout | dtype | ours ms | TorchSharp ms | ratio | roofline ms | fraction of roofline |");
            text.AppendLine("|---|---|---|---:|---:|---:|---:|---:|");
            foreach (var byCase in group.Where(r => CaseOf(r) is not null).GroupBy(r => CaseOf(r)!).OrderBy(g => g.Key.Order()))
            {
                var tensorCase = byCase.Key;
                double? ours = MedianMs(byCase.FirstOrDefault(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == nameof(BatchNorm2dEvalForward.MyTorchLayers)));
                double? theirs = MedianMs(byCase.FirstOrDefault(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == nameof(BatchNorm2dEvalForward.TorchSharp)));
                double? roofline = copies.TryGetValue(tensorCase.CopyCase, out double copy) ? copy * step.Passes / 2 : null;
                text.AppendLine(string.Join(
                    " | ",
                    "| " + tensorCase.ShapeText,
                    tensorCase.LayoutText,
                    tensorCase.DtypeText,
                    Ms(ours),
                    Ms(theirs),
                    Ratio(ours, theirs),
                    Ms(roofline),
                    Ratio(roofline, ours)) + " |");
            }
        }

        return text.ToString();
    }

    /// <summary>Writes <paramref name="markdown"/> beside BenchmarkDotNet's own reports and returns the path.</summary>
    public static string Write(IReadOnlyList<Summary> summaries, string markdown)
    {
        string directory = summaries[0].ResultsDirectoryPath;
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, FileName);
        File.WriteAllText(path, markdown);
        return path;
    }

    private static int Order(Type type) =>
        type == typeof(BatchNorm2dTrainingForwardBackward) ? 0
        : type == typeof(BatchNorm2dTrainingForward) ? 1
        : type == typeof(BatchNorm2dEvalForward) ? 2
        : type == typeof(Dropout2dTrainingForwardBackward) ? 3
        : type == typeof(BatchNormFamilyTrainingForwardBackward) ? 4
        : type == typeof(BatchNormFamilyEvalForward) ? 5
        : type == typeof(ChannelDropoutTrainingForwardBackward) ? 6
        : type == typeof(DepthwiseConvBatchNormFoldedEvalForward) ? 8
        : type == typeof(PointwiseConvBatchNormFoldedEvalForward) ? 9
        : 7;

    private static TensorCase? CaseOf(BenchmarkReport report) => report.BenchmarkCase.Parameters[nameof(LayerBenchmark.Case)] as TensorCase;

    /// <summary>The median in milliseconds, or null for a benchmark that did not run or failed.</summary>
    private static double? MedianMs(BenchmarkReport? report) =>
        report is { Success: true, ResultStatistics: { } statistics } ? statistics.Median / 1e6 : null;

    private static string Ms(double? ms) => ms switch
    {
        null => Missing,
        < 1 => ms.Value.ToString("F3", CultureInfo.InvariantCulture),
        < 100 => ms.Value.ToString("F2", CultureInfo.InvariantCulture),
        _ => ms.Value.ToString("F1", CultureInfo.InvariantCulture),
    };

    private static string Ratio(double? numerator, double? denominator) =>
        numerator is { } n && denominator is { } d && d > 0 ? (n / d).ToString("F2", CultureInfo.InvariantCulture) : Missing;
}
