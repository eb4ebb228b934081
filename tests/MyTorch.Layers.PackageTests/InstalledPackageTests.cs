using System;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using MyTorch.Layers.Functional;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.PackageTests;

/// <summary>
/// The installed package, used as an application uses it: both layers' forward and backward against TorchSharp's,
/// in float64 so that one absolute tolerance covers every value. Passing at all also proves the package's
/// buildTransitive step made TorchSharp's native library loadable on this distribution.
/// </summary>
[TestFixture]
public class InstalledPackageTests
{
    private const double Tolerance = 1e-10;

    [Test]
    public void Assembly_IsThePackedVersion_ResolvedAsAPackage()
    {
        string expected = typeof(InstalledPackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "MyTorchLayersPackageVersion").Value!;
        Assembly library = typeof(BatchNorm2d).Assembly;
        string informational = library.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;
        Assert.That(informational.Split('+')[0], Is.EqualTo(expected));

        // The dependency manifest records how each library was resolved: "package", not "project".
        string depsFile = Path.Combine(AppContext.BaseDirectory, typeof(InstalledPackageTests).Assembly.GetName().Name + ".deps.json");
        using var deps = JsonDocument.Parse(File.ReadAllText(depsFile));
        JsonElement entry = deps.RootElement.GetProperty("libraries").GetProperty($"MyTorch.Layers/{expected}");
        Assert.That(entry.GetProperty("type").GetString(), Is.EqualTo("package"));
    }

    [Test]
    public void PackagedReadme_HasNoRelativeLinks_SoItWorksOnAPackagePage()
    {
        string folder = typeof(InstalledPackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "MyTorchLayersPackageFolder").Value!;
        string readme = File.ReadAllText(Path.Combine(folder, "README.md"));

        Assert.That(readme, Does.StartWith("# MyTorch.Layers"));
        Assert.That(readme, Does.Contain("## Install"));
        // Every link or image target is absolute or an anchor: nothing points into a repository that is not there.
        var relative = Regex.Matches(readme, @"!?\[[^\]]*\]\(([^)\s]+)\)")
            .Select(m => m.Groups[1].Value)
            .Where(target => !target.StartsWith('#') && !Regex.IsMatch(target, "^[a-zA-Z][a-zA-Z0-9+.-]*:"))
            .ToList();
        Assert.That(relative, Is.Empty, "relative link targets in the packaged README");
    }

    [TestCase(false, TestName = "BatchNorm2d_TrainingThenEval_MatchesTorchSharp_Contiguous")]
    [TestCase(true, TestName = "BatchNorm2d_TrainingThenEval_MatchesTorchSharp_ChannelsLast")]
    public void BatchNorm2d_TrainingThenEval_MatchesTorchSharp(bool channelsLast)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var ours = new BatchNorm2d(3, momentum: 0.3, dtype: ScalarType.Float64);
        var theirs = nn.BatchNorm2d(3, momentum: 0.3, dtype: ScalarType.Float64);
        var weight = tensor(new[] { 0.5, -1.5, 2.0 });
        var bias = tensor(new[] { 0.25, 0.0, -3.0 });
        using (no_grad())
        {
            ours.weight!.copy_(weight);
            ours.bias!.copy_(bias);
            theirs.weight!.copy_(weight);
            theirs.bias!.copy_(bias);
        }

