using System;
using System.Collections.Generic;
using System.Globalization;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>The command line of the example: the input shape and dtype, and Dropout2d's drop probability.</summary>
internal sealed record ExampleOptions(long[] Shape, ScalarType Dtype, double P)
{
    public const string Usage = """
        Usage: dotnet run --project src/MyTorch.Layers.Examples -c Release -- [options]

        Runs MyTorch.Layers.BatchNorm2d and TorchSharp's torch.nn.BatchNorm2d side by side (training steps, then
        evaluation), prints how far apart their results are and indicative timings; then MyTorch.Layers.Dropout2d and
        torch.nn.Dropout2d under the same torch.manual_seed, compared bit for bit. Exit code: 0 when they agree,
        1 when a quantity disagrees, 2 for bad options.

        Options:
          --shape N,C,H,W          input shape, four positive integers (default 32,64,56,56)
          --dtype float32|float64  element type (default float32)
          --p P                    Dropout2d's probability of zeroing a channel, in [0, 1] (default 0.5)
          -h, --help               print this message and exit
        """;

    public static ExampleOptions Default { get; } = new([32, 64, 56, 56], ScalarType.Float32, 0.5);

    public long Channels => Shape[1];

    public long ValuesPerChannel => Shape[0] * Shape[2] * Shape[3];

    public string ShapeText => string.Join('x', Shape);

    public string DtypeText => Dtype == ScalarType.Float64 ? "float64" : "float32";

    public string PText => P.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Parses <paramref name="args"/>; the result has options, or asks for help, or carries an error.</summary>
    public static ParseResult Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = Default;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg is "-h" or "--help")
            {
                return ParseResult.Help;
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

            if (name is not ("--shape" or "--dtype" or "--p"))
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

            string? error;
            if (name == "--shape")
            {
                error = TryParseShape(value, out long[] shape);
                options = options with { Shape = shape };
            }
            else if (name == "--dtype")
            {
                error = TryParseDtype(value, out var dtype);
                options = options with { Dtype = dtype };
            }
            else
            {
                error = TryParseProbability(value, out double p);
                options = options with { P = p };
            }

            if (error is not null)
            {
                return ParseResult.Failed(error);
            }
        }

        return ParseResult.Succeeded(options);
    }

    private static string? TryParseShape(string text, out long[] shape)
    {
        shape = [];
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 4)
        {
            return $"--shape expects four comma-separated sizes N,C,H,W, got '{text}'";
        }

        var sizes = new long[4];
        for (int k = 0; k < 4; k++)
        {
            if (!long.TryParse(parts[k], NumberStyles.None, CultureInfo.InvariantCulture, out sizes[k]) || sizes[k] < 1)
            {
                return $"--shape: '{parts[k]}' is not a positive integer";
            }
        }

        if (sizes[0] > int.MaxValue / sizes[1] / sizes[2] / sizes[3])
        {
            return string.Create(CultureInfo.InvariantCulture, $"--shape: at most {int.MaxValue} elements are supported");
        }

        if (sizes[0] * sizes[2] * sizes[3] < 2)
        {
            return "--shape: training needs more than one value per channel (N*H*W >= 2)";
        }

        shape = sizes;
        return null;
    }

    private static string? TryParseProbability(string text, out double p)
    {
        // NaN and the infinities parse, and fail the range check.
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out p) || !(p >= 0 && p <= 1))
        {
            p = default;
            return $"--p expects a probability in [0, 1], got '{text}'";
        }

        return null;
    }

    private static string? TryParseDtype(string text, out ScalarType dtype)
    {
        switch (text.ToUpperInvariant())
        {
            case "FLOAT32" or "FLOAT":
                dtype = ScalarType.Float32;
                return null;
            case "FLOAT64" or "DOUBLE":
                dtype = ScalarType.Float64;
                return null;
            default:
                dtype = default;
                return $"--dtype expects float32 or float64, got '{text}'";
        }
    }
}

/// <summary>What <see cref="ExampleOptions.Parse"/> found: options to run with, a request for help, or an error.</summary>
internal sealed record ParseResult(ExampleOptions? Options, string? Error)
{
    public static ParseResult Help { get; } = new(null, null);

    public bool IsHelp => Options is null && Error is null;

    public static ParseResult Succeeded(ExampleOptions options) => new(options, null);

    public static ParseResult Failed(string error) => new(null, error);
}
