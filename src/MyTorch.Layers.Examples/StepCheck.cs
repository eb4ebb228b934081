using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>The largest relative difference of one kind of quantity, and which quantity and step it was.</summary>
internal readonly record struct Difference(double Value, string Name, int Step)
{
    public static Difference None { get; } = new(0, "-", 0);

    /// <summary>The larger of two; NaN counts as larger than anything.</summary>
    public static Difference Max(Difference a, Difference b) => b.Value > a.Value || double.IsNaN(b.Value) ? b : a;
}

/// <summary>What one checked step, or one checked evaluation, found.</summary>
/// <param name="NotBitForBit">
/// For a fused model, what of its step (or evaluation) is not bit for bit our unfused model's; null when all is, or
/// when the model is not fused.
/// </param>
internal sealed record StepResult(int Step, Difference Loss, Difference Gradient, Difference Statistic, Difference Output, string? Mismatch, string? NotBitForBit = null)
{
    public bool Passed =>
        Mismatch is null
        && NotBitForBit is null
        && Loss.Value <= StepCheck.LossTolerance
        && Output.Value <= StepCheck.LossTolerance
        && Gradient.Value <= StepCheck.GradientTolerance
        && Statistic.Value <= StepCheck.StatisticTolerance;

    /// <summary>Why the step failed, in one line; null when it passed.</summary>
    public string? Failure()
    {
        if (Passed)
        {
            return null;
        }

        var reasons = new List<string>();
        if (Mismatch is not null)
        {
            reasons.Add(Mismatch);
        }

        if (NotBitForBit is not null)
        {
            reasons.Add($"not bit for bit our unfused model's: {NotBitForBit}");
        }

        Add(reasons, "loss", Loss, StepCheck.LossTolerance);
        Add(reasons, "evaluation output", Output, StepCheck.LossTolerance);
        Add(reasons, "gradient", Gradient, StepCheck.GradientTolerance);
        Add(reasons, "running statistic", Statistic, StepCheck.StatisticTolerance);
        return $"step {Step}: " + string.Join("; ", reasons);

        static void Add(List<string> reasons, string what, Difference d, double tolerance)
        {
            if (!(d.Value <= tolerance))
            {
                reasons.Add(FormattableString.Invariant($"{what} {d.Name} differs by {d.Value:0.00e+00} relative (tolerance {tolerance:0e+00})"));
            }
        }
    }
}

/// <summary>Everything a check over many steps found: the largest differences, and the first step that failed.</summary>
internal sealed class CheckSummary
{
    public int Steps { get; private set; }

    public int Evaluations { get; private set; }

    public Difference Loss { get; private set; } = Difference.None;

    public Difference Gradient { get; private set; } = Difference.None;

    public Difference Statistic { get; private set; } = Difference.None;

    public Difference Output { get; private set; } = Difference.None;

    public StepResult? FirstFailure { get; private set; }

    /// <summary>Whether each step and evaluation was also compared bit for bit with our unfused model's (a fused model's check).</summary>
    public bool BitForBit { get; set; }

    /// <summary>The first step or evaluation that was not bit for bit our unfused model's.</summary>
    public StepResult? FirstBitDifference { get; private set; }

    /// <summary>ReLU and max-pool choices the model under check would have made differently, and all it replayed.</summary>
    public long DecisionsDiffering { get; set; }

    public long DecisionsReplayed { get; set; }

    public bool Passed => FirstFailure is null && Steps > 0;

    public void Add(StepResult result, bool evaluation)
    {
        if (evaluation)
        {
            Evaluations++;
        }
        else
        {
            Steps++;
        }

        Loss = Difference.Max(Loss, result.Loss);
        Gradient = Difference.Max(Gradient, result.Gradient);
        Statistic = Difference.Max(Statistic, result.Statistic);
        Output = Difference.Max(Output, result.Output);
        if (!result.Passed && FirstFailure is null)
        {
            FirstFailure = result;
        }

        if (result.NotBitForBit is not null && FirstBitDifference is null)
        {
            FirstBitDifference = result;
        }
    }
}

