using System;
using System.Collections.Generic;
using System.Linq;
using MyTorch.Layers.Examples;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>Our layers inside TorchSharp models, trained with TorchSharp's optimisers, schedulers and loss.</summary>
[TestFixture]
public class TrainingTests
{
    private const int Steps = 30;

    /// <summary>
    /// TorchSharp's model trains; before each of its steps ours takes its parameters and buffers, the same batch, the
    /// same dropout generator state and its ReLU and max-pool choices, and the step's loss, gradients, running statistics
    /// and generator are compared, so that every step differs by one step's rounding only (see the examples app's
    /// check), in float64. Two free runs would drift apart wherever an activation lies within rounding of a ReLU's or max-pool's
    /// decision, which depends on the processor, not on the layers.
    /// </summary>
    [TestCase("sgd")]
    [TestCase("adam")]
    public void ShortTrainingRun_EveryStepMatchesTorchSharp_OnIdenticalInputs_AndOurRunLearns(string optimizer)
    {
        using var scope = NewDisposeScope();
        using var decisions = new Decisions(SmallModels.DecisionSlots);
        var (theirs, ours) = SmallModels.SamePair(seed: 11, decisions: decisions);

        // float64, so that the suite's tolerance holds by a wide margin: in float32 TorchSharp's own rounding of a
        // convolution's weight gradient reaches it (the examples app's check compares float32 with derived tolerances).
        theirs.to(ScalarType.Float64);
        ours.to(ScalarType.Float64);
        manual_seed(12);
        var x = randn([32, 1, 8, 8], ScalarType.Float64);
        var y = randint(SmallModels.Classes, [32]);
        var (theirOptimizer, theirSchedule) = Optimizer(theirs, optimizer);
        var lossFunction = nn.CrossEntropyLoss();
        manual_seed(100);
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = NewDisposeScope();
            var (expected, actual, sameGenerator) = Lockstep.Step(theirs, ours, decisions, model => TrainingRun.Gradients(model, lossFunction, x, y).Loss);
            Assert.That(sameGenerator, Is.True, $"the generator after step {step}");

            Tolerance.AssertClose(actual, expected, $"loss, step {step}");
            var theirParameters = theirs.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in ours.named_parameters())
            {
                Tolerance.AssertClose(p.grad, theirParameters[name].grad, $"{name}.grad, step {step}");
            }

            var theirBuffers = theirs.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            foreach (var (name, b) in ours.named_buffers())
            {
                Tolerance.AssertClose(b, theirBuffers[name], $"{name}, step {step}");
            }

