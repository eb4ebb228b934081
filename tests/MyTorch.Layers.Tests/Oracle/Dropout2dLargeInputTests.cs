using MyTorch.Layers.Functional;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>Dropout2d on an input above 2 GiB, which <c>Tensor.bytes</c> refuses: bit for bit TorchSharp's under the same seed.</summary>
[TestFixture]
[NonParallelizable]
public class Dropout2dLargeInputTests
{
    [Test]
    public void InputAboveTwoGiB_ForwardAndBackward_AreTorchSharpsBitForBit()
    {
        // 2 × 4 × 8192 × 8200 float32 = 2,149,580,800 bytes, just above int.MaxValue; 8 channels to drop or keep.
        using var scope = NewDisposeScope();
        manual_seed(17);
        var x = randn(2, 4, 8192, 8200);
        Assert.That(x.numel() * x.element_size(), Is.GreaterThan((long)int.MaxValue));

        // The explicit API, so that no autograd copies double the memory: the module runs the same code.
        manual_seed(99);
        var (ours, mask) = Dropout2dFunctional.Forward(x, 0.5);
        Assert.That(mask.sum().item<float>(), Is.Not.EqualTo(0f).And.Not.EqualTo(16f), "the seed should keep some channels and drop others");
        manual_seed(99);
        using (var theirs = nn.functional.dropout2d(x, 0.5, training: true))
        {
            AssertBitwiseEqual(ours, theirs, "output");
        }

        ours.Dispose();

        // libtorch's backward of input · noise is grad · noise; x stands in for the gradient.
        var gradInput = Dropout2dFunctional.Backward(x, mask);
        using var expected = x * mask;
        AssertBitwiseEqual(gradInput, expected, "grad_input");
    }

    /// <summary>For NaN-free tensors, equal values with equal signs (so −0.0 is not +0.0) is bitwise equality.</summary>
    private static void AssertBitwiseEqual(Tensor actual, Tensor expected, string what)
    {
        using var scope = NewDisposeScope();
        Assert.That(expected.isnan().any().item<bool>(), Is.False, $"{what}: the comparison assumes no NaN");
        Assert.That(actual.eq(expected).all().item<bool>(), Is.True, $"{what}: values differ");
        Assert.That(actual.signbit().eq(expected.signbit()).all().item<bool>(), Is.True, $"{what}: signs of zeros differ");
    }
}
