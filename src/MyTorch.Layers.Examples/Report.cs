using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;

namespace MyTorch.Layers.Examples;

/// <summary>The files a run leaves behind: the curves as CSV and a chart of both loss curves as PNG.</summary>
internal static class Report
{
    public const string EpochsFile = "training-curves.csv";
    public const string StepsFile = "training-steps.csv";
    public const string ChartFile = "training-loss.png";

    /// <summary>One row per epoch, both runs side by side.</summary>
    public static void WriteEpochs(string path, TrainingRun theirs, TrainingRun ours)
    {
        var text = new StringBuilder();
        text.Append("epoch,torchsharp_loss,ours_loss,torchsharp_train_accuracy,ours_train_accuracy,")
            .Append("torchsharp_test_loss,ours_test_loss,torchsharp_test_accuracy,ours_test_accuracy,torchsharp_seconds,ours_seconds\n");
        for (int k = 0; k < theirs.Epochs.Count; k++)
        {
            var a = theirs.Epochs[k];
            var b = ours.Epochs[k];
            text.AppendLine(Csv(a.Epoch, a.Loss, b.Loss, a.TrainAccuracy, b.TrainAccuracy, a.TestLoss, b.TestLoss, a.TestAccuracy, b.TestAccuracy, a.Seconds, b.Seconds));
        }

        File.WriteAllText(path, text.ToString().ReplaceLineEndings("\n"));
    }

    /// <summary>One row per training step: both losses and their difference.</summary>
    public static void WriteSteps(string path, TrainingRun theirs, TrainingRun ours, int stepsPerEpoch)
    {
        var text = new StringBuilder("step,epoch,torchsharp_loss,ours_loss,abs_difference\n");
        for (int s = 0; s < theirs.StepLosses.Count; s++)
        {
            double a = theirs.StepLosses[s], b = ours.StepLosses[s];
            text.AppendLine(Csv(s + 1, (double)(s + 1) / stepsPerEpoch, a, b, Math.Abs(a - b)));
        }

        File.WriteAllText(path, text.ToString().ReplaceLineEndings("\n"));
    }

    /// <summary>Both training-loss curves over the steps (x in epochs), TorchSharp's wide and ours dashed on top.</summary>
    public static void WriteChart(string path, TrainingRun theirs, TrainingRun ours, int stepsPerEpoch)
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
        plot.Title("Training loss per step: two runs from the same initial weights, data order and dropout masks");
        plot.XLabel("epoch");
        plot.YLabel("cross-entropy loss");
        plot.Axes.SetLimitsY(0, Math.Max(theirs.StepLosses.Max(), ours.StepLosses.Max()) * 1.05);
        plot.Axes.SetLimitsX(0, xs[^1]);
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.SavePng(path, 900, 500);
    }

    private static string Csv(params IEnumerable<double> values) =>
        string.Join(',', values.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
}
