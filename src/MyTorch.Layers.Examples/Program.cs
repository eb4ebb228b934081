using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// A real training run with MyTorch.Layers' BatchNorm2d and Dropout2d beside the same run with TorchSharp's: the
/// same small CNN, the same initial weights, the same data order and the same dropout masks, so the two runs differ
/// only in how the two layers compute. Exit code 0 when the first epoch's step losses agree within
/// <see cref="FirstEpochStepTolerance"/>, every epoch's mean training loss within <see cref="EpochLossTolerance"/> and
/// the final test accuracies within <see cref="AccuracyTolerance"/>; 1 when they do not, 2 for bad options.
/// </summary>
internal static class Program
{
    /// <summary>
    /// The largest difference of an epoch's mean training loss the two runs may show. The README explains the number:
    /// single steps of two float32 runs drift apart chaotically (TorchSharp against itself, with only the thread count
    /// changed, by up to 4e-2), while epoch means stay within a few 1e-3 of each other; a faulty layer moves them by more.
    /// </summary>
    public const double EpochLossTolerance = 1e-2;

    /// <summary>
    /// The largest difference of a single step's training loss during the first epoch, before rounding differences
    /// have been amplified: there the runs agree to about 1e-6, and a faulty gradient moves them by about 1e-1.
    /// </summary>
    public const double FirstEpochStepTolerance = 1e-3;

    /// <summary>The largest difference of the final test accuracies, as a fraction (2 percentage points).</summary>
    public const double AccuracyTolerance = 0.02;

    private const int Seed = 2024;

