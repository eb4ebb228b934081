using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using static TorchSharp.torch;

namespace MyTorch.Layers.Benchmarks;

/// <summary>Memory layout of a tensor.</summary>
public enum Layout
{
    /// <summary>Contiguous: (N, C, H, W) in that order, whatever the rank.</summary>
    Nchw,

    /// <summary>Channels-last: (N, C, H, W) sizes over (N, H, W, C) memory (channels-last-3d for 5-D).</summary>
    ChannelsLast,

    /// <summary>
    /// A channels-last input whose output gradient is contiguous NCHW, as when what follows the layer (a reshape, a
    /// loss) hands back a contiguous gradient.
    /// </summary>
    ChannelsLastNchwGradient,
}

/// <summary>
/// One benchmark parameter: the input's shape (rank 2 to 5), memory layout and dtype. Ordered as the lists below give
/// them (shape, then layout, then dtype), which is the order BenchmarkDotNet's tables and the summary show.
/// </summary>
public sealed class TensorCase : IEquatable<TensorCase>, IComparable<TensorCase>, IComparable
{
    private readonly long[] _shape;

    public TensorCase(long[] shape, Layout layout, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(shape);
        _shape = (long[])shape.Clone();
        Layout = layout;
        Dtype = dtype;
    }

    /// <summary>The shapes the 2-d layers run on: a ResNet early layer, mid layers, a late layer, an RGB batch, a small-map wide layer.</summary>
    public static readonly IReadOnlyList<long[]> Shapes =
    [
        [32, 64, 56, 56],
        [128, 32, 32, 32],
        [32, 256, 14, 14],
        [8, 3, 224, 224],
        [256, 512, 4, 4],
    ];

    /// <summary>
    /// The shapes of the other ranks: a tiny (N, C), whose time is the fixed cost of a call; MLP heads (N, C) as
    /// BatchNorm1d takes them; a sequence (N, C, L); a video or volume batch (N, C, D, H, W).
    /// </summary>
    public static readonly IReadOnlyList<long[]> FamilyShapes =
    [
        [16, 64],
        [256, 1024],
        [4096, 512],
        [64, 128, 256],
        [8, 32, 16, 28, 28],
    ];

    public long[] Shape => (long[])_shape.Clone();

    public int Rank => _shape.Length;

    /// <summary>The channel count, dimension 1.</summary>
    public long C => _shape[1];

    public Layout Layout { get; }

    public ScalarType Dtype { get; }

    public long Elements => _shape.Aggregate(1L, (product, size) => product * size);

    public long Bytes => Elements * Dtype switch
    {
        ScalarType.Float64 => 8,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        _ => 4,
    };

    public string ShapeText => string.Join('×', _shape.Select(s => s.ToString(CultureInfo.InvariantCulture)));

    public string LayoutText => Layout switch
    {
        Layout.Nchw => Rank == 4 ? "NCHW" : "contiguous",
        Layout.ChannelsLast => "channels-last",
        _ => "channels-last, NCHW dy",
    };

    /// <summary>The case whose copy is this case's roofline: the input's bytes in the input's layout.</summary>
    public TensorCase CopyCase => Layout == Layout.ChannelsLastNchwGradient ? new TensorCase(_shape, Layout.ChannelsLast, Dtype) : this;

    public string DtypeText => Dtype switch
    {
        ScalarType.Float64 => "float64",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => "float32",
    };

    /// <summary>float32 NCHW on every 4-D shape.</summary>
    public static IEnumerable<TensorCase> Float32Nchw() => Of(Shapes, Layout.Nchw, ScalarType.Float32);

    /// <summary>float32, bfloat16 and float16 NCHW on every 4-D shape, to set the 16-bit times beside the float32 one.</summary>
    public static IEnumerable<TensorCase> HalfPrecisionNchw() =>
        Of(Shapes, Layout.Nchw, ScalarType.Float32)
            .Concat(Of(Shapes, Layout.Nchw, ScalarType.BFloat16))
            .Concat(Of(Shapes, Layout.Nchw, ScalarType.Float16));

    /// <summary>
    /// float32 NCHW on every 4-D shape and 64×16×28×28 (a CNN block on small images), where a BatchNorm2d → ReLU →
    /// Dropout2d block runs; channels-last on the two shapes where our BatchNorm2d's channels-last step is closest to
    /// TorchSharp's, and on two of few channels, whose rows are shorter than a vector.
    /// </summary>
    public static IEnumerable<TensorCase> Block() =>
        Of([.. Shapes, [64, 16, 28, 28]], Layout.Nchw, ScalarType.Float32)
            .Concat(Of([[32, 256, 14, 14], [256, 512, 4, 4], [64, 16, 28, 28], [8, 3, 224, 224]], Layout.ChannelsLast, ScalarType.Float32));

