using System;
using System.Collections.Generic;
using BenchmarkDotNet.Attributes;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// The frame every comparison shares: TorchSharp's module and ours, built for the same case, fed the same inputs from
/// one <see cref="TensorRing"/>, each step measured the same way. Derived classes name the step and the cases.
/// </summary>
public abstract class LayerBenchmark
{
    private TensorRing? _ring;

    private nn.Module<Tensor, Tensor>? _theirs;

    private nn.Module<Tensor, Tensor>? _ours;

    /// <summary>The benchmark parameter; derived classes give it a <see cref="ParamsSourceAttribute"/>.</summary>
    public abstract TensorCase Case { get; set; }

    /// <summary>What the step is, as the summary's heading.</summary>
    public abstract string Title { get; }

    /// <summary>Reads of the tensor plus writes of it that the step cannot do without; the roofline is that many half-copies.</summary>
    public abstract int Passes { get; }

    /// <summary>Whether the step needs an output gradient in each ring entry.</summary>
    protected abstract bool NeedsGradOutput { get; }

    protected TensorRing Ring => _ring ?? throw new InvalidOperationException("GlobalSetup has not run.");

    protected nn.Module<Tensor, Tensor> Theirs => _theirs ?? throw new InvalidOperationException("GlobalSetup has not run.");

    protected nn.Module<Tensor, Tensor> Ours => _ours ?? throw new InvalidOperationException("GlobalSetup has not run.");

    [GlobalSetup]
    public void GlobalSetup()
    {
        Threads.Apply();
        manual_seed(42);
        using (var scope = NewDisposeScope())
        {
            var x = Case.RandomInput();
            Tensor[] first = NeedsGradOutput ? [x, Case.RandomGradOutput()] : [x];
            foreach (var t in first)
            {
                t.DetachFromDisposeScope();
            }

            _ring = new TensorRing(first);
        }

        (_theirs, _ours) = CreateModules(Case);
    }

    [GlobalCleanup]
    public void GlobalCleanup()
    {
        _ring?.Dispose();
        _ring = null;
        _theirs?.Dispose();
        _theirs = null;
        _ours?.Dispose();
        _ours = null;
        DisposeMoreModules();
    }

    /// <summary>Disposes any modules a step compares beside TorchSharp's and ours; none by default.</summary>
    protected virtual void DisposeMoreModules()
    {
    }

    /// <summary>TorchSharp's module and ours, with the same parameters, in the mode the step runs in.</summary>
    protected abstract (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) CreateModules(TensorCase tensorCase);

    /// <summary>
    /// One training step on a fresh input that requires grad (a view of the next ring entry, so no data is copied),
    /// with, when <paramref name="backward"/>, the gradients of the input and of the module's parameters from the
    /// entry's output gradient; everything the step made is disposed.
    /// </summary>
    /// <remarks>
    /// The gradients are taken with <c>torch.autograd.grad</c> rather than accumulated into <c>.grad</c>: in a network
    /// the layer's input is the output of the layer before, whose backward takes the input gradient as it is. Accumulating
    /// into a leaf's <c>.grad</c> would add, for a custom autograd function only, a copy of the input gradient that
    /// libtorch makes because TorchSharp still holds the returned tensor; that copy is TorchSharp's, not the layer's.
    /// </remarks>
    protected void TrainingStep(nn.Module<Tensor, Tensor> module, bool backward)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var scope = NewDisposeScope();
        var entry = Ring.Next();
        var input = entry[0].detach().requires_grad_(true);
        var output = module.call(input);
        if (backward)
        {
            var inputs = new List<Tensor> { input };
            inputs.AddRange(module.parameters());
            torch.autograd.grad([output], inputs, [entry[1]]);
        }
    }

    /// <summary>One forward in no-grad mode on the next ring entry, its output disposed.</summary>
    protected void NoGradForward(nn.Module<Tensor, Tensor> module)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        module.call(Ring.Next()[0]);
    }
}
