using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;
using OurBatchNorm2d = MyTorch.Layers.BatchNorm2d;
using OurDropout2d = MyTorch.Layers.Dropout2d;
using TorchBatchNorm2d = TorchSharp.Modules.BatchNorm2d;

namespace MyTorch.Layers.Examples;

/// <summary>
/// MyTorch.Layers.BatchNorm2d next to TorchSharp's torch.nn.BatchNorm2d: how far apart their results are, and how
/// long each takes; then MyTorch.Layers.Dropout2d next to torch.nn.Dropout2d under the same seeds, compared bit for bit.
/// Exit code 0 when they agree (within tolerance for BatchNorm2d, bitwise for Dropout2d), 1 when they do not, 2 for bad options.
/// </summary>
internal static class Program
{
    private const int Seed = 42;

    private static int Main(string[] args)
    {
        var parsed = ExampleOptions.Parse(args);
        if (parsed.IsHelp)
        {
            Console.Out.WriteLine(ExampleOptions.Usage);
            return 0;
        }

        if (parsed.Options is not { } options)
        {
            Console.Error.WriteLine($"error: {parsed.Error}");
            Console.Error.WriteLine();
            Console.Error.WriteLine(ExampleOptions.Usage);
            return 2;
        }

        torch.manual_seed(Seed);
        var tolerance = Tolerance.For(options.Dtype);
        PrintHeader(options);

        using var theirs = torch.nn.BatchNorm2d(options.Channels, dtype: options.Dtype);
        using var ours = new OurBatchNorm2d(options.Channels, dtype: options.Dtype);
        CopySameAffineParameters(ours, theirs, options);

        var quantities = Agreement.Run(ours, theirs, options, tolerance);
        PrintAgreement(quantities, tolerance, options);

        using var theirsDropout = torch.nn.Dropout2d(options.P);
        using var oursDropout = new OurDropout2d(options.P);
        var dropoutQuantities = DropoutAgreement.Run(oursDropout, theirsDropout, options);
        PrintDropoutAgreement(dropoutQuantities, options);

        var timings = Timings.Run(ours, theirs, options).Append(Timings.RunDropout2d(oursDropout, theirsDropout, options)).ToList();
        PrintTimings(timings);

        var failed = quantities.Where(q => !q.Passed).ToList();
        foreach (var q in failed)
        {
            string why = q.Problem ?? string.Create(
                CultureInfo.InvariantCulture,
                $"max |diff| {TextTable.Scientific(q.MaxAbsolute)}, max rel diff {TextTable.Scientific(q.MaxRelative)}, {TextTable.Scientific(q.WorstToTolerance)} times the tolerance");
            Console.Error.WriteLine($"DISAGREE: {q.Phase} {q.Name}: {why}");
        }

        var dropoutFailed = dropoutQuantities.Where(q => !q.Passed).ToList();
        foreach (var q in dropoutFailed)
        {
            string why = q.Problem ?? string.Create(
                CultureInfo.InvariantCulture,
                $"{q.Differing} of {q.Elements} elements differ bitwise, max |diff| {TextTable.Scientific(q.MaxAbsolute)}");
            Console.Error.WriteLine($"DISAGREE: Dropout2d {q.Phase} {q.Name}: {why}");
        }

        int failures = failed.Count + dropoutFailed.Count;
        Console.Out.WriteLine(failures == 0
            ? "Result: ours agrees with TorchSharp on every quantity."
            : string.Create(CultureInfo.InvariantCulture, $"Result: {failures} quantit{(failures == 1 ? "y disagrees" : "ies disagree")} with TorchSharp."));
        return failures == 0 ? 0 : 1;
    }

    private static void PrintHeader(ExampleOptions options)
    {
        string torchSharpVersion = typeof(torch).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
            ?? typeof(torch).Assembly.GetName().Version?.ToString()
            ?? "unknown";
        Console.Out.WriteLine("MyTorch.Layers.BatchNorm2d vs TorchSharp torch.nn.BatchNorm2d");
        Console.Out.WriteLine($"  TorchSharp {torchSharpVersion} (libtorch {torch.__version__}), {RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture}");
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  input {options.ShapeText} {options.DtypeText}, torch.get_num_threads() = {torch.get_num_threads()}, torch.manual_seed({Seed})"));
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  defaults (eps 1e-05, momentum 0.1, affine, tracking running stats); {Agreement.TrainingSteps} training steps, then {Agreement.EvalSteps} eval step"));
        Console.Out.WriteLine();
    }

