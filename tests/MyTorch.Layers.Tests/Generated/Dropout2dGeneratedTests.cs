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

    private static readonly Gen<long> Batch = Gen.Frequency((1, Gen.Const(0L)), (2, Gen.Const(1L)), (6, Gen.Long[0, 8]));
    private static readonly Gen<long> Channels = Gen.Frequency((1, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 70]));
    private static readonly Gen<long> Side = Gen.Frequency((2, Gen.Const(1L)), (4, Gen.Long[1, 8]), (2, Gen.Long[1, 40]));
    private static readonly Gen<double> Probability = Gen.Frequency(
        (1, Gen.Const(0.0)),
        (1, Gen.Const(1.0)),
        (2, Gen.Const(0.5)),
        (4, Gen.Double[0, 1]));

    internal static readonly Gen<Case> Cases =
        from dtype in Gen.OneOf(ScalarType.Float32, ScalarType.Float64)
        from rank in Gen.OneOf(3, 4)
        from n in Batch
        from c in Channels
        from h in Side
        from w in Side
        where (rank == 3 ? 1 : n) * c * h * w <= MaxElements
        from p in Probability
        from layout in Gen.Enum<GeneratedLayout>()
        from inplace in Gen.Bool
        from expandDim in Gen.Int[0, 3]
        from steps in Gen.Bool.Array[1, 3]
        from special in Gen.Bool
        from seed in Gen.Int[0, 1_000_000]
        select new Case(
            dtype,
            rank,
            [rank == 3 ? 1 : n, c, h, w],
            p,
            inplace && layout != GeneratedLayout.Expanded, // an expanded tensor cannot be written in place: Dropout2dBadInputTests
            layout,
            (rank == 3 || n == 0) && expandDim == 0 ? 1 : expandDim,
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

    internal static void Check(Case k)
    {
        using var scope = NewDisposeScope();
        manual_seed(k.Seed);
        var values = new List<Tensor>();
        var grads = new List<Tensor>();
        foreach (bool _ in k.Steps)
        {
            var v = randn(k.Shape, k.Dtype) * rand(1, k.Shape[1], 1, 1, k.Dtype).Times(3).Plus(0.5);
            if (k.Special && v.numel() > 2)
            {
                var flat = v.view(-1);
                flat[0] = tensor(double.NaN, k.Dtype);
                flat[v.numel() / 2] = tensor(double.NegativeInfinity, k.Dtype);
                flat[v.numel() - 1] = tensor(-0.0, k.Dtype);
            }

            values.Add(v);
            grads.Add(randn(k.Rank == 4 ? k.Shape : k.Shape[1..], k.Dtype));
        }

        var ours = Run(new Dropout2d(k.P, k.Inplace), k, values, grads);
        var theirs = Run(nn.Dropout2d(k.P, k.Inplace), k, values, grads);
        for (int step = 0; step < k.Steps.Length; step++)
        {
            string at = $"{(k.Steps[step] ? "training" : "eval")} step {step}";
            BitExact.AssertEqual(ours.Outputs[step], theirs.Outputs[step], $"output, {at}");
            BitExact.AssertEqual(ours.Inputs[step], theirs.Inputs[step], $"the input after the call, {at}");
            BitExact.AssertEqual(ours.Grads[step], theirs.Grads[step], $"leaf.grad, {at}");
        }

        Assert.That(ours.NextDraw, Is.EqualTo(theirs.NextDraw), "the default generator after all steps");
    }

    /// <summary>Runs every step through <paramref name="module"/> from the same seed; returns copies of what to compare.</summary>
    private static (List<Tensor> Outputs, List<Tensor> Inputs, List<Tensor> Grads, double NextDraw) Run(
        nn.Module<Tensor, Tensor> module, Case k, List<Tensor> values, List<Tensor> grads)
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
            var y = module.forward(x);
            outputs.Add(y.detach().clone());
            inputs.Add(x.detach().clone());
            y.backward([grads[step]]);
            leafGrads.Add(input.Leaf.grad!.clone());
        }

        return (outputs, inputs, leafGrads, rand(1, ScalarType.Float64).item<double>());
    }

    /// <summary>The view of the case's layout taken of <paramref name="whole"/> (the leaf, or a non-leaf copy of it), then the sample for 3-D.</summary>
    private static Tensor View(Tensor whole, Case k)
    {
        var view = k.Layout switch
        {
            GeneratedLayout.StridedSlice => whole.slice(3, 0, whole.shape[3], 2),
            GeneratedLayout.StorageOffset => whole.slice(0, 1, whole.shape[0], 1),
            GeneratedLayout.Expanded => whole.expand(k.Shape),
            _ => whole,
        };
        return k.Rank == 4 ? view : view.select(0, 0);
    }

    private static BatchNorm2dGeneratedTests.Case ToBatchNorm(Case k) =>
        new(k.Dtype, k.Shape, Affine: false, Track: false, Momentum: null, Eps: 0, k.Layout, k.ExpandDim, k.Steps, k.Seed);

    /// <summary>One generated case: <see cref="Shape"/> is (N, C, H, W), N = 1 for a 3-D (C, H, W) input.</summary>
    internal sealed record Case(ScalarType Dtype, int Rank, long[] Shape, double P, bool Inplace, GeneratedLayout Layout, int ExpandDim, bool[] Steps, bool Special, int Seed)
    {
        public override string ToString() => string.Create(
            CultureInfo.InvariantCulture,
            $"new Case(ScalarType.{Dtype}, {Rank}, [{string.Join(", ", Shape)}], {P:R}, Inplace: {Inplace.ToString().ToLowerInvariant()}, GeneratedLayout.{Layout}, ExpandDim: {ExpandDim}, " +
            $"[{string.Join(", ", Steps.Select(s => s ? "true" : "false"))}], Special: {Special.ToString().ToLowerInvariant()}, Seed: {Seed})");
    }
}
