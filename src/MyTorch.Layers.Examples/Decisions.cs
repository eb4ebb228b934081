using System;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// The ReLU masks and max-pool choices of one training step, recorded by the reference model and replayed by the
/// model under check. Both are discontinuous: where an activation lies within rounding of zero, or two values of a
/// pooling window within rounding of each other, two float32 runs that agree to the last bits can still send a whole
/// gradient element different ways. Replaying the reference's choices removes that chance, so the two steps differ
/// only by rounding; the forward values are continuous and are not replaced.
/// </summary>
internal sealed class Decisions : IDisposable
{
    private readonly Tensor?[] _slots;

    public Decisions(int slots) => _slots = new Tensor?[slots];

    /// <summary>Whether the modules reading this record their choices (the reference) or replay them.</summary>
    public bool Recording { get; set; } = true;

    /// <summary>Choices the replaying model would have made differently, since <see cref="ResetCounts"/>.</summary>
    public long Differing { get; private set; }

    /// <summary>Choices replayed since <see cref="ResetCounts"/>.</summary>
    public long Replayed { get; private set; }

    public void ResetCounts()
    {
        Differing = 0;
        Replayed = 0;
    }

    public void Dispose()
    {
        foreach (var t in _slots)
        {
            t?.Dispose();
        }
    }

    internal void Record(int slot, Tensor choice)
    {
        _slots[slot]?.Dispose();
        _slots[slot] = choice.detach().DetachFromDisposeScope();
    }

    internal Tensor Replay(int slot, Tensor ownChoice)
    {
        var recorded = _slots[slot] ?? throw new InvalidOperationException($"No choice recorded in slot {slot}: the reference model must run its step first.");
        if (!recorded.shape.AsSpan().SequenceEqual(ownChoice.shape))
        {
            throw new InvalidOperationException($"Slot {slot} holds a choice of shape [{string.Join(", ", recorded.shape)}], the step needs [{string.Join(", ", ownChoice.shape)}].");
        }

        Differing += ownChoice.ne(recorded).sum().item<long>();
        Replayed += recorded.numel();
        return recorded;
    }
}

/// <summary>ReLU whose mask, in training with gradients, is recorded into or replayed from <see cref="Decisions"/>.</summary>
internal sealed class DecidedReLU : nn.Module<Tensor, Tensor>
{
    private readonly Decisions _decisions;
    private readonly int _slot;

    public DecidedReLU(Decisions decisions, int slot)
        : base(nameof(DecidedReLU))
    {
        _decisions = decisions;
        _slot = slot;
    }

    public override Tensor forward(Tensor input)
    {
        if (!training || !is_grad_enabled())
        {
            return nn.functional.relu(input);
        }

        using var positive = input.gt(0);
        if (_decisions.Recording)
        {
            _decisions.Record(_slot, positive);
            return nn.functional.relu(input);
        }

        // Where the recorded mask passes a value it is kept as it is, with its gradient; elsewhere it is 0.
        var mask = _decisions.Replay(_slot, positive);
        using var zero = zeros_like(input);
        return where(mask, input, zero);
    }
}

/// <summary>
/// 2 × 2 max-pooling whose choice in each window, in training with gradients, is recorded into or replayed from
/// <see cref="Decisions"/>.
/// </summary>
internal sealed class DecidedMaxPool2d : nn.Module<Tensor, Tensor>
{
    private static readonly long[] Window = [2, 2];
    private readonly Decisions _decisions;
    private readonly int _slot;

    public DecidedMaxPool2d(Decisions decisions, int slot)
        : base(nameof(DecidedMaxPool2d))
    {
        _decisions = decisions;
        _slot = slot;
    }

    public override Tensor forward(Tensor input)
    {
        if (!training || !is_grad_enabled())
        {
            return nn.functional.max_pool2d(input, Window);
        }

        var (output, indices) = nn.functional.max_pool2d_with_indices(input, Window);
        if (_decisions.Recording)
        {
            _decisions.Record(_slot, indices);
            indices.Dispose();
            return output;
        }

        // The value at the recorded position of each window (an index into its (H, W) plane), with its gradient.
        output.Dispose();
        var recorded = _decisions.Replay(_slot, indices);
        indices.Dispose();
        long[] shape = recorded.shape;
        using var planes = input.flatten(2);
        using var at = recorded.flatten(2);
        using var picked = planes.gather(2, at);
        return picked.view(shape);
    }
}

/// <summary>One step of two models on identical inputs: the way the step check, and the tests that compare whole models, set them side by side.</summary>
internal static class Lockstep
{
    /// <summary>
    /// <paramref name="candidate"/> takes <paramref name="reference"/>'s parameters and buffers; <paramref name="step"/>
    /// runs on the reference, which records its ReLU and max-pool choices in <paramref name="decisions"/>, then, from the
    /// same generator state, on the candidate, which replays them. The generator is left where the reference left it.
    /// </summary>
    /// <returns>Both steps' results, and whether the candidate's step left the generator where the reference's did.</returns>
    public static (TResult Reference, TResult Candidate, bool SameGenerator) Step<TResult>(
        nn.Module<Tensor, Tensor> reference, nn.Module<Tensor, Tensor> candidate, Decisions decisions, Func<nn.Module<Tensor, Tensor>, TResult> step)
    {
        candidate.load_state_dict(reference.state_dict());
        using var before = get_rng_state();
        decisions.Recording = true;
        var expected = step(reference);
        using var after = get_rng_state();

        set_rng_state(before);
        decisions.Recording = false;
        var actual = step(candidate);
        using var candidateAfter = get_rng_state();
        set_rng_state(after);
        return (expected, actual, candidateAfter.eq(after).all().item<bool>());
    }
}