    /// <summary>The same random, non-trivial weight and bias in both modules (they start as ones and zeros).</summary>
    private static void CopySameAffineParameters(OurBatchNorm2d ours, TorchBatchNorm2d theirs, ExampleOptions options)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var weight = (randn(options.Channels, options.Dtype) * 0.5) + 1.0;
        var bias = randn(options.Channels, options.Dtype) * 0.5;
        ours.weight!.copy_(weight);
        theirs.weight!.copy_(weight);
        ours.bias!.copy_(bias);
        theirs.bias!.copy_(bias);
    }

    private static void PrintAgreement(IReadOnlyList<Quantity> quantities, Tolerance tolerance, ExampleOptions options)
    {
        var table = new TextTable(
            ("phase", false),
            ("quantity", false),
            ("max abs diff", true),
            ("max rel diff", true),
            ("atol", true),
            ("worst diff/tol", true),
            ("result", false));
        foreach (var q in quantities)
        {
            table.Add(
                q.Phase,
                q.Name,
                TextTable.Scientific(q.MaxAbsolute),
                TextTable.Scientific(q.MaxRelative),
                TextTable.Scientific(q.Tolerance.Absolute),
                TextTable.Scientific(q.WorstToTolerance),
                q.Passed ? "ok" : "DISAGREE" + (q.Problem is null ? string.Empty : $" ({q.Problem})"));
        }

        Console.Out.WriteLine("Agreement of ours with TorchSharp (worst over all steps)");
        Console.Out.WriteLine($"  an element agrees when {tolerance}, atol = {TextTable.Scientific(tolerance.Absolute)};");
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  weight.grad and bias.grad sum N*H*W = {options.ValuesPerChannel} values per channel, and rounding errors grow with a sum: atol * sqrt(N*H*W) for them."));
        Console.Out.WriteLine("  An element near 0 can have a large relative difference and still agree.");
        Console.Out.Write(table.ToString());
        Console.Out.WriteLine();
    }

    private static void PrintDropoutAgreement(IReadOnlyList<BitwiseQuantity> quantities, ExampleOptions options)
    {
        var table = new TextTable(
            ("phase", false),
            ("quantity", false),
            ("elements", true),
            ("bitwise different", true),
            ("max abs diff", true),
            ("result", false));
        foreach (var q in quantities)
        {
            table.Add(
                q.Phase,
                q.Name,
                q.Elements.ToString(CultureInfo.InvariantCulture),
                q.Differing.ToString(CultureInfo.InvariantCulture),
                TextTable.Scientific(q.MaxAbsolute),
                q.Passed ? "ok" : "DISAGREE" + (q.Problem is null ? string.Empty : $" ({q.Problem})"));
        }

        long lastSeed = DropoutAgreement.FirstSeed + Agreement.TrainingSteps + Agreement.EvalSteps - 1;
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"MyTorch.Layers.Dropout2d vs TorchSharp torch.nn.Dropout2d, p = {options.PText}: bit for bit (totals over all steps)"));
        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  {Agreement.TrainingSteps} training steps, then {Agreement.EvalSteps} eval step, with seeds s = {DropoutAgreement.FirstSeed}..{lastSeed}: torch.manual_seed(s) right before each forward, TorchSharp's then ours;"));
        Console.Out.WriteLine("  x.grad after backward of the same fresh random grad_output. Any bitwise difference disagrees.");
        Console.Out.Write(table.ToString());
        Console.Out.WriteLine();
    }

    private static void PrintTimings(IReadOnlyList<Timing> timings)
    {
        var table = new TextTable(
            ("pass", false),
            ("TorchSharp ms", true),
            ("ours ms", true),
            ("ours / TorchSharp", true));
        foreach (var t in timings)
        {
            table.Add(
                t.Pass,
                TextTable.Milliseconds(t.TheirsMilliseconds),
                TextTable.Milliseconds(t.OursMilliseconds),
                TextTable.Ratio(t.OursMilliseconds / t.TheirsMilliseconds));
        }

        Console.Out.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Indicative wall-clock times: median of {Timings.Repetitions} repetitions after {Timings.WarmUps} warm-ups (Stopwatch)"));
        Console.Out.WriteLine("  not a benchmark: one machine, one process, no isolation; the two alternate repetition by repetition");
        Console.Out.Write(table.ToString());
        Console.Out.WriteLine();
    }
}
