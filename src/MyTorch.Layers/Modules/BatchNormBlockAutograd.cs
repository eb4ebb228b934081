using System.Collections.Generic;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// The non-tensor arguments of one forward of <see cref="BatchNormReLUDropout2d"/>: batch normalisation's, whether the
/// ReLU is applied, and the dropout's probability (0 for none, and in evaluation) and generator.
/// </summary>
internal sealed record BatchNormBlockCall(BatchNormCall Norm, bool Rectify, double P, Generator? Generator);

/// <summary>
/// Autograd node of <see cref="BatchNormReLUDropout2d"/>: batch normalisation's forward kernels, then the ReLU and the
/// dropout factors in place on its output; backward, the gradient through dropout and ReLU in one pass, then batch
/// normalisation's backward kernels. Every value is the one the three layers give one after another.
/// </summary>
internal sealed class BatchNormBlockAutograd : autograd.SingleTensorFunction<BatchNormBlockAutograd>
{
    private const string UsedBatchStatistics = "batch";
    private const string HasBias = "bias";
    private const string Rectify = "relu";
    private const string Eps = "eps";

    public override string Name => "MyTorchBatchNormReLUDropout2dBackward";

    /// <summary>The forward on checked 4-D input: through this node when a gradient is wanted, otherwise straight to the kernels.</summary>
    public static Tensor Forward(Tensor input, Tensor? weight, Tensor? bias, BatchNormBlockCall call)
    {
        bool tracked = is_grad_enabled() && (input.requires_grad || (weight?.requires_grad ?? false) || (bias?.requires_grad ?? false));
        if (tracked)
        {
            return apply(input, weight, bias, call);
        }

        var norm = call.Norm;
        using var mask = MaskFor(input, call);
        return BatchNormFunctional.ComputeOutput(input, norm.Shape, weight, bias, norm.RunningMean, norm.RunningVar, norm.Training, norm.Momentum, norm.Eps, Tail(mask, call));
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var weight = vars[1] as Tensor;
        var bias = vars[2] as Tensor;
        var call = (BatchNormBlockCall)vars[3];
        var norm = call.Norm;
        bool batch = norm.Training || norm.RunningMean is null;
        var mask = MaskFor(input, call);
        var (output, mean, invstd) = BatchNormFunctional.Compute(
            input, norm.Shape, weight, bias, norm.RunningMean, norm.RunningVar, norm.Training, norm.Momentum, norm.Eps, ScalarType.Float64, Tail(mask, call));

        // With batch statistics the backward recomputes the ReLU's input from x; with fixed ones (computed in the
        // input's dtype) it reads the ReLU's output, which is the block's output, dropout being off in evaluation.
        Tensor? rectified = call.Rectify && !batch ? output.clone() : null;
        ctx.save_for_backward([input, weight!, bias!, mean, invstd, mask!, rectified!]);
        ctx.save_data(UsedBatchStatistics, batch);
        ctx.save_data(HasBias, bias is not null);
        ctx.save_data(Rectify, call.Rectify);
        ctx.save_data(Eps, norm.Eps);
        return output;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var saved = ctx.get_saved_variables();
        try
        {
            Tensor input = saved[0];
            Tensor? weight = saved[1];
            Tensor? bias = saved[2];
            Tensor mean = saved[3];
            Tensor invstd = saved[4];
            Tensor? mask = saved[5];
            Tensor? rectified = saved[6];
            bool batch = (bool)ctx.get_data(UsedBatchStatistics);
            bool rectify = (bool)ctx.get_data(Rectify);
            var tail = rectify || mask is not null ? new BlockTailTensors(mask, rectify, bias, rectified) : null;

            var gradients = BatchNormFunctional.Backward(grad_output, input, weight, mean, invstd, batch, statisticsInDouble: true, BatchNormRanks.Two, tail);

            // For a graph: dy · gate · mask, the gate (where the ReLU passes the gradient, 1 or 0, from the kernel) held
            // constant, as ReLU is piecewise constant.
            Tensor GraphOutput()
            {
                var (source, sourceMean, sourceInvstd) = rectified is null ? (input, mean, invstd) : (rectified, null, null);
                using var ones = ones_like(grad_output);
                using var passes = BatchNormBlockFunctional.Gradient(ones, source, input.shape, sourceMean, sourceInvstd, weight, bias, null, rectify);
                using var gated = grad_output * passes;
                return mask is null ? gated.alias() : gated * mask;
            }

            return BatchNormAutograd.Gradients(gradients, GraphOutput, input, weight, mean, invstd, batch, (double)ctx.get_data(Eps), (bool)ctx.get_data(HasBias));
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
    /// The tail batch normalisation's kernels apply in a forward, or null when there is neither a ReLU nor a mask; the
    /// mask, if any, to be drawn by the forward (unless p = 1, which draws nothing).
    /// </summary>
    private static BlockTailTensors? Tail(Tensor? mask, BatchNormBlockCall call) =>
        call.Rectify || mask is not null
            ? new BlockTailTensors(mask, call.Rectify, Draw: mask is not null && call.P < 1 ? new MaskDraw(1 - call.P, call.Generator) : null)
            : null;

    /// <summary>
    /// The tensor for the dropout's factors of this forward, which it draws as Dropout2d draws them before its own
    /// work, or null when it drops nothing.
    /// </summary>
    private static Tensor? MaskFor(Tensor input, BatchNormBlockCall call) =>
        call.Norm.Training && call.P > 0 && input.numel() > 0 ? Dropout2dFunctional.MaskToDraw(call.Norm.Shape, input.dtype, call.P) : null;
}
