using System;
using System.Collections.Generic;
using System.Globalization;

namespace MyTorch.Layers.Examples;

/// <summary>The command line of the training comparison.</summary>
/// <param name="Distributed">Data-parallel training with SyncBatchNorm on the processes mpiexec started (<see cref="DistributedTraining"/>).</param>
/// <param name="EpochsGiven">Whether --epochs was given, as the data-parallel mode has a default of its own.</param>
/// <param name="ThreadsGiven">Whether --threads was given, as the data-parallel mode shares the processors by default.</param>
internal sealed record TrainingOptions(int Epochs, int BatchSize, int Threads, string Output, bool Quick, bool Distributed = false, bool EpochsGiven = false, bool ThreadsGiven = false)
{
    public const string Usage = """
        Usage: dotnet run --project src/MyTorch.Layers.Examples -c Release -- [options]

        Trains the same small CNN (conv, BatchNorm2d, ReLU, Dropout2d, max-pool, ..., linear) on a generated shapes
        data set with TorchSharp's BatchNorm2d and Dropout2d, with MyTorch.Layers', and with MyTorch.Layers' whose
        BatchNorm2d -> ReLU -> Dropout2d groups layers.fuse_modules fused, prints the three runs side by side per
        epoch, and writes the curves as CSV and a chart of the loss curves as PNG. Then checks every training step of
        a TorchSharp run against MyTorch.Layers' layers on identical inputs, and against the fused model, whose every
        step must also be the unfused model's bit for bit. Exit code: 0 when every checked step agrees within the
        check's tolerances and every fused step is the unfused model's bits, 1 when one is not, 2 for bad options.

        Options:
          --epochs N        passes over the training set (default 6; 2 with --quick)
          --batch-size N    images per training step (default 64)
          --threads N       torch.set_num_threads (default: the number of processors)
          --output DIR      folder for training-curves.csv, training-steps.csv and training-loss.png
                            (default training-output)
          --quick           a smaller data set and fewer epochs, for a smoke test
          --distributed     instead: data-parallel training on the processes mpiexec started, each process
                            taking its slice of every batch (SyncBatchNorm.convert_sync_batchnorm,
                            DataParallel.BroadcastState and AverageGradients), in float64, checked after every
                            step against single-process training on the whole batch; rank 0 prints the check
                            and the time per step and in collectives. One epoch unless --epochs; threads are
                            the processors shared among the processes unless --threads; --batch-size must be a
                            multiple of the process count; writes no files. Build first, then start the ranks
                            without building (two concurrent builds of the same project race):
                              dotnet build src/MyTorch.Layers.Examples -c Release
                              mpiexec -n 2 dotnet run --project src/MyTorch.Layers.Examples -c Release --no-build -- --distributed
          -h, --help        print this message and exit
        """;

    /// <summary>Training images in the generated data set (test images: a quarter of that).</summary>
    public int TrainImages => Quick ? 1024 : 4096;

    public int TestImages => TrainImages / 4;

    /// <summary>Parses <paramref name="args"/>; the result has options, or asks for help, or carries an error.</summary>
    public static ParseResult Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        int? epochs = null;
        int batchSize = 64;
        int? threads = null;
        string output = "training-output";
        bool quick = false;
        bool distributed = false;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg is "-h" or "--help")
            {
                return ParseResult.Help;
            }

            if (arg == "--quick")
            {
                quick = true;
                continue;
            }

            if (arg == "--distributed")
            {
                distributed = true;
                continue;
            }

            // Both "--name value" and "--name=value".
            string name = arg;
            string? value = null;
            int equals = arg.IndexOf('=', StringComparison.Ordinal);
            if (arg.StartsWith("--", StringComparison.Ordinal) && equals > 0)
            {
                name = arg[..equals];
                value = arg[(equals + 1)..];
            }

            if (name is not ("--epochs" or "--batch-size" or "--threads" or "--output"))
            {
                return ParseResult.Failed($"unknown option '{arg}'");
            }

            if (value is null)
            {
                if (i + 1 >= args.Count)
                {
                    return ParseResult.Failed($"option '{name}' needs a value");
                }

                value = args[++i];
            }

            switch (name)
            {
                case "--output":
                    if (value.Length == 0)
                    {
                        return ParseResult.Failed("--output needs a folder name");
                    }

                    output = value;
                    break;
                case "--epochs":
                    if (!TryParsePositive(value, 1000, out int e))
                    {
                        return ParseResult.Failed($"--epochs expects an integer from 1 to 1000, got '{value}'");
                    }

                    epochs = e;
                    break;
                case "--batch-size":
                    if (!TryParsePositive(value, 4096, out batchSize))
                    {
                        return ParseResult.Failed($"--batch-size expects an integer from 1 to 4096, got '{value}'");
                    }

                    break;
                default:
                    if (!TryParsePositive(value, 1024, out int t))
                    {
                        return ParseResult.Failed($"--threads expects an integer from 1 to 1024, got '{value}'");
                    }

                    threads = t;
                    break;
            }
        }

        return ParseResult.Succeeded(new TrainingOptions(
            epochs ?? (quick ? 2 : 6), batchSize, threads ?? Environment.ProcessorCount, output, quick, distributed, epochs is not null, threads is not null));
    }

    private static bool TryParsePositive(string text, int max, out int value) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value) && value >= 1 && value <= max;
}

/// <summary>What <see cref="TrainingOptions.Parse"/> found: options to run with, a request for help, or an error.</summary>
internal sealed record ParseResult(TrainingOptions? Options, string? Error)
{
    public static ParseResult Help { get; } = new(null, null);

    public bool IsHelp => Options is null && Error is null;

    public static ParseResult Succeeded(TrainingOptions options) => new(options, null);

    public static ParseResult Failed(string error) => new(null, error);
}
