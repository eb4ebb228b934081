using CsCheck;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Generated;

/// <summary>
/// Generated cases of Dropout1d on (N, C, L) and (C, L) and Dropout3d on (N, C, D, H, W) and (C, D, H, W) against
/// TorchSharp's nn.Dropout1d and nn.Dropout3d under the same seed, drawn and checked as
/// <see cref="Dropout2dGeneratedTests"/> draws and checks Dropout2d's: p, dtypes, layouts, in place or not, and
/// sequences of training and evaluation steps through one module. Every output, every input gradient, the input written
/// in place, and the default generator afterwards must be bit for bit equal.
/// </summary>
[TestFixture]
public class ChannelDropoutGeneratedTests
{
    /// <summary>Cases per layer and run unless <see cref="GeneratedCases.CountVariable"/> says otherwise.</summary>
    private const int CiCases = 2000;

    internal static readonly Gen<Dropout2dGeneratedTests.Case> Dropout1dCases = Dropout2dGeneratedTests.CasesOf(
        from n in Dropout2dGeneratedTests.Batch
        from c in Dropout2dGeneratedTests.Channels
        from l in BatchNormFamilyGeneratedTests.Length
        select new[] { n, c, l });

    internal static readonly Gen<Dropout2dGeneratedTests.Case> Dropout3dCases = Dropout2dGeneratedTests.CasesOf(
        from n in Dropout2dGeneratedTests.Batch
        from c in Dropout2dGeneratedTests.Channels
        from d in BatchNormFamilyGeneratedTests.VolumeSide
        from h in BatchNormFamilyGeneratedTests.VolumeSide
        from w in BatchNormFamilyGeneratedTests.VolumeSide
        select new[] { n, c, d, h, w });

    [Test]
    public void Dropout1d_GeneratedCases_MatchTorchSharpBitForBit()
    {
        GeneratedCases.Run(Dropout1dCases, Dropout2dGeneratedTests.Check, stream: 2028, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    [Test]
    public void Dropout3d_GeneratedCases_MatchTorchSharpBitForBit()
    {
        GeneratedCases.Run(Dropout3dCases, Dropout2dGeneratedTests.Check, stream: 2029, GeneratedCases.Count(CiCases), c => c.ToString());
    }

    /// <summary>
    /// A boundary case the generator reaches: an unbatched (C, L) with its channels innermost in memory, written in
    /// place, with NaN, −∞ and −0.0 in it, in training, evaluation and training again; TorchSharp's Dropout1d given (1, C, L).
    /// </summary>
    [Test]
    public void Dropout1d_Unbatched_InPlace_ChannelsInnermost_TrainingEvalTraining()
    {
        Dropout2dGeneratedTests.Check(new(ScalarType.Float32, 2, [1, 6, 11], 0.5, Inplace: true, GeneratedLayout.ChannelsLast, ExpandDim: 1, [true, false, true], Special: true, Seed: 13));
    }

    /// <summary>A boundary case the generator reaches: an unbatched (C, D, H, W) expanded along H, dropped at p = 1, then evaluated.</summary>
    [Test]
    public void Dropout3d_UnbatchedExpandedInput_PEqualsOne_ThenEval()
    {
        Dropout2dGeneratedTests.Check(new(ScalarType.Float64, 4, [1, 3, 2, 4, 5], 1.0, Inplace: false, GeneratedLayout.Expanded, ExpandDim: 3, [true, false], Special: false, Seed: 17));
    }
}
