using System;
using TorchSharp;
using static TorchSharp.torch;
using OurBatchNorm1d = MyTorch.Layers.BatchNorm1d;
using OurBatchNorm2d = MyTorch.Layers.BatchNorm2d;
using OurBatchNorm3d = MyTorch.Layers.BatchNorm3d;

namespace MyTorch.Layers.Benchmarks;

/// <summary>
/// TorchSharp's BatchNorm layer for one case's rank (1d for 2-D and 3-D input, 2d for 4-D, 3d for 5-D) and ours, with
/// equal parameters and running statistics, of the case's dtype (float32 for a 16-bit case).
/// </summary>
internal static class BatchNormModules
{
    public static (nn.Module<Tensor, Tensor> Theirs, nn.Module<Tensor, Tensor> Ours) Create(TensorCase tensorCase, bool training)
    {
        ArgumentNullException.ThrowIfNull(tensorCase);
        long c = tensorCase.C;

        // A 16-bit input meets float32 parameters and statistics: mixed precision, the setup the docs recommend.
        var dtype = tensorCase.Dtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : tensorCase.Dtype;
        (TorchSharp.Modules.BatchNorm theirs, TorchSharp.Modules.BatchNorm ours) = tensorCase.Rank switch
        {
            2 or 3 => ((TorchSharp.Modules.BatchNorm)nn.BatchNorm1d(c, dtype: dtype), (TorchSharp.Modules.BatchNorm)new OurBatchNorm1d(c, dtype: dtype)),
            4 => (nn.BatchNorm2d(c, dtype: dtype), new OurBatchNorm2d(c, dtype: dtype)),
            _ => (nn.BatchNorm3d(c, dtype: dtype), new OurBatchNorm3d(c, dtype: dtype)),
        };

        // Non-trivial values, the same in both, so that evaluation is not a multiplication by one.
        // The Scalars are held in locals: a temporary one (a bare number, add's default alpha) may be finalized mid-call.
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
        {
            using Scalar half = 0.5, tenth = 0.1, one = 1;
            var weight = rand(c, dtype).add(half, one);
            var bias = randn(c, dtype);
            var mean = randn(c, dtype).mul(tenth);
            var variance = rand(c, dtype).add(half, one);
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
