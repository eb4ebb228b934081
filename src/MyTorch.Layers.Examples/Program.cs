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
/// The same small CNN trained with TorchSharp's BatchNorm2d and Dropout2d, with MyTorch.Layers', and with
/// MyTorch.Layers' fused by <c>layers.fuse_modules</c>: three free runs side by side for the curves, the accuracy and
/// the time, then the checks that decide the exit code, which compare each of ours with TorchSharp's one step at a
/// time on identical inputs, and the fused model's steps with our unfused model's bit for bit (<see cref="StepCheck"/>).
/// Exit code 0 when every checked step agrees within the check's tolerances and every fused step is our unfused
/// model's bits, 1 when one is not, 2 for bad options.
/// </summary>
internal static class Program
{
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
        if (options.Distributed)
        {
            return DistributedTraining.Run(options, Seed, isaNote);
        }

        set_num_threads(options.Threads);
        PrintHeader(options, isaNote, "The same CNN trained with TorchSharp's BatchNorm2d and Dropout2d, with MyTorch.Layers', and with ours fused");

        var clock = Stopwatch.StartNew();
        using var train = ShapesDataset.Generate(options.TrainImages, Seed);
        using var test = ShapesDataset.Generate(options.TestImages, Seed + 1);
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Data: {train.Count} training and {test.Count} test images, 28x28, {ShapesDataset.ClassNames.Length} classes ({string.Join(", ", ShapesDataset.ClassNames)}); chance is {100.0 / ShapesDataset.ClassNames.Length:F1}%. Generated in {clock.Elapsed.TotalSeconds:F1} s."));

