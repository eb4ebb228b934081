using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Threading;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Distributed.Tests.Worker;

/// <summary>
/// What each rank runs under mpiexec. Every rank makes the same inputs from the same seeds, so each can compute the
/// single-process oracle on the whole batch itself and compare its own part with it.
/// </summary>
public static class Scenarios
{
    /// <summary>Learning rate and steps of the data-parallel training comparison.</summary>
    public const int TrainingSteps = 30;

    /// <summary>
    /// The data-parallel training tolerance, relative to each tensor's largest value: the two runs' float64 results
    /// start 1e-16 apart (sums in another order; 3e-15 after 30 steps here) and training may amplify that; a semantic difference (a part's own
    /// statistics, an unaveraged gradient) shows at 1e-3 and more from the first step.
    /// </summary>
    public const double TrainingTolerance = 1e-11;

    public static void Run(string scenario, ProcessGroup group, RankReport report, Action save)
    {
        switch (scenario)
        {
            case "layers":
                Refusals(group, report);
                foreach (var c in SplitCases.All)
                {
                    Split(c, SplitCases.All.ToList().IndexOf(c), group, report);
                }

                Collectives(group, report);
                break;
            case "training":
                Training(group, report);
                break;
            case "timeout":
                Timeout(group, report, save);
                break;
            case "second-order":
                SecondOrder(group);
                break;
            default:
                throw new ArgumentException($"unknown scenario '{scenario}'", nameof(scenario));
        }
    }

    /// <summary>One split case: two training steps with backward, then one evaluation step.</summary>
    private static void Split(SplitCase c, int seed, ProcessGroup group, RankReport report)
    {
        using var scope = NewDisposeScope();
        manual_seed(1000 + seed);
        long channels = c.Shape[1];
        var parameterDtype = c.Dtype is ScalarType.BFloat16 or ScalarType.Float16 ? ScalarType.Float32 : c.Dtype;
        var reference = WholeBatchLayer(c, parameterDtype);
        var sync = new SyncBatchNorm(channels, momentum: c.Momentum, affine: c.Affine, track_running_stats: c.Track, process_group: group, dtype: parameterDtype);
        using (no_grad())
        {
            var start = new[] { rand(channels, float64) + 0.5, randn(channels, float64), randn(channels, float64) * 0.1, rand(channels, float64) + 0.5 };
            var targets = new[] { (reference.weight, sync.weight), (reference.bias, sync.bias), (reference.running_mean, sync.running_mean), (reference.running_var, sync.running_var) };
            for (int i = 0; i < targets.Length; i++)
            {
                targets[i].Item1?.copy_(start[i]);
                targets[i].Item2?.copy_(start[i]);
            }
        }

        int rank = group.Rank;
        long first = c.Parts.Take(rank).Sum();
        long count = c.Parts[rank];
        for (int step = 0; step < 2; step++)
        {
            string quantity = $"step {step} ";
            var whole = ((randn(c.Shape, float64) * 2) + 3).to(c.Dtype);
            var dy = randn(c.Shape, float64).to(c.Dtype);

            var x = Laid(whole, c).requires_grad_();
            var y = reference.forward(x);
            var grads = autograd.grad([y], Differentiated(x, reference), [Laid(dy, c)]);

            var part = Laid(whole.narrow(0, first, count), c).requires_grad_();
            var partY = sync.forward(part);
            var partGrads = autograd.grad([partY], Differentiated(part, sync), [Laid(dy.narrow(0, first, count), c)]);

            report.Measures.Add(Compare.Values(c.Name, quantity + "output", partY, y.narrow(0, first, count), c.Exact));
            report.Measures.Add(Compare.Values(c.Name, quantity + "input gradient", partGrads[0], grads[0].narrow(0, first, count), c.Exact));
            if (c.Affine)
            {
                report.Measures.Add(Summed(c, quantity + "weight gradient, summed", partGrads[1], grads[1], group));
                report.Measures.Add(Summed(c, quantity + "bias gradient, summed", partGrads[2], grads[2], group));
            }

            if (c.Track)
            {
                report.Measures.Add(Compare.Values(c.Name, quantity + "running_mean", sync.running_mean!, reference.running_mean!, c.Exact));
                report.Measures.Add(Compare.Values(c.Name, quantity + "running_var", sync.running_var!, reference.running_var!, c.Exact));
                report.Facts.Add(new(c.Name, sync.num_batches_tracked!.item<long>() == step + 1, $"num_batches_tracked {sync.num_batches_tracked!.item<long>()} after step {step}"));
                report.Facts.Add(new(c.Name, SameOnEveryRank(sync.running_mean!, group) && SameOnEveryRank(sync.running_var!, group), $"running statistics bit for bit rank 0's after step {step}"));
            }
        }

        if (c.Track)
        {
            reference.eval();
            sync.eval();
            var whole = ((randn(c.Shape, float64) * 2) + 3).to(c.Dtype);
            using var noGrad = no_grad();
            var y = reference.forward(Laid(whole, c));
            var partY = sync.forward(Laid(whole.narrow(0, first, count), c));
            report.Measures.Add(Compare.Values(c.Name, "evaluation output", partY, y.narrow(0, first, count), c.Exact));
        }
    }