/// <summary>
/// The check that our layers compute what TorchSharp's compute, one training step at a time, on identical inputs.
/// A reference model with TorchSharp's BatchNorm2d and Dropout2d trains; before each of its steps, a model built with
/// the layers under check takes its parameters and buffers, the same batch, the same dropout generator state and
/// the reference's ReLU and max-pool choices (<see cref="Decisions"/>). Both compute the loss and every parameter
/// gradient, and the candidate's loss, gradients, running statistics, counters and generator state are compared with
/// the reference's. Then only the reference takes its optimiser step, so nothing the candidate computes carries into
/// the next step: each step differs by one step's rounding, never by an accumulated drift. After each epoch both
/// models, with the same state, also compute the test set's outputs in evaluation mode.
/// </summary>
/// <remarks>
/// A fused model (<see cref="LayerSet.Fused"/>) runs its ReLUs inside its fused blocks, which cannot replay a choice,
/// so it leads: it records its ReLU and max-pool choices and the reference replays them; everything else is compared
/// as above. As the fused block is defined to compute bit for bit what our BatchNorm2d, TorchSharp's ReLU and our
/// Dropout2d compute one after another, a model with our unfused layers also takes the reference's state, the batch
/// and the generator state, and its loss, every gradient, the running statistics and the evaluation outputs must equal
/// the fused model's bit for bit.
/// </remarks>
internal sealed class StepCheck : IDisposable
{
    /// <summary>
    /// The largest relative difference of a step's loss, and of the evaluation outputs (in L2 norm). See docs/testing.md
    /// for how the three tolerances follow from float32 rounding.
    /// </summary>
    public const double LossTolerance = 1e-5;

    /// <summary>The largest relative difference, in L2 norm, of one parameter's gradient.</summary>
    public const double GradientTolerance = 1e-3;

    /// <summary>The largest relative difference, in L2 norm, of one running statistic after a step.</summary>
    public const double StatisticTolerance = 1e-5;

    private readonly Decisions _decisions = new(SmallCnn.DecisionSlots);
    private readonly TrainingRun _reference;
    private readonly nn.Module<Tensor, Tensor> _candidate;
    private readonly bool _candidateLeads;

    // Our unfused model, for a fused candidate, with choices of its own: it makes the fused model's, as it computes the same bits.
    private readonly nn.Module<Tensor, Tensor>? _unfused;
    private readonly Decisions? _unfusedDecisions;
    private readonly nn.Module<Tensor, Tensor, Tensor> _loss = nn.CrossEntropyLoss();

    public StepCheck(LayerSet candidate, int classes, int epochs, Dictionary<string, Tensor> initialState)
    {
        _reference = new TrainingRun(LayerSet.TorchSharp.Name, SmallCnn.Create(LayerSet.TorchSharp, classes, _decisions), epochs);
        _reference.Model.load_state_dict(initialState);
        _candidate = SmallCnn.Create(candidate, classes, _decisions);
        _candidateLeads = candidate.Fused;
        if (candidate.Fused)
        {
            _unfusedDecisions = new Decisions(SmallCnn.DecisionSlots);
            _unfused = SmallCnn.Create(LayerSet.MyTorchLayers, classes, _unfusedDecisions);
        }
    }

    /// <summary>
    /// Checks every step of <paramref name="epochs"/> epochs, in the order, batches and dropout seeds of
    /// <see cref="TrainingRun.TrainEpoch"/> with an order drawn from <c>new Generator(seed)</c>, and the evaluation after each.
    /// </summary>
    public static CheckSummary Run(
        LayerSet candidate, Dictionary<string, Tensor> initialState, ShapesDataset train, ShapesDataset test, int epochs, int batchSize, long seed, ProgressBar progress)
    {
        using var check = new StepCheck(candidate, ShapesDataset.ClassNames.Length, epochs, initialState);
        var summary = new CheckSummary { BitForBit = check._unfused is not null };
        var generator = new Generator((ulong)seed);
        int steps = (int)(train.Count / batchSize);
        for (int epoch = 1; epoch <= epochs; epoch++)
        {
            using var order = randperm(train.Count, generator: generator);
            manual_seed(seed + epoch);
            for (int step = 0; step < steps; step++)
            {
                using var scope = NewDisposeScope();
                var (x, y) = train.Batch(order, step, batchSize);
                summary.Add(check.Step(summary.Steps + 1, x, y), evaluation: false);
                progress.Report($"check, epoch {epoch}", step + 1, steps);
            }

            check.EndEpoch();
            summary.Add(check.Evaluate(summary.Steps, test), evaluation: true);
            progress.Clear();
        }

        summary.DecisionsDiffering = check._decisions.Differing;
        summary.DecisionsReplayed = check._decisions.Replayed;
        return summary;
    }

