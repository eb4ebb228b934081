using System;
using System.Linq;
using System.Threading.Tasks;
using MyTorch.Layers.Functional;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// Outputs of 1 MiB and more live in memory that <see cref="OutputMemory"/> keeps and hands out again: a freed output's
/// memory goes to the next output of its size, never to two live tensors, and the outputs behave as TorchSharp's do
/// (values, layout, in-place changes, autograd). Outside no_grad, an output has a second handle in TorchSharp's
/// autograd machinery until the dispose scope around the call ends, so the tests that follow memory run under no_grad.
/// </summary>
[TestFixture]
[NonParallelizable]
public class OutputMemoryTests
{
    /// <summary>4×16×64×64 float32: exactly 1 MiB, the smallest output that uses kept memory.</summary>
    private static readonly long[] Shape = [4, 16, 64, 64];

    private long _capacity;

    [SetUp]
    public void KeepCapacity() => _capacity = OutputMemory.Capacity;

    [TearDown]
    public void RestoreCapacity() => OutputMemory.Capacity = _capacity;

    [Test]
    public void IsSupported_WithThisTorchSharp()
    {
        Assert.That(OutputMemory.IsSupported, Is.True, "TorchSharp 0.107's THSTensor_new failed the self-check");
    }

    [Test]
    public void FreedOutput_MemoryGoesToTheNextOutputOfItsSize_AndValuesMatchTorchSharp()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (theirs, ours) = EvalPair();
        var x1 = randn(Shape);
        var x2 = randn(Shape);
        OutputMemory.Trim();

        var y1 = ours.call(x1);
        nint first = Address(y1);
        y1.Dispose();
        Assert.That(OutputMemory.KeptBytes, Is.EqualTo(Bytes(Shape)), "the freed output's memory is kept");

        var y2 = ours.call(x2);
        Assert.That(Address(y2), Is.EqualTo(first), "the next output of the same size reuses it");
        Assert.That(OutputMemory.KeptBytes, Is.Zero);
        Tolerance.AssertClose(y2, theirs.call(x2), "output in reused memory");
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void HalfPrecisionOutput_ReusesKeptMemory_WithItsDtypeAndValues(ScalarType dtype)
    {
        // 4×16×128×64 16-bit values: 1 MiB.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long[] shape = [4, 16, 128, 64];
        var ours = layers.BatchNorm2d(shape[1]);
        var theirs = nn.BatchNorm2d(shape[1], dtype: ScalarType.Float64);
        var x1 = randn(shape).to(dtype);
        var x2 = randn(shape).to(dtype);
        OutputMemory.Trim();

        var y1 = ours.call(x1);
        nint first = Address(y1);
        y1.Dispose();
        Assert.That(OutputMemory.KeptBytes, Is.EqualTo(Bytes(shape) / 2), "the freed 16-bit output's memory is kept");

        var y2 = ours.call(x2);
        Assert.That(Address(y2), Is.EqualTo(first), "the next output of the same size reuses it");
        Assert.That(y2.dtype, Is.EqualTo(dtype));
        HalfPrecision.AssertWithinUlp(y2, theirs.call(x2.to(ScalarType.Float64)), "output in reused memory");
    }

    [Test]
    public void LiveOutputs_NeverShareMemory_AndKeepTheirValues()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (theirs, ours) = EvalPair();
        var inputs = Enumerable.Range(0, 4).Select(_ => randn(Shape)).ToArray();