    /// <summary>This part's parameter gradient summed over the ranks, against the whole batch's, the tolerance taken from the parts' magnitudes.</summary>
    private static Measure Summed(SplitCase c, string quantity, Tensor part, Tensor whole, ProcessGroup group)
    {
        var sum = part.to(float64).clone();
        var magnitude = part.to(float64).abs();
        group.AllReduce(sum);
        group.AllReduce(magnitude);
        // With one part empty the sum is the other part as it is, exact in the parameters' dtype.
        var actual = c.Exact ? sum.to(whole.dtype) : sum;
        return Compare.Values(c.Name, quantity, actual, whole, c.Exact, ulps: 2, magnitude: magnitude);
    }

    /// <summary>Whether <paramref name="t"/> has rank 0's bits.</summary>
    private static bool SameOnEveryRank(Tensor t, ProcessGroup group)
    {
        var rankZeros = t.clone();
        group.Broadcast(rankZeros, root: 0);
        return Compare.Identical(t, rankZeros);
    }

    private static BatchNormBase WholeBatchLayer(SplitCase c, ScalarType dtype) => c.Shape.Length switch
    {
        2 or 3 => new BatchNorm1d(c.Shape[1], momentum: c.Momentum, affine: c.Affine, track_running_stats: c.Track, dtype: dtype),
        4 => new BatchNorm2d(c.Shape[1], momentum: c.Momentum, affine: c.Affine, track_running_stats: c.Track, dtype: dtype),
        _ => new BatchNorm3d(c.Shape[1], momentum: c.Momentum, affine: c.Affine, track_running_stats: c.Track, dtype: dtype),
    };

    private static List<Tensor> Differentiated(Tensor input, BatchNormBase layer) =>
        layer.affine ? [input, layer.weight!, layer.bias!] : [input];

    /// <summary>The case's memory layout: channels-last (3-d for 5-D input) or contiguous.</summary>
    private static Tensor Laid(Tensor t, SplitCase c)
    {
        if (!c.ChannelsLast)
        {
            return t.contiguous();
        }

        // (0, 2, …, r − 1, 1) puts the channels innermost; its inverse gives back (N, C, …).
        int rank = (int)t.dim();
        long[] toMemory = [0, .. Enumerable.Range(2, rank - 2).Select(d => (long)d), 1];
        long[] back = [0, rank - 1, .. Enumerable.Range(1, rank - 2).Select(d => (long)d)];
        return t.permute(toMemory).contiguous().permute(back);
    }

    /// <summary>Inputs each rank must refuse, every rank alike, with nothing changed.</summary>
    private static void Refusals(ProcessGroup group, RankReport report)
    {
        int rank = group.Rank;
        Refusal("ChannelsDisagree", report, new SyncBatchNorm(4 + rank, process_group: group), randn(4, 4 + rank, 3, 3));
        Refusal("OneRankRefusesItsDtype", report, new SyncBatchNorm(3, process_group: group), randn(4, 3, 3, 3, dtype: rank == 1 ? float64 : float32));
        Refusal("OneValuePerChannelInTheWholeBatch", report, new SyncBatchNorm(3, process_group: group), randn(1 - rank, 3, 1, 1));

    }

    private static void Refusal(string name, RankReport report, SyncBatchNorm layer, Tensor input)
    {
        var before = layer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        try
        {
            layer.forward(input);
            report.Outcomes.Add(new(name, null, "no exception", false));
        }
        catch (Exception e)
        {
            bool unchanged = layer.state_dict().All(kv => Compare.Identical(kv.Value, before[kv.Key]));
            report.Outcomes.Add(new(name, e.GetType().Name, e.Message, unchanged));
        }
    }

