using System;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Modules;

/// <summary>
/// Every input BatchNorm2d refuses: the exception type, its message, and proof that nothing changed —
/// no parameter, no buffer, no input.
/// </summary>
[TestFixture]
public class BatchNorm2dBadInputTests
{
    private static BatchNorm2d TrainedModule(long channels = 3, ScalarType dtype = ScalarType.Float32)
    {
        var module = new BatchNorm2d(channels, dtype: dtype);
        using var scope = NewDisposeScope();
        manual_seed(3);

        // A couple of real steps, so that the buffers hold something other than their initial values.
        module.forward(randn(4, channels, 3, 3, dtype).Plus(2));
        module.forward(randn(4, channels, 3, 3, dtype).Times(3));
        return module;
    }

    private static void AssertRefused<TException>(BatchNorm2d module, Tensor input, string message)
        where TException : Exception
    {
        using var snapshot = Snapshot.Of(module, ("input", input));
        var thrown = Assert.Throws<TException>(() => module.forward(input));
        Assert.That(thrown!.Message, Does.Contain(message));
        snapshot.AssertUnchanged();
    }

    [TestCase(3)]
    [TestCase(2)]
    [TestCase(5)]
    public void Forward_NotFourDimensional_Throws_AndKeepsState(int rank)
    {
        using var module = TrainedModule();
        long[] shape = rank switch { 2 => [4, 3], 3 => [3, 4, 4], _ => [2, 3, 4, 4, 2] };
        using var input = randn(shape);
        AssertRefused<ArgumentException>(module, input, $"expected 4D input, but got {rank}D input.");
    }

    [Test]
    public void Forward_WrongChannelCount_Throws_WithLibTorchsWording()
    {
        using var module = TrainedModule(channels: 3);
        using var input = randn(2, 4, 3, 3);
        AssertRefused<ArgumentException>(module, input, "running_mean should contain 4 elements not 3");
    }

    [Test]
    public void Forward_WrongChannelCount_WithoutRunningStats_NamesTheWeight()
    {
        using var module = new BatchNorm2d(3, track_running_stats: false);
        using var input = randn(2, 4, 3, 3);
        AssertRefused<ArgumentException>(module, input, "weight should contain 4 elements not 3");
    }

    [Test]
    public void Forward_OneValuePerChannel_Throws_AndKeepsRunningStats()
    {
        using var module = TrainedModule();
        using var input = randn(1, 3, 1, 1);
        AssertRefused<ArgumentException>(module, input, "Expected more than 1 value per channel when training, got input size [1, 3, 1, 1]");
    }

    [Test]
    public void Forward_OneValuePerChannel_InEval_IsAccepted()
    {
        using var module = TrainedModule();
        module.eval();
        using var theirs = nn.BatchNorm2d(3);
        theirs.load_state_dict(module.state_dict());
        theirs.eval();
        using var input = randn(1, 3, 1, 1);
        Tolerance.AssertClose(module.forward(input), theirs.forward(input), "output");
    }

    [Test]
    public void Forward_OtherDtypeThanModule_Throws_AndKeepsState()
    {
        using var module = TrainedModule(dtype: ScalarType.Float32);
        using var input = randn(2, 3, 3, 3, ScalarType.Float64);
        AssertRefused<ArgumentException>(module, input, "'input' has dtype Float64 but the module has dtype Float32");
    }

