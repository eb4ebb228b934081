using System.Collections.Generic;
using MyTorch.Layers.Functional;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Support;

/// <summary>The deliberate mistakes <see cref="FaultyBatchNorm2d"/> can make.</summary>
internal enum BatchNormFault
{
    /// <summary>
    /// The input gradient without its projection term: dx = (dy − mean(dy)) · invstd · γ, the term
    /// −(x − μ) · invstd² · mean(dy · (x − μ)) left out. The forward and the other gradients are right.
    /// </summary>
    ProjectionTermDropped,

    /// <summary>
    /// The running variance updated with the momentum's weights swapped: momentum · running + (1 − momentum) · batch.
    /// Everything else is right.
    /// </summary>
    RunningVarianceWeightsSwapped,
}

/// <summary>
/// Our BatchNorm2d (its explicit forward and backward kernels) with one deliberate mistake, to show that a check
/// catches it. The parameters and buffers have BatchNorm2d's names, so the module loads any BatchNorm2d's state; eps
/// and momentum are the defaults.
/// </summary>
internal sealed class FaultyBatchNorm2d : nn.Module<Tensor, Tensor>
{
    private const double Momentum = 0.1;
    private const double Eps = 1e-5;

#pragma warning disable IDE1006, SA1300 // the registered names are the state_dict keys, as in BatchNorm2d
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly Tensor running_mean;
    private readonly Tensor running_var;
    private readonly Tensor num_batches_tracked;
#pragma warning restore IDE1006, SA1300

    private readonly BatchNormFault _fault;

    public FaultyBatchNorm2d(long channels, BatchNormFault fault)
        : base(nameof(FaultyBatchNorm2d))
    {
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        running_mean = zeros(channels);
        running_var = ones(channels);
        num_batches_tracked = tensor(0L);
        _fault = fault;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        if (!training)
        {
            return BatchNorm2dFunctional.Forward(input, weight, bias, running_mean, running_var, training: false, Momentum, Eps).Output;
        }

        if (_fault != BatchNormFault.RunningVarianceWeightsSwapped)
        {
            Advance();
            return Function.apply(input, weight, bias, running_mean, running_var, _fault);
        }

        // The kernels update a copy of the running variance; the module's own takes the swapped update.
        using var scratch = running_var.clone();
        var output = Function.apply(input, weight, bias, running_mean, scratch, _fault);
        using (no_grad())
        {
            using var unbiased = input.var([0, 2, 3], unbiased: true);
            running_var.mul_(Momentum).add_(unbiased, alpha: 1 - Momentum);
        }

        Advance();
        return output;
    }

    private void Advance()
    {
        using var noGrad = no_grad();
        num_batches_tracked.add_(1);
    }

    private sealed class Function : autograd.SingleTensorFunction<Function>
    {
        public override string Name => "FaultyBatchNorm2dBackward";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var input = (Tensor)vars[0];
            var weight = (Tensor)vars[1];
            var (output, mean, invstd) = BatchNorm2dFunctional.Forward(
                input, weight, (Tensor)vars[2], (Tensor)vars[3], (Tensor)vars[4], training: true, Momentum, Eps);
            ctx.save_for_backward([input, weight, mean, invstd]);
            ctx.save_data("fault", vars[5]);
            return output;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
        {
            var saved = ctx.get_saved_variables();
            Tensor input = saved[0], weight = saved[1], mean = saved[2], invstd = saved[3];
            var (dx, dw, db) = BatchNorm2dFunctional.Backward(grad_output, input, weight, mean, invstd, training: true);
            if ((BatchNormFault)ctx.get_data("fault") == BatchNormFault.ProjectionTermDropped)
            {
                // Add back what the right gradient subtracts: γ · invstd · x̂ · mean(dy · x̂), x̂ = (x − μ) · invstd.
                using var scope = NewDisposeScope();
                var m = mean.view(1, -1, 1, 1);
                var s = invstd.view(1, -1, 1, 1);
                var xHat = (input - m) * s;
                var projection = (grad_output * xHat).mean([0, 2, 3], keepdim: true);
                var right = dx;
                dx = (right + (weight.view(1, -1, 1, 1) * s * xHat * projection)).MoveToOuterDisposeScope();
                right.Dispose();
            }

            return [dx, dw, db, null!, null!, null!];
        }
    }
}