        // Scalars held in locals: a temporary one (a bare number, add's default alpha) may be finalized mid-call.
        using Scalar three = 3, two = 2, one = 1;
        for (int step = 0; step < 3; step++)
        {
            bool training = step < 2;
            ours.train(training);
            theirs.train(training);
            var values = randn(4, 3, 5, 6, dtype: ScalarType.Float64).mul(three).add(two, one);
            if (channelsLast)
            {
                values = values.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
            }

            var gradOutput = randn(4, 3, 5, 6, dtype: ScalarType.Float64);
            var x1 = values.detach().clone().requires_grad_(true);
            var x2 = values.detach().clone().requires_grad_(true);
            ours.zero_grad();
            theirs.zero_grad();

            var y1 = ours.forward(x1);
            var y2 = theirs.forward(x2);
            y1.backward([gradOutput]);
            y2.backward([gradOutput]);

            AssertClose(y1, y2, $"step {step}: output");
            AssertClose(x1.grad!, x2.grad!, $"step {step}: input gradient");
            AssertClose(ours.weight!.grad!, theirs.weight!.grad!, $"step {step}: weight gradient");
            AssertClose(ours.bias!.grad!, theirs.bias!.grad!, $"step {step}: bias gradient");
            AssertClose(ours.running_mean!, theirs.running_mean!, $"step {step}: running_mean");
            AssertClose(ours.running_var!, theirs.running_var!, $"step {step}: running_var");
            Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo((long)theirs.num_batches_tracked!.item<double>()));
            Assert.That(y1.stride(1) == 1, Is.EqualTo(channelsLast), "output keeps the input's layout");
        }
    }

    [Test]
    public void BatchNorm2dFunctional_ForwardBackward_MatchesTorchSharp()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        using Scalar one = 1, half = 0.5;
        var x = randn(2, 4, 3, 3, dtype: ScalarType.Float64).sub(one);
        var weight = rand(4, dtype: ScalarType.Float64).add(half, one);
        var bias = randn(4, dtype: ScalarType.Float64);
        var gradOutput = randn(2, 4, 3, 3, dtype: ScalarType.Float64);

        var (output, saveMean, saveInvstd) = BatchNorm2dFunctional.Forward(
            x, weight, bias, runningMean: null, runningVar: null, training: true, momentum: 0.1, eps: 1e-5);
        var (gradInput, gradWeight, gradBias) = BatchNorm2dFunctional.Backward(
            gradOutput, x, weight, saveMean, saveInvstd, training: true);

        var xr = x.detach().clone().requires_grad_(true);
        var wr = weight.detach().clone().requires_grad_(true);
        var br = bias.detach().clone().requires_grad_(true);
        var expected = nn.functional.batch_norm(xr, null, null, wr, br, training: true, momentum: 0.1, eps: 1e-5);
        expected.backward([gradOutput]);

        AssertClose(output, expected, "output");
        AssertClose(gradInput, xr.grad!, "input gradient");
        AssertClose(gradWeight, wr.grad!, "weight gradient");
        AssertClose(gradBias, br.grad!, "bias gradient");
    }

    [Test]
    public void Dropout2d_ForwardBackward_BitForBitTorchSharp_UnderTheSameSeed()
    {
        using var scope = NewDisposeScope();
        manual_seed(13);
        var values = randn(8, 16, 4, 4, dtype: ScalarType.Float64);
        var gradOutput = randn(8, 16, 4, 4, dtype: ScalarType.Float64);
        var ours = new Dropout2d(0.3);
        var theirs = nn.Dropout2d(0.3);
        var x1 = values.detach().clone().requires_grad_(true);
        var x2 = values.detach().clone().requires_grad_(true);

        manual_seed(99);
        var y1 = ours.forward(x1);
        manual_seed(99);
        var y2 = theirs.forward(x2);
        y1.backward([gradOutput]);
        y2.backward([gradOutput]);

        Assert.That(y1.eq(y2).all().item<bool>(), Is.True, "outputs");
        Assert.That(x1.grad!.eq(x2.grad!).all().item<bool>(), Is.True, "input gradients");
        using Scalar zero = 0;
        long zeroed = y1.abs().sum([2, 3]).eq(zero).sum().item<long>();
        Assert.That(zeroed, Is.InRange(1, 8 * 16 - 1), "some channels dropped, some kept");
    }

    [Test]
    public void FusedBlock_InAModel_MatchesTorchSharpsThreeLayers_UnderTheSameSeed()
    {
        using var scope = NewDisposeScope();
        manual_seed(17);
        TorchSharp.Modules.Sequential Build() =>
            nn.Sequential(("bn", nn.BatchNorm2d(6, dtype: ScalarType.Float64)), ("relu", nn.ReLU()), ("drop", nn.Dropout2d(0.4)));
        var theirs = Build();
        var model = layers.fuse_modules(Build(), [["bn", "relu", "drop"]]);
        Assert.That(model.named_children().First().module, Is.InstanceOf<BatchNormReLUDropout2d>());
        var values = randn(5, 6, 7, 7, dtype: ScalarType.Float64);
        var gradOutput = randn(5, 6, 7, 7, dtype: ScalarType.Float64);
        var x1 = values.detach().clone().requires_grad_(true);
        var x2 = values.detach().clone().requires_grad_(true);

        manual_seed(5);
        var y1 = model.forward(x1);
        manual_seed(5);
        var y2 = theirs.forward(x2);
        y1.backward([gradOutput]);
        y2.backward([gradOutput]);

        Assert.That((y1 - y2).abs().max().item<double>(), Is.LessThan(Tolerance), "outputs");
        Assert.That((x1.grad! - x2.grad!).abs().max().item<double>(), Is.LessThan(Tolerance), "input gradients");
        using Scalar zero = 0;
        Assert.That(y1.eq(zero).all().item<bool>(), Is.False, "something kept");
    }

    [Test]
    public void LargeOutputs_ReuseKeptMemory_AndMatchTorchSharp()
    {
        // 4×16×64×64 float64: 2 MiB, above the 1 MiB from which outputs live in kept memory.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        manual_seed(14);
        var ours = new BatchNorm2d(16, dtype: ScalarType.Float64);
        var theirs = nn.BatchNorm2d(16, dtype: ScalarType.Float64);
        ours.eval();
        theirs.eval();
        Assert.That(OutputMemory.IsSupported, Is.True, "the installed package's check of TorchSharp's THSTensor_new");

        OutputMemory.Trim();
        ours.forward(randn(4, 16, 64, 64, dtype: ScalarType.Float64)).Dispose();
        Assert.That(OutputMemory.KeptBytes, Is.EqualTo(4L * 16 * 64 * 64 * 8), "the freed output's memory is kept");
        using Scalar two = 2, one = 1;
        var x = randn(4, 16, 64, 64, dtype: ScalarType.Float64).mul(two).sub(one);
        var y = ours.forward(x);
        Assert.That(OutputMemory.KeptBytes, Is.Zero, "and handed to the next output");
        AssertClose(y, theirs.forward(x), "output in kept memory");
    }

    private static void AssertClose(Tensor actual, Tensor expected, string what)
    {
        Assert.That(actual.shape, Is.EqualTo(expected.shape), what);
        double[] a = actual.detach().contiguous().data<double>().ToArray();
        double[] e = expected.detach().contiguous().data<double>().ToArray();
        Assert.That(a, Is.EqualTo(e).Within(Tolerance), what);
    }
}
