using System;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Examples;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// A critic with BatchNorm2d and Dropout2d trained with a gradient penalty (WGAN-GP): its loss holds the norm of the
/// critic's gradient with respect to its input, so every parameter update goes through the layers' second order.
/// </summary>
[TestFixture]
public class GradientPenaltyTests
{
    private const int Steps = 30;
    private const double PenaltyWeight = 10;

    /// <summary>The largest relative difference, in L2 norm, of a parameter's gradient from TorchSharp's in float64.</summary>
    private const double Relative = 1e-9;

    /// <summary>
    /// TorchSharp's critic trains; before each of its steps ours takes its parameters, buffers, batch, generator and ReLU
    /// and max-pool choices, and the step's loss, every parameter gradient and the running statistics are compared, as in
    /// the examples app's check. float64, so that the comparison is held to 1e-9.
    /// </summary>
    [Test]
    public void CriticWithGradientPenalty_EveryStepMatchesTorchSharp_OnIdenticalInputs()
    {
        using var scope = NewDisposeScope();
        using var decisions = new Decisions(SmallModels.DecisionSlots);
        var (theirs, ours) = SmallModels.SamePair(seed: 21, decisions: decisions);
        theirs.to(ScalarType.Float64);
        ours.to(ScalarType.Float64);
        var optimizer = optim.SGD(theirs.parameters(), 0.01, momentum: 0.5);
        manual_seed(22);
        var batches = Enumerable.Range(0, Steps).Select(_ => randn([16, 1, 8, 8], ScalarType.Float64)).ToArray();
        double worst = 0;
        for (int step = 0; step < Steps; step++)
        {
            using var stepScope = NewDisposeScope();
            var (expected, actual, sameGenerator) = Lockstep.Step(theirs, ours, decisions, model => Loss(model, batches[step]));
            Assert.That(sameGenerator, Is.True, $"the generator after step {step}");

            Tolerance.AssertClose(actual, expected, $"loss, step {step}");
            var theirParameters = theirs.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, p) in ours.named_parameters())
            {
                var e = theirParameters[name].grad!;
                double difference = (p.grad! - e).norm().item<double>() / e.norm().item<double>();
                worst = Math.Max(worst, difference);
                Assert.That(difference, Is.LessThanOrEqualTo(Relative), $"{name}.grad, step {step}");
            }

            var theirBuffers = theirs.named_buffers().ToDictionary(b => b.name, b => b.buffer);
            foreach (var (name, b) in ours.named_buffers())
            {
                Tolerance.AssertClose(b, theirBuffers[name], $"{name}, step {step}");
            }

            optimizer.step();
        }

        TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"largest relative difference of a parameter gradient over {Steps} steps: {worst:G3}"));
    }

    /// <summary>
    /// The critic's WGAN-GP loss on a batch, −mean(critic(x)) + λ · mean((‖∇ₓ critic(x)‖ − 1)²), and its gradients in
    /// the parameters' <c>grad</c>.
    /// </summary>
    private static Tensor Loss(nn.Module<Tensor, Tensor> critic, Tensor batch)
    {
        critic.zero_grad();
        var x = batch.detach().clone().requires_grad_();
        var score = critic.forward(x).sum(1);
        var gradient = torch.autograd.grad([score.sum()], [x], retain_graph: true, create_graph: true)[0];
        var norm = (gradient * gradient).sum([1, 2, 3]).sqrt();
        var loss = -score.mean() + (PenaltyWeight * (norm - 1).square().mean());
        loss.backward();
        return loss.detach();
    }
}
