using System;
using System.Globalization;
using System.Linq;
using CsCheck;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Generated;

/// <summary>The memory layouts of generated inputs: the oracle suite's four, and an expanded (zero-stride) view.</summary>
public enum GeneratedLayout
{
    Contiguous,
    ChannelsLast,
    StridedSlice,
    StorageOffset,

    /// <summary><c>x.expand(...)</c> of a size-1 dimension: stride 0, read through a contiguous copy.</summary>
    Expanded,
}

/// <summary>
/// Generated cases of BatchNorm2d against TorchSharp's nn.BatchNorm2d: shapes, options, dtypes, layouts and sequences of
/// training and evaluation steps drawn by CsCheck, every output, gradient and buffer compared at every step.
/// </summary>
[TestFixture]
public class BatchNorm2dGeneratedTests
{
    /// <summary>Cases per run unless <see cref="GeneratedCases.CountVariable"/> says otherwise.</summary>
    private const int CiCases = 2000;

    /// <summary>Cases above this many elements are not drawn, so that a run stays fast.</summary>
    private const long MaxElements = 200_000;

    // Not drawn: N·H·W = 2 or 3, or an expanded input with three distinct values per channel or fewer. With so few
    // values the input gradient is the near-cancellation of terms many times its size, so float32 results are rounding
    // noise against float64, ours and TorchSharp's alike, and either may be the luckier: at one element of [1, 70, 2, 1]
    // ours missed by 4.79e-6 and TorchSharp's float32 by 4.74e-6; of [3, 45, 1, 1] ours by 1.3e-5 and TorchSharp's by
    // 4.0e-5; of [1, 64, 1, 3] ours by 3.9e-6 and TorchSharp's by 1.1e-7. An expansion that makes a channel constant
    // gives ours exactly 0 for weight.grad (x − μ is exactly 0) and TorchSharp's float64 1e-12. N·H·W = 1 is drawn: it
    // must be refused in training. Numerics/ measures the two-value and constant cases against float64.