    /// <summary>The process group's own collectives, and groups of a subset of the world.</summary>
    private static void Collectives(ProcessGroup group, RankReport report)
    {
        int rank = group.Rank;
        var sum = tensor(new long[] { rank + 1, 10 * (rank + 1) });
        group.AllReduce(sum);
        report.Facts.Add(new("AllReduce", sum.data<long>().SequenceEqual([3L, 30L]), $"Int64 sum [{string.Join(", ", sum.data<long>())}]"));
        var max = tensor(new float[] { rank, -rank });
        group.AllReduce(max, ReduceOp.Max);
        report.Facts.Add(new("AllReduce", max.data<float>().SequenceEqual([1f, 0f]), $"Float32 max [{string.Join(", ", max.data<float>())}]"));
        var min = tensor(new double[] { rank, -rank });
        group.AllReduce(min, ReduceOp.Min);
        report.Facts.Add(new("AllReduce", min.data<double>().SequenceEqual([0d, -1d]), $"Float64 min [{string.Join(", ", min.data<double>())}]"));

        var sent = full(5, 2.5 + rank, dtype: bfloat16);
        group.Broadcast(sent, root: 1);
        report.Facts.Add(new("Broadcast", sent.to(float64).eq(3.5).all().item<bool>(), $"BFloat16 from rank 1: {sent[0].to(float64).item<double>()}"));

        var second = group.NewGroup([1]);
        report.Facts.Add(new("NewGroup", rank == 0 ? second is null : second is { Size: 1, Rank: 0 }, $"[1]: {(second is null ? "null" : $"rank {second.Rank} of {second.Size}")}"));
        var swapped = group.NewGroup([1, 0])!;
        var seen = tensor(new long[] { swapped.Rank });
        swapped.AllReduce(seen);
        report.Facts.Add(new("NewGroup", swapped.Size == 2 && swapped.Rank == 1 - rank && seen.item<long>() == 1, $"[1, 0]: rank {swapped.Rank} of {swapped.Size}, ranks summed {seen.item<long>()}"));
        group.Barrier();
    }