        // The same initial weights everywhere: TorchSharp's model initialises them, the other models load a copy.
        manual_seed(Seed);
        using var theirs = new TrainingRun(LayerSet.TorchSharp.Name, SmallCnn.Create(LayerSet.TorchSharp, ShapesDataset.ClassNames.Length), options.Epochs);
        var initialState = theirs.Model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone().DetachFromDisposeScope());
        var ourModel = SmallCnn.Create(LayerSet.MyTorchLayers, ShapesDataset.ClassNames.Length);
        ourModel.load_state_dict(initialState);
        using var ours = new TrainingRun(LayerSet.MyTorchLayers.Name, ourModel, options.Epochs);
        var fusedModel = SmallCnn.Create(LayerSet.MyTorchLayersFused, ShapesDataset.ClassNames.Length);
        fusedModel.load_state_dict(initialState);
        using var fused = new TrainingRun(LayerSet.MyTorchLayersFused.Name, fusedModel, options.Epochs);

        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Model: conv-bn-relu-dropout2d(p={SmallCnn.DropoutP})-maxpool x2, linear-relu-linear; {theirs.Model.parameters().Sum(p => p.numel())} parameters. SGD (lr {TrainingRun.LearningRate}, momentum 0.9, weight decay 5e-4), cosine LR schedule, batch {options.BatchSize}, {options.Epochs} epochs."));
        string groups = string.Join(", ", SmallCnn.FusionGroups(ourModel).Select(g => "[" + string.Join(", ", g) + "]"));
        Console.Out.WriteLine($"Fused: ours after layers.fuse_modules(model, [{groups}]), a BatchNormReLUDropout2d in each BatchNorm2d's place.");
        Console.Out.WriteLine();
        Console.Out.WriteLine("Three training runs from the same initial weights, data order and dropout masks:");
        Console.Out.WriteLine("        |            TorchSharp layers            |          MyTorch.Layers layers          |           MyTorch.Layers fused          |");
        Console.Out.WriteLine("  epoch |   loss   train    test  test loss   time |   loss   train    test  test loss   time |   loss   train    test  test loss   time |");

        var progress = new ProgressBar();
        var generator = new Generator(Seed);
        int stepsPerEpoch = (int)(train.Count / options.BatchSize);
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            // Every run sees the same order and the same dropout masks.
            using var order = randperm(train.Count, generator: generator);
            var a = theirs.TrainEpoch(train, test, order, options.BatchSize, Seed + epoch, progress);
            var b = ours.TrainEpoch(train, test, order, options.BatchSize, Seed + epoch, progress);
            var c = fused.TrainEpoch(train, test, order, options.BatchSize, Seed + epoch, progress);
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {epoch,5} | {Row(a)} | {Row(b)} | {Row(c)} |"));
        }

        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Test accuracy: TorchSharp {100 * theirs.Epochs[^1].TestAccuracy:F1}%, MyTorch.Layers {100 * ours.Epochs[^1].TestAccuracy:F1}%, fused {100 * fused.Epochs[^1].TestAccuracy:F1}%."));
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Training time: TorchSharp {theirs.Epochs.Sum(e => e.Seconds):F1} s, MyTorch.Layers {ours.Epochs.Sum(e => e.Seconds):F1} s, fused {fused.Epochs.Sum(e => e.Seconds):F1} s."));
        Console.Out.WriteLine("Free runs drift apart by rounding over hundreds of steps: they are shown, not compared (docs/testing.md).");

        Console.Out.WriteLine();
        clock.Restart();
        var summary = StepCheck.Run(LayerSet.MyTorchLayers, initialState, train, test, options.Epochs, options.BatchSize, Seed, progress);
        PrintCheck(summary, clock.Elapsed.TotalSeconds);
        Console.Out.WriteLine();
        clock.Restart();
        var fusedSummary = StepCheck.Run(LayerSet.MyTorchLayersFused, initialState, train, test, options.Epochs, options.BatchSize, Seed, progress);
        PrintCheck(fusedSummary, clock.Elapsed.TotalSeconds);
        foreach (var t in initialState.Values)
        {
            t.Dispose();
        }

        Directory.CreateDirectory(options.Output);
        Report.WriteEpochs(Path.Combine(options.Output, Report.EpochsFile), theirs, ours, fused);
        Report.WriteSteps(Path.Combine(options.Output, Report.StepsFile), theirs, ours, fused, stepsPerEpoch);
        Report.WriteChart(Path.Combine(options.Output, Report.ChartFile), theirs, ours, fused, stepsPerEpoch);
        Console.Out.WriteLine($"Wrote {Path.Combine(options.Output, Report.EpochsFile)}, {Report.StepsFile} and {Report.ChartFile}.");
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Total time {total.Elapsed.TotalSeconds:F1} s."));

        if (!summary.Passed || !fusedSummary.Passed)
        {
            if (!summary.Passed)
            {
                Console.Error.WriteLine($"DISAGREE: {summary.FirstFailure?.Failure() ?? "no step was checked"}.");
            }

            if (!fusedSummary.Passed)
            {
                Console.Error.WriteLine($"DISAGREE, fused: {fusedSummary.FirstFailure?.Failure() ?? "no step was checked"}.");
            }

            return 1;
        }

        Console.Out.WriteLine("Result: MyTorch.Layers' BatchNorm2d and Dropout2d agree with TorchSharp's at every step; fused, they agree too,");
        Console.Out.WriteLine("and every fused step is our unfused model's, bit for bit.");
        return 0;
    }

    private static void PrintCheck(CheckSummary summary, double seconds)
    {
        if (summary.BitForBit)
        {
            Console.Out.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"The same check of the fused model ({summary.Steps} steps, {summary.Evaluations} evaluations, {seconds:F1} s). Its ReLUs run inside"));
            Console.Out.WriteLine("the fused layers, which cannot replay a choice, so here the TorchSharp model replays the fused model's ReLU and");
            Console.Out.WriteLine("max-pool choices. A model with our unfused layers takes the same inputs; its step must be the fused model's bits.");
        }
        else
        {
            Console.Out.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"Step-by-step check on identical inputs ({summary.Steps} steps, {summary.Evaluations} evaluations, {seconds:F1} s): before each step of"));
            Console.Out.WriteLine("a TorchSharp run, a model with MyTorch.Layers' layers takes its parameters, buffers, batch, dropout generator,");
            Console.Out.WriteLine("ReLU and max-pool choices, and both steps are compared.");
        }

        Console.Out.WriteLine("  largest relative difference (L2 norm)   measured  tolerance  where");
        Line("step loss", summary.Loss, StepCheck.LossTolerance);
        Line("parameter gradient", summary.Gradient, StepCheck.GradientTolerance);
        Line("running statistic", summary.Statistic, StepCheck.StatisticTolerance);
        Line("evaluation logits (test set)", summary.Output, StepCheck.LossTolerance);
        Console.Out.WriteLine(summary.BitForBit
            ? string.Create(CultureInfo.InvariantCulture, $"  ReLU and max-pool choices the TorchSharp run would have made differently: {summary.DecisionsDiffering:N0} of {summary.DecisionsReplayed:N0} (the fused model's replayed).")
            : string.Create(CultureInfo.InvariantCulture, $"  ReLU and max-pool choices MyTorch.Layers' run would have made differently: {summary.DecisionsDiffering:N0} of {summary.DecisionsReplayed:N0} (TorchSharp's replayed)."));
        if (summary.BitForBit)
        {
            Console.Out.WriteLine(summary.FirstBitDifference is { } different
                ? $"  Bit for bit our unfused model's: no, from step {different.Step}: {different.NotBitForBit}."
                : "  Bit for bit our unfused model's: yes (loss, every gradient and running statistic at every step, test-set logits).");
        }

        if (summary.FirstFailure?.Failure() is { } failure)
        {
            Console.Out.WriteLine($"  First failure: {failure}.");
        }

        static void Line(string what, Difference d, double tolerance)
        {
            string where = d.Name is "loss" or "test-set logits" ? $"step {d.Step}" : $"{d.Name}, step {d.Step}";
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {what,-39} {d.Value,8:0.0e+00}  {tolerance,9:0e+00}  {where}"));
        }
    }

    private static string Row(EpochResult e) => string.Create(
        CultureInfo.InvariantCulture,
        $"{e.Loss,6:F4}  {100 * e.TrainAccuracy,5:F1}%  {100 * e.TestAccuracy,5:F1}%  {e.TestLoss,9:F4}  {e.Seconds,4:F1}s");

    internal static void PrintHeader(TrainingOptions options, string? isaNote, string title)
    {
        string torchSharpVersion = typeof(torch).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
            ?? "unknown";
        Console.Out.WriteLine(title);
        Console.Out.WriteLine($"  TorchSharp {torchSharpVersion} (libtorch {__version__}), {RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture}");
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  torch.get_num_threads() = {get_num_threads()}, DNNL_MAX_CPU_ISA{(Environment.GetEnvironmentVariable("DNNL_MAX_CPU_ISA") is { } isa ? "=" + isa : " unset")}, seed {Seed}{(options.Quick ? ", quick" : string.Empty)}"));
        if (isaNote is not null)
        {
            Console.Out.WriteLine(isaNote);
        }
    }
}
