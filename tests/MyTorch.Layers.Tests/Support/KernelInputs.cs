using System;
using System.Numerics;

namespace MyTorch.Layers.Tests.Support;

/// <summary>Raw inputs for the kernel tests, from a seeded <see cref="Random"/>.</summary>
internal static class KernelInputs
{
    /// <summary><paramref name="length"/> values drawn uniformly from offset ± scale.</summary>
    public static T[] Uniform<T>(Random random, int length, double scale, double offset)
        where T : IFloatingPoint<T>
    {
        var values = new T[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = T.CreateTruncating((((random.NextDouble() * 2) - 1) * scale) + offset);
        }

        return values;
    }
}
