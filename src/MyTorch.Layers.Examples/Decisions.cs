using System;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// The ReLU masks and max-pool choices of one training step, recorded by the model that leads and replayed by the
/// other: the reference leads, unless the model under check has fused blocks, whose ReLUs cannot replay. Both are
/// discontinuous: where an activation lies within rounding of zero, or two values of a pooling window within rounding
/// of each other, two float32 runs that agree to the last bits can still send a whole gradient element different ways.
/// Replaying the leading model's choices removes that chance, so the two steps differ only by rounding; the forward
/// values are continuous and are not replaced.
/// </summary>
internal sealed class Decisions : IDisposable
{
    private readonly Tensor?[] _slots;
    private readonly Tensor?[] _free;

    public Decisions(int slots)
    {
        _slots = new Tensor?[slots];
        _free = new Tensor?[slots];
    }

    /// <summary>Whether the modules reading this record their choices (the model that leads) or replay them.</summary>
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
        foreach (var t in _slots.Concat(_free))
        {
            t?.Dispose();
        }
    }

    /// <summary>
    /// Records <paramref name="choice"/> in <paramref name="slot"/>. Where <paramref name="free"/> (which broadcasts to
    /// the choice's shape) is true, either choice gives the same step: the replaying model keeps its own there.
    /// </summary>
    internal void Record(int slot, Tensor choice, Tensor? free = null)
    {
        _slots[slot]?.Dispose();
        _slots[slot] = choice.detach().DetachFromDisposeScope();
        _free[slot]?.Dispose();
        _free[slot] = free?.detach().DetachFromDisposeScope();
    }

    internal Tensor Replay(int slot, Tensor ownChoice)
    {
        var recorded = _slots[slot] ?? throw new InvalidOperationException($"No choice recorded in slot {slot}: the model that leads must run its step first.");
        if (!recorded.shape.AsSpan().SequenceEqual(ownChoice.shape))
        {
            throw new InvalidOperationException($"Slot {slot} holds a choice of shape [{string.Join(", ", recorded.shape)}], the step needs [{string.Join(", ", ownChoice.shape)}].");
        }

        if (_free[slot] is not { } free)
        {
            Differing += ownChoice.ne(recorded).sum().item<long>();
            Replayed += recorded.numel();
            return recorded;
        }

        using var scope = NewDisposeScope();
        var bound = free.logical_not().expand_as(recorded);
        Differing += ownChoice.ne(recorded).logical_and(bound).sum().item<long>();
        Replayed += bound.sum().item<long>();
        return where(free, ownChoice, recorded).MoveToOuterDisposeScope();
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

/// <summary>
/// The ReLU choices of a fused BatchNorm2d → ReLU → Dropout2d block (<see cref="BatchNormReLUDropout2d"/>), read from
/// its output and recorded into <see cref="Decisions"/> in training with gradients; its output passes unchanged. The
/// block's ReLU runs inside its kernels, so it cannot replay a choice: a model with fused blocks leads.
/// </summary>
internal sealed class FusedReLUChoice : nn.Module<Tensor, Tensor>
{
    private readonly Decisions _decisions;
    private readonly int _slot;

    public FusedReLUChoice(Decisions decisions, int slot)
        : base(nameof(FusedReLUChoice))
    {
        _decisions = decisions;
        _slot = slot;
    }

    public override Tensor forward(Tensor input)
    {
        if (training && is_grad_enabled())
        {
            if (!_decisions.Recording)
            {
                throw new InvalidOperationException("A fused block's ReLU cannot replay a choice: the model with fused blocks must lead.");
            }

            // A kept channel's output is ReLU(y) / (1 − p), positive exactly where the ReLU passed y. A dropped channel's
            // plane is all zeros and its gradient is zero whatever the ReLU chose, so the replaying model keeps its own
            // choices there (and in the rare kept plane with no positive value, whose choices are then not replayed).
            using var positive = input.gt(0);
            using var zero = input.eq(0);
            using var planes = zero.flatten(2);
            using var free = planes.all(2, keepdim: true).unsqueeze(-1);
            _decisions.Record(_slot, positive, free);
        }

        return input.alias();
    }
}

/// <summary>One step of two models on identical inputs: the way the step check, and the tests that compare whole models, set them side by side.</summary>
internal static class Lockstep
{
    /// <summary>
    /// <paramref name="candidate"/> takes <paramref name="reference"/>'s parameters and buffers; <paramref name="step"/>
    /// runs on the model that leads, which records its ReLU and max-pool choices in <paramref name="decisions"/>, then,
    /// from the same generator state, on the other, which replays them. The reference leads unless
    /// <paramref name="candidateLeads"/>. The generator is left where the reference left it.
    /// </summary>
    /// <returns>Both steps' results, and whether the candidate's step left the generator where the reference's did.</returns>
    public static (TResult Reference, TResult Candidate, bool SameGenerator) Step<TResult>(
        nn.Module<Tensor, Tensor> reference, nn.Module<Tensor, Tensor> candidate, Decisions decisions, Func<nn.Module<Tensor, Tensor>, TResult> step, bool candidateLeads = false)
    {
        candidate.load_state_dict(reference.state_dict());
        using var before = get_rng_state();
        decisions.Recording = true;
        var first = step(candidateLeads ? candidate : reference);
        using var firstAfter = get_rng_state();

        set_rng_state(before);
        decisions.Recording = false;
        var second = step(candidateLeads ? reference : candidate);
        using var secondAfter = get_rng_state();
        set_rng_state(candidateLeads ? secondAfter : firstAfter);
        bool sameGenerator = firstAfter.eq(secondAfter).all().item<bool>();
        return candidateLeads ? (second, first, sameGenerator) : (first, second, sameGenerator);
    }
}
