using System;
using System.Globalization;
using System.Linq;
using System.Runtime.ExceptionServices;
using MyTorch.Layers.Functional;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed;

/// <summary>
/// Batch normalisation of a batch split across processes, as PyTorch's <c>torch.nn.SyncBatchNorm</c>: in training,
/// each process normalises its part with the mean and biased variance of the whole batch, its N·…  values per channel
/// over all processes of <see cref="process_group"/>, and the running statistics of every process follow the whole
/// batch's (unbiased variance). Its backward uses the whole batch's Σdy and Σdy·x̂; weight.grad and bias.grad are
/// this process's part, to be summed or averaged with the other gradients (<see cref="DataParallel.AverageGradients"/>).
/// </summary>
/// <remarks>
/// Takes (N, C, …) of any rank from 2. Evaluation uses the running statistics with no communication; so does training
/// when the group has one process, or when no group was given and <see cref="ProcessGroup.World"/> was never used:
/// then it is our BatchNorm, bit for bit. Each process gathers every process's per-channel sums (3C + 1 numbers forward,
/// 2C backward) and merges them in rank order, so all get the same statistics. The processes first agree on the
/// channel count and dtypes: a process whose input is refused, or that disagrees, makes every process throw, with nothing
/// changed. Parts may differ in size; one may be empty. No second-order gradients.
/// </remarks>
public sealed class SyncBatchNorm : BatchNormBase
{
    /// <summary>Creates the module with PyTorch's parameter names, order and defaults.</summary>
    /// <param name="num_features">C, the number of channels; at least 1.</param>
    /// <param name="eps">Added to the variance for numerical stability; zero or positive.</param>
    /// <param name="momentum">Weight of each new batch in the running statistics; null for a cumulative average.</param>
    /// <param name="affine">Whether to learn a per-channel weight (ones) and bias (zeros).</param>
    /// <param name="track_running_stats">Whether to keep running statistics and use them in evaluation.</param>
    /// <param name="process_group">The processes the batch is split across; null for <see cref="ProcessGroup.World"/>.</param>
    /// <param name="device">Device of the parameters and buffers; only the CPU is supported.</param>
    /// <param name="dtype">Float32 (the default), Float64, BFloat16 or Float16. A float32 module also takes bfloat16 and float16 input.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="num_features"/> is below 1, or <paramref name="eps"/> is negative or NaN.</exception>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> is not Float32, Float64, BFloat16 or Float16.</exception>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not the CPU.</exception>
    public SyncBatchNorm(
        long num_features,
        double eps = 1e-05,
        double? momentum = 0.1,
        bool affine = true,
        bool track_running_stats = true,
        ProcessGroup? process_group = null,
        Device? device = null,
        ScalarType? dtype = null)
        : base(num_features, eps, momentum, affine, track_running_stats, device, dtype, nameof(SyncBatchNorm))
    {
        this.process_group = process_group;
    }

    /// <summary>The processes the batch is split across; null for <see cref="ProcessGroup.World"/>.</summary>
    public ProcessGroup? process_group { get; set; }

    /// <summary>(N, C, …) of any rank from 2, as PyTorch's SyncBatchNorm.</summary>
    private protected override BatchNormRanks Ranks => BatchNormRanks.Any;

    /// <summary>
    /// Replaces every BatchNorm1d, BatchNorm2d and BatchNorm3d in <paramref name="module"/>, ours or TorchSharp's, by a
    /// SyncBatchNorm that shares its parameters and buffers (the same tensors, so an optimizer made before keeps training
    /// them) and its options and training mode, as PyTorch's <c>convert_sync_batchnorm</c> does. The model is changed in
    /// place and returned; a module that is itself a BatchNorm is returned converted. state_dict keys stay the same.
    /// </summary>
    /// <param name="module">The model.</param>
    /// <param name="process_group">The group the new layers use; null for <see cref="ProcessGroup.World"/>.</param>
    /// <returns><paramref name="module"/>, or its replacement if it is a BatchNorm.</returns>
    /// <exception cref="NotSupportedException">
    /// The model holds a <see cref="BatchNormReLUDropout2d"/> (convert before fusing), or a BatchNorm where TorchSharp gives
    /// no way to replace it. Nothing is changed.
    /// </exception>
    public static nn.Module convert_sync_batchnorm(nn.Module module, ProcessGroup? process_group = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        if (module is TorchSharp.Modules.BatchNorm root)
        {
            return Converted(root, string.Empty, process_group);
        }

        var places = module.named_modules()
            .Where(m => m.module is TorchSharp.Modules.BatchNorm and not SyncBatchNorm)
            .Select(m => ModuleTree.Find(module, m.name, nameof(module)))
            .ToArray();
        foreach (var place in places)
        {
            CheckConvertible((TorchSharp.Modules.BatchNorm)place.Module, place.Path);
            ModuleTree.CheckReplaceable(place, typeof(SyncBatchNorm), nameof(module));
        }

        foreach (var place in places)
        {
            ModuleTree.Replace(place, Converted((TorchSharp.Modules.BatchNorm)place.Module, place.Path, process_group));
        }

        return module;
    }

