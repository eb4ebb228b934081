using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Where plane boundaries fall in a vector loop that walks consecutive NCHW planes as one contiguous run, so that an
/// element-wise pass with one constant per plane can take a chunk of planes in whole vectors whatever H·W is.
/// </summary>
/// <remarks>
/// Taken plane by plane, a plane whose length is not a whole number of vectors (14×14 = 196 values, 7×7 = 49) ends in
/// a scalar tail, and with streaming stores starts with a scalar head up to the next cache line: a quarter of a 14×14
/// float32 plane. Taken as one run, only the chunk's two ends are scalar; a vector that reaches across a boundary takes
/// its lanes' constants from both planes (<see cref="Crosses{T}"/>). Each value is still computed from its own plane's
/// constant by the same operations, so the results are bit for bit those of the plane-by-plane loop.
/// Planes must be at least one vector long, so that a vector reaches across at most one boundary.
/// </remarks>
internal struct PlaneBoundaries
{
    private readonly int _spatial;

    /// <summary>The run offset where the plane after <see cref="Plane"/> starts.</summary>
    private int _next;

    /// <summary>Starts the walk at run offset <paramref name="start"/>, in planes of <paramref name="spatial"/> values.</summary>
    public PlaneBoundaries(int spatial, int start)
    {
        Debug.Assert(spatial > 0 && start >= 0);
        _spatial = spatial;
        Plane = start / spatial;
        _next = (Plane + 1) * spatial;
    }

    /// <summary>Whether planes of <paramref name="spatial"/> values can be walked this way: vectors on, and planes at least one vector long.</summary>
    public static bool Serve<T>(int spatial)
        where T : unmanaged => Vector.IsHardwareAccelerated && Vector<T>.IsSupported && spatial >= Vector<T>.Count;

    /// <summary>The plane, counted from the run's start, of the first lane of the next vector step.</summary>
    public int Plane { get; private set; }

    /// <summary>
    /// Whether the vector step at run offset <paramref name="i"/> reaches into the plane after <see cref="Plane"/>. If it
    /// does, <paramref name="inPlane"/> has all bits set in the lanes that still belong to <see cref="Plane"/> (none, when
    /// the step starts exactly at the boundary) and <see cref="Plane"/> moves on to the next plane, which the remaining
    /// lanes belong to. Steps must come in order, one vector apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Crosses<T>(int i, out Vector<T> inPlane)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(_spatial >= Vector<T>.Count && i + Vector<T>.Count <= _next + _spatial);
        if (i + Vector<T>.Count <= _next)
        {
            inPlane = default;
            return false;
        }

        inPlane = Vector.LessThan(Vector<T>.Indices, new Vector<T>(T.CreateTruncating(_next - i)));
        Plane++;
        _next += _spatial;
        return true;
    }
}