    private static int Main(string[] args)
    {
        var parsed = TrainingOptions.Parse(args);
        if (parsed.IsHelp)
        {
            Console.Out.WriteLine(TrainingOptions.Usage);
            return 0;
        }

        if (parsed.Options is not { } options)
        {
            Console.Error.WriteLine($"error: {parsed.Error}");
            Console.Error.WriteLine();
            Console.Error.WriteLine(TrainingOptions.Usage);
            return 2;
        }

        var total = Stopwatch.StartNew();
        string? isaNote = OneDnnIsa.KeepToAvxWhereNeeded();
        set_num_threads(options.Threads);
        PrintHeader(options, isaNote);

        var clock = Stopwatch.StartNew();
        using var train = ShapesDataset.Generate(options.TrainImages, Seed);
        using var test = ShapesDataset.Generate(options.TestImages, Seed + 1);
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Data: {train.Count} training and {test.Count} test images, 28x28, {ShapesDataset.ClassNames.Length} classes ({string.Join(", ", ShapesDataset.ClassNames)}); chance is {100.0 / ShapesDataset.ClassNames.Length:F1}%. Generated in {clock.Elapsed.TotalSeconds:F1} s."));

        // The same initial weights: TorchSharp's model initialises them, ours loads its state dict.
        manual_seed(Seed);
        using var theirs = new TrainingRun("TorchSharp", SmallCnn.Create(Implementation.TorchSharp, ShapesDataset.ClassNames.Length), options.Epochs);
        var theirModel = theirs.Model;
        var ourModel = SmallCnn.Create(Implementation.MyTorchLayers, ShapesDataset.ClassNames.Length);
        ourModel.load_state_dict(theirModel.state_dict());
        using var ours = new TrainingRun("MyTorch.Layers", ourModel, options.Epochs);

        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Model: conv-bn-relu-dropout2d(p={SmallCnn.DropoutP})-maxpool x2, linear-relu-linear; {theirModel.parameters().Sum(p => p.numel())} parameters. SGD (lr 0.01, momentum 0.9, weight decay 5e-4), cosine LR schedule, batch {options.BatchSize}, {options.Epochs} epochs."));
        Console.Out.WriteLine();
        Console.Out.WriteLine("        |            TorchSharp layers            |          MyTorch.Layers layers          |");
        Console.Out.WriteLine("  epoch |   loss   train    test  test loss   time |   loss   train    test  test loss   time | max |diff| loss");

        var progress = new ProgressBar();
        var generator = new Generator(Seed);
        int stepsPerEpoch = (int)(train.Count / options.BatchSize);
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            // Both runs see the same order and the same dropout masks.
            using var order = randperm(train.Count, generator: generator);
            var a = theirs.TrainEpoch(train, test, order, options.BatchSize, Seed + epoch, progress);
            var b = ours.TrainEpoch(train, test, order, options.BatchSize, Seed + epoch, progress);
            double maxSoFar = MaxDifference(theirs, ours, out _);
            Console.Out.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"  {epoch,5} | {Row(a)} | {Row(b)} | {maxSoFar,9:0.00e+00}"));
        }

        double max = MaxDifference(theirs, ours, out int worstStep);
        Directory.CreateDirectory(options.Output);
        Report.WriteEpochs(Path.Combine(options.Output, Report.EpochsFile), theirs, ours);
        Report.WriteSteps(Path.Combine(options.Output, Report.StepsFile), theirs, ours, stepsPerEpoch);
        Report.WriteChart(Path.Combine(options.Output, Report.ChartFile), theirs, ours, stepsPerEpoch, max);

        var lastA = theirs.Epochs[^1];
        var lastB = ours.Epochs[^1];
        Console.Out.WriteLine();
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Test accuracy: TorchSharp {100 * lastA.TestAccuracy:F1}%, MyTorch.Layers {100 * lastB.TestAccuracy:F1}%. Training time: TorchSharp {theirs.Epochs.Sum(e => e.Seconds):F1} s, MyTorch.Layers {ours.Epochs.Sum(e => e.Seconds):F1} s."));
        double firstEpochMax = Enumerable.Range(0, stepsPerEpoch).Max(s => Math.Abs(theirs.StepLosses[s] - ours.StepLosses[s]));
        double epochMax = theirs.Epochs.Zip(ours.Epochs, (x, y) => Math.Abs(x.Loss - y.Loss)).Max();
        double accuracyDifference = Math.Abs(lastA.TestAccuracy - lastB.TestAccuracy);
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Largest difference of the step losses in the first epoch: {firstEpochMax:0.00e+00} (tolerance {FirstEpochStepTolerance:0.0e+00}); of the epochs' mean training losses: {epochMax:0.00e+00} (tolerance {EpochLossTolerance:0.0e+00}); of the final test accuracies: {100 * accuracyDifference:F1} points (tolerance {100 * AccuracyTolerance:F0})."));
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Largest difference of single steps' losses over all {theirs.StepLosses.Count} steps: {max:0.00e+00} (step {worstStep}: {theirs.StepLosses[worstStep - 1]:R} vs {ours.StepLosses[worstStep - 1]:R}); reported, not checked."));
        Console.Out.WriteLine($"Wrote {Path.Combine(options.Output, Report.EpochsFile)}, {Report.StepsFile} and {Report.ChartFile}.");
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Total time {total.Elapsed.TotalSeconds:F1} s."));

        if (!(firstEpochMax <= FirstEpochStepTolerance) || !(epochMax <= EpochLossTolerance) || !(accuracyDifference <= AccuracyTolerance))
        {
            Console.Error.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"DISAGREE: first-epoch step losses differ by up to {firstEpochMax:0.00e+00} (tolerance {FirstEpochStepTolerance:0.0e+00}), epoch losses by up to {epochMax:0.00e+00} (tolerance {EpochLossTolerance:0.0e+00}), final test accuracies by {100 * accuracyDifference:F1} points (tolerance {100 * AccuracyTolerance:F0})."));
            return 1;
        }

        Console.Out.WriteLine("Result: the two runs agree.");
        return 0;
    }

    private static string Row(EpochResult e) => string.Create(
        CultureInfo.InvariantCulture,
        $"{e.Loss,6:F4}  {100 * e.TrainAccuracy,5:F1}%  {100 * e.TestAccuracy,5:F1}%  {e.TestLoss,9:F4}  {e.Seconds,4:F1}s");

    /// <summary>The largest |difference| of the two runs' step losses so far, and the 1-based step where it is; NaN counts as infinitely far.</summary>
    private static double MaxDifference(TrainingRun a, TrainingRun b, out int step)
    {
        double max = 0;
        step = 1;
        for (int s = 0; s < a.StepLosses.Count; s++)
        {
            double d = Math.Abs(a.StepLosses[s] - b.StepLosses[s]);
            if (double.IsNaN(d))
            {
                d = double.PositiveInfinity;
            }

            if (d > max)
            {
                max = d;
                step = s + 1;
            }
        }

        return max;
    }

    private static void PrintHeader(TrainingOptions options, string? isaNote)
    {
        string torchSharpVersion = typeof(torch).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
            ?? "unknown";
        Console.Out.WriteLine("The same CNN trained twice from the same seed: TorchSharp's BatchNorm2d and Dropout2d, then MyTorch.Layers'");
        Console.Out.WriteLine($"  TorchSharp {torchSharpVersion} (libtorch {__version__}), {RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture}");
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  torch.get_num_threads() = {get_num_threads()}, seed {Seed}{(options.Quick ? ", quick" : string.Empty)}"));
        if (isaNote is not null)
        {
            Console.Out.WriteLine(isaNote);
        }
    }
}