    /// <summary>One training step of both models on the same batch, compared; then the reference's optimiser step.</summary>
    public StepResult Step(int step, Tensor images, Tensor labels)
    {
        using var scope = NewDisposeScope();
        _reference.Model.train();
        _candidate.train();
        using var generator = get_rng_state();

        // Before the reference's step, which moves its running statistics.
        _unfused?.load_state_dict(_reference.Model.state_dict());
        var (expectedLoss, loss, sameGenerator) = Lockstep.Step(
            _reference.Model, _candidate, _decisions, model => TrainingRun.Gradients(model, _loss, images, labels).Loss, _candidateLeads);
        string? notBitForBit = _unfused is null ? null : UnfusedStep(_unfused, generator, images, labels, loss);

        var mismatches = new List<string>();
        if (!sameGenerator)
        {
            mismatches.Add("the dropout generator ends elsewhere than TorchSharp's");
        }

        var result = new StepResult(
            step,
            new Difference(Relative(loss, expectedLoss), "loss", step),
            Gradients(step),
            Statistics(step, mismatches),
            Difference.None,
            mismatches.Count == 0 ? null : string.Join("; ", mismatches),
            notBitForBit);
        _reference.Update();
        return result;
    }

    /// <summary>Both models, with the reference's state, compute the test set's outputs in evaluation mode.</summary>
    public StepResult Evaluate(int afterStep, ShapesDataset test)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        _candidate.load_state_dict(_reference.Model.state_dict());
        _reference.Model.eval();
        _candidate.eval();
        var expected = _reference.Model.forward(test.Images);
        var actual = _candidate.forward(test.Images);
        string? notBitForBit = null;
        if (_unfused is not null)
        {
            _unfused.load_state_dict(_reference.Model.state_dict());
            _unfused.eval();
            var differences = new List<string>();
            CompareBits(differences, "test-set logits", actual, _unfused.forward(test.Images));
            notBitForBit = differences.Count == 0 ? null : string.Join(", ", differences);
        }

