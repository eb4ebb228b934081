using System;
using System.Collections.Generic;
using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>What one epoch of one run produced.</summary>
internal sealed record EpochResult(int Epoch, double Loss, double TrainAccuracy, double TestLoss, double TestAccuracy, double Seconds);

/// <summary>
/// One model with its optimiser (SGD with momentum and weight decay), learning-rate schedule (cosine annealing over
/// the epochs) and loss (cross-entropy), trained epoch by epoch.
/// </summary>
internal sealed class TrainingRun : IDisposable
{
    public const double LearningRate = 0.01;
    private const int EvalBatchSize = 512;

    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly optim.Optimizer _optimizer;
    private readonly optim.lr_scheduler.LRScheduler _scheduler;
    private readonly nn.Module<Tensor, Tensor, Tensor> _loss = nn.CrossEntropyLoss();

    public TrainingRun(string name, nn.Module<Tensor, Tensor> model, int epochs)
    {
        Name = name;
        _model = model;
        _optimizer = optim.SGD(model.parameters(), LearningRate, momentum: 0.9, weight_decay: 5e-4);
        _scheduler = optim.lr_scheduler.CosineAnnealingLR(_optimizer, epochs);
    }

    public string Name { get; }

    public nn.Module<Tensor, Tensor> Model => _model;

    /// <summary>The training loss of every step so far, in order.</summary>
    public List<double> StepLosses { get; } = [];

    public List<EpochResult> Epochs { get; } = [];

    /// <summary>The loss of a batch and the gradients of every parameter, which replace the previous step's.</summary>
    public (Tensor Loss, Tensor Logits) Gradients(Tensor images, Tensor labels) => Gradients(_model, _loss, images, labels);

    /// <summary><see cref="Gradients(Tensor, Tensor)"/> for any model with this run's loss.</summary>
    public static (Tensor Loss, Tensor Logits) Gradients(nn.Module<Tensor, Tensor> model, nn.Module<Tensor, Tensor, Tensor> lossFunction, Tensor images, Tensor labels)
    {
        model.zero_grad();
        var logits = model.forward(images);
        var loss = lossFunction.forward(logits, labels);
        loss.backward();
        return (loss, logits);
    }

    /// <summary>The optimiser's step with the current gradients.</summary>
    public void Update() => _optimizer.step();

    /// <summary>The learning-rate schedule's step at the end of an epoch.</summary>
    public void EndEpoch() => _scheduler.step();

    /// <summary>
    /// One pass over <paramref name="train"/> in the order <paramref name="order"/> gives (the last partial batch
    /// dropped), then an evaluation on <paramref name="test"/>. Dropout draws come from TorchSharp's default generator,
    /// seeded with <paramref name="dropoutSeed"/> first, so that two runs given the same seed draw the same masks.
    /// </summary>
    public EpochResult TrainEpoch(ShapesDataset train, ShapesDataset test, Tensor order, int batchSize, long dropoutSeed, ProgressBar progress)
    {
        int epoch = Epochs.Count + 1;
        int steps = (int)(train.Count / batchSize);
        var clock = Stopwatch.StartNew();
        manual_seed(dropoutSeed);
        _model.train();
        double lossSum = 0;
        long correct = 0;
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var (x, y) = train.Batch(order, step, batchSize);
            var (loss, logits) = Gradients(x, y);
            Update();
            double value = loss.item<float>();
            StepLosses.Add(value);
            lossSum += value;
            correct += logits.argmax(1).eq(y).sum().item<long>();
            progress.Report($"epoch {epoch} {Name}", step + 1, steps);
        }

        EndEpoch();
        var (testLoss, testAccuracy) = Evaluate(test);
        clock.Stop();
        progress.Clear();
        var result = new EpochResult(epoch, lossSum / steps, (double)correct / (steps * batchSize), testLoss, testAccuracy, clock.Elapsed.TotalSeconds);
        Epochs.Add(result);
        return result;
    }

    public void Dispose()
    {
        _loss.Dispose();
        _model.Dispose();
    }

    /// <summary>Mean loss and accuracy in evaluation mode, without gradients.</summary>
    private (double Loss, double Accuracy) Evaluate(ShapesDataset test)
    {
        _model.eval();
        using var noGrad = no_grad();
        double lossSum = 0;
        long correct = 0;
        for (long start = 0; start < test.Count; start += EvalBatchSize)
        {
            using var scope = NewDisposeScope();
            long end = Math.Min(start + EvalBatchSize, test.Count);
            var x = test.Images.slice(0, start, end, 1);
            var y = test.Labels.slice(0, start, end, 1);
            var logits = _model.forward(x);
            lossSum += _loss.forward(logits, y).item<float>() * (end - start);
            correct += logits.argmax(1).eq(y).sum().item<long>();
        }

        return (lossSum / test.Count, (double)correct / test.Count);
    }
}
