using System;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Oracle;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Modules;

/// <summary>
/// Every input Dropout2d refuses: the exception's type and message, and that the input is left bit for bit as it was
/// (and, for the in-place refusals, that nothing was drawn from the generator).
/// </summary>
[TestFixture]
public class Dropout2dBadInputTests
{
    private const string Probability = "dropout probability has to be between 0 and 1, but got ";

    [TestCase(-0.1, "-0.1")]
    [TestCase(1.5, "1.5")]
    [TestCase(double.NaN, "nan")]
    [TestCase(double.PositiveInfinity, "inf")]
    [TestCase(1.0000001, "1.0000001")]
    [TestCase(-1e-5, "-1e-05")]
    public void ProbabilityOutsideZeroToOne_IsRefusedAtConstruction_WithPyTorchsMessage(double p, string printed)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new Dropout2d(p));
        Assert.That(ex!.Message, Does.StartWith(Probability + printed + " (Parameter 'p')"));
        Assert.That(ex.ParamName, Is.EqualTo("p"));
        Assert.DoesNotThrow(() => nn.Dropout2d(p).Dispose(), "TorchSharp's factory accepts it (and fails at the first forward)");

        using var module = new Dropout2d(0.25);
        Assert.Throws<ArgumentOutOfRangeException>(() => module.p = p);
        Assert.That(module.p, Is.EqualTo(0.25), "a refused value is not kept");

        using var x = randn(2, 3, 4, 4);
        using var before = x.clone();
        var fex = Assert.Throws<ArgumentOutOfRangeException>(() => Dropout2dFunctional.Forward(x, p, inplace: true));
        Assert.That(fex!.Message, Does.StartWith(Probability + printed));
        BitExact.AssertEqual(x, before, "input");
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    public void ProbabilityAtTheEnds_IsAccepted(double p)
    {
        using var module = new Dropout2d(p);
        Assert.That(module.p, Is.EqualTo(p));
    }

    public static readonly object[] BadRanks =
    [
        new object[] { new long[] { 4, 5 }, "2-D input of size [4, 5]" },
        new object[] { new long[] { 2, 3, 4, 5, 6 }, "5-D input of size [2, 3, 4, 5, 6]" },
        new object[] { new long[] { 6 }, "1-D input of size [6]" },
    ];

    [TestCaseSource(nameof(BadRanks))]
    public void RankOtherThanThreeOrFour_IsRefused_AndTheInputIsUnchanged(long[] shape, string described)
    {
        using var scope = NewDisposeScope();
        foreach (bool inplace in new[] { false, true })
        {
            AssertRefused<ArgumentException>(randn(shape), inplace, "Dropout2d expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got a " + described);
        }
    }

    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.Int64)]
    [TestCase(ScalarType.Int32)]
    [TestCase(ScalarType.ComplexFloat32)]
    public void NonFloatDtype_IsRefused_AndTheInputIsUnchanged(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        foreach (bool inplace in new[] { false, true })
        {
            foreach (bool training in new[] { true, false })
            {
                // TorchSharp accepts integers in evaluation and at p = 1; MyTorch.Layers never does.
                AssertRefused<ArgumentException>(randint(-5, 5, [2, 3, 4, 4]).to(dtype), inplace, $"'input' has dtype {dtype}; expected Float32, Float64, BFloat16 or Float16.", training);
            }
        }
    }

    [Test]
    public void NonCpuTensor_IsRefused()
    {
        using var x = empty([2, 3, 4, 4], device: META);
        using var module = new Dropout2d();
        var ex = Assert.Throws<NotSupportedException>(() => module.forward(x));
        Assert.That(ex!.Message, Does.Contain("MyTorch.Layers kernels run on the CPU only"));
    }

    [Test]
    public void NullInput_IsRefused()
    {
        using var module = new Dropout2d();
        var ex = Assert.Throws<ArgumentNullException>(() => module.forward(null!));
        Assert.That(ex!.ParamName, Is.EqualTo("input"));
        Assert.Throws<ArgumentNullException>(() => Dropout2dFunctional.Forward(null!));
        Assert.Throws<ArgumentNullException>(() => Dropout2dFunctional.Backward(null!, ones(2, 3, 1, 1)));
        Assert.Throws<ArgumentNullException>(() => Dropout2dFunctional.Backward(ones(2, 3, 4, 4), null!));
    }

    [Test]
    public void DisposedInput_IsRefused()
    {
        using var module = new Dropout2d();
        var x = randn(2, 3, 4, 4);
        x.Dispose();
        var ex = Assert.Throws<ObjectDisposedException>(() => module.forward(x));
        Assert.That(ex!.Message, Does.Contain("The tensor 'input' has been disposed."));
        Assert.Throws<ObjectDisposedException>(() => Dropout2dFunctional.Forward(x));
    }

    [TestCase(4)]
    [TestCase(3)]
    public void InplaceOnALeafThatRequiresGrad_IsRefusedAsLibtorchDoes_BeforeAnythingIsDrawnOrWritten(int rank)
    {
        using var x = randn(rank == 4 ? [2, 3, 4, 4] : [3, 4, 4]).requires_grad_(true);
        foreach (double p in new[] { 0.5, 1.0 })
        {
            AssertRefused<ArgumentException>(x, inplace: true, "a leaf Variable that requires grad is being used in an in-place operation.", p: p);
        }

        // Without grad mode, or in evaluation, libtorch allows it, and so do we.
        using (no_grad())
        {
            using var module = new Dropout2d(0.5, inplace: true);
            Assert.DoesNotThrow(() => module.forward(x).Dispose());
        }
    }

    [Test]
    public void InplaceOnAViewOfALeafThatRequiresGrad_IsRefusedAsLibtorchDoes()
    {
        using var leaf = randn(2, 3, 4, 8).requires_grad_(true);
        using var view = leaf.slice(3, 0, 8, 2);
        AssertRefused<ArgumentException>(
            view,
            inplace: true,
            "a view of a leaf Variable that requires grad is being used in an in-place operation.",
            functionalMessage: "'input' requires grad, and Dropout2dFunctional.Forward records no autograd history");
    }

    [Test]
    public void InplaceOnAViewMadeInNoGradMode_IsRefusedAsLibtorchDoes()
    {
        using var leaf = randn(2, 3, 4, 8).requires_grad_(true);
        using var nonLeaf = leaf.Times(2);
        Tensor view;
        using (no_grad())
        {
            view = nonLeaf.slice(3, 0, 8, 2);
        }

        // The view is a leaf to autograd (it has no history); the functional forward says so.
        AssertRefused<ArgumentException>(
            view,
            inplace: true,
            "A view was created in no_grad mode and is being modified inplace with grad mode enabled.",
            functionalMessage: "a leaf Variable that requires grad is being used in an in-place operation.");
        view.Dispose();
    }

    [Test]
    public void InplaceOnAnExpandedTensor_IsRefused()
    {
        using var small = randn(1, 3, 1, 1);
        using var expanded = small.expand(2, 3, 4, 4);
        AssertRefused<ArgumentException>(expanded, inplace: true, "unsupported operation: more than one element of the written-to tensor refers to a single memory location.");
    }

    [Test]
    public void FunctionalInplaceOnATensorThatRequiresGrad_IsRefused_BecauseItRecordsNoHistory()
    {
        using var leaf = randn(2, 3, 4, 4).requires_grad_(true);
        using var nonLeaf = leaf.Times(2);
        using var before = nonLeaf.detach().clone();
        var ex = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Forward(nonLeaf, 0.5, inplace: true));
        Assert.That(ex!.Message, Does.StartWith("'input' requires grad, and Dropout2dFunctional.Forward records no autograd history"));
        BitExact.AssertEqual(nonLeaf, before, "input");

        var leafEx = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Forward(leaf, 0.5, inplace: true));
        Assert.That(leafEx!.Message, Does.StartWith("a leaf Variable that requires grad is being used in an in-place operation."));
    }

    [Test]
    public void Backward_WithAMaskThatDoesNotFit_IsRefused()
    {
        using var scope = NewDisposeScope();
        var dy = randn(2, 3, 4, 4);
        var wrongShape = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(dy, ones(3, 2, 1, 1)));
        Assert.That(wrongShape!.Message, Does.StartWith("'mask' has shape [3, 2, 1, 1] but the mask of gradOutput has shape [2, 3, 1, 1]"));
        var wrongDtype = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(dy, ones(2, 3, 1, 1, ScalarType.Float64)));
        Assert.That(wrongDtype!.Message, Does.StartWith("'mask' has dtype Float64 but gradOutput has dtype Float32"));
        var threeD = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(randn(3, 4, 4), ones(1, 3, 1, 1)));
        Assert.That(threeD!.Message, Does.StartWith("'mask' has shape [1, 3, 1, 1] but the mask of gradOutput has shape [3, 1, 1]"));
        var badRank = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(randn(2, 3), ones(2, 3, 1, 1)));
        Assert.That(badRank!.Message, Does.StartWith("Dropout2d expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got a 2-D input"));
    }

    [Test]
    public void Backward_BadMaskOrGradient_IsRefused_AndChangesNothing()
    {
        using var scope = NewDisposeScope();
        var dy = randn(2, 3, 4, 4);
        var mask = ones(2, 3, 1, 1).Times(2);
        var wide = ones(2, 6, 1, 1);
        var strided = wide.slice(1, 0, 6, 2);
        var disposed = ones(2, 3, 1, 1);
        disposed.Dispose();
        using var snapshot = new Snapshot();
        snapshot.Add("gradOutput", dy);
        snapshot.Add("mask", mask);
        snapshot.Add("strided mask", strided);

        var notContiguous = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(dy, strided));
        Assert.That(notContiguous!.Message, Is.EqualTo("'mask' must be contiguous. (Parameter 'mask')"));
        var gone = Assert.Throws<ObjectDisposedException>(() => Dropout2dFunctional.Backward(dy, disposed));
        Assert.That(gone!.Message, Does.StartWith("The tensor 'mask' has been disposed."));
        var onMeta = Assert.Throws<NotSupportedException>(() => Dropout2dFunctional.Backward(dy, empty([2, 3, 1, 1], device: META)));
        Assert.That(onMeta!.Message, Is.EqualTo("'mask' is on device meta; MyTorch.Layers kernels run on the CPU only. Move the tensor with .cpu() first."));
        var wrongShape = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(dy, ones(3, 2, 1, 1)));
        Assert.That(wrongShape!.Message, Does.StartWith("'mask' has shape [3, 2, 1, 1] but the mask of gradOutput has shape [2, 3, 1, 1]"));
        var integer = Assert.Throws<ArgumentException>(() => Dropout2dFunctional.Backward(dy.to(ScalarType.Int32), mask));
        Assert.That(integer!.Message, Does.StartWith("'gradOutput' has dtype Int32; expected Float32, Float64, BFloat16 or Float16."));
        snapshot.AssertUnchanged();
    }

    /// <summary>
    /// Runs the module (in <paramref name="training"/> mode) and the functional forward on <paramref name="input"/>, expecting
    /// <typeparamref name="TException"/> whose message starts with <paramref name="message"/> (or, from the functional forward,
    /// <paramref name="functionalMessage"/>), an unchanged input, and an untouched default generator.
    /// </summary>
    private static void AssertRefused<TException>(
        Tensor input, bool inplace, string message, bool training = true, double p = 0.5, string? functionalMessage = null)
        where TException : Exception
    {
        using var before = input.detach().clone();
        using var module = new Dropout2d(p, inplace);
        module.train(training);
        manual_seed(31);
        double expectedDraw = rand(1, ScalarType.Float64).item<double>();
        manual_seed(31);

        var ex = Assert.Throws<TException>(() => module.forward(input));
        Assert.That(ex!.Message, Does.StartWith(message), "module");
        Assert.That(ex is ArgumentException a ? a.ParamName : "input", Is.EqualTo("input"));
        var fex = Assert.Throws<TException>(() => Dropout2dFunctional.Forward(input, p, training, inplace));
        Assert.That(fex!.Message, Does.StartWith(functionalMessage ?? message), "functional");

        Assert.That(rand(1, ScalarType.Float64).item<double>(), Is.EqualTo(expectedDraw), "nothing was drawn from the default generator");
        Assert.That(input.dtype, Is.EqualTo(before.dtype));
        Assert.That(input.shape, Is.EqualTo(before.shape));
        if (input.dtype is ScalarType.Float32 or ScalarType.Float64)
        {
            BitExact.AssertEqual(input, before, "input");
        }
        else
        {
            Assert.That(input.equal(before).all().item<bool>(), Is.True, "input");
        }
    }
}
