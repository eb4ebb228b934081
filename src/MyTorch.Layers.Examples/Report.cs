using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;

namespace MyTorch.Layers.Examples;

/// <summary>The files a run leaves behind: the curves as CSV and a chart of the loss curves as PNG.</summary>
internal static class Report
{
    public const string EpochsFile = "training-curves.csv";
    public const string StepsFile = "training-steps.csv";
    public const string ChartFile = "training-loss.png";

    /// <summary>One row per epoch, the runs side by side; the fused run's columns come last, so that the others keep their places.</summary>
    public static void WriteEpochs(string path, TrainingRun theirs, TrainingRun ours, TrainingRun fused)
    {
        var text = new StringBuilder();
        text.Append("epoch,torchsharp_loss,ours_loss,torchsharp_train_accuracy,ours_train_accuracy,")
            .Append("torchsharp_test_loss,ours_test_loss,torchsharp_test_accuracy,ours_test_accuracy,torchsharp_seconds,ours_seconds,")
            .Append("fused_loss,fused_train_accuracy,fused_test_loss,fused_test_accuracy,fused_seconds\n");
        for (int k = 0; k < theirs.Epochs.Count; k++)
        {
            var a = theirs.Epochs[k];
            var b = ours.Epochs[k];
            var c = fused.Epochs[k];
            text.AppendLine(Csv(
                a.Epoch, a.Loss, b.Loss, a.TrainAccuracy, b.TrainAccuracy, a.TestLoss, b.TestLoss, a.TestAccuracy, b.TestAccuracy, a.Seconds, b.Seconds,
                c.Loss, c.TrainAccuracy, c.TestLoss, c.TestAccuracy, c.Seconds));
        }

        File.WriteAllText(path, text.ToString().ReplaceLineEndings("\n"));
    }

    /// <summary>One row per training step: TorchSharp's and our losses and their difference, then the fused run's loss.</summary>
    public static void WriteSteps(string path, TrainingRun theirs, TrainingRun ours, TrainingRun fused, int stepsPerEpoch)
    {
        var text = new StringBuilder("step,epoch,torchsharp_loss,ours_loss,abs_difference,fused_loss\n");
        for (int s = 0; s < theirs.StepLosses.Count; s++)
        {
            double a = theirs.StepLosses[s], b = ours.StepLosses[s];
            text.AppendLine(Csv(s + 1, (double)(s + 1) / stepsPerEpoch, a, b, Math.Abs(a - b), fused.StepLosses[s]));
        }

        File.WriteAllText(path, text.ToString().ReplaceLineEndings("\n"));
    }

    /// <summary>The training-loss curves over the steps (x in epochs): TorchSharp's wide, ours dashed on top, the fused run dotted on top of that.</summary>
    public static void WriteChart(string path, TrainingRun theirs, TrainingRun ours, TrainingRun fused, int stepsPerEpoch)
    {
        double[] xs = Enumerable.Range(1, theirs.StepLosses.Count).Select(s => (double)s / stepsPerEpoch).ToArray();
        var plot = new ScottPlot.Plot();
        var a = plot.Add.ScatterLine(xs, theirs.StepLosses.ToArray());
        a.LegendText = "TorchSharp BatchNorm2d + Dropout2d";
        a.LineWidth = 4;
        a.Color = ScottPlot.Color.FromHex("#1f77b4").WithAlpha(0.55);
        var b = plot.Add.ScatterLine(xs, ours.StepLosses.ToArray());
        b.LegendText = "MyTorch.Layers BatchNorm2d + Dropout2d";
        b.LineWidth = 1.5f;
        b.Color = ScottPlot.Color.FromHex("#d62728");
        b.LinePattern = ScottPlot.LinePattern.Dashed;
        var c = plot.Add.ScatterLine(xs, fused.StepLosses.ToArray());
        c.LegendText = "MyTorch.Layers fused by layers.fuse_modules";
        c.LineWidth = 1.5f;
        c.Color = ScottPlot.Color.FromHex("#2ca02c");
        c.LinePattern = ScottPlot.LinePattern.Dotted;
        plot.Title("Training loss per step: three runs from the same initial weights, data order and dropout masks");
        plot.XLabel("epoch");
        plot.YLabel("cross-entropy loss");
        plot.Axes.SetLimitsY(0, new[] { theirs, ours, fused }.Max(run => run.StepLosses.Max()) * 1.05);
        plot.Axes.SetLimitsX(0, xs[^1]);
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path, 900, 500);
    }

    private static string Csv(params IEnumerable<double> values) =>
        string.Join(',', values.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
}