        return new StepResult(
            afterStep, Difference.None, Difference.None, Difference.None, new Difference(Relative(actual, expected), "test-set logits", afterStep), null, notBitForBit);
    }

    public void EndEpoch() => _reference.EndEpoch();

    public void Dispose()
    {
        _reference.Dispose();
        _candidate.Dispose();
        _unfused?.Dispose();
        _unfusedDecisions?.Dispose();
        _loss.Dispose();
        _decisions.Dispose();
    }

    /// <summary>
    /// ‖actual − expected‖₂ / ‖expected‖₂, in float64; 0 when both are equal (zeros included), +∞ when the expected
    /// norm is 0 and the actual is not, and when anything is NaN, so that a NaN never passes.
    /// </summary>
    public static double Relative(Tensor actual, Tensor expected)
    {
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64);
        var e = expected.detach().to(ScalarType.Float64);
        double difference = (a - e).norm().item<double>();
        double scale = e.norm().item<double>();
        if (double.IsNaN(difference) || double.IsNaN(scale))
        {
            return double.PositiveInfinity;
        }

        return difference == 0 ? 0 : difference / scale;
    }

    /// <summary>
    /// How many elements of <paramref name="actual"/> differ in their bits from <paramref name="expected"/>'s (so −0.0
    /// differs from 0.0, and a NaN equals only the same NaN); −1 when the dtypes or shapes differ.
    /// </summary>
    public static long BitsDiffering(Tensor actual, Tensor expected)
    {
        if (actual.dtype != expected.dtype || !actual.shape.AsSpan().SequenceEqual(expected.shape))
        {
            return -1;
        }

        using var scope = NewDisposeScope();
        var a = actual.detach().contiguous();
        var e = expected.detach().contiguous();
        ReadOnlySpan<byte> x = a.bytes, y = e.bytes;
        int size = (int)a.ElementSize;
        long differing = 0;
        for (int i = 0; i < x.Length; i += size)
        {
            if (!x.Slice(i, size).SequenceEqual(y.Slice(i, size)))
            {
                differing++;
            }
        }

        return differing;
    }

    /// <summary>Adds what differs in its bits to <paramref name="differences"/>; a missing tensor differs from a present one.</summary>
    private static void CompareBits(List<string> differences, string name, Tensor? actual, Tensor? expected)
    {
        if (actual is null || expected is null)
        {
            if (actual is not null || expected is not null)
            {
                differences.Add($"{name} is missing in one model");
            }

            return;
        }

        long differing = BitsDiffering(actual, expected);
        if (differing != 0)
        {
            differences.Add(differing < 0
                ? $"{name} has another dtype or shape"
                : FormattableString.Invariant($"{name} ({differing:N0} of {expected.numel():N0} values)"));
        }
    }

    /// <summary>
    /// Our unfused model's step from the reference's state (already loaded), the same batch and the generator state
    /// <paramref name="generator"/>, compared bit for bit with the fused candidate's: loss, every gradient, every buffer.
    /// The generator is left where it was.
    /// </summary>
    /// <returns>What differs, or null.</returns>
    private string? UnfusedStep(nn.Module<Tensor, Tensor> unfused, Tensor generator, Tensor images, Tensor labels, Tensor candidateLoss)
    {
        using var after = get_rng_state();
        set_rng_state(generator);
        unfused.train();
        var loss = TrainingRun.Gradients(unfused, _loss, images, labels).Loss;
        set_rng_state(after);

        var differences = new List<string>();
        CompareBits(differences, "loss", candidateLoss, loss);
        var parameters = unfused.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in _candidate.named_parameters())
        {
            CompareBits(differences, name + ".grad", parameter.grad, parameters.GetValueOrDefault(name)?.grad);
        }

        var buffers = unfused.named_buffers().ToDictionary(b => b.name, b => b.buffer);
        foreach (var (name, buffer) in _candidate.named_buffers())
        {
            CompareBits(differences, name, buffer, buffers.GetValueOrDefault(name));
        }

        return differences.Count == 0 ? null : string.Join(", ", differences);
    }

    private Difference Gradients(int step)
    {
        var expected = _reference.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad);
        var worst = Difference.None;
        foreach (var (name, parameter) in _candidate.named_parameters())
        {
            double d = (parameter.grad, expected[name]) switch
            {
                (null, null) => 0,
                ({ } a, { } e) => Relative(a, e),
                _ => double.PositiveInfinity,
            };
            worst = Difference.Max(worst, new Difference(d, name + ".grad", step));
        }

        return worst;
    }

    private Difference Statistics(int step, List<string> mismatches)
    {
        var expected = _reference.Model.named_buffers().ToDictionary(b => b.name, b => b.buffer);
        var worst = Difference.None;
        foreach (var (name, buffer) in _candidate.named_buffers())
        {
            var e = expected[name];
            if (name.EndsWith("num_batches_tracked", StringComparison.Ordinal))
            {
                if (buffer.to(ScalarType.Int64).item<long>() != e.to(ScalarType.Int64).item<long>())
                {
                    mismatches.Add($"{name} is {buffer.to(ScalarType.Int64).item<long>()}, TorchSharp's {e.to(ScalarType.Int64).item<long>()}");
                }

                continue;
            }

            worst = Difference.Max(worst, new Difference(Relative(buffer, e), name, step));
        }

        return worst;
    }
}
