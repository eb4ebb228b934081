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
        module.forward(randn(4, channels, 3, 3, dtype) + 2);
        module.forward(randn(4, channels, 3, 3, dtype) * 3);
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
        AssertRefused<ArgumentException>(module, input, $"expected 4D input (got {rank}D input)");
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
    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.Bool)]
    public void Forward_NonFloatingDtype_Throws_AndKeepsState(ScalarType dtype)
    {
        using var module = TrainedModule();
        using var input = ones(2, 3, 3, 3).to(dtype);
        AssertRefused<ArgumentException>(module, input, $"'input' has dtype {dtype}; expected Float32 or Float64");
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
    [TestCase(ScalarType.Float16)]
    public void Constructor_UnsupportedDtype_Throws(ScalarType dtype)
    {
        var thrown = Assert.Throws<ArgumentException>(() => _ = new BatchNorm2d(3, dtype: dtype));
        Assert.That(thrown!.Message, Does.Contain($"dtype must be Float32 or Float64, got {dtype}"));
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
}
