using System;
using System.Collections.Generic;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>The input's shape as the checks read it, and the non-tensor arguments of one forward, passed through autograd to the kernels.</summary>
internal sealed record ChannelDropoutCall(long[] Shape, double P, bool Inplace, Generator? Generator);

/// <summary>Autograd node of every channel dropout layer (<see cref="Dropout1d"/>, <see cref="Dropout2d"/>, <see cref="Dropout3d"/>): forward and backward both run MyTorch.Layers' kernels.</summary>
internal sealed class ChannelDropoutAutograd : autograd.SingleTensorFunction<ChannelDropoutAutograd>
{
    public override string Name => "MyTorchDropout2dBackward";

    /// <summary>
    /// The forward of the module and of <see cref="layers.functional.dropout2d"/>: every check first, then, when
    /// autograd has something to record, this node; otherwise the kernels directly.
    /// </summary>
    internal static Tensor Forward(Tensor input, double p, bool training, bool inplace, Generator? generator)
    {
        long[] shape = Dropout2dFunctional.CheckInput(input, nameof(input));
        if (!Dropout2dFunctional.Drops(input, p, training))
        {
            return input.alias();
        }

        bool tracked = is_grad_enabled() && input.requires_grad;
        if (inplace)
        {
            Dropout2dFunctional.CheckInPlace(input, nameof(input), recordsHistory: true);
        }

        if (!tracked)
        {
            // Nothing to record: skip the autograd node, and return what TorchSharp returns (the input itself when in place).
            var output = Dropout2dFunctional.Apply(input, shape, p, inplace, generator, out var mask);
            mask.Dispose();
            return inplace ? input.alias() : output;
        }

        return apply(input, new ChannelDropoutCall(shape, p, inplace, generator));
    }

    /// <summary>
    /// The forward of Dropout1d and Dropout3d, and of their functional forms: the input read as Dropout2d's planes (a
    /// view of the same memory, the same N·C channels and so the same draws), the output given the input's shape again.
    /// </summary>
    internal static Tensor Forward(Tensor input, DropoutRanks ranks, double p, bool training, bool inplace, Generator? generator)
    {
        long[] shape = ranks.Check(input, nameof(input));
        Check.KernelReadable(input, nameof(input), shape);
        if (!Dropout2dFunctional.Drops(input, p, training))
        {
            return input.alias();
        }

        using var view = ranks.AsPlanes(input, ranks.Planes(shape), inplace, nameof(input));
        var output = Forward(view, p, training, inplace, generator);
        if (inplace)
        {
            output.Dispose();
            return input.alias();
        }

        return DropoutRanks.FromPlanes(output, shape);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var call = (ChannelDropoutCall)vars[1];
        var output = Dropout2dFunctional.Apply(input, call.Shape, call.P, call.Inplace, call.Generator, out var mask);
        if (call.Inplace)
        {
            // The output is the input, rewritten: autograd moves the input's history onto this node, as for libtorch's mul_.
            ctx.mark_dirty([input]);
        }

        ctx.save_for_backward([mask]);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        try
        {
            var gradInput = Dropout2dFunctional.Backward(grad_output, saved[0]);

            // Grad mode is on in a backward exactly when autograd was asked to build a graph of the gradients: dx = dy · mask.
            return [is_grad_enabled() ? GradientGraph.WithGraphOf(gradInput, grad_output * saved[0]) : gradInput, null!];
        }
        finally
        {
            foreach (var t in saved)
            {
                t?.Dispose();
            }
        }
    }
}
