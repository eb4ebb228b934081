using System;
using System.Collections.Generic;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// The input's 4-D planes as the checks read them, and the non-tensor arguments of one forward, passed through autograd
/// to the kernels; <paramref name="Split"/> for a batch split across processes.
/// </summary>
internal sealed record BatchNormCall(long[] Shape, Tensor? RunningMean, Tensor? RunningVar, bool Training, double Momentum, double Eps, SplitBatch? Split = null);

/// <summary>
/// Autograd node of every BatchNorm layer (<see cref="BatchNormBase"/>) and of <see cref="layers.functional.batch_norm"/>, on the input's 4-D planes: forward and backward both run MyTorch.Layers' kernels. It keeps the
/// mean and 1/σ between them in float64, as the kernels compute them, so that a float32 backward is not limited by
/// statistics rounded to float32 (a mean of 1e4 would be off by up to 5e-4). Asked for a graph of the gradients, it
/// returns the kernels' gradients carrying <see cref="GradientGraph.BatchNorm"/>'s graph.
/// </summary>
internal sealed class BatchNormAutograd : autograd.SingleTensorFunction<BatchNormAutograd>
{
    private const string UsedBatchStatistics = "batch";
    private const string HasBias = "bias";
    private const string Eps = "eps";
    private const string Split = "split";

    public override string Name => "MyTorchBatchNormBackward";

    /// <summary>
    /// The forward on checked arguments of any rank (<paramref name="shape"/>, as the checks read it): on the input's 4-D
    /// planes, and the output given the input's shape again.
    /// </summary>
    public static Tensor Forward(
        Tensor input, long[] shape, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar, bool training, double momentum, double eps, SplitBatch? split = null)
    {
        long[] planes = BatchNormRanks.Planes(shape);
        var x = BatchNormRanks.AsPlanes(input, shape, planes);
        try
        {
            var y = Run(x, weight, bias, new BatchNormCall(planes, runningMean, runningVar, training, momentum, eps, split));
            return BatchNormRanks.FromPlanes(y, shape);
        }
        finally
        {
            if (!ReferenceEquals(x, input))
            {
                x.Dispose();
            }
        }
    }

    /// <summary>
    /// The forward on checked 4-D planes: through this autograd node when a gradient is wanted, otherwise (inference,
    /// or frozen parameters on an input without history) straight to the kernels, with no node to record.
    /// </summary>
    public static Tensor Run(Tensor input, Tensor? weight, Tensor? bias, BatchNormCall call)
    {
        bool tracked = is_grad_enabled() && (input.requires_grad || (weight?.requires_grad ?? false) || (bias?.requires_grad ?? false));
        if (tracked)
        {
            return apply(input, weight, bias, call);
        }

        return BatchNormFunctional.ComputeOutput(
            input, call.Shape, weight, bias, call.RunningMean, call.RunningVar, call.Training, call.Momentum, call.Eps, split: call.Split);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var weight = vars[1] as Tensor;
        var bias = vars[2] as Tensor;
        var call = (BatchNormCall)vars[3];
        var (output, mean, invstd) = BatchNormFunctional.Compute(
            input, call.Shape, weight, bias, call.RunningMean, call.RunningVar, call.Training, call.Momentum, call.Eps, ScalarType.Float64, split: call.Split);
        ctx.save_for_backward([input, weight!, mean, invstd]);
        ctx.save_data(UsedBatchStatistics, call.Training || call.RunningMean is null);
        ctx.save_data(HasBias, bias is not null);
        ctx.save_data(Eps, call.Eps);
        ctx.save_data(Split, call.Split!);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        try
        {
            Tensor input = saved[0];
            Tensor? weight = saved[1];
            bool batch = (bool)ctx.get_data(UsedBatchStatistics);
            var split = ctx.get_data(Split) as SplitBatch;
            if (split is not null && is_grad_enabled())
            {
                // The graph of the gradients would need the other processes' parts too.
                throw new NotSupportedException("SyncBatchNorm has no second-order gradients: take its gradient without create_graph.");
            }

            var (gradInput, gradWeight, gradBias) = BatchNormFunctional.Backward(
                grad_output, input, weight, saved[2], saved[3], batch, statisticsInDouble: true, BatchNormRanks.Two, split: split);

            return Gradients((gradInput, gradWeight, gradBias), () => grad_output, input, weight, saved[2], saved[3], batch, (double)ctx.get_data(Eps), (bool)ctx.get_data(HasBias));
        }
        finally
        {
            foreach (var t in saved)
            {
                t?.Dispose();
            }
        }
    }

    /// <summary>
    /// The kernels' gradients as a batch normalisation node returns them: carrying, when autograd was asked for a graph
    /// of the gradients, the graph of batch normalisation's backward applied to <paramref name="graphOutput"/> (made only
    /// then); and none for an absent weight or bias.
    /// </summary>
    internal static List<Tensor> Gradients(
        (Tensor Input, Tensor Weight, Tensor Bias) kernels, System.Func<Tensor> graphOutput, Tensor input, Tensor? weight, Tensor mean, Tensor invstd, bool batch, double eps, bool hasBias)
    {
        var (gradInput, gradWeight, gradBias) = kernels;

        // Grad mode is on in a backward exactly when autograd was asked to build a graph of the gradients.
        if (is_grad_enabled())
        {
            var (graphInput, graphWeight, graphBias) = GradientGraph.BatchNorm(graphOutput(), input, weight, mean, invstd, batch, eps);
            gradInput = GradientGraph.WithGraphOf(gradInput, graphInput);
            gradWeight = GradientGraph.WithGraphOf(gradWeight, graphWeight);
            gradBias = GradientGraph.WithGraphOf(gradBias, graphBias);
        }

        // Weight and bias are each optional: a gradient only for an input that was given.
        if (weight is null)
        {
            gradWeight.Dispose();
            gradWeight = null!;
        }

        if (!hasBias)
        {
            gradBias.Dispose();
            gradBias = null!;
        }

        return [gradInput, gradWeight, gradBias, null!];
    }
}
