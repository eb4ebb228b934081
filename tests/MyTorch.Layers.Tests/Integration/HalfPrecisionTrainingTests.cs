using System;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Examples;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// The examples app's model trained in bfloat16, as TorchSharp allows it on the CPU: convolutions, linear layers, ReLUs,
/// pooling, loss and Dropout2d in bfloat16, the BatchNorm2d layers kept in float32 (mixed precision: bfloat16 input,
/// float32 parameters and statistics). TorchSharp's model trains; before each of its steps ours takes its parameters and
/// buffers, the same batch, the same generator state and its ReLU and max-pool choices (as the examples app's step check
/// does), and the step's loss, gradients, running statistics and generator are compared.
/// </summary>
/// <remarks>
/// The two steps differ only where the BatchNorm layers round: each of ours and TorchSharp's is within an ulp of the
/// exact result, so their outputs and input gradients differ by at most one bfloat16 ulp, 2^-8 relative, and every later
/// bfloat16 operation rounds its own slightly different inputs. About eight such roundings lie between a BatchNorm layer
/// and the first convolution's weight gradient, so whole tensors are compared by their relative L2 distance with a bound
/// of 8 · 2^-8 = 2^-5. A wrong term in a gradient, or statistics of the wrong batch, differ by order one.
/// </remarks>
[TestFixture]
public class HalfPrecisionTrainingTests
{
    private const int Steps = 8;
    private static readonly double Bound = Math.ScaleB(1, -5);

    [Test]
    public void BFloat16Model_WithFloat32BatchNorm_EveryStepMatchesTorchSharp_OnIdenticalInputs()
    {
        using var scope = NewDisposeScope();
        using var decisions = new Decisions(SmallCnn.DecisionSlots);
        manual_seed(21);
        var theirs = InBFloat16(SmallCnn.Create(LayerSet.TorchSharp, classes: 4, decisions));
        var ours = InBFloat16(SmallCnn.Create(LayerSet.MyTorchLayers, classes: 4, decisions));
        manual_seed(22);
        var images = randn([16, 1, 28, 28]).to(ScalarType.BFloat16);
        var labels = randint(4, [16]);
        var lossFunction = nn.CrossEntropyLoss();
        var optimizer = optim.SGD(theirs.parameters(), 0.05, momentum: 0.9);
        manual_seed(100);
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = NewDisposeScope();
            var (expected, actual, sameGenerator) = Lockstep.Step(theirs, ours, decisions, model => TrainingRun.Gradients(model, lossFunction, images, labels).Loss);
            Assert.That(sameGenerator, Is.True, $"the generator after step {step}");
            Assert.That(actual.dtype, Is.EqualTo(ScalarType.BFloat16), "the loss is bfloat16");
            AssertClose(actual, expected, $"loss, step {step}");

            var theirParameters = theirs.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in ours.named_parameters())
            {
                Assert.That(p.grad!.dtype, Is.EqualTo(theirParameters[name].grad!.dtype), $"{name}.grad dtype");
                AssertClose(p.grad, theirParameters[name].grad!, $"{name}.grad, step {step}");
            }

            var theirBuffers = theirs.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            foreach (var (name, b) in ours.named_buffers())
            {
                if (name.EndsWith("num_batches_tracked", StringComparison.Ordinal))
                {
                    Assert.That(b.item<long>(), Is.EqualTo(theirBuffers[name].to(ScalarType.Int64).item<long>()), $"{name}, step {step}");
                }
                else
                {
                    Assert.That(b.dtype, Is.EqualTo(ScalarType.Float32), $"{name} stays float32");
                    AssertClose(b, theirBuffers[name], $"{name}, step {step}");
                }
            }

            optimizer.step();
        }
    }

    /// <summary>The model in bfloat16, its BatchNorm layers back in float32.</summary>
    private static nn.Module<Tensor, Tensor> InBFloat16(nn.Module<Tensor, Tensor> model)
    {
        model.to(ScalarType.BFloat16);
        foreach (var norm in model.modules().OfType<TorchSharp.Modules.BatchNorm>())
        {
            norm.to(ScalarType.Float32);
        }

        return model;
    }

    /// <summary>‖actual − expected‖ ≤ 2^-5 · ‖expected‖, over the whole tensor, in float64.</summary>
    private static void AssertClose(Tensor? actual, Tensor expected, string what)
    {
        Assert.That(actual, Is.Not.Null, $"{what}: ours is missing");
        Assert.That(actual!.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        using var scope = NewDisposeScope();
        var a = actual.detach().to(ScalarType.Float64);
        var e = expected.detach().to(ScalarType.Float64);
        double distance = (a - e).norm().item<double>();
        double size = e.norm().item<double>();
        Assert.That(distance, Is.LessThanOrEqualTo(Bound * size), string.Create(CultureInfo.InvariantCulture, $"{what}: relative L2 distance {distance / size:G3}"));
    }
}
