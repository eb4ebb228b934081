using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using MyTorch.Layers.Tests.Support;
using NUnit.Framework;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MyTorch.Layers.Tests.Integration;

/// <summary>
/// <see cref="layers.fuse_conv_bn_eval(Conv2d, BatchNorm)"/> and its Sequential form: the folded conv against the conv
/// followed by the BatchNorm2d, within a bound derived from the rounding of both; the inputs unchanged; every refusal.
/// </summary>
/// <remarks>
/// The float32 bound. Per output element, with n = (in_channels / groups) · kh · kw products and the magnitude
/// M = |s| · (Σ|W·x| + |b| + |running_mean|) + |β|, s = γ / sqrt(running_var + eps):
/// the folded conv sums n products of weights each rounded once (relative u = 2⁻²⁴) plus a bias rounded once, so it is
/// within γ(n + 2) · M of the exact value (Higham: γ(k) = k·u / (1 − k·u) bounds any order of a k-term sum); the unfused
/// pair sums n products plus the bias (γ(n + 1) on Σ|W·x| + |b|, scaled by |s|) and then the BatchNorm's subtract,
/// scale and shift, at most three more roundings. Each side is within γ(n + 4) · M of the exact value, so the two are
/// within 2 · γ(n + 4) · M of each other. Σ|W·x| is the same convolution on |W| and |x|, in float64. (As in
/// <see cref="ConvolutionOracleTests"/>, this holds for convolutions that multiply and add directly, which the run
/// settings keep oneDNN to.) float64 is held to 1e-12 · M, far above its own rounding (about n · 2⁻⁵³ · M), and far
/// below any wrong term.
/// </remarks>
[TestFixture]
public class ConvBatchNormFoldingTests
{
    /// <summary>A Conv2d's arguments, to build the conv under test and its float64 twin on |W|.</summary>
    public sealed record Geometry(
        string Name, long In, long Out, (long, long) Kernel, (long, long) Stride, (long, long) Padding, Padding? Type, (long, long) Dilation, long Groups, PaddingModes Mode)
    {
        /// <summary>Products per output element.</summary>
        public long Terms => In / Groups * Kernel.Item1 * Kernel.Item2;

        public Conv2d Create(bool bias, ScalarType dtype) => Type is { } type
            ? nn.Conv2d(In, Out, Kernel, type, Stride, Dilation, Mode, Groups, bias, dtype: dtype)
            : nn.Conv2d(In, Out, Kernel, Stride, Padding, Dilation, Mode, Groups, bias, dtype: dtype);

        public override string ToString() => Name;
    }

    private static readonly Geometry[] Geometries =
    [
        new("3x3", 4, 6, (3, 3), (1, 1), (1, 1), null, (1, 1), 1, PaddingModes.Zeros),
        new("3x2 stride (2,1)", 4, 6, (3, 2), (2, 1), (1, 0), null, (1, 1), 1, PaddingModes.Zeros),
        new("dilation 2", 4, 8, (3, 3), (1, 1), (2, 2), null, (2, 2), 1, PaddingModes.Zeros),
        new("groups 2", 4, 6, (3, 3), (1, 1), (1, 1), null, (1, 1), 2, PaddingModes.Zeros),
        new("depthwise", 6, 6, (3, 3), (1, 1), (1, 1), null, (1, 1), 6, PaddingModes.Zeros),
        new("same, dilation (2,1)", 4, 6, (3, 3), (1, 1), (0, 0), Padding.Same, (2, 1), 1, PaddingModes.Zeros),
        new("reflect", 4, 6, (3, 3), (1, 1), (1, 1), null, (1, 1), 1, PaddingModes.Reflect),
        new("1x1", 8, 4, (1, 1), (1, 1), (0, 0), null, (1, 1), 1, PaddingModes.Zeros),
    ];

    private static readonly Geometry Plain = Geometries[0];

