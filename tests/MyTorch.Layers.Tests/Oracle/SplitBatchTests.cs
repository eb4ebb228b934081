using System;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Oracle;

/// <summary>
/// The core's split batch (what SyncBatchNorm runs on) without MPI: threads stand for processes, each with its own
/// parameters and running statistics and its part of the batch, exchanging their sums in memory. Each part's output,
/// input gradient and running statistics must match our BatchNorm2d on the whole batch, and the parts' weight and bias
/// gradients must add up to the whole batch's, within the suite's tolerance.
/// </summary>
[TestFixture]
public class SplitBatchTests
{
    [TestCase(new[] { 3, 5 }, false, TestName = "SplitBatch_TwoParts_MatchesTheWholeBatch_Nchw")]
    [TestCase(new[] { 2, 0, 4, 2 }, true, TestName = "SplitBatch_FourPartsOneEmpty_MatchesTheWholeBatch_ChannelsLast")]
    public void SplitBatch_MatchesTheWholeBatch(int[] parts, bool channelsLast)
    {
        manual_seed(11);
        long[] shape = [parts.Sum(), 4, 5, 6];
        var x = (randn(shape) * 2) + 3;
        var dy = randn(shape);
        if (channelsLast)
        {
            x = LaidOutInput.Create(x, Layout.ChannelsLast).View.detach();
            dy = LaidOutInput.Create(dy, Layout.ChannelsLast).View.detach();
        }

        var whole = new BatchNorm2d(4);
        var xr = x.clone().requires_grad_();
        var yr = whole.forward(xr);
        var expected = autograd.grad([yr], [xr, whole.weight!, whole.bias!], [dy]);

        var exchange = new InMemoryExchange(parts.Length);
        var results = new (Tensor Y, Tensor Dx, Tensor Dw, Tensor Db, Tensor Mean, Tensor Var)[parts.Length];
        Parallel.For(0, parts.Length, new ParallelOptions { MaxDegreeOfParallelism = parts.Length }, p =>
        {
            long first = parts.Take(p).Sum();
            var weight = ones(4).requires_grad_();
            var bias = zeros(4).requires_grad_();
            var (mean, variance) = (zeros(4), ones(4));
            var part = x.narrow(0, first, parts[p]).requires_grad_();
            var y = BatchNormAutograd.Forward(part, part.shape, weight, bias, mean, variance, training: true, momentum: 0.1, eps: 1e-5, new SplitBatch(exchange.Part(p)));
            var grads = autograd.grad([y], [part, weight, bias], [dy.narrow(0, first, parts[p])]);
            results[p] = (y, grads[0], grads[1], grads[2], mean, variance);
        });

        Assert.Multiple(() =>
        {
            for (int p = 0; p < parts.Length; p++)
            {
                long first = parts.Take(p).Sum();
                Tolerance.AssertClose(results[p].Y, yr.narrow(0, first, parts[p]), $"part {p} output");
                Tolerance.AssertClose(results[p].Dx, expected[0].narrow(0, first, parts[p]), $"part {p} input gradient");
                Tolerance.AssertClose(results[p].Mean, whole.running_mean, $"part {p} running_mean");
                Tolerance.AssertClose(results[p].Var, whole.running_var, $"part {p} running_var");
            }

            Tolerance.AssertClose(stack(results.Select(r => r.Dw)).sum([0L]), expected[1], "weight gradients summed");
            Tolerance.AssertClose(stack(results.Select(r => r.Db)).sum([0L]), expected[2], "bias gradients summed");
        });
    }

    /// <summary>Threads exchanging records in memory, as processes do through MPI's all-gather.</summary>
    private sealed class InMemoryExchange(int parts)
    {
        private readonly Barrier _barrier = new(parts);
        private readonly double[][] _records = new double[parts][];

        public ISumExchange Part(int index) => new PartExchange(this, index);

        private sealed class PartExchange(InMemoryExchange shared, int index) : ISumExchange
        {
            public int Parts => shared._records.Length;

            public void AllGather(ReadOnlySpan<double> local, Span<double> all)
            {
                shared._records[index] = local.ToArray();
                shared._barrier.SignalAndWait();
                for (int p = 0; p < Parts; p++)
                {
                    shared._records[p].CopyTo(all.Slice(p * local.Length, local.Length));
                }

                shared._barrier.SignalAndWait();
            }
        }
    }
}
