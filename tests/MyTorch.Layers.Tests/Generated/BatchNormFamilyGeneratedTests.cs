using CsCheck;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Generated;

/// <summary>
/// Generated cases of BatchNorm1d on (N, C) and (N, C, L) and BatchNorm3d on (N, C, D, H, W) against TorchSharp's
/// nn.BatchNorm1d and nn.BatchNorm3d, drawn and checked as <see cref="BatchNorm2dGeneratedTests"/> draws and checks
/// BatchNorm2d's: every option, dtype, layout (channels-last being channels_last_3d for 5-D and (N, L, C) memory for
/// 3-D) and sequence of training and evaluation steps, every output, gradient and buffer compared at every step.
/// </summary>
[TestFixture]
public class BatchNormFamilyGeneratedTests
{
    /// <summary>Cases per layer and run unless <see cref="GeneratedCases.CountVariable"/> says otherwise.</summary>
    private const int CiCases = 2000;

    /// <summary>(N, C) rows: the batches of the 2-d suite, and sometimes hundreds of rows, as BatchNorm1d after a linear layer sees.</summary>
    private static readonly Gen<long> Rows = Gen.Frequency((3, BatchNorm2dGeneratedTests.Batch), (1, Gen.Long[0, 300]));

    /// <summary>(N, C) features: the 2-d suite's channels, and sometimes a few hundred.</summary>
    private static readonly Gen<long> Features = Gen.Frequency((3, BatchNorm2dGeneratedTests.Channels), (1, Gen.Long[1, 300]));

    /// <summary>L of (N, C, L): the 2-d suite's sides, and sometimes a long sequence.</summary>
    internal static readonly Gen<long> Length = Gen.Frequency((3, BatchNorm2dGeneratedTests.Side), (1, Gen.Long[1, 600]));

    /// <summary>D, H and W of a volume: smaller than the 2-d sides, so that most (N, C, D, H, W) drawn fit the element limit.</summary>
    internal static readonly Gen<long> VolumeSide = Gen.Frequency((2, Gen.Const(1L)), (4, Gen.Long[1, 6]), (1, Gen.Long[1, 16]));

    private static readonly Gen<long[]> BatchNorm1dShapes = Gen.OneOf(
        from n in Rows
        from c in Features
        select new[] { n, c },
        from n in BatchNorm2dGeneratedTests.Batch
        from c in BatchNorm2dGeneratedTests.Channels
        from l in Length
        select new[] { n, c, l });

    private static readonly Gen<long[]> BatchNorm3dShapes =
        from n in BatchNorm2dGeneratedTests.Batch
        from c in BatchNorm2dGeneratedTests.Channels
        from d in VolumeSide
        from h in VolumeSide
        from w in VolumeSide
        select new[] { n, c, d, h, w };

    private static readonly Gen<ScalarType> HalfPrecisionDtypes = Gen.OneOf(ScalarType.BFloat16, ScalarType.Float16);

    internal static readonly Gen<BatchNorm2dGeneratedTests.Case> BatchNorm1dCases = BatchNorm2dGeneratedTests.CasesOf(BatchNorm1dShapes);

    internal static readonly Gen<BatchNorm2dGeneratedTests.Case> BatchNorm3dCases = BatchNorm2dGeneratedTests.CasesOf(BatchNorm3dShapes);

    /// <summary>Mixed-precision cases of every BatchNorm layer: bfloat16 or float16 input, float32 module.</summary>
    internal static readonly Gen<BatchNorm2dGeneratedTests.Case> HalfPrecisionCases = Gen.OneOf(
        BatchNorm2dGeneratedTests.CasesOf(BatchNorm1dShapes, HalfPrecisionDtypes),
        BatchNorm2dGeneratedTests.CasesOf(BatchNorm2dGeneratedTests.Shapes, HalfPrecisionDtypes),
        BatchNorm2dGeneratedTests.CasesOf(BatchNorm3dShapes, HalfPrecisionDtypes));

    [Test]
    public void HalfPrecision_GeneratedCases_MatchFloat64AndTorchSharp()
    {
        GeneratedCases.Run(HalfPrecisionCases, BatchNorm2dGeneratedTests.Check, stream: 2031, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    [Test]
    public void BatchNorm1d_GeneratedCases_MatchTorchSharp()
    {
        GeneratedCases.Run(BatchNorm1dCases, BatchNorm2dGeneratedTests.Check, stream: 2026, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    [Test]
    public void BatchNorm3d_GeneratedCases_MatchTorchSharp()
    {
        GeneratedCases.Run(BatchNorm3dCases, BatchNorm2dGeneratedTests.Check, stream: 2027, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    /// <summary>
    /// A boundary case the generator reaches: (1, C), one value per channel, refused by ours in training (TorchSharp
    /// accepts it) with nothing changed, between evaluation steps that are compared; the input a strided slice of features.
    /// </summary>
    [Test]
    public void BatchNorm1d_OneRow_RefusedInTraining_ComparedInEval()
    {
        BatchNorm2dGeneratedTests.Check(new(ScalarType.Float32, [1, 37], Affine: true, Track: true, Momentum: null, Eps: 1e-5, GeneratedLayout.StridedSlice, ExpandDim: 0, [false, true, false], Seed: 3));
    }

    /// <summary>(N, C, L) read from (N, L, C) memory, as a sequence model's activations transposed for BatchNorm1d are.</summary>
    [Test]
    public void BatchNorm1d_LengthMajorMemory_TrainingEvalTraining()
    {
        BatchNorm2dGeneratedTests.Check(new(ScalarType.Float32, [4, 19, 9], Affine: true, Track: true, Momentum: 0.1, Eps: 1e-5, GeneratedLayout.ChannelsLast, ExpandDim: 0, [true, false, true], Seed: 5));
    }

    /// <summary>channels_last_3d with momentum null: a cumulative average over two training steps, then evaluation.</summary>
    [Test]
    public void BatchNorm3d_ChannelsLast3d_MomentumNull_TwoTrainingStepsThenEval()
    {
        BatchNorm2dGeneratedTests.Check(new(ScalarType.Float32, [2, 5, 3, 4, 2], Affine: true, Track: true, Momentum: null, Eps: 1e-5, GeneratedLayout.ChannelsLast, ExpandDim: 0, [true, true, false], Seed: 11));
    }
}