    private static IEnumerable<TestCaseData> FoldCases()
    {
        int seed = 0;
        foreach (var geometry in Geometries)
        {
            foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float64 })
            {
                foreach (bool convBias in new[] { true, false })
                {
                    foreach (bool affine in new[] { true, false })
                    {
                        foreach (bool ours in new[] { true, false })
                        {
                            yield return new TestCaseData(geometry, dtype, convBias, affine, ours, seed++);
                        }
                    }
                }
            }
        }
    }

    [TestCaseSource(nameof(FoldCases))]
    public void Fold_MatchesConvThenBatchNorm_WithinRounding_AndKeepsTheConvsArguments(
        Geometry geometry, ScalarType dtype, bool convBias, bool affine, bool ours, int seed)
    {
        using var scope = NewDisposeScope();
        manual_seed(1000 + seed);
        var conv = geometry.Create(convBias, dtype);
        var bn = Randomised(NewBatchNorm2d(ours, geometry.Out, affine, dtype));
        conv.eval();
        bn.eval();
        var x = randn([3, geometry.In, 9, 8], dtype);
        var expected = bn.forward(conv.forward(x));

        var fused = layers.fuse_conv_bn_eval(conv, bn);
        var actual = fused.forward(x);

        AssertWithinRounding(actual, expected, PairMagnitude(geometry, conv, bn, x), geometry.Terms, "folded conv vs conv then BatchNorm2d");
        AssertSameArguments(fused, conv);
    }

    [TestCase(true, ScalarType.Float32)]
    [TestCase(false, ScalarType.Float32)]
    [TestCase(true, ScalarType.Float64)]
    [TestCase(false, ScalarType.Float64)]
    public void Fold_AfterTrainingSteps_MatchesConvThenBatchNorm(bool ours, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        var geometry = Geometries[3];
        var conv = geometry.Create(bias: true, dtype);
        var bn = NewBatchNorm2d(ours, geometry.Out, affine: true, dtype);
        using (no_grad())
        {
            bn.weight!.uniform_(-1.5, 1.5);
            bn.bias!.uniform_(-1, 1);
        }

        // Running statistics from real batches: shifted and scaled conv outputs, as a trained network's would be.
        for (int step = 0; step < 4; step++)
        {
            bn.forward(conv.forward(randn([8, geometry.In, 6, 6], dtype)).Times(0.3 + step).Plus(step - 1.5));
        }

        Assert.That(bn.running_mean!.abs().max().to(ScalarType.Float64).item<double>(), Is.GreaterThan(0.1), "the running mean moved from zero");
        conv.eval();
        bn.eval();
        var x = randn([3, geometry.In, 7, 7], dtype);
        var expected = bn.forward(conv.forward(x));
        var actual = layers.fuse_conv_bn_eval(conv, bn).forward(x);
        AssertWithinRounding(actual, expected, PairMagnitude(geometry, conv, bn, x), geometry.Terms, "after training steps");
    }

    [TestCase(true, true)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(false, false)]
    public void Fold_LeavesConvAndBatchNormBitIdentical_AndSharesNoMemoryWithThem(bool ours, bool convBias)
    {
        using var scope = NewDisposeScope();
        manual_seed(22);
        var conv = Plain.Create(convBias, ScalarType.Float32);
        var bn = Randomised(NewBatchNorm2d(ours, Plain.Out, affine: true, ScalarType.Float32));
        conv.eval();
        bn.eval();
        using var convBefore = Snapshot.Of(conv);
        using var bnBefore = Snapshot.Of(bn);

        var fused = layers.fuse_conv_bn_eval(conv, bn);
        convBefore.AssertUnchanged();
        bnBefore.AssertUnchanged();
        Assert.That((conv.training, bn.training), Is.EqualTo((false, false)), "modes");

        // Writing the new parameters reaches nothing of the inputs'.
        using (no_grad())
        {
            fused.weight.fill_(7);
            fused.bias!.fill_(7);
        }

        convBefore.AssertUnchanged();
        bnBefore.AssertUnchanged();
    }

    [Test]
    public void Fold_DrawsNothingFromTheDefaultGenerator()
    {
        using var scope = NewDisposeScope();
        manual_seed(23);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        var bn = Randomised(NewBatchNorm2d(ours: true, Plain.Out, affine: true, ScalarType.Float32));
        bn.eval();

        manual_seed(24);
        layers.fuse_conv_bn_eval(conv, bn);
        var after = rand(16);
        manual_seed(24);
        var untouched = rand(16);
        Assert.That(BitIdentical(after, untouched), Is.True, "the draws after folding are those of an untouched generator");
    }

    [TestCase(true, true)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(false, false)]
    public void Fold_ParametersRequireGradAsTheConvs(bool requiresGrad, bool convBias)
    {
        using var scope = NewDisposeScope();
        manual_seed(25);
        var conv = Plain.Create(convBias, ScalarType.Float32);
        conv.weight.requires_grad_(requiresGrad);
        conv.bias?.requires_grad_(!requiresGrad); // the bias's own flag, where there is a bias
        var bn = Randomised(NewBatchNorm2d(ours: false, Plain.Out, affine: true, ScalarType.Float32));
        bn.eval();

        var fused = layers.fuse_conv_bn_eval(conv, bn);
        Assert.That(fused.weight.requires_grad, Is.EqualTo(requiresGrad), "weight");
        Assert.That(fused.bias!.requires_grad, Is.EqualTo(convBias ? !requiresGrad : requiresGrad), "bias: the conv's bias's, or its weight's without one");
        Assert.That(fused.weight.is_leaf && fused.bias.is_leaf, Is.True, "no graph back to the inputs");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Fold_ConvInTrainingMode_IsAccepted_AndTheResultIsInTrainingMode(bool ours)
    {
        using var scope = NewDisposeScope();
        manual_seed(26);
        var conv = Plain.Create(bias: true, ScalarType.Float64);
        var bn = Randomised(NewBatchNorm2d(ours, Plain.Out, affine: true, ScalarType.Float64));
        conv.train();
        bn.eval();
        var x = randn([2, Plain.In, 6, 6], ScalarType.Float64);
        var expected = bn.forward(conv.forward(x));

        var fused = layers.fuse_conv_bn_eval(conv, bn);
        Assert.That(fused.training, Is.True);
        AssertWithinRounding(fused.forward(x), expected, PairMagnitude(Plain, conv, bn, x), Plain.Terms, "conv in training mode");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Fold_BatchNormInTrainingMode_Throws_AskingForEval_AndChangesNothing(bool ours)
    {
        using var scope = NewDisposeScope();
        manual_seed(27);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        conv.eval();
        var bn = Randomised(NewBatchNorm2d(ours, Plain.Out, affine: true, ScalarType.Float32));
        bn.train();
        AssertRefused<ArgumentException>(conv, bn, "training mode", ".eval()");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Fold_BatchNormWithoutRunningStatistics_Throws_AndChangesNothing(bool ours)
    {
        using var scope = NewDisposeScope();
        manual_seed(28);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        conv.eval();
        BatchNorm bn = ours
            ? layers.BatchNorm2d(Plain.Out, track_running_stats: false)
            : nn.BatchNorm2d(Plain.Out, track_running_stats: false);
        using (no_grad())
        {
            bn.weight!.uniform_(0.5, 1.5);
        }

        bn.eval();
        AssertRefused<ArgumentException>(conv, bn, "no running statistics");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Fold_NumFeaturesOtherThanOutChannels_Throws_AndChangesNothing(bool ours)
    {
        using var scope = NewDisposeScope();
        manual_seed(29);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        var bn = Randomised(NewBatchNorm2d(ours, Plain.Out + 1, affine: true, ScalarType.Float32));
        bn.eval();
        AssertRefused<ArgumentException>(conv, bn, $"num_features {Plain.Out + 1} but the Conv2d has out_channels {Plain.Out}");
    }

    [TestCase("ours 1d")]
    [TestCase("ours 3d")]
    [TestCase("TorchSharp's 1d")]
    [TestCase("TorchSharp's 3d")]
    public void Fold_BatchNormOfAnotherRank_Throws_AndChangesNothing(string which)
    {
        using var scope = NewDisposeScope();
        manual_seed(30);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        BatchNorm bn = which switch
        {
            "ours 1d" => layers.BatchNorm1d(Plain.Out),
            "ours 3d" => layers.BatchNorm3d(Plain.Out),
            "TorchSharp's 1d" => nn.BatchNorm1d(Plain.Out),
            _ => nn.BatchNorm3d(Plain.Out),
        };
        Randomised(bn).eval();
        AssertRefused<ArgumentException>(conv, bn, "only TorchSharp's nn.BatchNorm2d and MyTorch.Layers.BatchNorm2d");
    }

    [TestCase(true, ScalarType.Float64, ScalarType.Float32)]
    [TestCase(false, ScalarType.Float64, ScalarType.Float32)]
    [TestCase(true, ScalarType.Float32, ScalarType.Float64)]
    [TestCase(false, ScalarType.Float32, ScalarType.Float64)]
    public void Fold_DtypesThatDiffer_Throw_AndChangeNothing(bool ours, ScalarType convDtype, ScalarType bnDtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(31);
        var conv = Plain.Create(bias: true, convDtype);
        var bn = Randomised(NewBatchNorm2d(ours, Plain.Out, affine: true, bnDtype));
        bn.eval();
        AssertRefused<ArgumentException>(conv, bn, $"has dtype {bnDtype} but the Conv2d's weight has dtype {convDtype}");
    }

    [Test]
    public void Fold_NullArguments_Throw_ArgumentNullException()
    {
        using var scope = NewDisposeScope();
        manual_seed(32);
        var conv = Plain.Create(bias: true, ScalarType.Float32);
        var bn = Randomised(NewBatchNorm2d(ours: true, Plain.Out, affine: true, ScalarType.Float32));
        bn.eval();
        using var convBefore = Snapshot.Of(conv);
        using var bnBefore = Snapshot.Of(bn);
        Assert.That(Assert.Throws<ArgumentNullException>(() => layers.fuse_conv_bn_eval(null!, bn))!.ParamName, Is.EqualTo("conv"));
        Assert.That(Assert.Throws<ArgumentNullException>(() => layers.fuse_conv_bn_eval(conv, null!))!.ParamName, Is.EqualTo("bn"));
        Assert.That(Assert.Throws<ArgumentNullException>(() => layers.fuse_conv_bn_eval((Sequential)null!))!.ParamName, Is.EqualTo("model"));
        convBefore.AssertUnchanged();
        bnBefore.AssertUnchanged();
    }

    // The Sequential form, on conv → bn → relu → conv (no bias) → bn → max-pool → conv (no BatchNorm after it).
    private static readonly Geometry First = new("conv1", 3, 8, (3, 3), (1, 1), (1, 1), null, (1, 1), 1, PaddingModes.Zeros);
    private static readonly Geometry Second = new("conv2", 8, 8, (3, 3), (1, 1), (1, 1), null, (1, 1), 1, PaddingModes.Zeros);
    private static readonly Geometry Third = new("conv3", 8, 4, (3, 3), (1, 1), (1, 1), null, (1, 1), 1, PaddingModes.Zeros);
    private static readonly string[] ModelNames = ["conv1", "bn1", "relu", "conv2", "bn2", "pool", "conv3"];

    private static Sequential Model(bool ours, ScalarType dtype)
    {
        var model = nn.Sequential(
            ("conv1", First.Create(bias: true, dtype)),
            ("bn1", Randomised(NewBatchNorm2d(ours, First.Out, affine: true, dtype))),
            ("relu", nn.ReLU()),
            ("conv2", Second.Create(bias: false, dtype)),
            ("bn2", Randomised(NewBatchNorm2d(ours, Second.Out, affine: true, dtype))),
            ("pool", nn.MaxPool2d(2)),
            ("conv3", Third.Create(bias: true, dtype)));
        model.eval();
        return model;
    }

    [TestCase(true, ScalarType.Float32)]
    [TestCase(false, ScalarType.Float32)]
    [TestCase(true, ScalarType.Float64)]
    [TestCase(false, ScalarType.Float64)]
    public void Sequential_MatchesTheUnfusedModel_KeepsNamesAndTheOtherChildren_AndLeavesTheModel(bool ours, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(40);
        var model = Model(ours, dtype);
        var x = randn([4, 3, 10, 10], dtype);
        var expected = model.forward(x);
        var before = model.named_children().ToList();
        using var snapshot = Snapshot.Of(model);

        var fused = layers.fuse_conv_bn_eval(model);
        var actual = fused.forward(x);

        var after = fused.named_children().ToList();
        Assert.That(after.Select(c => c.name), Is.EqualTo(ModelNames), "child names, in order");
        foreach (int i in new[] { 2, 5, 6 })
        {
            Assert.That(after[i].module, Is.SameAs(before[i].module), $"{ModelNames[i]} is the model's own module");
        }

        foreach (int i in new[] { 0, 3 })
        {
            Assert.That(after[i].module, Is.InstanceOf<Conv2d>().And.Not.SameAs(before[i].module), $"{ModelNames[i]} is a new conv");
        }

        Assert.That(after[1].module, Is.InstanceOf<Identity>(), "bn1");
        Assert.That(after[4].module, Is.InstanceOf<Identity>(), "bn2");
        Assert.That(fused.training, Is.False, "the model's flag");

        // The original still holds its own children, unchanged, and computes what it did.
        Assert.That(model.named_children().Select(c => c.module), Is.EqualTo(before.Select(c => c.module)).Using<nn.Module>(ReferenceEquals));
        snapshot.AssertUnchanged();
        Assert.That(BitIdentical(model.forward(x), expected), Is.True, "the original model's output");

        AssertWithinRounding(actual, expected, ModelBound(model, x), "folded model vs the model");
    }

    [Test]
    public void Sequential_BatchNormsNotDirectlyAfterAConv_StayInPlace()
    {
        using var scope = NewDisposeScope();
        manual_seed(41);
        var model = nn.Sequential(
            ("bn0", Randomised(NewBatchNorm2d(ours: true, Plain.In, affine: true, ScalarType.Float32))),
            ("conv", Plain.Create(bias: true, ScalarType.Float32)),
            ("relu", nn.ReLU()),
            ("bn1", Randomised(NewBatchNorm2d(ours: false, Plain.Out, affine: true, ScalarType.Float32))),
            ("pool", nn.MaxPool2d(2)));
        model.eval();
        var x = randn([2, Plain.In, 6, 6]);
        var before = model.named_children().ToList();

        var fused = layers.fuse_conv_bn_eval(model);
        var after = fused.named_children().ToList();
        Assert.That(after.Select(c => c.name), Is.EqualTo(before.Select(c => c.name)));
        Assert.That(after.Select(c => c.module), Is.EqualTo(before.Select(c => c.module)).Using<nn.Module>(ReferenceEquals), "every child is the model's own");
        Assert.That(BitIdentical(fused.forward(x), model.forward(x)), Is.True, "nothing folded: the same output, bit for bit");
    }

    [Test]
    public void Sequential_BatchNormInTrainingMode_NotAfterAConv_IsNotRefused_AndThePairIsFolded()
    {
        using var scope = NewDisposeScope();
        manual_seed(42);
        var lead = Randomised(NewBatchNorm2d(ours: true, Plain.In, affine: true, ScalarType.Float64));
        var conv = Plain.Create(bias: true, ScalarType.Float64);
        var bn = Randomised(NewBatchNorm2d(ours: false, Plain.Out, affine: true, ScalarType.Float64));
        var model = nn.Sequential(("lead", lead), ("conv", conv), ("bn", bn));
        model.eval();
        lead.train();

        var fused = layers.fuse_conv_bn_eval(model);
        var children = fused.named_children().ToList();
        Assert.That(children[0].module, Is.SameAs(lead));
        Assert.That(lead.training, Is.True, "lead is left in training mode");
        var folded = (Conv2d)children[1].module;
        var direct = layers.fuse_conv_bn_eval(conv, bn);
        Assert.That(BitIdentical(folded.weight, direct.weight) && BitIdentical(folded.bias!, direct.bias!), Is.True, "the pair's fold is the pair form's, bit for bit");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void Sequential_BatchNormInTrainingMode_AfterAConv_Throws_NamingThePair_AndChangesNothing(bool wholeModelInTraining)
    {
        using var scope = NewDisposeScope();
        manual_seed(43);
        var model = Model(ours: true, ScalarType.Float32);
        if (wholeModelInTraining)
        {
            model.train();
        }
        else
        {
            ((nn.Module)model.named_children().Single(c => c.name == "bn2").module).train();
        }

        var before = model.named_children().ToList();
        var modes = before.Select(c => c.module.training).ToList();
        using var snapshot = Snapshot.Of(model);
        string pair = wholeModelInTraining ? "'conv1' and 'bn1'" : "'conv2' and 'bn2'";

        var thrown = Assert.Throws<ArgumentException>(() => layers.fuse_conv_bn_eval(model));
        Assert.That(thrown!.Message, Does.Contain($"Cannot fold {pair}").And.Contain(".eval()"));
        Assert.That(thrown.ParamName, Is.EqualTo("model"));
        snapshot.AssertUnchanged();
        Assert.That(model.named_children().Select(c => c.module), Is.EqualTo(before.Select(c => c.module)).Using<nn.Module>(ReferenceEquals));
        Assert.That(model.named_children().Select(c => c.module.training), Is.EqualTo(modes), "modes");
    }

    [Test]
    public void Sequential_FlaggedTrainingButBuiltFromEvalModules_Folds_AndKeepsEveryFlag()
    {
        using var scope = NewDisposeScope();
        manual_seed(44);
        var conv = Plain.Create(bias: false, ScalarType.Float64);
        var bn = Randomised(NewBatchNorm2d(ours: true, Plain.Out, affine: true, ScalarType.Float64));
        var drop = nn.Dropout2d(0.5);
        conv.eval();
        bn.eval();
        drop.eval();

        // nn.Sequential reports training whatever its children's modes.
        var model = nn.Sequential(("conv", conv), ("bn", bn), ("drop", drop));
        Assert.That(model.training, Is.True);

        var fused = layers.fuse_conv_bn_eval(model);
        Assert.That(fused.training, Is.True, "the model's flag is carried over");
        Assert.That(drop.training, Is.False, "and reaches no child");
        var children = fused.named_children().ToList();
        Assert.That(children.Select(c => c.module.training), Is.EqualTo(new[] { false, false, false }));
        var direct = layers.fuse_conv_bn_eval(conv, bn);
        var folded = (Conv2d)children[0].module;
        Assert.That(BitIdentical(folded.weight, direct.weight) && BitIdentical(folded.bias!, direct.bias!), Is.True, "the pair's fold is the pair form's, bit for bit");
    }

    /// <summary>Same shape, dtype and bytes.</summary>
    private static bool BitIdentical(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape))
        {
            return false;
        }

        using var ca = a.detach().contiguous();
        using var cb = b.detach().contiguous();
        return ca.bytes.ToArray().SequenceEqual(cb.bytes.ToArray());
    }

    /// <summary>Ours or TorchSharp's BatchNorm2d.</summary>
    private static BatchNorm NewBatchNorm2d(bool ours, long channels, bool affine, ScalarType dtype) => ours
        ? layers.BatchNorm2d(channels, affine: affine, dtype: dtype)
        : nn.BatchNorm2d(channels, affine: affine, dtype: dtype);

    /// <summary>
    /// Running statistics far from their defaults, variances from 0.05 (where a forgotten eps of 1e-3 shows) to 2,
    /// γ of both signs, β in [−1, 1], and eps 1e-3.
    /// </summary>
    private static T Randomised<T>(T bn)
        where T : BatchNorm
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long c = bn.num_features;
        var dtype = bn.running_mean!.dtype;
        bn.running_mean.copy_(rand(c, dtype).Times(3.0).Minus(1.5));
        bn.running_var!.copy_(rand(c, dtype).Times(1.95).Plus(0.05));
        if (bn.weight is { } gamma)
        {
            gamma.copy_(rand(c, dtype).Plus(0.5).mul(randn(c, dtype).sign()));
        }

        bn.bias?.copy_(rand(c, dtype).Times(2.0).Minus(1.0));
        bn.eps = 1e-3;
        return bn;
    }

    /// <summary>The checks of a refusal: the exception type and message, and nothing changed, modes included.</summary>
    private static void AssertRefused<TException>(Conv2d conv, BatchNorm bn, params string[] message)
        where TException : Exception
    {
        using var convBefore = Snapshot.Of(conv);
        using var bnBefore = Snapshot.Of(bn);
        var modes = (conv.training, bn.training);
        var thrown = Assert.Throws<TException>(() => layers.fuse_conv_bn_eval(conv, bn));
        foreach (string part in message)
        {
            Assert.That(thrown!.Message, Does.Contain(part));
        }

        convBefore.AssertUnchanged();
        bnBefore.AssertUnchanged();
        Assert.That((conv.training, bn.training), Is.EqualTo(modes), "modes");
    }

    private static void AssertSameArguments(Conv2d fused, Conv2d conv)
    {
        Assert.That(fused.in_channels, Is.EqualTo(conv.in_channels), "in_channels");
        Assert.That(fused.out_channels, Is.EqualTo(conv.out_channels), "out_channels");
        Assert.That(fused.kernel_size, Is.EqualTo(conv.kernel_size), "kernel_size");
        Assert.That(fused.stride, Is.EqualTo(conv.stride), "stride");
        Assert.That(fused.padding, Is.EqualTo(conv.padding), "padding");
        Assert.That(fused.padding_type, Is.EqualTo(conv.padding_type), "padding_type");
        Assert.That(fused.dilation, Is.EqualTo(conv.dilation), "dilation");
        Assert.That(fused.groups, Is.EqualTo(conv.groups), "groups");
        Assert.That(fused.padding_mode, Is.EqualTo(conv.padding_mode), "padding_mode");
        Assert.That(fused.training, Is.EqualTo(conv.training), "training");
        Assert.That(fused.weight.shape, Is.EqualTo(conv.weight.shape), "weight shape");
        Assert.That(fused.bias, Is.Not.Null, "a bias, always");
        foreach (var (name, p) in fused.named_parameters())
        {
            Assert.That(p.dtype, Is.EqualTo(conv.weight.dtype), $"{name} dtype");
            Assert.That(p.device_type, Is.EqualTo(conv.weight.device_type), $"{name} device");
        }
    }

    /// <summary>M = |s| · (Σ|W·x| + |b| + |running_mean|) + |β| per output element, in float64 (see the remarks).</summary>
    private static Tensor PairMagnitude(Geometry geometry, Conv2d conv, BatchNorm bn, Tensor x) =>
        StageMagnitude(geometry, conv, bn, x.to(ScalarType.Float64).abs());

    /// <summary><see cref="PairMagnitude"/> on an input already made non-negative, |x| or a bound on it.</summary>
    private static Tensor StageMagnitude(Geometry geometry, Conv2d conv, BatchNorm bn, Tensor absoluteInput)
    {
        var (scale, mean, beta) = PerChannel(bn);
        var sum = AbsoluteConv(geometry, conv, absoluteInput);
        if (conv.bias is { } b)
        {
            sum = sum.Plus(b.detach().to(ScalarType.Float64).abs().view(1, -1, 1, 1));
        }

        return sum.Plus(mean.abs().view(1, -1, 1, 1)).mul(scale.abs().view(1, -1, 1, 1)).Plus(beta.abs().view(1, -1, 1, 1));
    }

    /// <summary>s, running_mean and β of a BatchNorm in float64 (s = γ / sqrt(running_var + eps), γ = 1 and β = 0 without affine).</summary>
    private static (Tensor Scale, Tensor Mean, Tensor Beta) PerChannel(BatchNorm bn)
    {
        var deviation = bn.running_var!.detach().to(ScalarType.Float64).Plus(bn.eps).sqrt();
        var scale = bn.weight is { } gamma ? gamma.detach().to(ScalarType.Float64).div(deviation) : deviation.reciprocal();
        var beta = bn.bias is { } b ? b.detach().to(ScalarType.Float64) : zeros_like(scale);
        return (scale, bn.running_mean!.detach().to(ScalarType.Float64), beta);
    }

    /// <summary>Σ|W|·t: the conv's geometry and padding mode, on |W| in float64, without bias.</summary>
    private static Tensor AbsoluteConv(Geometry geometry, Conv2d conv, Tensor nonNegative)
    {
        var twin = geometry.Create(bias: false, ScalarType.Float64);
        twin.weight = new Parameter(conv.weight.detach().to(ScalarType.Float64).abs(), requires_grad: false);
        return twin.forward(nonNegative);
    }

    /// <summary>
    /// The allowance per unit of magnitude for two computations of <paramref name="roundings"/> roundings each:
    /// 2·γ(k) in float32, 1e-12 in float64.
    /// </summary>
    private static double Allowance(ScalarType dtype, long roundings)
    {
        if (dtype == ScalarType.Float64)
        {
            return 1e-12;
        }

        double nu = roundings * Math.Pow(2, -24);
        return 2 * nu / (1 - nu);
    }

    /// <summary>A pair of n products: n + 4 roundings on each side (see the class remarks).</summary>
    private static void AssertWithinRounding(Tensor actual, Tensor expected, Tensor magnitude, long terms, string what) =>
        AssertWithinRounding(actual, expected, magnitude.Times(Allowance(expected.dtype, terms + 4)), what);

    /// <summary>|actual − expected| ≤ bound element by element; the largest share of the bound used goes to the test output.</summary>
    private static void AssertWithinRounding(Tensor actual, Tensor expected, Tensor bound, string what)
    {
        Assert.That(actual.dtype, Is.EqualTo(expected.dtype), $"{what}: dtype");
        Assert.That(actual.shape, Is.EqualTo(expected.shape), $"{what}: shape");
        using var scope = NewDisposeScope();
        var diff = actual.to(ScalarType.Float64).sub(expected.to(ScalarType.Float64)).abs();
        var share = diff.div(bound);
        double worst = share.max().item<double>();
        long at = share.argmax().item<long>();
        string report = string.Create(
            CultureInfo.InvariantCulture,
            $"{what} ({expected.dtype}): largest |diff| {diff.max().item<double>():G3}, largest share of the bound {worst:G3} " +
            $"(|diff| {diff.flatten()[at].item<double>():G3} vs bound {bound.flatten()[at].item<double>():G3})");
        TestContext.Out.WriteLine(report);
        Assert.That(worst, Is.LessThanOrEqualTo(1.0), report);
        Assert.That(diff.isfinite().all().item<bool>(), Is.True, $"{what}: finite");
    }

    /// <summary>
    /// The bound on |folded model − model| for <see cref="Model"/>, carried through its stages in float64 (see the class
    /// remarks for one pair): the first pair's output differs by at most E₁ = A·M₁; ReLU takes no difference further
    /// apart; the second pair, fed inputs E₁ apart, differs by |s₂|·Σ|W₂|·E₁ from that and by A·M₂ from its own rounding
    /// (M₂ on |input| + E₁); max-pool takes no difference further apart than the largest in its window; the last conv is
    /// the same module on both sides, so Σ|W₃|·E plus its own rounding on each side, 2·γ(n₃ + 1)·(Σ|W₃|·(|input| + E) + |b₃|)
    /// in float32, 1e-12 times that magnitude in float64.
    /// </summary>
    private static Tensor ModelBound(Sequential model, Tensor x)
    {
        var modules = model.named_children().Select(c => c.module).ToList();
        var conv1 = (Conv2d)modules[0];
        var bn1 = (BatchNorm)modules[1];
        var conv2 = (Conv2d)modules[3];
        var bn2 = (BatchNorm)modules[4];
        var conv3 = (Conv2d)modules[6];
        var dtype = x.dtype;

        // The unfused model's own intermediate values, for the magnitudes.
        var relu = ((nn.Module<Tensor, Tensor>)modules[2]).forward(bn1.forward(conv1.forward(x)));
        var pooled = ((nn.Module<Tensor, Tensor>)modules[5]).forward(bn2.forward(conv2.forward(relu)));

        var e1 = PairMagnitude(First, conv1, bn1, x).Times(Allowance(dtype, First.Terms + 4));
        var (scale2, _, _) = PerChannel(bn2);
        var carried = AbsoluteConv(Second, conv2, e1).mul(scale2.abs().view(1, -1, 1, 1));
        var own2 = StageMagnitude(Second, conv2, bn2, relu.to(ScalarType.Float64).abs().Plus(e1)).Times(Allowance(dtype, Second.Terms + 4));
        var e2 = carried.Plus(own2);
        var e3 = nn.functional.max_pool2d(e2, 2);
        var reach = AbsoluteConv(Third, conv3, pooled.to(ScalarType.Float64).abs().Plus(e3))
            .Plus(conv3.bias!.detach().to(ScalarType.Float64).abs().view(1, -1, 1, 1));

        // The last conv has no BatchNorm: n₃ products and its bias.
        return AbsoluteConv(Third, conv3, e3).Plus(reach.Times(Allowance(dtype, Third.Terms + 1)));
    }
}

