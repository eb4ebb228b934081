using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// The app's model trained data-parallel on the processes <c>mpiexec</c> started, checked step by step against
/// single-process training on the whole batch. Every process builds the model with our BatchNorm2d, converts it with
/// <see cref="SyncBatchNorm.convert_sync_batchnorm"/>, makes its state rank 0's with
/// <see cref="DataParallel.BroadcastState"/>, and trains on its slice of every batch, the gradients averaged by
/// <see cref="DataParallel.AverageGradients"/>. Beside it, every process trains a single-process copy (our BatchNorm2d,
/// unconverted) from the same state on the whole batch, with the same optimiser, and after each step compares the
/// loss, every gradient, parameter and running statistic; after the epoch, the test set's outputs in evaluation mode.
/// </summary>
/// <remarks>
/// In float64: libtorch's float32 convolutions sum in another order for another batch size, and over 64 steps in
/// float32 that rounding grows to 4e-3 in the loss and 2e-1 in a gradient, the size of a real fault. In float64 the two
/// runs differ only by sums taken in another order (SyncBatchNorm's merged statistics, the averaged gradients), about
/// 1e-15 relative; a BatchNorm2d left unconverted, or gradients not averaged, differ by 1e-1 and more.
/// </remarks>
internal static class DistributedTraining
{
    /// <summary>The largest relative difference (L2 norm) allowed of any compared tensor, float64 rounding being 1e-16.</summary>
    public const double Tolerance = 1e-10;

    private static readonly string[] Kinds = ["step loss", "parameter gradient", "parameter after the step", "running statistic", "evaluation logits (test set)"];

    public static int Run(TrainingOptions options, int seed, string? isaNote)
    {
        if (!ProcessGroup.IsAvailable)
        {
            Console.Error.WriteLine("error: --distributed needs an MPI library of the MPICH ABI (libmpi.so.12 or libmpich.so.12); on Debian and Ubuntu: apt-get install mpich.");
            return 2;
        }

        var group = ProcessGroup.World;

        // A step's collectives take milliseconds; a rank that is not there after minutes has failed (its own build, when
        // each rank builds the app), and the others end with it instead of waiting PyTorch's 30 minutes.
        group.Timeout = TimeSpan.FromMinutes(5);
        try
        {
            return Train(options, seed, isaNote, group);
        }
        catch (TimeoutException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            group.Abort(1);
            return 1;
        }
    }

