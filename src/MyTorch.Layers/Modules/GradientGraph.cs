using System.Collections.Generic;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// What the autograd nodes return when autograd is asked for a graph of the gradients (<c>create_graph: true</c>,
/// as a gradient penalty does): the gradients our backward kernels computed, bit for bit, carrying the graph of the same
/// formulas composed of differentiable TorchSharp operations. A function of those gradients can then be differentiated
/// again, to any order, and without a graph nothing of this runs.
/// </summary>
internal static class GradientGraph
{
    private static readonly long[] AllButChannels = [0, 2, 3];

    /// <summary><paramref name="value"/> as it is, with the gradient that <paramref name="graph"/> would get.</summary>
    public static Tensor WithGraphOf(Tensor value, Tensor graph) => Carrier.apply(graph, new Value(value));

    /// <summary>
    /// Batch normalisation's backward on 4-D planes, composed of TorchSharp operations in float64, dx returned in the input's
    /// dtype, dγ and dβ in γ's (as the kernels return them). With batch statistics μ and 1/σ are computed again from x, so that the graph has their dependence on x;
    /// with fixed statistics they are the constants the forward used. Per channel, over M = N·H·W values:
    /// x̂ = (x − μ)/σ, dβ = Σ dy, dγ = Σ dy · x̂, and dx = γ/σ · (dy − dβ/M − x̂ · dγ/M), or γ/σ · dy with fixed statistics.
    /// </summary>
    public static (Tensor GradInput, Tensor GradWeight, Tensor GradBias) BatchNorm(
        Tensor gradOutput, Tensor input, Tensor? weight, Tensor mean, Tensor invstd, bool batchStatistics, double eps)
    {
        using var scope = NewDisposeScope();
        var dtype = input.dtype;
        var parameterDtype = weight?.dtype ?? (Functional.Check.IsHalfPrecision(dtype) ? ScalarType.Float32 : dtype);
        var x = input.to(ScalarType.Float64);
        var dy = gradOutput.to(ScalarType.Float64);
        Tensor centred, inverse;
        if (batchStatistics)
        {
            centred = x - x.mean(AllButChannels, keepdim: true);
            inverse = ((centred * centred).mean(AllButChannels, keepdim: true) + eps).rsqrt();
        }
        else
        {
            centred = x - mean.view(1, -1, 1, 1);
            inverse = invstd.view(1, -1, 1, 1);
        }

        var normalised = centred * inverse;
        var gradBias = dy.sum(AllButChannels, keepdim: true);
        var gradWeight = (dy * normalised).sum(AllButChannels, keepdim: true);
        var scale = weight is null ? inverse : weight.to(ScalarType.Float64).view(1, -1, 1, 1) * inverse;
        Tensor gradInput;
        if (batchStatistics)
        {
            double count = input.shape[0] * input.shape[2] * input.shape[3];
            gradInput = scale * (dy - (gradBias / count) - (normalised * (gradWeight / count)));
        }
        else
        {
            gradInput = scale * dy;
        }

        return (
            gradInput.to(dtype).MoveToOuterDisposeScope(),
            gradWeight.flatten().to(parameterDtype).MoveToOuterDisposeScope(),
            gradBias.flatten().to(parameterDtype).MoveToOuterDisposeScope());
    }

    /// <summary>Returns the value it is given; its backward hands the gradient on to the graph tensor.</summary>
    private sealed class Carrier : autograd.SingleTensorFunction<Carrier>
    {
        public override string Name => "MyTorchGradientGraph";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars) => ((Value)vars[1]).Tensor;

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output) => [grad_output, null!];
    }

    /// <summary>A tensor passed through autograd as data, not as an input: the value is not differentiated.</summary>
    private sealed record Value(Tensor Tensor);
}
