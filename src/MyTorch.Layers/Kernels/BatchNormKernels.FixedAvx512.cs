using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Evaluation's channels-last loop (<see cref="FixedPeriodic{T, TStore}"/>) a whole 512-bit vector a step on hardware
/// with AVX-512: 16 float32 or 8 float64 values, each computed in T by the same operations as the
/// <see cref="Vector{T}"/> loop, so the bits are the same.
/// </summary>
/// <remarks>
/// A step loads x and three rows of constants, subtracts, tracks non-finite differences, multiplies-adds and stores,
/// so twice the values per step is nearly half the loop's work; BatchNorm1d's (N, C) rows, read as channels-last
/// planes of one value, gain the most. The NCHW loop keeps 256-bit steps: the same change there was slower on the
/// AVX-512 machine measured (see docs/performance.md).
/// </remarks>
internal static unsafe partial class BatchNormKernels
{
    /// <summary>Whether the fixed-statistics loops take 512-bit steps of <typeparamref name="T"/>.</summary>
    private static bool WideFixed<T>()
        where T : unmanaged => Avx512 && (typeof(T) == typeof(float) || typeof(T) == typeof(double));

    /// <summary>
    /// The whole periods of <see cref="FixedPeriodic{T, TStore}"/>, a 512-bit vector a step, for a period of whole
    /// vectors. Returns how many values it wrote; <paramref name="nonFinite"/> turns non-zero once some x − offset is not finite.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int FixedPeriodicWide<T, TStore>(T* x, T* y, int length, int period, T* offset, T* scale, T* shift, ref Vector512<T> nonFinite)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TStore : struct, IStoreMode
    {
        // A local, not the ref: tracked through the ref, every step would store and reload it, a chain through memory
        // that bounds the loop.
        var tracked = nonFinite;
        int lanes = Vector512<T>.Count;
        int i = 0;
        for (; i <= length - period; i += period)
        {
            for (int k = 0; k < period; k += lanes)
            {
                Prefetch.Ahead(x + i + k, x + length);
                var difference = Vector512.Load(x + i + k) - Vector512.Load(offset + k);
                tracked = TrackNonFinite512(tracked, difference);
                Store512<T, TStore>(FusedMultiplyAdd512(difference, Vector512.Load(scale + k), Vector512.Load(shift + k)), y + i + k);
            }
        }

        nonFinite = tracked;
        return i;
    }

    /// <summary><see cref="TrackNonFinite{T}"/> for 512-bit vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> TrackNonFinite512<T>(Vector512<T> tracked, Vector512<T> difference)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? tracked | (difference - difference) : tracked;

    /// <summary>a · b + c with one rounding, lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> FusedMultiplyAdd512<T>(Vector512<T> a, Vector512<T> b, Vector512<T> c)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return Avx512F.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
        }

        return Avx512F.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
    }

    /// <summary>Stores a 512-bit vector plainly or streaming (then to a 64-byte aligned address).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512<T, TStore>(Vector512<T> value, T* destination)
        where T : unmanaged
        where TStore : struct, IStoreMode
    {
        if (TStore.Rectify)
        {
            value = Vector512.ConditionalSelect(Vector512.LessThan(value, Vector512<T>.Zero), Vector512<T>.Zero, value);
        }

        if (TStore.Streaming)
        {
            Avx512F.StoreAlignedNonTemporal((byte*)destination, value.AsByte());
        }
        else
        {
            value.Store(destination);
        }
    }
}