    [TestCase(ScalarType.Int64)]
    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.ComplexFloat32)]
    [TestCase(ScalarType.Bool)]
    public void Forward_NonFloatingDtype_Throws_AndKeepsState(ScalarType dtype)
    {
        using var module = TrainedModule();
        using var input = ones(2, 3, 3, 3).to(dtype);
        AssertRefused<ArgumentException>(module, input, $"'input' has dtype {dtype}; expected Float32, Float64, BFloat16 or Float16");
    }

    [Test]
    public void Forward_NullInput_Throws()
    {
        using var module = TrainedModule();
        using var snapshot = Snapshot.Of(module);
        Assert.Throws<ArgumentNullException>(() => module.forward(null!));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void Forward_DisposedInput_Throws_AndKeepsState()
    {
        using var module = TrainedModule();
        using var snapshot = Snapshot.Of(module);
        var input = randn(2, 3, 3, 3);
        input.Dispose();
        var thrown = Assert.Throws<ObjectDisposedException>(() => module.forward(input));
        Assert.That(thrown!.Message, Does.Contain("has been disposed"));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void Forward_ParameterOfOtherDtype_Throws_AndKeepsState()
    {
        // A user can swap a parameter for one of another dtype; the forward must notice before changing anything.
        using var module = TrainedModule();
        module.running_var = ones(3, ScalarType.Float64);
        using var input = randn(2, 3, 3, 3);
        AssertRefused<ArgumentException>(module, input, "'running_var' has dtype Float64 but input has dtype Float32");
    }

    [Test]
    public void Constructor_NumFeaturesBelowOne_Throws()
    {
        var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BatchNorm2d(0));
        Assert.That(thrown!.ParamName, Is.EqualTo("num_features"));
    }

    [TestCase(-1e-5)]
    [TestCase(double.NaN)]
    public void Constructor_BadEps_Throws(double eps)
    {
        var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BatchNorm2d(3, eps: eps));
        Assert.That(thrown!.ParamName, Is.EqualTo("eps"));
    }

    [Test]
    public void SettingNegativeEps_Throws_AndKeepsEps()
    {
        using var module = new BatchNorm2d(3, eps: 1e-3);
        Assert.Throws<ArgumentOutOfRangeException>(() => module.eps = -1);
        Assert.That(module.eps, Is.EqualTo(1e-3));
    }

    [TestCase(ScalarType.Int64)]
    [TestCase(ScalarType.ComplexFloat32)]
    public void Constructor_UnsupportedDtype_Throws(ScalarType dtype)
    {
        var thrown = Assert.Throws<ArgumentException>(() => _ = new BatchNorm2d(3, dtype: dtype));
        Assert.That(thrown!.Message, Does.Contain($"dtype must be Float32, Float64, BFloat16 or Float16, got {dtype}"));
    }

    [Test]
    public void Constructor_NonCpuDevice_Throws_NamingTheDevice()
    {
        var thrown = Assert.Throws<NotSupportedException>(() => _ = new BatchNorm2d(3, device: new Device(DeviceType.CUDA, 0)));
        Assert.That(thrown!.Message, Does.Contain("cuda:0"));
    }

    [Test]
    public void Functional_EvalWithoutRunningStats_UsesBatchStatistics()
    {
        // native_batch_norm falls back to batch statistics when there are none; so do we.
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 2, 2);
        var (ours, _, _) = BatchNorm2dFunctional.Forward(x, null, null, null, null, training: false, momentum: 0.1, eps: 1e-5);
        var expected = nn.functional.batch_norm(x, null, null, null, null, training: true, momentum: 0.1, eps: 1e-5);
        Tolerance.AssertClose(ours, expected, "output");
    }

    [Test]
    public void Functional_OnlyOneRunningStatistic_Throws_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 2, 2);
        var runningMean = rand(3);
        using var snapshot = new Snapshot();
        snapshot.Add("x", x);
        snapshot.Add("running_mean", runningMean);
        var thrown = Assert.Throws<ArgumentException>(() => BatchNorm2dFunctional.Forward(x, null, null, runningMean, null, training: true, momentum: 0.1, eps: 1e-5));
        Assert.That(thrown!.Message, Does.Contain("running_mean and running_var must either both be null or neither be null"));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void FunctionalBackward_GradientOfWrongShape_Throws_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 2, 2);
        var (_, mean, invstd) = BatchNorm2dFunctional.Forward(x, null, null, null, null, training: true, momentum: 0.1, eps: 1e-5);
        var dy = randn(4, 3, 2, 3);
        using var snapshot = new Snapshot();
        snapshot.Add("x", x);
        snapshot.Add("dy", dy);
        snapshot.Add("mean", mean);
        snapshot.Add("invstd", invstd);
        var thrown = Assert.Throws<ArgumentException>(() => BatchNorm2dFunctional.Backward(dy, x, null, mean, invstd, training: true));
        Assert.That(thrown!.Message, Does.Contain("'gradOutput' has shape [4, 3, 2, 3] but input has shape [4, 3, 2, 2]"));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void Forward_InputNotOnTheCpu_Throws_NamingTheDevice_AndKeepsState()
    {
        using var module = TrainedModule();
        using var input = empty([2, 3, 3, 3], device: META);
        using var snapshot = Snapshot.Of(module);
        var thrown = Assert.Throws<NotSupportedException>(() => module.forward(input));
        Assert.That(thrown!.Message, Is.EqualTo("'input' is on device meta; MyTorch.Layers kernels run on the CPU only. Move the tensor with .cpu() first."));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void To_IntegerDtype_Throws_AndKeepsParametersAndBuffers()
    {
        using var module = TrainedModule();
        using var snapshot = Snapshot.Of(module);
        var thrown = Assert.Throws<ArgumentException>(() => module.to(ScalarType.Int32));
        Assert.That(thrown!.Message, Does.StartWith("dtype must be Float32, Float64, BFloat16 or Float16, got Int32."));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void To_DeviceOtherThanTheCpu_Throws_NamingTheDevice_AndKeepsParametersAndBuffers()
    {
        using var module = TrainedModule();
        using var snapshot = Snapshot.Of(module);
        var thrown = Assert.Throws<NotSupportedException>(() => module.to(DeviceType.META));
        Assert.That(thrown!.Message, Is.EqualTo("device meta is not supported; MyTorch.Layers kernels run on the CPU only."));
        snapshot.AssertUnchanged();
    }

    [Test]
    public void SecondBackwardThroughTheSameForward_RefusedByTorchSharp_RepeatedByOurs()
    {
        // libtorch frees a node's saved tensors after its backward unless retain_graph is set, so TorchSharp's module
        // refuses a second backward. A TorchSharp custom autograd function keeps what it saved, and cannot tell whether
        // retain_graph was set, so ours computes the same gradients again and accumulates them: a documented difference.
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 3, 3);
        var theirs = nn.BatchNorm2d(3);
        var theirX = x.clone().requires_grad_(true);
        var theirY = theirs.forward(theirX);
        theirY.backward([ones_like(theirY)]);
        var refused = Assert.Catch(() => theirY.backward([ones_like(theirY)]));
        Assert.That(refused!.Message, Does.StartWith("Trying to backward through the graph a second time"));

        using var module = new BatchNorm2d(3);
        var ourX = x.clone().requires_grad_(true);
        var dy = randn(4, 3, 3, 3);
        var y = module.forward(ourX);
        y.backward([dy]);
        var first = ourX.grad!.clone();
        var firstWeight = module.weight!.grad!.clone();
        y.backward([dy]);
        Tolerance.AssertClose(ourX.grad, first.Times(2), "x.grad after two backwards");
        Tolerance.AssertClose(module.weight!.grad, firstWeight.Times(2), "weight.grad after two backwards");
    }

    public static readonly object[] BadFunctionalForwards =
    [
        new object[] { "eps = -1", typeof(ArgumentOutOfRangeException), "eps must be zero or positive. (Parameter 'eps')\nActual value was -1." },
        new object[] { "weight of 2 elements", typeof(ArgumentException), "weight should contain 3 elements not 2 (Parameter 'weight')" },
        new object[] { "running_mean of shape [1, 3]", typeof(ArgumentException), "'running_mean' must be a contiguous 1-D tensor. (Parameter 'running_mean')" },
        new object[] { "running_var of dtype Float64", typeof(ArgumentException), "'running_var' has dtype Float64 but input has dtype Float32; they must match. (Parameter 'running_var')" },
        new object[] { "disposed input", typeof(ObjectDisposedException), "The tensor 'input' has been disposed.\nObject name: 'input'." },
    ];

    [TestCaseSource(nameof(BadFunctionalForwards))]
    public void FunctionalForward_BadArgument_Throws_AndChangesNothing(string what, Type exception, string message)
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 2, 2);
        var weight = rand(3);
        var bias = rand(3);
        var runningMean = rand(3);
        var runningVar = rand(3).Plus(1);
        double eps = 1e-5;
        switch (what)
        {
            case "eps = -1": eps = -1; break;
            case "weight of 2 elements": weight = rand(2); break;
            case "running_mean of shape [1, 3]": runningMean = rand(1, 3); break;
            case "running_var of dtype Float64": runningVar = rand(3, ScalarType.Float64); break;
        }

        using var snapshot = new Snapshot();
        foreach (var (name, t) in new[] { ("x", x), ("weight", weight), ("bias", bias), ("running_mean", runningMean), ("running_var", runningVar) })
        {
            snapshot.Add(name, t);
        }

        var input = x;
        if (what == "disposed input")
        {
            input = randn(4, 3, 2, 2);
            input.Dispose();
        }

        var thrown = Assert.Throws(exception, () => BatchNorm2dFunctional.Forward(input, weight, bias, runningMean, runningVar, training: true, momentum: 0.1, eps: eps));
        Assert.That(thrown!.Message, Is.EqualTo(message.ReplaceLineEndings()));
        snapshot.AssertUnchanged();
    }

    public static readonly object[] BadFunctionalBackwards =
    [
        new object[] { "gradOutput of dtype Float64", typeof(ArgumentException), "'gradOutput' has dtype Float64 but input has dtype Float32; they must match. (Parameter 'gradOutput')" },
        new object[] { "save_mean of 2 elements", typeof(ArgumentException), "save_mean should contain 3 elements not 2 (Parameter 'save_mean')" },
        new object[] { "weight of 4 elements", typeof(ArgumentException), "weight should contain 3 elements not 4 (Parameter 'weight')" },
        new object[] { "3-D input", typeof(ArgumentException), "expected 4D input, but got 3D input. (Parameter 'input')" },
        new object[] { "disposed gradOutput", typeof(ObjectDisposedException), "The tensor 'gradOutput' has been disposed.\nObject name: 'gradOutput'." },
    ];

    [TestCaseSource(nameof(BadFunctionalBackwards))]
    public void FunctionalBackward_BadArgument_Throws_AndChangesNothing(string what, Type exception, string message)
    {
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 2, 2);
        var weight = rand(3);
        var (_, mean, invstd) = BatchNorm2dFunctional.Forward(x, weight, null, null, null, training: true, momentum: 0.1, eps: 1e-5);
        var dy = randn(4, 3, 2, 2);
        switch (what)
        {
            case "gradOutput of dtype Float64": dy = dy.to(ScalarType.Float64); break;
            case "save_mean of 2 elements": mean = rand(2); break;
            case "weight of 4 elements": weight = rand(4); break;
            case "3-D input": x = randn(3, 2, 2); break;
            case "disposed gradOutput": dy.Dispose(); break;
        }

        using var snapshot = new Snapshot();
        foreach (var (name, t) in new[] { ("x", x), ("weight", weight), ("save_mean", mean), ("save_invstd", invstd) })
        {
            snapshot.Add(name, t);
        }

        if (!dy.IsInvalid)
        {
            snapshot.Add("gradOutput", dy);
        }

        var thrown = Assert.Throws(exception, () => BatchNorm2dFunctional.Backward(dy, x, weight, mean, invstd, training: true));
        Assert.That(thrown!.Message, Is.EqualTo(message.ReplaceLineEndings()));
        snapshot.AssertUnchanged();
    }
}