    internal static readonly Gen<long> Batch = Gen.Frequency((1, Gen.Const(0L)), (2, Gen.Const(1L)), (6, Gen.Long[0, 8]));
    internal static readonly Gen<long> Channels = Gen.Frequency((1, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 70]));
    internal static readonly Gen<long> Side = Gen.Frequency((2, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 40]));
    internal static readonly Gen<double?> Momentum = Gen.Frequency(
        (3, Gen.Const((double?)0.1)),
        (2, Gen.Const((double?)null)),
        (1, Gen.Const((double?)1.0)),
        (1, Gen.Const((double?)0.0)),
        (2, Gen.Double[0, 1].Select(m => (double?)m)));

    internal static readonly Gen<long[]> Shapes =
        from n in Batch
        from c in Channels
        from h in Side
        from w in Side
        select new[] { n, c, h, w };

    internal static readonly Gen<Case> Cases = CasesOf(Shapes);

    /// <summary>
    /// Cases of the BatchNorm layer of the rank of <paramref name="shapes"/> (see <see cref="Check"/>): every option,
    /// dtype, layout and step sequence, on shapes of at most <see cref="MaxElements"/> elements with one value per
    /// channel or more than three (see above), and an expansion only where a channel then reads more than three.
    /// </summary>
    internal static Gen<Case> CasesOf(Gen<long[]> shapes, Gen<ScalarType>? dtypes = null) =>
        from dtype in dtypes ?? Gen.OneOf(ScalarType.Float32, ScalarType.Float64)
        from shape in shapes
        where shape.Aggregate(1L, (a, b) => a * b) <= MaxElements && DistinctPerChannel(shape, dim: 1) is 1 or > 3
        from affine in Gen.Bool
        from track in Gen.Bool
        from momentum in Momentum
        from eps in Gen.OneOf(1e-5, 1e-3, 0.1)
        from layout in Gen.Enum<GeneratedLayout>()
        from expandDim in Gen.Int[0, shape.Length - 1]
        where layout != GeneratedLayout.Expanded || DistinctPerChannel(shape, expandDim) > 3
        from steps in Gen.Bool.Array[1, 3]
        from seed in Gen.Int[0, 1_000_000]
        select new Case(dtype, shape, affine, track, momentum, eps, layout, shape[0] == 0 && expandDim == 0 ? 1 : expandDim, steps, seed);

    [Test]
    public void GeneratedCases_MatchTorchSharp()
    {
        GeneratedCases.Run(Cases, Check, stream: 2024, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    /// <summary>
    /// A boundary case the generator reaches: a single sample of one row, expanded along the batch (stride 0),
    /// so that every channel holds W values and the contiguous copy the kernels read is the only dense view of them;
    /// in training, then evaluation with momentum null (a cumulative average after one batch).
    /// </summary>
    [Test]
    public void Regression_ExpandedBatchOfOneRow_MomentumNull_TrainingThenEval()
    {
        Check(new Case(ScalarType.Float32, [5, 3, 1, 7], Affine: true, Track: true, Momentum: null, Eps: 1e-5, GeneratedLayout.Expanded, ExpandDim: 0, [true, false], Seed: 41));
    }

    /// <summary>N·H·W = 1 in training is refused by ours (TorchSharp accepts it); the evaluation step after it is compared.</summary>
    [Test]
    public void Regression_OneValuePerChannel_RefusedInTraining_ComparedInEval()
    {
        Check(new Case(ScalarType.Float64, [1, 4, 1, 1], Affine: true, Track: true, Momentum: 0.1, Eps: 1e-5, GeneratedLayout.ChannelsLast, ExpandDim: 2, [true, false, true], Seed: 7));
    }

    /// <summary>
    /// Runs one case through our module and TorchSharp's, step by step, comparing everything. The layer is the one of
    /// the case's rank: BatchNorm1d for (N, C) and (N, C, L), BatchNorm2d for (N, C, H, W), BatchNorm3d for
    /// (N, C, D, H, W). A float32 case is compared with TorchSharp in float64 on the same values (the oracle), and
    /// TorchSharp in float32 runs beside it as a witness: see <see cref="Tolerance.AssertCloseOrNoWorse"/>. On generated
    /// inputs TorchSharp's own float32 output was off from the float64 result by up to 1.4e-6 where outputs are near 0
    /// (x · invstd about 10), beyond the suite's float32 tolerance, while ours was within it; at such elements an
    /// element-wise tolerance against TorchSharp's float32 result would measure TorchSharp's rounding, not ours.
    /// A bfloat16 or float16 case is mixed precision: the modules are float32, the input 16-bit, TorchSharp's float32
    /// module on the 16-bit input the witness; the output and x.grad are held to one ulp of the float64 oracle
    /// (<see cref="HalfPrecision"/>), the rest as in a float32 case.
    /// </summary>
    internal static void Check(Case k)
    {
        using var scope = NewDisposeScope();
        manual_seed(k.Seed);
        long channels = k.Shape[1];
        long perChannel = DistinctPerChannel(k.Shape, dim: 1);
        long[] channelShape = ChannelShape(k.Shape);
        bool halfPrecision = k.Dtype is ScalarType.BFloat16 or ScalarType.Float16;
        var parameterDtype = halfPrecision ? ScalarType.Float32 : k.Dtype;
        bool witnessed = parameterDtype == ScalarType.Float32;
        var oracleDtype = witnessed ? ScalarType.Float64 : k.Dtype;
        var oracle = Theirs(k, oracleDtype);
        var witness = witnessed ? Theirs(k, parameterDtype) : null;
        var ours = Ours(k, parameterDtype);
        if (k.Affine)
        {
            using var noGrad = no_grad();
            var gamma = rand(channels, parameterDtype).Times(1.5).Plus(0.25);
            var beta = randn(channels, parameterDtype);
            foreach (var module in new[] { oracle, witness })
            {
                module?.weight.copy_(gamma);
                module?.bias!.copy_(beta);
            }

            ours.weight!.copy_(gamma);
            ours.bias!.copy_(beta);
        }

        for (int step = 0; step < k.Steps.Length; step++)
        {
            bool training = k.Steps[step];
            oracle.train(training);
            witness?.train(training);
            ours.train(training);
            string at = $"{(training ? "training" : "eval")} step {step}";

            // The oracle suite's well-conditioned values: a spread of 0.5 to 3.5 and a mean of about ±1 per channel.
            // Inputs whose results cancel (a large mean and a tiny spread, constant channels) are Numerics/' subject.
            var values = (randn(k.Shape, parameterDtype) * rand(channelShape, parameterDtype).Times(3).Plus(0.5)).Plus(randn(channelShape, parameterDtype)).to(k.Dtype);
            var gradOutput = randn(k.Shape, parameterDtype).to(k.Dtype);
            using var ourInput = Create(values, k);
            using var oracleInput = Create(values.to(oracleDtype), k);
            using var witnessInput = witnessed ? Create(values, k) : null;

            if ((training || !k.Track) && perChannel == 1)
            {
                // A documented difference: TorchSharp accepts it (and fills running_var with inf); ours refuses and changes nothing.
                using var snapshot = Snapshot.Of(ours, ("input", ourInput.Leaf));
                var refused = Assert.Throws<ArgumentException>(() => ours.forward(ourInput.View), at);
                Assert.That(refused!.Message, Does.StartWith("Expected more than 1 value per channel when training"), at);
                snapshot.AssertUnchanged();
                continue;
            }

            // An expanded input's leaf gradient is a sum of the layer's input gradient over the expanded dimension, made by
            // TorchSharp's autograd; where the layer's gradients cancel in that sum (they do exactly, when the expansion
            // spans a whole channel), any float32 result is rounding noise. The layer's own gradient is that of the view.
            RetainViewGrad(ourInput, k);
            RetainViewGrad(oracleInput, k);
            if (witnessInput is not null)
            {
                RetainViewGrad(witnessInput, k);
            }

            if (halfPrecision && !training && k.Track)
            {
                // The exact evaluation of our module's state: its float32 running statistics, not the oracle's float64
                // ones, which differ by float32 rounding (enough to move an output near zero by ulps of a 16-bit dtype).
                using var noGrad = no_grad();
                oracle.running_mean!.copy_(ours.running_mean!);
                oracle.running_var!.copy_(ours.running_var!);
            }

            var expected = oracle.forward(oracleInput.View);
            var seen = witness?.forward(witnessInput!.View);
            var actual = ours.forward(ourInput.View);
            CompareInputShaped(actual, seen, expected, $"output, {at}");

            expected.backward([gradOutput.to(oracleDtype)]);
            seen?.backward([gradOutput]);
            actual.backward([gradOutput]);
            CompareInputShaped(InputGrad(ourInput, k), witnessInput is null ? null : InputGrad(witnessInput, k), InputGrad(oracleInput, k), $"x.grad, {at}");
            if (k.Affine)
            {
                Compare(ours.weight!.grad, witness?.weight.grad, oracle.weight.grad, $"weight.grad, {at}");
                Compare(ours.bias!.grad, witness?.bias!.grad, oracle.bias!.grad, $"bias.grad, {at}");
                ours.zero_grad();
                oracle.zero_grad();
                witness?.zero_grad();
            }

            if (k.Track)
            {
                Compare(ours.running_mean, witness?.running_mean, oracle.running_mean, $"running_mean, {at}");
                Compare(ours.running_var, witness?.running_var, oracle.running_var, $"running_var, {at}");
                Assert.That(ours.num_batches_tracked!.item<long>(), Is.EqualTo(oracle.num_batches_tracked!.to(ScalarType.Int64).item<long>()), $"num_batches_tracked, {at}");
            }
            else
            {
                Assert.That(ours.running_mean, Is.Null);
                Assert.That(ours.running_var, Is.Null);
                Assert.That(ours.num_batches_tracked, Is.Null);
            }
        }
    }

    /// <summary>TorchSharp's layer of the case's rank (<see cref="Check"/>).</summary>
    private static TorchSharp.Modules.BatchNorm Theirs(Case k, ScalarType dtype)
    {
        TorchSharp.Modules.BatchNorm theirs = k.Shape.Length switch
        {
            2 or 3 => nn.BatchNorm1d(k.Shape[1], k.Eps, k.Momentum ?? 0.1, k.Affine, k.Track, dtype: dtype),
            4 => nn.BatchNorm2d(k.Shape[1], k.Eps, k.Momentum ?? 0.1, k.Affine, k.Track, dtype: dtype),
            5 => nn.BatchNorm3d(k.Shape[1], k.Eps, k.Momentum ?? 0.1, k.Affine, k.Track, dtype: dtype),
            _ => throw new ArgumentOutOfRangeException(nameof(k), k.Shape.Length, "no BatchNorm layer of this rank"),
        };
        theirs.momentum = k.Momentum;
        return theirs;
    }

    /// <summary>Our layer of the case's rank (<see cref="Check"/>), of <paramref name="dtype"/>.</summary>
    private static BatchNormBase Ours(Case k, ScalarType dtype) => k.Shape.Length switch
    {
        2 or 3 => new BatchNorm1d(k.Shape[1], k.Eps, k.Momentum, k.Affine, k.Track, dtype: dtype),
        4 => new BatchNorm2d(k.Shape[1], k.Eps, k.Momentum, k.Affine, k.Track, dtype: dtype),
        5 => new BatchNorm3d(k.Shape[1], k.Eps, k.Momentum, k.Affine, k.Track, dtype: dtype),
        _ => throw new ArgumentOutOfRangeException(nameof(k), k.Shape.Length, "no BatchNorm layer of this rank"),
    };

    /// <summary>The output or x.grad: of a 16-bit case within one ulp of the oracle and agreeing with the witness (<see cref="HalfPrecision"/>); else as <see cref="Compare"/>.</summary>
    private static void CompareInputShaped(Tensor? ours, Tensor? witness, Tensor? oracle, string what)
    {
        if (ours?.dtype is ScalarType.BFloat16 or ScalarType.Float16)
        {
            Assert.That(witness?.dtype, Is.EqualTo(ours.dtype), $"{what}: dtype");
            HalfPrecision.AssertWithinUlp(ours, oracle!, $"{what} against float64");
            HalfPrecision.AssertAgreesWithTorchSharp(ours, witness!, oracle!, $"{what} against TorchSharp");
        }
        else
        {
            Compare(ours, witness, oracle, what);
        }
    }

    /// <summary>Ours against the oracle: with the suite's tolerance, or, for float32, as <see cref="Tolerance.AssertCloseOrNoWorse"/> says.</summary>
    private static void Compare(Tensor? ours, Tensor? witness, Tensor? oracle, string what)
    {
        if (witness is null)
        {
            Tolerance.AssertClose(ours, oracle, what);
        }
        else
        {
            Tolerance.AssertCloseOrNoWorse(ours, witness, oracle, what);
        }
    }

    /// <summary>
    /// How many distinct positions a channel of an input of <paramref name="shape"/> expanded along <paramref name="dim"/>
    /// reads: the product of every dimension but the channels and <paramref name="dim"/>. With <paramref name="dim"/> 1,
    /// the values per channel.
    /// </summary>
    internal static long DistinctPerChannel(long[] shape, int dim)
    {
        long count = 1;
        for (int d = 0; d < shape.Length; d++)
        {
            count *= d == 1 || d == dim ? 1 : shape[d];
        }

        return count;
    }

    /// <summary>(1, C, 1, …, 1) for an input of <paramref name="shape"/>: one value per channel, broadcast over the others.</summary>
    internal static long[] ChannelShape(long[] shape) => [1, shape[1], .. Enumerable.Repeat(1L, shape.Length - 2)];

    internal static LaidOutInput Create(Tensor values, Case k) => k.Layout switch
    {
        GeneratedLayout.Expanded => LaidOutInput.CreateExpanded(values, k.ExpandDim),
        _ => LaidOutInput.Create(values, (Layout)(int)k.Layout),
    };

    internal static void RetainViewGrad(LaidOutInput input, Case k)
    {
        if (k.Layout == GeneratedLayout.Expanded)
        {
            input.View.retain_grad();
        }
    }

    internal static Tensor? InputGrad(LaidOutInput input, Case k) => k.Layout == GeneratedLayout.Expanded ? input.View.grad : input.Leaf.grad;

    /// <summary>One generated case; <see cref="Steps"/> holds the training flag of each step.</summary>
    internal sealed record Case(ScalarType Dtype, long[] Shape, bool Affine, bool Track, double? Momentum, double Eps, GeneratedLayout Layout, int ExpandDim, bool[] Steps, int Seed)
    {
        public override string ToString() => string.Create(
            CultureInfo.InvariantCulture,
            $"new Case(ScalarType.{Dtype}, [{string.Join(", ", Shape)}], Affine: {Affine.ToString().ToLowerInvariant()}, Track: {Track.ToString().ToLowerInvariant()}, " +
            $"Momentum: {(Momentum is null ? "null" : Momentum.Value.ToString("R", CultureInfo.InvariantCulture))}, Eps: {Eps:R}, GeneratedLayout.{Layout}, ExpandDim: {ExpandDim}, " +
            $"[{string.Join(", ", Steps.Select(s => s ? "true" : "false"))}], Seed: {Seed})");
    }
}
