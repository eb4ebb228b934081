using System.Globalization;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// The whole-model tests train TorchSharp's Conv2d around our layers, so they mean something only where TorchSharp's
/// float32 convolution is right. libtorch 2.10's oneDNN gets the input gradient wrong with its AVX-512 and AVX2 kernels
/// on AMD Zen 5 processors; this project's run settings keep oneDNN to AVX (<c>DNNL_MAX_CPU_ISA</c>), and this test says
/// so by name when a run does not have them, instead of leaving a mismatch in a model test to be blamed on our layers.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ConvolutionOracleTests
{
    private const int Repeats = 20;

    // The two convolutions of SmallModels.Cnn, on its input sizes.
    [TestCase(6, 1, 4, 8, 1)]
    [TestCase(6, 4, 8, 4, 1)]
    [TestCase(6, 1, 4, 8, 2)]
    [TestCase(6, 4, 8, 4, 2)]
    public void TorchSharpsFloat32Conv2d_InputAndWeightGradients_AreWithinRoundingOfFloat64(int batch, int inChannels, int outChannels, int side, int threads)
    {
        int original = get_num_threads();
        try
        {
            set_num_threads(threads);
            for (int repeat = 0; repeat < Repeats; repeat++)
            {
                using var scope = NewDisposeScope();
                manual_seed(repeat);
                var x = randn(batch, inChannels, side, side);
                var w = randn(outChannels, inChannels, 3, 3);
                var dy = randn(batch, outChannels, side, side);
                var (dx, dw) = Gradients(x, w, dy);
                var (dx64, dw64) = Gradients(x.to(ScalarType.Float64), w.to(ScalarType.Float64), dy.to(ScalarType.Float64));

                // Each float32 gradient element is a sum of at most n products, in any order; its rounding error is at
                // most γₙ · Σ|product|, γₙ = n·u / (1 − n·u) with u = 2⁻²⁴ (Higham), and Σ|product| is the same
                // convolution on |x|, |w|, |dy|. (A Winograd convolution would not keep this bound; oneDNN's AVX
                // kernels, which the run settings keep to, compute products and sums directly.)
                var (dxMagnitude, dwMagnitude) = Gradients(x.abs().to(ScalarType.Float64), w.abs().to(ScalarType.Float64), dy.abs().to(ScalarType.Float64));
                AssertWithinRounding(dx, dx64, dxMagnitude, outChannels * 9, $"input gradient, repeat {repeat}");
                AssertWithinRounding(dw, dw64, dwMagnitude, batch * side * side, $"weight gradient, repeat {repeat}");
            }
        }
        finally
        {
            set_num_threads(original);
        }
    }

    private static (Tensor Input, Tensor Weight) Gradients(Tensor x, Tensor w, Tensor dy)
    {
        var xi = x.detach().clone().requires_grad_();
        var wi = w.detach().clone().requires_grad_();
        nn.functional.conv2d(xi, wi, padding: [1, 1]).backward([dy]);
        return (xi.grad!, wi.grad!);
    }

    private static void AssertWithinRounding(Tensor actual, Tensor truth, Tensor magnitude, int terms, string what)
    {
        double nu = terms * System.Math.Pow(2, -24);
        var excess = (actual.to(ScalarType.Float64) - truth).abs() - magnitude.Times(nu / (1 - nu));
        double worst = excess.max().item<double>();
        Assert.That(
            worst,
            Is.LessThanOrEqualTo(0),
            string.Create(
                CultureInfo.InvariantCulture,
                $"TorchSharp's float32 Conv2d {what}, {get_num_threads()} thread(s): off by {worst:G3} beyond the rounding bound. ") +
            "The model tests' oracle is broken on this processor: run them with DNNL_MAX_CPU_ISA=AVX (dotnet test applies the project's run settings, which set it).");
    }
}