            theirOptimizer.step();
            theirSchedule.step();
        }

        // Our model, trained on its own from the same start, learns.
        var (_, fresh) = SmallModels.SamePair(seed: 11);
        fresh.to(ScalarType.Float64);
        var losses = Train(fresh, x, y, optimizer);
        Assert.That(losses[^1], Is.LessThan(0.5 * losses[0]), "our run learns");
    }

    [Test]
    public void AppsFusedModel_HasABlockInEachBatchNorm2dsPlace_AndOurStateDictKeys()
    {
        using var scope = NewDisposeScope();
        var ours = SmallCnn.Create(LayerSet.MyTorchLayers, classes: 6);
        var fused = SmallCnn.Create(LayerSet.MyTorchLayersFused, classes: 6);

        Assert.That(SmallCnn.FusionGroups(ours), Is.EqualTo(new[] { new[] { "bn1", "relu1", "drop1" }, new[] { "bn2", "relu2", "drop2" } }));
        Assert.That(SmallCnn.FusionGroups(fused), Is.Empty, "nothing is left to fuse");
        var children = fused.named_children().ToDictionary(c => c.name, c => c.module);
        Assert.That(children["bn1"], Is.InstanceOf<BatchNormReLUDropout2d>());
        Assert.That(children["bn2"], Is.InstanceOf<BatchNormReLUDropout2d>());
        Assert.That(new[] { "relu1", "drop1", "relu2", "drop2" }.Select(name => children[name]), Is.All.InstanceOf<TorchSharp.Modules.Identity>());
        Assert.That(children["relu3"], Is.InstanceOf<TorchSharp.Modules.ReLU>(), "the ReLU after fc1 follows no BatchNorm2d");
        var blocks = fused.modules().OfType<BatchNormReLUDropout2d>().ToList();
        Assert.That(blocks.Select(b => (b.relu, b.p)), Is.All.EqualTo((true, SmallCnn.DropoutP)));
        Assert.That(fused.state_dict().Keys, Is.EqualTo(ours.state_dict().Keys));
    }

    [Test]
    public void FusionGroups_TakeBatchNormReLUDropout_AndBatchNormReLU_ButNotBatchNormDropout()
    {
        using var scope = NewDisposeScope();
        var model = nn.Sequential(
            ("bn_a", nn.BatchNorm2d(2)),
            ("relu_a", nn.ReLU()),
            ("drop_a", nn.Dropout2d(0.1)),
            ("bn_b", layers.BatchNorm2d(2)),
            ("relu_b", nn.ReLU()),
            ("bn_c", layers.BatchNorm2d(2)),
            ("drop_c", layers.Dropout2d(0.1)),
            ("relu_c", nn.ReLU()),
            ("bn_d", layers.BatchNorm2d(2)),
            ("relu_d", nn.ReLU()),
            ("drop_d", layers.Dropout2d(0.1)));

        Assert.That(SmallCnn.FusionGroups(model), Is.EqualTo(new[]
        {
            new[] { "bn_a", "relu_a", "drop_a" },
            new[] { "bn_b", "relu_b" },
            new[] { "bn_d", "relu_d", "drop_d" },
        }));
    }

    /// <summary>
    /// The app's free runs of our model and of it fused, from the same weights, batches and dropout seed: the fused block
    /// is defined as the three layers' bits, so the runs do not drift apart as TorchSharp's and ours do.
    /// </summary>
    [Test]
    public void AppsFusedRun_TrainsBitForBitAsOurs()
    {
        using var scope = NewDisposeScope();
        using var train = ShapesDataset.Generate(256, 5);
        using var test = ShapesDataset.Generate(64, 6);
        manual_seed(7);
        using var ours = new TrainingRun("ours", SmallCnn.Create(LayerSet.MyTorchLayers, ShapesDataset.ClassNames.Length), epochs: 2);
        var fusedModel = SmallCnn.Create(LayerSet.MyTorchLayersFused, ShapesDataset.ClassNames.Length);
        fusedModel.load_state_dict(ours.Model.state_dict());
        using var fused = new TrainingRun("fused", fusedModel, epochs: 2);
        var generator = new Generator(8);
        for (int epoch = 1; epoch <= 2; epoch++)
        {
            using var order = randperm(train.Count, generator: generator);
            var a = ours.TrainEpoch(train, test, order, 32, 100 + epoch, new ProgressBar());
            var b = fused.TrainEpoch(train, test, order, 32, 100 + epoch, new ProgressBar());
            Assert.That((b.Loss, b.TrainAccuracy, b.TestLoss, b.TestAccuracy), Is.EqualTo((a.Loss, a.TrainAccuracy, a.TestLoss, a.TestAccuracy)), $"epoch {epoch}");
        }

        Assert.That(fused.StepLosses, Has.Count.EqualTo(16));
        Assert.That(fused.StepLosses, Is.EqualTo(ours.StepLosses), "every step's loss");
        Assert.That(ours.StepLosses[^1], Is.Not.EqualTo(ours.StepLosses[0]), "the runs trained");
        var expected = ours.Model.state_dict();
        foreach (var (key, value) in fused.Model.state_dict())
        {
            Assert.That(StepCheck.BitsDiffering(value, expected[key]), Is.Zero, key);
        }
    }

    [Test]
    public void TrainAndEval_OnTheParent_ReachOurModules()
    {
        using var scope = NewDisposeScope();
        var (_, ours) = SmallModels.SamePair(seed: 3);
        var mine = ours.modules().Where(m => m is BatchNorm2d or Dropout2d).ToList();
        Assert.That(mine, Has.Count.EqualTo(4));
        ours.eval();
        Assert.That(mine.Select(m => m.training), Is.All.False);
        ours.train();
        Assert.That(mine.Select(m => m.training), Is.All.True);

        // In evaluation, dropout is the identity and BatchNorm2d uses its running statistics: the same as TorchSharp's.
        var (theirs, _) = SmallModels.SamePair(seed: 3);
        theirs.eval();
        ours.eval();
        var x = randn(5, 1, 8, 8);
        Tolerance.AssertClose(ours.forward(x), theirs.forward(x), "eval output");
    }

    [Test]
    public void ParametersBuffersAndZeroGrad_BehaveAsTorchSharps()
    {
        using var scope = NewDisposeScope();
        using var decisions = new Decisions(SmallModels.DecisionSlots);
        var (theirs, ours) = SmallModels.SamePair(seed: 4, decisions: decisions);
        Assert.That(ours.named_parameters().Select(p => p.name), Is.EqualTo(theirs.named_parameters().Select(p => p.name)));
        Assert.That(ours.named_buffers().Select(b => b.name), Is.EqualTo(theirs.named_buffers().Select(b => b.name)));
        Assert.That(ours.named_buffers().Select(b => b.name), Does.Contain("bn2.num_batches_tracked"));

        // One step of each on identical inputs, TorchSharp's ReLU and max-pool choices replayed in ours: the gradients
        // then differ by rounding only, which float64 holds to the suite's tolerance.
        theirs.to(ScalarType.Float64);
        ours.to(ScalarType.Float64);
        var x = randn([6, 1, 8, 8], ScalarType.Float64);
        decisions.Recording = true;
        manual_seed(5);
        theirs.forward(x).sum().backward();
        decisions.Recording = false;
        manual_seed(5);
        ours.forward(x).sum().backward();
        var theirParameters = theirs.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in ours.named_parameters())
        {
            Tolerance.AssertClose(p.grad, theirParameters[name].grad, name + ".grad");
        }

        ours.zero_grad();
        theirs.zero_grad();
        foreach (var (name, p) in ours.named_parameters())
        {
            var t = theirParameters[name];
            Assert.That(p.grad is null, Is.EqualTo(t.grad is null), name + ": grad present after zero_grad");
            if (p.grad is not null)
            {
                Assert.That(p.grad.abs().max().item<double>(), Is.Zero, name + ".grad after zero_grad");
            }
        }
    }

    [Test]
    public void ToFloat64_OnTheParent_MovesOurParametersAndBuffers_AndMatchesTorchSharp()
    {
        using var scope = NewDisposeScope();
        var (theirs, ours) = SmallModels.SamePair(seed: 6);
        theirs.to(ScalarType.Float64);
        ours.to(ScalarType.Float64);
        foreach (var bn in ours.modules().OfType<BatchNorm2d>())
        {
            Assert.That(bn.weight!.dtype, Is.EqualTo(ScalarType.Float64));
            Assert.That(bn.running_var!.dtype, Is.EqualTo(ScalarType.Float64));
        }

        var x = randn([6, 1, 8, 8], ScalarType.Float64);
        manual_seed(8);
        var expected = theirs.forward(x);
        manual_seed(8);
        var actual = ours.forward(x);
        Tolerance.AssertClose(actual, expected, "float64 training output");
        foreach (var (name, b) in ours.named_buffers())
        {
            var e = theirs.named_buffers().Single(t => t.name == name).buffer;
            if (name.EndsWith("num_batches_tracked", StringComparison.Ordinal))
            {
                Assert.That(b.item<long>(), Is.EqualTo(e.item<long>()), name);
            }
            else
            {
                Tolerance.AssertClose(b, e, name);
            }
        }
    }

    [Test]
    public void ToAnotherDevice_IsRefused_NamingTheDevice_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var bn = layers.BatchNorm2d(3);
        using var snapshot = Snapshot.Of(bn);
        var e = Assert.Throws<NotSupportedException>(() => bn.to(new Device(DeviceType.CUDA, 0)));
        Assert.That(e!.Message, Does.Contain("cuda"));
        snapshot.AssertUnchanged();
        Assert.That(bn.weight!.device_type, Is.EqualTo(DeviceType.CPU));
    }

    [Test]
    public void MixedModel_TrainsThenInfersInNoGrad_WithoutLeakingTensors()
    {
        using var outer = NewDisposeScope();
        manual_seed(9);
        var model = nn.Sequential(
            ("conv", nn.Conv2d(1, 4, 3, padding: 1)),
            ("bn", layers.BatchNorm2d(4)),
            ("relu", nn.ReLU()),
            ("drop", layers.Dropout2d(0.25)),
            ("pool", nn.MaxPool2d(2)),
            ("bn_theirs", nn.BatchNorm2d(4)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(4 * 4 * 4, SmallModels.Classes)));
        var optimizer = optim.Adam(model.parameters(), 0.01);
        var scheduler = optim.lr_scheduler.StepLR(optimizer, 10, 0.5);
        var lossFunction = nn.CrossEntropyLoss();
        var x = randn(16, 1, 8, 8);
        var y = randint(SmallModels.Classes, [16]);

        var live = new List<long>();
        double first = 0, last = 0;
        for (int step = 0; step < 60; step++)
        {
            using (var scope = NewDisposeScope())
            {
                optimizer.zero_grad();
                var loss = lossFunction.forward(model.forward(x), y);
                loss.backward();
                optimizer.step();
                scheduler.step();
                last = loss.item<float>();
                first = step == 0 ? last : first;
            }

            live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }

        Assert.That(last, Is.LessThan(0.5 * first), "the mixed model learns");

        // The optimiser creates its state in the first steps; from then on every step frees what it made.
        Assert.That(live.Skip(5).Distinct(), Has.Exactly(1).Items, "live tensors after each step: " + string.Join(", ", live));

        model.eval();
        for (int step = 0; step < 20; step++)
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var output = model.forward(x);
            Assert.That(output.requires_grad, Is.False);
        }

        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(live[^1]), "live tensors after inference");
    }

    private static (optim.Optimizer Optimizer, optim.lr_scheduler.LRScheduler Schedule) Optimizer(nn.Module<Tensor, Tensor> model, string name)
    {
        optim.Optimizer optimizer = name == "sgd"
            ? optim.SGD(model.parameters(), 0.05, momentum: 0.9)
            : optim.Adam(model.parameters(), 0.03);
        optim.lr_scheduler.LRScheduler schedule = name == "sgd"
            ? optim.lr_scheduler.StepLR(optimizer, 10, 0.5)
            : optim.lr_scheduler.ExponentialLR(optimizer, 0.95);
        return (optimizer, schedule);
    }

    private static List<double> Train(nn.Module<Tensor, Tensor> model, Tensor x, Tensor y, string optimizerName)
    {
        using var scope = NewDisposeScope();
        var (optimizer, scheduler) = Optimizer(model, optimizerName);
        var lossFunction = nn.CrossEntropyLoss();
        manual_seed(100);
        model.train();
        var losses = new List<double>();
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = NewDisposeScope();
            optimizer.zero_grad();
            var loss = lossFunction.forward(model.forward(x), y);
            loss.backward();
            optimizer.step();
            scheduler.step();
            losses.Add(loss.to(ScalarType.Float64).item<double>());
        }

        return losses;
    }
}
