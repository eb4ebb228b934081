using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// An input above 2 GiB, which <c>Tensor.bytes</c> refuses: the kernels must reach every element through the data pointer.
/// The oracle is TorchSharp in float64, computed in row chunks so that the test itself stays within memory.
/// </summary>
[TestFixture]
[NonParallelizable]
public class BatchNorm2dLargeInputTests
{
    [Test]
    public void InputAboveTwoGiB_TrainingForwardAndBackward_MatchFloat64Oracle()
    {
        // 1 × 2 × 16384 × 16400 float32 = 2,149,580,800 bytes, just above int.MaxValue.
        const long C = 2, H = 16384, W = 16400, Chunk = 2048;
        using var scope = NewDisposeScope();
        manual_seed(2);
        var x = randn(1, C, H, W);
        var dy = randn(1, C, H, W);

        // Distinct statistics per channel and a marked last row, so that an element the kernels missed changes the result.
        using (no_grad())
        {
            using Scalar three = 3, minusTwo = -2, one = 1, forty = 40;
            x[0, 1].mul_(three).add_(minusTwo, one);
            x[0, 0, H - 1].fill_(forty);
        }

        Assert.That(x.numel() * x.element_size(), Is.GreaterThan((long)int.MaxValue));
        var weight = tensor(new float[] { 1.5f, 0.5f });
        var bias = tensor(new float[] { -1f, 2f });
        var runningMean = zeros(C);
        var runningVar = ones(C);

        var (y, saveMean, saveInvstd) = BatchNorm2dFunctional.Forward(x, weight, bias, runningMean, runningVar, training: true, momentum: 0.1, eps: 1e-5);
        var (dx, dWeight, dBias) = BatchNorm2dFunctional.Backward(dy, x, weight, saveMean, saveInvstd, training: true);

        for (long c = 0; c < C; c++)
        {
            // float64 statistics of the whole channel, from chunked sums.
            double sum = 0, count = H * W;
            for (long h = 0; h < H; h += Chunk)
            {
                sum += x[0, c].narrow(0, h, Chunk).to(ScalarType.Float64).sum().item<double>();
            }

            double mean = sum / count, squares = 0, sumDy = 0, sumDyXmu = 0;
            for (long h = 0; h < H; h += Chunk)
            {
                using var chunkScope = NewDisposeScope();
                var xmu = x[0, c].narrow(0, h, Chunk).to(ScalarType.Float64).Minus(mean);
                var dyChunk = dy[0, c].narrow(0, h, Chunk).to(ScalarType.Float64);
                using Scalar two = 2; // square() would make its exponent a temporary Scalar
                squares += xmu.pow(two).sum().item<double>();
                sumDy += dyChunk.sum().item<double>();
                sumDyXmu += (dyChunk * xmu).sum().item<double>();
            }

            double variance = squares / count;
            double invstd = 1 / System.Math.Sqrt(variance + 1e-5);
            Tolerance.AssertClose(saveMean[c], tensor((float)mean), $"save_mean[{c}]");
            Tolerance.AssertClose(saveInvstd[c], tensor((float)invstd), $"save_invstd[{c}]");
            Tolerance.AssertClose(runningMean[c], tensor((float)(0.1 * mean)), $"running_mean[{c}]");
            Tolerance.AssertClose(runningVar[c], tensor((float)(0.9 + (0.1 * variance * count / (count - 1)))), $"running_var[{c}]");

            Tolerance.AssertClose(dWeight[c], tensor((float)(sumDyXmu * invstd)), $"grad_weight[{c}]");
            Tolerance.AssertClose(dBias[c], tensor((float)sumDy), $"grad_bias[{c}]");

            // Every element entered the sums above; element-wise results are checked where the
            // buffer starts and where it ends, beyond the first 2 GiB.
            double gamma = weight[c].item<float>(), beta = bias[c].item<float>();
            foreach (long h in new[] { 0, H - Chunk })
            {
                using var chunkScope = NewDisposeScope();
                var xmu = x[0, c].narrow(0, h, Chunk).to(ScalarType.Float64).Minus(mean);
                Tolerance.AssertClose(y[0, c].narrow(0, h, Chunk), xmu.Times(invstd * gamma).Plus(beta).to(ScalarType.Float32), $"output, channel {c}, rows {h}+");
                var dyChunk = dy[0, c].narrow(0, h, Chunk).to(ScalarType.Float64);
                var expectedDx = (dyChunk.Minus(sumDy / count) - xmu.Times(invstd * invstd * sumDyXmu / count)).Times(invstd * gamma);
                Tolerance.AssertClose(dx[0, c].narrow(0, h, Chunk), expectedDx.to(ScalarType.Float32), $"grad_input, channel {c}, rows {h}+");
            }
        }
    }
}
