using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// The block's backward gate over NCHW planes a whole 512-bit vector a step on hardware with AVX-512: 16 float32 or 8
/// float64 values, each computed by the same operations as <see cref="GradientPlane{T}"/>'s <see cref="System.Numerics.Vector{T}"/>
/// loop (dy · factor in T; the ReLU's input recomputed as T(fma(a − o, s, t)) in double; compared with zero in T), so
/// the bits are the same.
/// </summary>
/// <remarks>
/// The gate makes the normalisation's dy from the block's output gradient twice in a training step, once for the sums
/// and once for dx, and its 256-bit loop was the largest single item in a profile of the block's step. A plane's last
/// step overlaps the one before it instead of finishing value by value: the gate writes a separate buffer and each value
/// depends only on its own inputs, so writing a value twice writes the same bits.
/// </remarks>
internal static unsafe partial class BlockKernels
{
    /// <summary>Whether <see cref="GradientPlaneWide{T}"/> serves planes of <paramref name="spatial"/> values of <typeparamref name="T"/>.</summary>
    private static bool WideGate<T>(int spatial)
        where T : unmanaged =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated && spatial >= Vector512<T>.Count
        && (typeof(T) == typeof(float) || typeof(T) == typeof(double));

    /// <summary>
    /// <see cref="GradientPlane{T}"/> over a plane of at least one 512-bit vector; g may be dy itself (then the plane's
    /// last values go through <see cref="GradientPlane{T}"/>, since a step that overlapped would read values it wrote).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void GradientPlaneWide<T>(T* a, T* dy, T* g, int length, double o, double s, double t, T factor, bool scaled, bool rectify)
        where T : unmanaged, System.Numerics.IBinaryFloatingPointIeee754<T>
    {
        int lanes = Vector512<T>.Count;
        Debug.Assert(WideGate<T>(length));
        var vf = Vector512.Create(factor);
        var vo = Vector512.Create(o);
        var vs = Vector512.Create(s);
        var vt = Vector512.Create(t);
        int i = 0;
        for (; i <= length - lanes; i += lanes)
        {
            GateStep(a + i, dy + i, g + i, vf, vo, vs, vt, scaled, rectify);
        }

        if (i < length)
        {
            if (g != dy)
            {
                GateStep(a + length - lanes, dy + length - lanes, g + length - lanes, vf, vo, vs, vt, scaled, rectify);
            }
            else
            {
                GradientPlane(a + i, dy + i, g + i, length - i, o, s, t, factor, scaled, rectify);
            }
        }
    }

    /// <summary>One 512-bit step of <see cref="GradientPlaneWide{T}"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GateStep<T>(
        T* a, T* dy, T* g, Vector512<T> factor, Vector512<double> offset, Vector512<double> scale, Vector512<double> shift, bool scaled, bool rectify)
        where T : unmanaged
    {
        var d = Vector512.Load(dy);
        if (scaled)
        {
            d *= factor;
        }

        if (rectify)
        {
            var y = Normalized512(Vector512.Load(a), offset, scale, shift);
            d = Vector512.ConditionalSelect(Vector512.LessThanOrEqual(y, Vector512<T>.Zero), Vector512<T>.Zero, d);
        }

        d.Store(g);
    }

    /// <summary>T(fma(a − o, s, t)), the fused multiply-add in double, for a 512-bit vector of T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<T> Normalized512<T>(Vector512<T> a, Vector512<double> offset, Vector512<double> scale, Vector512<double> shift)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            var x = a.AsSingle();
            var lo = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Double(x.GetLower()) - offset, scale, shift);
            var hi = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Double(x.GetUpper()) - offset, scale, shift);
            return Vector512.Create(Avx512F.ConvertToVector256Single(lo), Avx512F.ConvertToVector256Single(hi)).As<float, T>();
        }

        Debug.Assert(typeof(T) == typeof(double));
        return Avx512F.FusedMultiplyAdd(a.AsDouble() - offset, scale, shift).As<double, T>();
    }
}
