using System;
using static TorchSharp.torch;

namespace MyTorch.Layers.Examples;

/// <summary>
/// A generated image-classification data set: 28×28 grey images of one of six shapes, each at a random position,
/// size, stroke width and brightness, on a random background with Gaussian noise. Deterministic for a given seed;
/// nothing is downloaded.
/// </summary>
internal sealed class ShapesDataset : IDisposable
{
    public const int Size = 28;

    public static readonly string[] ClassNames = ["disc", "ring", "square", "triangle", "plus", "cross"];

    private ShapesDataset(Tensor images, Tensor labels)
    {
        Images = images;
        Labels = labels;
    }

    /// <summary>(count, 1, 28, 28) float32, roughly zero mean and unit variance.</summary>
    public Tensor Images { get; }

    /// <summary>(count) int64 class indices.</summary>
    public Tensor Labels { get; }

    public long Count => Labels.shape[0];

    public static ShapesDataset Generate(int count, int seed)
    {
        var random = new Random(seed);
        var pixels = new float[count * Size * Size];

        // Classes in a fixed cycle, then shuffled, so that every split is balanced and the order says nothing.
        var labels = new long[count];
        for (int i = 0; i < count; i++)
        {
            labels[i] = i % ClassNames.Length;
        }

        random.Shuffle(labels);
        for (int i = 0; i < count; i++)
        {
            Render((int)labels[i], random, pixels.AsSpan(i * Size * Size, Size * Size));
        }

        var images = tensor(pixels, [count, 1, Size, Size]);
        return new ShapesDataset(images, tensor(labels));
    }

    /// <summary>Training batch <paramref name="step"/> of an epoch that takes the images in the order <paramref name="order"/>.</summary>
    public (Tensor Images, Tensor Labels) Batch(Tensor order, int step, int batchSize)
    {
        using var index = order.slice(0, step * batchSize, (step + 1) * batchSize, 1);
        return (Images.index_select(0, index), Labels.index_select(0, index));
    }

    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }

    private static void Render(int label, Random random, Span<float> image)
    {
        double cx = 9 + (random.NextDouble() * 10);
        double cy = 9 + (random.NextDouble() * 10);
        double r = 5 + (random.NextDouble() * 4);
        double stroke = 1.2 + (random.NextDouble() * 1.3);
        double angle = (random.NextDouble() - 0.5) * 0.6;
        double background = random.NextDouble() * 0.3;
        double foreground = 0.6 + (random.NextDouble() * 0.4);
        double noise = 0.1 + (random.NextDouble() * 0.15);
        double cos = Math.Cos(angle), sin = Math.Sin(angle);
        for (int y = 0; y < Size; y++)
        {
            for (int x = 0; x < Size; x++)
            {
                // Coordinates relative to the centre, rotated by the shape's small random angle.
                double dx = x - cx, dy = y - cy;
                double u = (cos * dx) + (sin * dy);
                double v = (-sin * dx) + (cos * dy);
                bool inside = label switch
                {
                    0 => (u * u) + (v * v) <= r * r,
                    1 => Math.Abs(Math.Sqrt((u * u) + (v * v)) - r) <= stroke,
                    2 => Math.Max(Math.Abs(u), Math.Abs(v)) <= r * 0.85,
                    3 => v <= r * 0.7 && v >= (2 * Math.Abs(u)) - r,
                    4 => (Math.Abs(u) <= stroke && Math.Abs(v) <= r) || (Math.Abs(v) <= stroke && Math.Abs(u) <= r),
                    _ => (Math.Abs(u - v) <= stroke * 1.4 || Math.Abs(u + v) <= stroke * 1.4) && Math.Abs(u) <= r * 0.75 && Math.Abs(v) <= r * 0.75,
                };
                double value = (inside ? foreground : background) + (noise * Gaussian(random));
                image[(y * Size) + x] = (float)((value - 0.35) / 0.35);
            }
        }
    }

    private static double Gaussian(Random random)
    {
        double u1 = 1.0 - random.NextDouble();
        double u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
