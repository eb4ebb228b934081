using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;
using OurDropout2d = MyTorch.Layers.Dropout2d;
using TorchDropout2d = TorchSharp.Modules.Dropout2d;

namespace MyTorch.Layers.Examples;

/// <summary>One Dropout2d quantity (say, the training output) compared bit for bit, totalled over every comparison.</summary>
internal sealed class BitwiseQuantity(string phase, string name)
{
    public string Phase { get; } = phase;

    public string Name { get; } = name;

    /// <summary>Elements compared, over all steps.</summary>
    public long Elements { get; private set; }

    /// <summary>Elements whose bits differ (so −0.0 vs 0.0 and differing NaNs count), over all steps.</summary>
    public long Differing { get; private set; }

    /// <summary>max |ours − theirs| (NaN if either side has a NaN).</summary>
    public double MaxAbsolute { get; private set; }

    /// <summary>A structural problem (missing tensor, other shape or dtype), or null.</summary>
    public string? Problem { get; private set; }

    public bool Passed => Problem is null && Differing == 0;

    public void Compare(Tensor? ours, Tensor? theirs)
    {
        if (ours is null || theirs is null)
        {
            Problem ??= ours is null ? "ours is missing" : "TorchSharp's is missing";
            return;
        }

        if (!ours.shape.SequenceEqual(theirs.shape))
        {
            Problem ??= $"shape [{string.Join(", ", ours.shape)}] vs TorchSharp's [{string.Join(", ", theirs.shape)}]";
            return;
        }

        if (ours.dtype != theirs.dtype)
        {
            Problem ??= $"dtype {ours.dtype} vs TorchSharp's {theirs.dtype}";
            return;
        }

        using var scope = NewDisposeScope();
        var a = ours.detach().contiguous();
        var b = theirs.detach().contiguous();
        Elements += a.numel();
        Differing += a.dtype == ScalarType.Float64 ? CountDiffering(a.data<double>().ToArray(), b.data<double>().ToArray())
            : CountDiffering(a.data<float>().ToArray(), b.data<float>().ToArray());

        var a64 = a.to(ScalarType.Float64);
        var b64 = b.to(ScalarType.Float64);
        var diff = (a64 - b64).abs().where(a64.ne(b64), 0.0);
        MaxAbsolute = Math.Max(MaxAbsolute, diff.max().item<double>());
    }

    private static long CountDiffering(double[] ours, double[] theirs)
    {
        long count = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            if (BitConverter.DoubleToInt64Bits(ours[i]) != BitConverter.DoubleToInt64Bits(theirs[i]))
            {
                count++;
            }
        }

        return count;
    }

    private static long CountDiffering(float[] ours, float[] theirs)
    {
        long count = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(ours[i]) != BitConverter.SingleToInt32Bits(theirs[i]))
            {
                count++;
            }
        }

        return count;
    }
}

/// <summary>
/// Runs both Dropout2d modules on the same inputs, each forward right after the same torch.manual_seed(s), and compares
/// output and x.grad bit for bit.
/// </summary>
internal static class DropoutAgreement
{
    /// <summary>Step k (training steps first, then eval) seeds with FirstSeed + k.</summary>
    public const long FirstSeed = 100;

    public static IReadOnlyList<BitwiseQuantity> Run(OurDropout2d ours, TorchDropout2d theirs, ExampleOptions options)
    {
        ArgumentNullException.ThrowIfNull(ours);
        ArgumentNullException.ThrowIfNull(theirs);
        ArgumentNullException.ThrowIfNull(options);

        var trainOutput = new BitwiseQuantity("training", "output");
        var trainInputGrad = new BitwiseQuantity("training", "x.grad");
        var evalOutput = new BitwiseQuantity("eval", "output");
        var evalInputGrad = new BitwiseQuantity("eval", "x.grad");
        long seed = FirstSeed;

        ours.train();
        theirs.train();
        for (int step = 0; step < Agreement.TrainingSteps; step++)
        {
            using var scope = NewDisposeScope();
            var result = Step(ours, theirs, options, seed++);
            trainOutput.Compare(result.Ours.Output, result.Theirs.Output);
            trainInputGrad.Compare(result.Ours.InputGrad, result.Theirs.InputGrad);
        }

        ours.eval();
        theirs.eval();
        for (int step = 0; step < Agreement.EvalSteps; step++)
        {
            using var scope = NewDisposeScope();
            var result = Step(ours, theirs, options, seed++);
            evalOutput.Compare(result.Ours.Output, result.Theirs.Output);
            evalInputGrad.Compare(result.Ours.InputGrad, result.Theirs.InputGrad);
        }

        return [trainOutput, trainInputGrad, evalOutput, evalInputGrad];
    }

    /// <summary>A fresh input and grad_output; TorchSharp's forward and backward, then ours, each forward after manual_seed(seed).</summary>
    private static (Outcome Ours, Outcome Theirs) Step(OurDropout2d ours, TorchDropout2d theirs, ExampleOptions options, long seed)
    {
        var x = Agreement.RandomInput(options.Shape, options.Dtype);
        var gradOutput = randn(options.Shape, options.Dtype);
        var theirsOutcome = Run(theirs, x, gradOutput, seed);
        var oursOutcome = Run(ours, x, gradOutput, seed);
        return (oursOutcome, theirsOutcome);
    }

    private static Outcome Run(nn.Module<Tensor, Tensor> module, Tensor x, Tensor gradOutput, long seed)
    {
        var input = x.detach().clone().requires_grad_(true);
        torch.manual_seed(seed);
        var output = module.call(input);
        output.backward([gradOutput]);
        return new Outcome(output, input.grad);
    }

    private readonly record struct Outcome(Tensor Output, Tensor? InputGrad);
}
