using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>Memory layout of a 4-D tensor.</summary>
public enum Layout
{
    /// <summary>Contiguous (N, C, H, W).</summary>
    Nchw,

    /// <summary>Channels-last: (N, C, H, W) sizes over (N, H, W, C) memory.</summary>
    ChannelsLast,

    /// <summary>
    /// A channels-last input whose output gradient is contiguous NCHW, as when what follows the layer (a reshape, a
    /// loss) hands back a contiguous gradient.
    /// </summary>
    ChannelsLastNchwGradient,
}

/// <summary>
/// One benchmark parameter: the input's shape, memory layout and dtype. Ordered as the lists below give them (shape,
/// then layout, then dtype), which is the order BenchmarkDotNet's tables and the summary show.
/// </summary>
public sealed record TensorCase(long N, long C, long H, long W, Layout Layout, ScalarType Dtype) : IComparable<TensorCase>, IComparable
{
    /// <summary>The shapes every benchmark runs on: a ResNet early layer, mid layers, a late layer, an RGB batch, a small-map wide layer.</summary>
    public static readonly IReadOnlyList<long[]> Shapes =
    [
        [32, 64, 56, 56],
        [128, 32, 32, 32],
        [32, 256, 14, 14],
        [8, 3, 224, 224],
        [256, 512, 4, 4],
    ];

    public long[] Shape => [N, C, H, W];

    public long Elements => N * C * H * W;

    public long Bytes => Elements * (Dtype == ScalarType.Float64 ? 8 : 4);

    public string ShapeText => string.Join('×', Shape.Select(s => s.ToString(CultureInfo.InvariantCulture)));

    public string LayoutText => Layout switch
    {
        Layout.Nchw => "NCHW",
        Layout.ChannelsLast => "channels-last",
        _ => "channels-last, NCHW dy",
    };

    /// <summary>The case whose copy is this case's roofline: the input's bytes in the input's layout.</summary>
    public TensorCase CopyCase => Layout == Layout.ChannelsLastNchwGradient ? this with { Layout = Layout.ChannelsLast } : this;

    public string DtypeText => Dtype == ScalarType.Float64 ? "float64" : "float32";

    /// <summary>float32 NCHW on every shape.</summary>
    public static IEnumerable<TensorCase> Float32Nchw() => Of(Layout.Nchw, ScalarType.Float32);

    /// <summary>
    /// float32 NCHW, channels-last and channels-last with an NCHW output gradient, then float64 NCHW (to set beside
    /// the float32 time), on every shape: the combinations where BatchNorm2d's training step matters.
    /// </summary>
    public static IEnumerable<TensorCase> TrainingStep() =>
        Of(Layout.Nchw, ScalarType.Float32)
            .Concat(Of(Layout.ChannelsLast, ScalarType.Float32))
            .Concat(Of(Layout.ChannelsLastNchwGradient, ScalarType.Float32))
            .Concat(Of(Layout.Nchw, ScalarType.Float64));

    /// <summary>A random input of this case's shape, dtype and layout.</summary>
    public Tensor RandomInput()
    {
        var x = randn(Shape, Dtype);
        return Layout == Layout.Nchw ? x : InLayout(x);
    }

    /// <summary>A random output gradient: in this case's layout, or contiguous NCHW for <see cref="Layout.ChannelsLastNchwGradient"/>.</summary>
    public Tensor RandomGradOutput() => Layout == Layout.ChannelsLastNchwGradient ? randn(Shape, Dtype) : RandomInput();

    /// <summary><paramref name="x"/> (NCHW) rewritten in this case's layout (channels-last for both channels-last cases).</summary>
    public Tensor InLayout(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        return Layout == Layout.Nchw
            ? x.contiguous()
            : x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);
    }

    /// <summary>Shown in BenchmarkDotNet's tables.</summary>
    public override string ToString() => $"{ShapeText} {LayoutText} {DtypeText}";

    public static bool operator <(TensorCase? left, TensorCase? right) => Compare(left, right) < 0;

    public static bool operator <=(TensorCase? left, TensorCase? right) => Compare(left, right) <= 0;

    public static bool operator >(TensorCase? left, TensorCase? right) => Compare(left, right) > 0;

    public static bool operator >=(TensorCase? left, TensorCase? right) => Compare(left, right) >= 0;

    public int CompareTo(TensorCase? other) => Compare(this, other);

    public int CompareTo(object? obj) => obj is null or TensorCase
        ? Compare(this, (TensorCase?)obj)
        : throw new ArgumentException($"Cannot compare a {nameof(TensorCase)} with a {obj.GetType().Name}.", nameof(obj));

    /// <summary>Where the case stands in the lists above: shapes in their order, then layout, then dtype.</summary>
    public int Order()
    {
        int shape = 0;
        while (shape < Shapes.Count && !Shapes[shape].AsSpan().SequenceEqual(Shape))
        {
            shape++;
        }

        return (((shape * 3) + (int)Layout) * 2) + (Dtype == ScalarType.Float64 ? 1 : 0);
    }

    private static int Compare(TensorCase? left, TensorCase? right) =>
        left is null ? (right is null ? 0 : -1)
        : right is null ? 1
        : left.Order().CompareTo(right.Order());

    private static IEnumerable<TensorCase> Of(Layout layout, ScalarType dtype) =>
        Shapes.Select(s => new TensorCase(s[0], s[1], s[2], s[3], layout, dtype));
}
