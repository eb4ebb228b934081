using System;
using System.Collections.Generic;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Kernels;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// The modules follow <c>torch.set_num_threads</c>, and their results are the same bits for any thread count:
/// the work is split by shape and partial sums are combined in a fixed order.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ThreadCountTests
{
    // 24×24 planes take the plane-wise kernels; 32×32 planes (4 KB of float32) the channel-at-a-time ones in NCHW.
    [TestCase(false, ScalarType.Float32, 24)]
    [TestCase(true, ScalarType.Float32, 24)]
    [TestCase(false, ScalarType.Float64, 24)]
    [TestCase(true, ScalarType.Float64, 24)]
    [TestCase(false, ScalarType.Float32, 32)]
    [TestCase(false, ScalarType.Float64, 32)]
    public void BatchNorm2dTrainingStep_IsBitIdentical_OnOneTwoAndThreeThreads(bool channelsLast, ScalarType dtype, int side)
    {
        int original = torch.get_num_threads();
        try
        {
            var one = Step(1, channelsLast, dtype, side);
            foreach (int threads in new[] { 2, 3 })
            {
                var many = Step(threads, channelsLast, dtype, side);
                for (int i = 0; i < one.Count; i++)
                {
                    Assert.That(many[i].eq(one[i]).all().item<bool>(), Is.True, $"{threads} threads, result {i} (output, x.grad, weight.grad, bias.grad, running_mean, running_var)");
                }
            }
        }
        finally
        {
            torch.set_num_threads(original);
        }
    }

    [Test]
    public unsafe void Kernels_RunOnLibTorchsOpenMpTeam_OnLinux()
    {
        // Kernels on threads of their own would share the cores with libtorch's OpenMP threads, which spin after each
        // of libtorch's parallel regions; on Linux they run on that team instead.
        using var y = new Dropout2d(0.5).forward(randn(2, 3, 4, 4));
        if (!OperatingSystem.IsLinux())
        {
            Assert.Ignore("libtorch's OpenMP runtime is looked for on Linux only.");
        }

        Assert.That((nint)KernelThreads.OpenMpParallel, Is.Not.Zero, "GOMP_parallel found through libtorch_cpu.so");
        var expected = Environment.GetEnvironmentVariable("MYTORCH_LAYERS_OPENMP") == "0" ? null : KernelThreads.OpenMpParallel;
        Assert.That((nint)ChunkScheduler.Team, Is.EqualTo((nint)expected), "the team the kernels use");
    }

    /// <summary>
    /// One training forward and backward of a fresh module on 16×32×<paramref name="side"/>×<paramref name="side"/>
    /// (above the size where the kernels start using threads), with <paramref name="threads"/> set for TorchSharp and
    /// so for the kernels.
    /// </summary>
    private static List<Tensor> Step(int threads, bool channelsLast, ScalarType dtype, int side)
    {
        torch.set_num_threads(threads);
        Assert.That(torch.get_num_threads(), Is.EqualTo(threads));
        manual_seed(5);
        var values = randn(16, 32, side, side, dtype: dtype).Times(2).Plus(3);
        var dy = randn(16, 32, side, side, dtype: dtype);
        if (channelsLast)
        {
            values = values.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
            dy = dy.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
        }

        var bn = new BatchNorm2d(32, dtype: dtype);
        using (no_grad())
        {
            bn.weight!.uniform_(0.5, 1.5);
            bn.bias!.uniform_(-1, 1);
        }

        var x = values.detach().requires_grad_(true);
        var y = bn.forward(x);
        y.backward([dy]);
        return [y.detach(), x.grad!, bn.weight!.grad!, bn.bias!.grad!, bn.running_mean!, bn.running_var!];
    }
}
