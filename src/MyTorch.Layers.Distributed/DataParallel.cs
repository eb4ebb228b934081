using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed;

/// <summary>
/// What a data-parallel training loop needs beside <see cref="SyncBatchNorm"/>: the same initial state on every process,
/// and the gradients averaged over the processes before each optimizer step, so that every process takes the same step.
/// </summary>
/// <remarks>
/// Each process runs the whole model on its part of the batch. Against PyTorch's DistributedDataParallel: the averaging
/// is one explicit call after <c>backward</c> (DDP overlaps it with the backward, bucket by bucket, through hooks), and
/// every parameter that requires a gradient takes part, a missing gradient counting as zeros (DDP's
/// <c>find_unused_parameters</c>). Every process must call these with the same model in the same order.
/// </remarks>
public static class DataParallel
{
    /// <summary>
    /// Copies every parameter and buffer of <paramref name="module"/> on the process <paramref name="root"/> into the same
    /// tensors of the other processes, in place, as DistributedDataParallel does when it is made.
    /// </summary>
    /// <param name="module">The model, of the same structure on every process.</param>
    /// <param name="group">The processes; null for <see cref="ProcessGroup.World"/>.</param>
    /// <param name="root">The rank whose state is sent.</param>
    /// <exception cref="ArgumentException">The processes' models differ in their tensors' number, dtypes or sizes. Nothing is changed.</exception>
    public static void BroadcastState(nn.Module module, ProcessGroup? group = null, int root = 0)
    {
        ArgumentNullException.ThrowIfNull(module);
        group ??= ProcessGroup.World;
        var tensors = module.parameters().Concat(module.buffers()).ToList();
        Agree(group, tensors, "state");
        using var noGrad = no_grad();
        foreach (var tensor in tensors)
        {
            if (tensor.is_contiguous())
            {
                group.Broadcast(tensor, root);
            }
            else
            {
                using var copy = tensor.contiguous();
                group.Broadcast(copy, root);
                tensor.copy_(copy);
            }
        }
    }

    /// <summary>
    /// Replaces the gradient of every parameter of <paramref name="module"/> that requires one by its average over the
    /// processes (the sum divided by their number); a parameter without a gradient gets one, of zeros averaged in. With
    /// each process's loss the mean over its part of the batch, as usual, and equal parts, this is the gradient of the
    /// mean over the whole batch. The gradients of each dtype travel in one buffer; bfloat16 and float16 ones are
    /// summed in float32.
    /// </summary>
    /// <param name="module">The model, of the same structure on every process.</param>
    /// <param name="group">The processes; null for <see cref="ProcessGroup.World"/>.</param>
    /// <exception cref="ArgumentException">The processes' models differ in their parameters' number, dtypes or sizes. Nothing is changed.</exception>
    public static void AverageGradients(nn.Module module, ProcessGroup? group = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        group ??= ProcessGroup.World;
        var parameters = module.parameters().Where(p => p.requires_grad).ToList();
        Agree(group, parameters, "parameters");
        using var noGrad = no_grad();
        foreach (var parameter in parameters)
        {
            parameter.grad ??= zeros_like(parameter);
        }

        foreach (var sameDtype in parameters.GroupBy(p => p.dtype))
        {
            var grads = sameDtype.Select(p => p.grad!).ToList();
            var reduced = sameDtype.Key is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : sameDtype.Key;
            using var scope = NewDisposeScope();
            var flat = cat(grads.Select(g => g.reshape(-1).to(reduced)).ToList(), 0);
            group.AllReduce(flat);
            flat.div_(group.Size);
            long offset = 0;
            foreach (var grad in grads)
            {
                long count = grad.numel();
                grad.copy_(flat.narrow(0, offset, count).view_as(grad));
                offset += count;
            }
        }
    }

    /// <summary>Refuses, on every process alike, models whose tensors differ between the processes.</summary>
    private static void Agree(ProcessGroup group, IReadOnlyList<Tensor> tensors, string what)
    {
        // Count, then a checksum of the dtypes and shapes in order: equal models give equal numbers.
        double signature = 0;
        foreach (var tensor in tensors)
        {
            signature = ((signature * 31) + (int)tensor.dtype) % 1_000_000_007;
            foreach (long size in tensor.shape)
            {
                signature = ((signature * 31) + size) % 1_000_000_007;
            }
        }

        double[] local = [tensors.Count, tensors.Sum(t => (double)t.numel()), signature];
        double[] all = new double[local.Length * group.Size];
        group.AllGather(local, all);
        for (int r = 0; r < group.Size; r++)
        {
            if (!all.AsSpan(r * local.Length, local.Length).SequenceEqual(local))
            {
                throw new ArgumentException(
                    $"The model's {what} differ between the processes (here {tensors.Count} tensors of {local[1]} values; rank {r}: " +
                    $"{all[r * local.Length]} tensors of {all[(r * local.Length) + 1]} values, or other dtypes or shapes). Nothing was changed.",
                    "module");
            }
        }
    }
}