    /// <summary>
    /// Data-parallel training against single-process training on the whole batch: the same model (its BatchNorm2d
    /// layers, ours and TorchSharp's, converted to SyncBatchNorm), half the batch on each rank, gradients averaged.
    /// </summary>
    private static void Training(ProcessGroup group, RankReport report)
    {
        const int Batch = 16;
        int rank = group.Rank;
        int part = Batch / group.Size;
        manual_seed(7);
        var reference = SmallModel();
        // Each rank starts from other weights; the broadcast must make them rank 0's.
        manual_seed(rank == 0 ? 7 : 99);
        var model = SyncBatchNorm.convert_sync_batchnorm(SmallModel(), group);
        report.Facts.Add(new("Converted", model.modules().OfType<SyncBatchNorm>().Count() == 2, $"{model.modules().OfType<SyncBatchNorm>().Count()} SyncBatchNorm layers"));
        DataParallel.BroadcastState(model, group);
        var referenceState = reference.state_dict();
        bool same = model.state_dict().All(kv => Compare.Identical(kv.Value, referenceState[kv.Key]));
        report.Facts.Add(new("BroadcastState", same && model.state_dict().Count == referenceState.Count, $"{model.state_dict().Count} tensors, all rank 0's: {same}"));

        var referenceOptimizer = optim.SGD(reference.parameters(), 0.05, momentum: 0.9);
        var optimizer = optim.SGD(model.parameters(), 0.05, momentum: 0.9);
        double worst = 0;
        string worstAt = string.Empty;
        var computation = new Stopwatch();
        var communicationBefore = group.CollectiveTime;
        for (int step = 0; step < TrainingSteps; step++)
        {
            using var scope = NewDisposeScope();
            manual_seed(1000 + step);
            var x = randn(Batch, 3, 12, 12, float64);
            var labels = randint(0, 4, [Batch]);

            referenceOptimizer.zero_grad();
            var loss = nn.functional.cross_entropy(((nn.Module<Tensor, Tensor>)reference).forward(x), labels);
            loss.backward();
            referenceOptimizer.step();

            computation.Start();
            optimizer.zero_grad();
            var partLoss = nn.functional.cross_entropy(((nn.Module<Tensor, Tensor>)model).forward(x.narrow(0, rank * part, part)), labels.narrow(0, rank * part, part));
            partLoss.backward();
            DataParallel.AverageGradients(model, group);
            optimizer.step();
            computation.Stop();

            var meanLoss = partLoss.detach().reshape(1).clone();
            group.AllReduce(meanLoss);
            meanLoss.div_(group.Size);
            Track(Compare.Relative("Training", "loss", meanLoss[0], loss.detach(), TrainingTolerance), step);
            var state = reference.state_dict();
            foreach (var (name, value) in model.state_dict())
            {
                Track(Compare.Relative("Training", name, value, state[name], TrainingTolerance), step);
            }
        }

        var communication = group.CollectiveTime - communicationBefore;
        report.Measures.Add(new("Training", $"worst over {TrainingSteps} steps: {worstAt}", worst, worst * TrainingTolerance, TrainingTolerance, false, false));
        report.Facts.Add(new(
            "Timing",
            true,
            $"{computation.Elapsed.TotalMilliseconds / TrainingSteps:F2} ms per data-parallel step, of which {communication.TotalMilliseconds / TrainingSteps:F3} ms in collectives (waiting included)"));

        // The exchanges alone, with both ranks ready: SyncBatchNorm's forward record for 8 channels, 1,000 times.
        group.Barrier();
        double[] record = new double[(3 * 8) + 1], records = new double[record.Length * group.Size];
        var exchanges = Stopwatch.StartNew();
        for (int i = 0; i < 1000; i++)
        {
            group.AllGather(record, records);
        }

        report.Facts.Add(new("Timing", true, $"one all-gather of {record.Length} doubles per rank: {exchanges.Elapsed.TotalMilliseconds:F1} µs"));

        void Track(Measure m, int step)
        {
            if (m.Ratio > worst || worstAt.Length == 0)
            {
                worst = Math.Max(worst, m.Ratio);
                worstAt = $"{m.Quantity} at step {step}, difference {m.Difference:E2} against {m.Tolerance:E2}";
            }
        }
    }

    private static nn.Module SmallModel() => nn.Sequential(
        ("conv1", nn.Conv2d(3, 8, 3, padding: 1, dtype: float64)),
        ("bn1", new BatchNorm2d(8, dtype: float64)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(8, 8, 3, stride: 2, padding: 1, dtype: float64)),
        ("bn2", nn.BatchNorm2d(8, dtype: float64)),
        ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8, 4, dtype: float64)));

    /// <summary>
    /// A gradient of SyncBatchNorm taken with create_graph: its backward refuses, and TorchSharp ends the process on an
    /// exception thrown in a custom backward, so the job must end with the refusal's message.
    /// </summary>
    private static void SecondOrder(ProcessGroup group)
    {
        var layer = new SyncBatchNorm(3, process_group: group);
        var x = randn(4, 3, 2, 2).requires_grad_();
        var y = layer.forward(x);
        autograd.grad([y], [x], [ones_like(y)], create_graph: true);
    }

    /// <summary>
    /// Rank 1 stays away from a barrier: rank 0 must throw TimeoutException within the group's timeout, refuse the next
    /// collective, record it, then end both processes with Abort.
    /// </summary>
    private static void Timeout(ProcessGroup group, RankReport report, Action save)
    {
        group.Timeout = TimeSpan.FromSeconds(2);
        if (group.Rank != 0)
        {
            Thread.Sleep(TimeSpan.FromSeconds(60));
            return;
        }

        var clock = Stopwatch.StartNew();
        try
        {
            group.Barrier();
            report.Outcomes.Add(new("Timeout", null, "the barrier returned", false));
        }
        catch (Exception e)
        {
            report.Outcomes.Add(new("Timeout", e.GetType().Name, $"{e.Message} (after {clock.Elapsed.TotalSeconds:F1} s)", true));
        }

        try
        {
            group.Barrier();
            report.Outcomes.Add(new("AfterTimeout", null, "the barrier returned", false));
        }
        catch (Exception e)
        {
            report.Outcomes.Add(new("AfterTimeout", e.GetType().Name, e.Message, true));
        }

        save();
        group.Abort(3);
    }
}