    private static int Train(TrainingOptions options, int seed, string? isaNote, ProcessGroup group)
    {
        int rank = group.Rank, size = group.Size;
        bool lead = rank == 0;
        if (options.BatchSize % size != 0)
        {
            if (lead)
            {
                Console.Error.WriteLine($"error: --batch-size {options.BatchSize} must be a multiple of the {size} processes, so that each takes an equal slice.");
            }

            return 2;
        }

        // The processes share the machine's processors unless told otherwise; more threads than processors slow every rank down.
        set_num_threads(options.ThreadsGiven ? options.Threads : Math.Max(1, Environment.ProcessorCount / size));
        int epochs = options.EpochsGiven ? options.Epochs : 1;
        int part = options.BatchSize / size;
        var output = lead ? Console.Out : System.IO.TextWriter.Null;
        if (lead)
        {
            Program.PrintHeader(options, isaNote, "The example CNN trained data-parallel with SyncBatchNorm, against single-process training on the whole batch");
            output.WriteLine(size == 1
                ? "  1 process (ProcessGroup.World)"
                : string.Create(CultureInfo.InvariantCulture, $"  {size} processes (ProcessGroup.World), the processors shared among them; rank 0 prints"));
            if (size == 1)
            {
                output.WriteLine("  One process: start it with mpiexec -n 2 (or more) to split the batch; see --help.");
            }
        }

        using var train = ShapesDataset.Generate(options.TrainImages, seed);
        using var test = ShapesDataset.Generate(options.TestImages, seed + 1);
        using var testImages = test.Images.to(ScalarType.Float64);

        // The single-process copy from rank 0's seed; the data-parallel model from each rank's own, so that
        // BroadcastState has something to do.
        var wholeMasks = new DropoutMasks(options.BatchSize, 0, seed);
        var partMasks = new DropoutMasks(options.BatchSize, (long)rank * part, seed);
        manual_seed(seed);
        using var single = new TrainingRun("single process", Build(wholeMasks), epochs);
        manual_seed(seed + rank);
        var model = Build(partMasks);
        model = (nn.Module<Tensor, Tensor>)SyncBatchNorm.convert_sync_batchnorm(model, group);
        int converted = model.modules().OfType<SyncBatchNorm>().Count();
        DataParallel.BroadcastState(model, group);
        using var parallel = new TrainingRun("data-parallel", model, epochs);
        var singleState = single.Model.state_dict();
        bool broadcastExact = model.state_dict().All(kv => StepCheck.BitsDiffering(kv.Value, singleState[kv.Key]) == 0);
        bool[] exactOnEvery = Gather(group, [broadcastExact ? 1 : 0]).Select(v => v == 1).ToArray();

        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Model: the app's CNN in float64, {model.parameters().Sum(p => p.numel())} parameters, {converted} BatchNorm2d converted by SyncBatchNorm.convert_sync_batchnorm. SGD (lr {TrainingRun.LearningRate}, momentum 0.9, weight decay 5e-4), cosine LR schedule."));
        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Data: {train.Count} training and {test.Count} test images; batch {options.BatchSize}, {part} per process, {train.Count / options.BatchSize} steps per epoch, {epochs} epoch{(epochs == 1 ? string.Empty : "s")}."));
        output.WriteLine($"DataParallel.BroadcastState: every rank started from its own weights; after it, each holds rank 0's bit for bit: {(exactOnEvery.All(e => e) ? "yes" : "no, on rank " + string.Join(", ", Enumerable.Range(0, size).Where(r => !exactOnEvery[r])))}.");
        output.WriteLine("Dropout2d masks are drawn for the whole batch from each step's seed, each process applying its own rows, so that");
        output.WriteLine("both runs drop the same channels of the same images.");

        var worst = new Difference[Kinds.Length];
        Array.Fill(worst, Difference.None);
        var mismatches = new List<string>();
        var parallelClock = new Stopwatch();
        var singleClock = new Stopwatch();
        var collectives = TimeSpan.Zero;
        using var generator = new Generator((ulong)seed);
        int stepsPerEpoch = (int)(train.Count / options.BatchSize);
        int step = 0;
        double testAccuracy = 0;
        for (int epoch = 1; epoch <= epochs; epoch++)
        {
            // The same order on every process: each draws it from the same seed.
            using var order = randperm(train.Count, generator: generator);
            single.Model.train();
            parallel.Model.train();
            for (int s = 0; s < stepsPerEpoch; s++, step++)
            {
                using var scope = NewDisposeScope();
                var (images, labels) = train.Batch(order, s, options.BatchSize);
                var x = images.to(ScalarType.Float64);
                wholeMasks.Step = partMasks.Step = step;

                singleClock.Start();
                var (singleLoss, _) = single.Gradients(x, labels);
                single.Update();
                singleClock.Stop();

                // Both ranks start the timed step together, so that the collectives' time is this step's exchange, not
                // the wait for a rank still busy with its single-process copy.
                group.Barrier();
                var before = group.CollectiveTime;
                parallelClock.Start();
                var (partLoss, _) = parallel.Gradients(x.narrow(0, (long)rank * part, part), labels.narrow(0, (long)rank * part, part));
                DataParallel.AverageGradients(parallel.Model, group);
                parallel.Update();
                parallelClock.Stop();
                collectives += group.CollectiveTime - before;

                // The whole batch's loss is the mean of the parts' means, the parts being equal.
                var meanLoss = partLoss.detach().reshape(1).clone();
                group.AllReduce(meanLoss);
                meanLoss.div_(size);
                Track(0, new Difference(StepCheck.Relative(meanLoss, singleLoss.reshape(1)), "loss", step + 1));
                CompareState(single.Model, parallel.Model, step + 1, mismatches);
            }

            single.EndEpoch();
            parallel.EndEpoch();
            using var noGrad = no_grad();
            single.Model.eval();
            parallel.Model.eval();
            using var expected = single.Model.forward(testImages);
            using var actual = parallel.Model.forward(testImages);
            Track(4, new Difference(StepCheck.Relative(actual, expected), "test-set logits", step));
            using var correct = actual.argmax(1).eq(test.Labels).sum();
            testAccuracy = correct.item<long>() / (double)test.Count;
        }

        string[] names =
        [
            "-", "loss", "test-set logits",
            .. parallel.Model.named_parameters().Select(p => p.name + ".grad"),
            .. parallel.Model.named_parameters().Select(p => p.name),
            .. parallel.Model.named_buffers().Select(b => b.name),
        ];
        var everywhere = WorstOverRanks(group, worst, names);
        double[] timings = Gather(group, [parallelClock.Elapsed.TotalMilliseconds / step, collectives.TotalMilliseconds / step, singleClock.Elapsed.TotalMilliseconds / step]);
        double[] mismatchCounts = Gather(group, [mismatches.Count]);
        bool passed = exactOnEvery.All(e => e) && mismatchCounts.All(c => c == 0) && everywhere.All(w => w.Worst.Value <= Tolerance);

        output.WriteLine();
        output.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"Step-by-step check ({step} steps, {epochs} evaluation{(epochs == 1 ? string.Empty : "s")}): every rank trains the data-parallel model on its slice and a single-process"));
        output.WriteLine("copy (our BatchNorm2d, not converted) on the whole batch, from the same state, on the same batches and dropout masks,");
        output.WriteLine("and compares them after each step. Measured against float64 rounding (1e-16): the two runs sum in another order.");
        output.WriteLine("  largest relative difference (L2 norm), any rank   measured  tolerance  where");
        for (int k = 0; k < Kinds.Length; k++)
        {
            var (w, r) = everywhere[k];
            string where = w.Value == 0
                ? "equal bit for bit everywhere"
                : (w.Name is "loss" or "test-set logits" ? $"step {w.Step}" : $"{w.Name}, step {w.Step}") + (size > 1 ? $", rank {r}" : string.Empty);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {Kinds[k],-48} {w.Value,8:0.0e+00}  {Tolerance,9:0e+00}  {where}"));
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  num_batches_tracked equal at every step on every rank: {(mismatchCounts.All(c => c == 0) ? "yes" : "no")}. Test accuracy of the data-parallel model: {100 * testAccuracy:F1}%."));
        output.WriteLine();
        output.WriteLine("Time per step (mean over the steps):");
        for (int r = 0; r < size; r++)
        {
            double stepMs = timings[(r * 3) + 0], collectiveMs = timings[(r * 3) + 1], singleMs = timings[(r * 3) + 2];
            output.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"  rank {r}: data-parallel step {stepMs:F2} ms, of which {collectiveMs:F2} ms ({100 * collectiveMs / stepMs:F0}%) in collectives (ProcessGroup.CollectiveTime, waiting included) and {stepMs - collectiveMs:F2} ms computing; single-process step on the whole batch {singleMs:F2} ms."));
        }

        output.WriteLine("  The collectives are SyncBatchNorm's exchanges of per-channel sums (two layers, forward and backward) and the");
        output.WriteLine("  gradient averaging; the other process computing its slice at the same time on the same machine is part of the wait.");
        if (!passed)
        {
            if (lead)
            {
                Console.Error.WriteLine(mismatches.Count > 0
                    ? $"DISAGREE: {mismatches[0]}."
                    : "DISAGREE: the data-parallel run differs from the single-process run beyond the tolerance (see above).");
            }

            return 1;
        }

        output.WriteLine("Result: data-parallel training with SyncBatchNorm equals single-process training on the whole batch at every step.");
        return 0;

        void Track(int kind, Difference d) => worst[kind] = Difference.Max(worst[kind], d);

        void CompareState(nn.Module<Tensor, Tensor> expected, nn.Module<Tensor, Tensor> actual, int at, List<string> found)
        {
            var parameters = expected.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, parameter) in actual.named_parameters())
            {
                var e = parameters[name];
                double gradient = parameter.grad is { } g && e.grad is { } eg ? StepCheck.Relative(g, eg) : double.PositiveInfinity;
                Track(1, new Difference(gradient, name + ".grad", at));
                Track(2, new Difference(StepCheck.Relative(parameter, e), name, at));
            }

            var buffers = expected.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            foreach (var (name, buffer) in actual.named_buffers())
            {
                if (name.EndsWith("num_batches_tracked", StringComparison.Ordinal))
                {
                    if (StepCheck.BitsDiffering(buffer, buffers[name]) != 0)
                    {
                        found.Add($"{name} differs from the single-process run's at step {at} on rank {rank}");
                    }

                    continue;
                }

                Track(3, new Difference(StepCheck.Relative(buffer, buffers[name]), name, at));
            }
        }
    }

    /// <summary>The app's model with our BatchNorm2d and the shared-mask dropout, in float64.</summary>
    private static nn.Module<Tensor, Tensor> Build(DropoutMasks masks)
    {
        var set = new LayerSet("MyTorch.Layers", c => layers.BatchNorm2d(c), p => new SharedMaskDropout2d(p, masks));
        return SmallCnn.Create(set, ShapesDataset.ClassNames.Length).to(ScalarType.Float64);
    }

    /// <summary>Every rank's <paramref name="local"/> values, in rank order, on every rank.</summary>
    private static double[] Gather(ProcessGroup group, double[] local)
    {
        using var all = zeros(group.Size * local.Length, ScalarType.Float64);
        all.narrow(0, (long)group.Rank * local.Length, local.Length).copy_(tensor(local));
        group.AllReduce(all);
        return all.data<double>().ToArray();
    }

    /// <summary>
    /// The worst of each kind over the ranks, with the quantity and step where it was found. A quantity travels as its
    /// index in <paramref name="names"/>, the same list on every rank, as the models are the same.
    /// </summary>
    private static (Difference Worst, int Rank)[] WorstOverRanks(ProcessGroup group, Difference[] local, IReadOnlyList<string> names)
    {
        int n = local.Length;
        var index = names.Select((name, i) => (name, i)).ToDictionary(x => x.name, x => x.i);
        double[] all = Gather(group, [.. local.SelectMany(d => new double[] { d.Value, index.GetValueOrDefault(d.Name, 0), d.Step })]);
        var result = new (Difference, int)[n];
        for (int k = 0; k < n; k++)
        {
            var worst = Difference.None;
            int worstRank = 0;
            for (int r = 0; r < group.Size; r++)
            {
                int at = ((r * n) + k) * 3;
                var d = new Difference(all[at], names[(int)all[at + 1]], (int)all[at + 2]);
                if (r == 0 || d.Value > worst.Value || double.IsNaN(d.Value))
                {
                    (worst, worstRank) = (d, r);
                }
            }

            result[k] = (worst, worstRank);
        }

        return result;
    }
}