    /// <summary>float32, contiguous, on every shape of the other ranks.</summary>
    public static IEnumerable<TensorCase> Family() => Of(FamilyShapes, Layout.Nchw, ScalarType.Float32);

    /// <summary>
    /// float32 NCHW, channels-last and channels-last with an NCHW output gradient, then float64 NCHW (to set beside
    /// the float32 time), on every 4-D shape: the combinations where BatchNorm2d's training step matters.
    /// </summary>
    public static IEnumerable<TensorCase> TrainingStep() =>
        Of(Shapes, Layout.Nchw, ScalarType.Float32)
            .Concat(Of(Shapes, Layout.ChannelsLast, ScalarType.Float32))
            .Concat(Of(Shapes, Layout.ChannelsLastNchwGradient, ScalarType.Float32))
            .Concat(Of(Shapes, Layout.Nchw, ScalarType.Float64));

    /// <summary>A random input of this case's shape, dtype and layout.</summary>
    public Tensor RandomInput()
    {
        var x = randn(_shape, Dtype);
        return Layout == Layout.Nchw ? x : InLayout(x);
    }

    /// <summary>A random output gradient: in this case's layout, or contiguous NCHW for <see cref="Layout.ChannelsLastNchwGradient"/>.</summary>
    public Tensor RandomGradOutput() => Layout == Layout.ChannelsLastNchwGradient ? randn(_shape, Dtype) : RandomInput();

    /// <summary><paramref name="x"/> (contiguous) rewritten in this case's layout (channels-last for both channels-last cases).</summary>
    public Tensor InLayout(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (Layout == Layout.Nchw)
        {
            return x.contiguous();
        }

        // Channels moved to the last dimension in memory, the sizes left as they are.
        long[] toLast = [0, .. Enumerable.Range(2, Rank - 2).Select(d => (long)d), 1];
        long[] back = [0, Rank - 1, .. Enumerable.Range(1, Rank - 2).Select(d => (long)d)];
        return x.permute(toLast).contiguous().permute(back);
    }

    /// <summary>Shown in BenchmarkDotNet's tables.</summary>
    public override string ToString() => $"{ShapeText} {LayoutText} {DtypeText}";

    public static bool operator <(TensorCase? left, TensorCase? right) => Compare(left, right) < 0;

    public static bool operator <=(TensorCase? left, TensorCase? right) => Compare(left, right) <= 0;

    public static bool operator >(TensorCase? left, TensorCase? right) => Compare(left, right) > 0;

    public static bool operator >=(TensorCase? left, TensorCase? right) => Compare(left, right) >= 0;

    public int CompareTo(TensorCase? other) => Compare(this, other);

    public bool Equals(TensorCase? other) =>
        other is not null && Layout == other.Layout && Dtype == other.Dtype && _shape.AsSpan().SequenceEqual(other._shape);

    public override bool Equals(object? obj) => Equals(obj as TensorCase);

    public override int GetHashCode() => HashCode.Combine(ShapeText, Layout, Dtype);

    public static bool operator ==(TensorCase? left, TensorCase? right) => left is null ? right is null : left.Equals(right);

    public static bool operator !=(TensorCase? left, TensorCase? right) => !(left == right);

    public int CompareTo(object? obj) => obj is null or TensorCase
        ? Compare(this, (TensorCase?)obj)
        : throw new ArgumentException($"Cannot compare a {nameof(TensorCase)} with a {obj.GetType().Name}.", nameof(obj));

    /// <summary>Where the case stands in the lists above: shapes in their order, then layout, then dtype.</summary>
    public int Order()
    {
        var shapes = Shapes.Concat(FamilyShapes).ToList();
        int shape = 0;
        while (shape < shapes.Count && !shapes[shape].AsSpan().SequenceEqual(_shape))
        {
            shape++;
        }

        int dtype = Dtype switch
        {
            ScalarType.Float64 => 1,
            ScalarType.BFloat16 => 2,
            ScalarType.Float16 => 3,
            _ => 0,
        };
        return (((shape * 3) + (int)Layout) * 4) + dtype;
    }

    private static int Compare(TensorCase? left, TensorCase? right) =>
        left is null ? (right is null ? 0 : -1)
        : right is null ? 1
        : left.Order().CompareTo(right.Order());

    private static IEnumerable<TensorCase> Of(IEnumerable<long[]> shapes, Layout layout, ScalarType dtype) =>
        shapes.Select(s => new TensorCase(s, layout, dtype));
}