    /// <inheritdoc cref="BatchNormBase.forward"/>
    /// <exception cref="InvalidOperationException">Another process refused its input. Nothing is changed.</exception>
    /// <exception cref="TimeoutException">Another process did not take part within the group's timeout.</exception>
    public override Tensor forward(Tensor input)
    {
        var group = process_group ?? (ProcessGroup.IsInitialized ? ProcessGroup.World : null);
        if (!training || group is null || group.Size == 1)
        {
            return base.forward(input);
        }

        Tensor? weight = affine ? this.weight : null;
        long[]? shape = null;
        ExceptionDispatchInfo? refused = null;
        try
        {
            // A part may hold one value per channel, or none: the whole batch is checked once the parts are known.
            shape = BatchNormFunctional.CheckForward(
                input, Ranks, weight, bias, running_mean, running_var, training, eps, moduleDtype: weight?.dtype ?? running_mean?.dtype, wholeBatch: false);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or ObjectDisposedException)
        {
            refused = ExceptionDispatchInfo.Capture(e);
        }

        var dtypes = refused is null ? (input.dtype, weight?.dtype ?? running_mean?.dtype ?? input.dtype) : default;
        long values = Agree(group, shape, dtypes, refused);
        if (values <= 1)
        {
            throw new ArgumentException(string.Create(
                CultureInfo.InvariantCulture,
                $"Expected more than 1 value per channel when training, got input size {Check.Format(shape!)} here and {values} value(s) per channel across the {group.Size} processes."),
                nameof(input));
        }

        // The batch is counted once the forward has exchanged its statistics: a timed-out exchange changes nothing.
        var output = BatchNormAutograd.Forward(input, shape!, weight, bias, running_mean, running_var, training, NextBatchFactor(), eps, new SplitBatch(new GroupExchange(group)));
        CountBatch();
        return output;
    }

    /// <summary>
    /// Every process's verdict on its input, its channel count, rank and dtypes, gathered; throws on every process, the
    /// same decision everywhere, unless all accepted their input and agree. Returns the whole batch's values per channel.
    /// </summary>
    private static long Agree(ProcessGroup group, long[]? shape, (ScalarType Input, ScalarType Module) dtypes, ExceptionDispatchInfo? refused)
    {
        const int Fields = 6;
        double[] local = new double[Fields];
        if (refused is null)
        {
            long part = shape![0];
            for (int d = 2; d < shape.Length; d++)
            {
                part *= shape[d];
            }

            local = [0, shape[1], shape.Length, (int)dtypes.Input, (int)dtypes.Module, part];
        }
        else
        {
            local[0] = 1;
        }

        double[] all = new double[Fields * group.Size];
        group.AllGather(local, all);
        double[][] parts = [.. Enumerable.Range(0, group.Size).Select(r => all[(r * Fields)..((r + 1) * Fields)])];
        int[] refusing = [.. Enumerable.Range(0, group.Size).Where(r => parts[r][0] != 0)];
        if (refusing.Length > 0)
        {
            refused?.Throw();
            throw new InvalidOperationException(
                $"SyncBatchNorm: rank {string.Join(", ", refusing)} of {group.Size} refused its input (see the exception there); nothing was changed.");
        }

        Disagreement(parts, 1, "the channel count", v => v.ToString(CultureInfo.InvariantCulture));
        Disagreement(parts, 2, "the input's number of dimensions", v => v.ToString(CultureInfo.InvariantCulture));
        Disagreement(parts, 3, "the input's dtype", v => ((ScalarType)(int)v).ToString());
        Disagreement(parts, 4, "the module's dtype", v => ((ScalarType)(int)v).ToString());
        return parts.Sum(p => (long)p[5]);
    }

    private static void Disagreement(double[][] parts, int field, string what, Func<double, string> show)
    {
        if (parts.Any(p => p[field] != parts[0][field]))
        {
            string each = string.Join(", ", parts.Select((p, r) => $"rank {r}: {show(p[field])}"));
            throw new ArgumentException($"SyncBatchNorm: the processes disagree on {what} ({each}); nothing was changed.", "input");
        }
    }

    private static void CheckConvertible(TorchSharp.Modules.BatchNorm norm, string path)
    {
        if (norm is BatchNormReLUDropout2d)
        {
            throw new NotSupportedException(
                $"'{path}' is a BatchNormReLUDropout2d, which has no synchronised form: convert the model before fusing its modules. Nothing was changed.");
        }
    }

    private static SyncBatchNorm Converted(TorchSharp.Modules.BatchNorm norm, string path, ProcessGroup? group)
    {
        CheckConvertible(norm, path);
        if (norm is SyncBatchNorm sync)
        {
            return sync;
        }

        var source = norm.weight ?? norm.running_mean;
        var converted = new SyncBatchNorm(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats, group, dtype: source?.dtype);
        converted.ShareStateOf(norm);
        return converted;
    }

    /// <summary>The group as the batch-normalisation core reaches the other parts.</summary>
    private sealed class GroupExchange(ProcessGroup group) : ISumExchange
    {
        public int Parts => group.Size;

        public void AllGather(ReadOnlySpan<double> local, Span<double> all) => group.AllGather(local, all);
    }
}