        // A freed output first, so that there is kept memory to hand out.
        ours.call(inputs[0]).Dispose();
        var outputs = inputs.Select(x => ours.call(x)).ToArray();
        Assert.That(outputs.Select(Address).Distinct().Count(), Is.EqualTo(outputs.Length), "live outputs at distinct addresses");
        for (int i = 0; i < outputs.Length; i++)
        {
            Tolerance.AssertClose(outputs[i], theirs.call(inputs[i]), $"output {i}, after all of them were made");
        }
    }

    [Test]
    public void TrainingStep_ChannelsLast_OutputIsNotAView_TakesInPlaceChanges_AndGradientsMatchTorchSharp()
    {
        // The oracle runs in float64, as the oracle suite's does: its float32 sums over 16,384 values per channel
        // are further from the truth than ours, which accumulate in double.
        using var scope = NewDisposeScope();
        var theirs = nn.BatchNorm2d(Shape[1], dtype: ScalarType.Float64);
        var ours = new BatchNorm2d(Shape[1]);
        var x = randn(Shape).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
        var dy = randn(Shape);

        // The layers' outputs are in reused memory from the second step on; each step is checked.
        for (int step = 0; step < 3; step++)
        {
            var xt = x.to(ScalarType.Float64).detach().requires_grad_(true);
            var xo = x.detach().requires_grad_(true);
            var yt = nn.functional.relu(theirs.call(xt), inplace: true);
            var yo = ours.call(xo);
            nn.functional.relu(yo, inplace: true);
            Assert.That(yo.stride(), Is.EqualTo(x.stride()), $"step {step}: output strides (channels-last)");
            Tolerance.AssertClose(yo, yt.to(ScalarType.Float32), $"step {step}: output after an in-place ReLU");

            var gt = autograd.grad([yt], [xt, theirs.weight!, theirs.bias!], [dy.to(ScalarType.Float64)]);
            var go = autograd.grad([yo], [xo, ours.weight!, ours.bias!], [dy]);
            Tolerance.AssertClose(go[0], gt[0].to(ScalarType.Float32), $"step {step}: input gradient");
            Tolerance.AssertClose(go[1], gt[1].to(ScalarType.Float32), $"step {step}: weight gradient");
            Tolerance.AssertClose(go[2], gt[2].to(ScalarType.Float32), $"step {step}: bias gradient");
        }
    }

    [Test]
    public void CapacityZero_KeepsNothing_AndTrim_FreesWhatWasKept()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (_, ours) = EvalPair();
        var x = randn(Shape);

        ours.call(x).Dispose();
        Assert.That(OutputMemory.KeptBytes, Is.GreaterThanOrEqualTo(Bytes(Shape)));
        OutputMemory.Trim();
        Assert.That(OutputMemory.KeptBytes, Is.Zero, "after Trim()");

        OutputMemory.Capacity = 0;
        ours.call(x).Dispose();
        Assert.That(OutputMemory.KeptBytes, Is.Zero, "with a capacity of 0");
        Assert.Throws<ArgumentOutOfRangeException>(() => OutputMemory.Capacity = -1);
        Assert.Throws<ArgumentOutOfRangeException>(() => OutputMemory.Trim(-1));
    }

    [Test]
    public void Output_OutlivesTrimAndItsModule()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (theirs, ours) = EvalPair();
        var x = randn(Shape);
        ours.call(x).Dispose(); // kept memory for the next output
        var y = ours.call(x);
        ours.Dispose();
        OutputMemory.Trim();
        OutputMemory.Capacity = 0;
        using Scalar seven = 7;
        randn(Shape).mul_(seven); // would land on freed memory, were y's freed

        Tolerance.AssertClose(y, theirs.call(x), "output after Trim and the module's disposal");
    }

    [Test]
    public void ManyThreads_MakingAndFreeingOutputs_EachGetsItsOwnValues()
    {
        using var scope = NewDisposeScope();
        var (theirs, _) = EvalPair();
        var inputs = Enumerable.Range(0, 4).Select(_ => randn(Shape).DetachFromDisposeScope()).ToArray();
        var expected = inputs.Select(x => theirs.call(x).DetachFromDisposeScope()).ToArray();
        var failures = new string?[inputs.Length];
        try
        {
            Parallel.For(0, inputs.Length, new ParallelOptions { MaxDegreeOfParallelism = inputs.Length }, i =>
            {
                using var module = new BatchNorm2d(Shape[1]);
                CopyParameters(theirs, module);
                module.eval();
                using var noGrad = no_grad();
                for (int step = 0; step < 25 && failures[i] is null; step++)
                {
                    using var y = module.call(inputs[i]);
                    double difference = (y - expected[i]).abs().max().item<float>();
                    if (difference > 1e-5)
                    {
                        failures[i] = $"thread {i}, step {step}: off by {difference}";
                    }
                }
            });
        }
        finally
        {
            foreach (var t in inputs.Concat(expected))
            {
                t.Dispose();
            }
        }

        Assert.That(failures.Where(f => f is not null), Is.Empty);
    }

    [Test]
    public void OutputLeftToTheGarbageCollector_GivesItsMemoryBack_FromTheFinalizerThread()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (_, ours) = EvalPair();
        var x = randn(Shape);
        OutputMemory.Trim();
        MakeAndDrop(ours, x);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.That(OutputMemory.KeptBytes, Is.EqualTo(Bytes(Shape)), "the finalised output's memory is kept");
    }

    [Test]
    public void SmallOutputs_ComeFromLibTorch()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (_, ours) = EvalPair();
        OutputMemory.Trim();
        ours.call(randn(4, 16, 64, 63)).Dispose(); // just under 1 MiB
        Assert.That(OutputMemory.KeptBytes, Is.Zero);
    }

    /// <summary>An output outside any dispose scope, referenced by nothing once this returns.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void MakeAndDrop(BatchNorm2d module, Tensor x)
    {
        using (NewDisposeScope())
        {
            module.call(x).DetachFromDisposeScope();
        }
    }

    /// <summary>TorchSharp's BatchNorm2d and ours in evaluation, with equal non-trivial parameters and statistics.</summary>
    private static (TorchSharp.Modules.BatchNorm2d Theirs, BatchNorm2d Ours) EvalPair()
    {
        manual_seed(11);
        var theirs = nn.BatchNorm2d(Shape[1]);
        using (no_grad())
        {
            theirs.weight!.uniform_(0.5, 1.5);
            theirs.bias!.normal_();
            theirs.running_mean!.normal_();
            theirs.running_var!.uniform_(0.5, 2);
        }

        var ours = new BatchNorm2d(Shape[1]);
        CopyParameters(theirs, ours);
        theirs.eval();
        ours.eval();
        return (theirs, ours);
    }

    private static void CopyParameters(TorchSharp.Modules.BatchNorm2d from, BatchNorm2d to)
    {
        using var noGrad = no_grad();
        to.weight!.copy_(from.weight!);
        to.bias!.copy_(from.bias!);
        to.running_mean!.copy_(from.running_mean!);
        to.running_var!.copy_(from.running_var!);
    }

    private static long Bytes(long[] shape) => shape.Aggregate(4L, (a, b) => a * b);

    private static unsafe nint Address(Tensor t) =>
        (nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref TensorMemory.Span<float>(t, 1)[0]);
}
