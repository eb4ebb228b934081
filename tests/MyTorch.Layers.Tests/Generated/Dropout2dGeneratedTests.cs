using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using CsCheck;
using MyTorch.Layers.Tests.Oracle;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Generated;

/// <summary>
/// Generated cases of Dropout2d against TorchSharp's nn.Dropout2d under the same seed: shapes (3-D and 4-D), p,
/// dtypes, layouts, in-place or not, and sequences of training and evaluation steps through one module. Every output,
/// every input gradient, the input written in place, and the default generator afterwards must be bit for bit equal.
/// </summary>
[TestFixture]
public class Dropout2dGeneratedTests
{
    private const int CiCases = 2000;
    private const long MaxElements = 200_000;

    internal static readonly Gen<long> Batch = Gen.Frequency((1, Gen.Const(0L)), (2, Gen.Const(1L)), (6, Gen.Long[0, 8]));
    internal static readonly Gen<long> Channels = Gen.Frequency((1, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 70]));
    internal static readonly Gen<long> Side = Gen.Frequency((2, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 40]));
    internal static readonly Gen<double> Probability = Gen.Frequency(
        (1, Gen.Const(0.0)),
        (1, Gen.Const(1.0)),
        (2, Gen.Const(0.5)),
        (4, Gen.Double[0, 1]));

    internal static readonly Gen<Case> Cases = CasesOf(
        from n in Batch
        from c in Channels
        from h in Side
        from w in Side
        select new[] { n, c, h, w });

    /// <summary>
    /// Cases of the channel dropout layer of the rank of <paramref name="shapes"/>, batched shapes (N, C, …) (see
    /// <see cref="Case"/>): batched or the single sample, every p, dtype, layout and step sequence, in place or not, on
    /// at most <see cref="MaxElements"/> elements.
    /// </summary>
    internal static Gen<Case> CasesOf(Gen<long[]> shapes) =>
        from dtype in Gen.OneOf(ScalarType.Float32, ScalarType.Float64)
        from batched in Gen.OneOf(false, true)
        from drawn in shapes
        let shape = batched ? drawn : [1, .. drawn[1..]]
        where shape.Aggregate(1L, (a, b) => a * b) <= MaxElements
        from p in Probability
        from layout in Gen.Enum<GeneratedLayout>()
        from inplace in Gen.Bool
        from expandDim in Gen.Int[0, shape.Length - 1]
        from steps in Gen.Bool.Array[1, 3]
        from special in Gen.Bool
        from seed in Gen.Int[0, 1_000_000]
        select new Case(
            dtype,
            batched ? shape.Length : shape.Length - 1,
            shape,
            p,
            inplace && layout != GeneratedLayout.Expanded, // an expanded tensor cannot be written in place: Dropout2dBadInputTests
            layout,
            (!batched || shape[0] == 0) && expandDim == 0 ? 1 : expandDim,
            steps,
            special,
            seed);

    [Test]
    public void GeneratedCases_MatchTorchSharpBitForBit()
    {
        GeneratedCases.Run(Cases, Check, stream: 2025, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    /// <summary>A boundary case: an unbatched (C, H, W) input expanded along W, dropped at p = 1, then evaluated.</summary>
    [Test]
    public void Regression_UnbatchedExpandedInput_PEqualsOne_ThenEval()
    {
        Check(new Case(ScalarType.Float32, 3, [1, 4, 3, 5], 1.0, Inplace: false, GeneratedLayout.Expanded, ExpandDim: 3, [true, false], Special: true, Seed: 5));
    }

    /// <summary>
    /// Runs one case through our module and TorchSharp's from the same seeds, comparing everything bit for bit. The layer
    /// is the one of the case's batched rank: Dropout1d for (N, C, L), Dropout2d for (N, C, H, W), Dropout3d for
    /// (N, C, D, H, W), each given the single sample when the case is unbatched.
    /// </summary>
    internal static void Check(Case k)
    {
        using var scope = NewDisposeScope();
        manual_seed(k.Seed);
        var values = new List<Tensor>();
        var grads = new List<Tensor>();
        foreach (bool _ in k.Steps)
        {
            var v = randn(k.Shape, k.Dtype) * rand(BatchNorm2dGeneratedTests.ChannelShape(k.Shape), k.Dtype).Times(3).Plus(0.5);
            if (k.Special && v.numel() > 2)
            {
                var flat = v.view(-1);
                flat[0] = tensor(double.NaN, k.Dtype);
                flat[v.numel() / 2] = tensor(double.NegativeInfinity, k.Dtype);
                flat[v.numel() - 1] = tensor(-0.0, k.Dtype);
            }

            values.Add(v);
            grads.Add(randn(k.Batched ? k.Shape : k.Shape[1..], k.Dtype));
        }

        var (ours, theirs, theirForward) = Pair(k);
        var ourRun = Run(ours, ours.forward, k, values, grads);
        var theirRun = Run(theirs, theirForward, k, values, grads);
        for (int step = 0; step < k.Steps.Length; step++)
        {
            string at = $"{(k.Steps[step] ? "training" : "eval")} step {step}";
            BitExact.AssertEqual(ourRun.Outputs[step], theirRun.Outputs[step], $"output, {at}");
            BitExact.AssertEqual(ourRun.Inputs[step], theirRun.Inputs[step], $"the input after the call, {at}");
            BitExact.AssertEqual(ourRun.Grads[step], theirRun.Grads[step], $"leaf.grad, {at}");
        }

        Assert.That(ourRun.NextDraw, Is.EqualTo(theirRun.NextDraw), "the default generator after all steps");
    }

    /// <summary>
    /// Our layer and TorchSharp's for the case's batched rank, and how TorchSharp's is called: TorchSharp 0.107's
    /// Dropout1d refuses (C, L), which PyTorch reads as one sample, so it is given (1, C, L) and its output squeezed, as
    /// <see cref="Oracle.ChannelDropoutOracleTests"/> does.
    /// </summary>
    private static (nn.Module<Tensor, Tensor> Ours, nn.Module<Tensor, Tensor> Theirs, Func<Tensor, Tensor> TheirForward) Pair(Case k)
    {
        (nn.Module<Tensor, Tensor> Ours, nn.Module<Tensor, Tensor> Theirs) pair = k.Shape.Length switch
        {
            3 => (new Dropout1d(k.P, k.Inplace), nn.Dropout1d(k.P, k.Inplace)),
            4 => (new Dropout2d(k.P, k.Inplace), nn.Dropout2d(k.P, k.Inplace)),
            5 => (new Dropout3d(k.P, k.Inplace), nn.Dropout3d(k.P, k.Inplace)),
            _ => throw new ArgumentOutOfRangeException(nameof(k), k.Shape.Length, "no channel dropout layer of this batched rank"),
        };
        var theirs = pair.Theirs;
        Func<Tensor, Tensor> theirForward = k.Shape.Length == 3 && !k.Batched ? x => theirs.forward(x.unsqueeze(0)).squeeze(0) : theirs.forward;
        return (pair.Ours, theirs, theirForward);
    }

    /// <summary>Runs every step through <paramref name="forward"/> of <paramref name="module"/> from the same seed; returns copies of what to compare.</summary>
    private static (List<Tensor> Outputs, List<Tensor> Inputs, List<Tensor> Grads, double NextDraw) Run(
        nn.Module<Tensor, Tensor> module, Func<Tensor, Tensor> forward, Case k, List<Tensor> values, List<Tensor> grads)
    {
        var outputs = new List<Tensor>();
        var inputs = new List<Tensor>();
        var leafGrads = new List<Tensor>();
        manual_seed(k.Seed + 1);
        for (int step = 0; step < k.Steps.Length; step++)
        {
            module.train(k.Steps[step]);
            using var input = BatchNorm2dGeneratedTests.Create(values[step], ToBatchNorm(k));

            // In place on a leaf that requires grad (or a view of one) is refused by both: write into a non-leaf copy.
            var x = View(k.Inplace ? input.Leaf.Times(1) : input.Leaf, k);
            var y = forward(x);
            outputs.Add(y.detach().clone());
            inputs.Add(x.detach().clone());
            y.backward([grads[step]]);
            leafGrads.Add(input.Leaf.grad!.clone());
        }

        return (outputs, inputs, leafGrads, rand(1, ScalarType.Float64).item<double>());
    }

    /// <summary>The view of the case's layout taken of <paramref name="whole"/> (the leaf, or a non-leaf copy of it), then the sample if unbatched.</summary>
    private static Tensor View(Tensor whole, Case k)
    {
        int last = k.Shape.Length - 1;
        var view = k.Layout switch
        {
            GeneratedLayout.StridedSlice => whole.slice(last, 0, whole.shape[last], 2),
            GeneratedLayout.StorageOffset => whole.slice(0, 1, whole.shape[0], 1),
            GeneratedLayout.Expanded => whole.expand(k.Shape),
            _ => whole,
        };
        return k.Batched ? view : view.select(0, 0);
    }

    private static BatchNorm2dGeneratedTests.Case ToBatchNorm(Case k) =>
        new(k.Dtype, k.Shape, Affine: false, Track: false, Momentum: null, Eps: 0, k.Layout, k.ExpandDim, k.Steps, k.Seed);

    /// <summary>
    /// One generated case: <see cref="Shape"/> is the batched shape (N, C, …), whose rank names the layer (3: Dropout1d,
    /// 4: Dropout2d, 5: Dropout3d); <see cref="Rank"/> is the rank the layer is given, one less for an unbatched input,
    /// which is the single sample of a Shape with N = 1.
    /// </summary>
    internal sealed record Case(ScalarType Dtype, int Rank, long[] Shape, double P, bool Inplace, GeneratedLayout Layout, int ExpandDim, bool[] Steps, bool Special, int Seed)
    {
        /// <summary>Whether the layer is given the whole (N, C, …) rather than its single sample.</summary>
        public bool Batched => Rank == Shape.Length;

        public override string ToString() => string.Create(
            CultureInfo.InvariantCulture,
            $"new Case(ScalarType.{Dtype}, {Rank}, [{string.Join(", ", Shape)}], {P:R}, Inplace: {Inplace.ToString().ToLowerInvariant()}, GeneratedLayout.{Layout}, ExpandDim: {ExpandDim}, " +
            $"[{string.Join(", ", Steps.Select(s => s ? "true" : "false"))}], Special: {Special.ToString().ToLowerInvariant()}, Seed: {Seed})");
    }
}
