using System;
using TorchSharp;
using static TorchSharp.torch;
using OurBatchNorm2d = MyTorch.Layers.BatchNorm2d;

namespace MyTorch.Layers.Benchmarks;

/// <summary>TorchSharp's BatchNorm2d and ours for one case, with equal parameters and running statistics.</summary>
internal static class BatchNorm2dModules
{
    public static (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) Create(TensorCase tensorCase, bool training)
    {
        ArgumentNullException.ThrowIfNull(tensorCase);
        var theirs = nn.BatchNorm2d(tensorCase.C, dtype: tensorCase.Dtype);
        var ours = new OurBatchNorm2d(tensorCase.C, dtype: tensorCase.Dtype);

        // Non-trivial values, the same in both, so that evaluation is not a multiplication by one.
        // The Scalars are held in locals: a temporary one (a bare number, add's default alpha) may be finalized mid-call.
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
        {
            using Scalar half = 0.5, tenth = 0.1, one = 1;
            var weight = rand(tensorCase.C, tensorCase.Dtype).add(half, one);
            var bias = randn(tensorCase.C, tensorCase.Dtype);
            var mean = randn(tensorCase.C, tensorCase.Dtype).mul(tenth);
            var variance = rand(tensorCase.C, tensorCase.Dtype).add(half, one);
            theirs.weight!.copy_(weight);
            ours.weight!.copy_(weight);
            theirs.bias!.copy_(bias);
            ours.bias!.copy_(bias);
            theirs.running_mean!.copy_(mean);
            ours.running_mean!.copy_(mean);
            theirs.running_var!.copy_(variance);
            ours.running_var!.copy_(variance);
        }

        if (training)
        {
            theirs.train();
            ours.train();
        }
        else
        {
            theirs.eval();
            ours.eval();
        }

        return (theirs, ours);
    }
}
