using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Where plane boundaries fall in a vector loop that walks consecutive NCHW planes as one contiguous run, so that an
/// element-wise pass with constants per plane can take a chunk of planes in whole vector steps whatever H·W is.
/// </summary>
/// <remarks>
/// Taken plane by plane, a plane whose length is not a whole number of steps (14×14 = 196 values, 7×7 = 49) ends in
/// a scalar tail, and with streaming stores starts with a scalar head up to the next cache line: a quarter of a 14×14
/// float32 plane; and a small plane (4×4) costs a call for a step or two. Taken as one run, only the chunk's two ends
/// are scalar; a step that reaches across a boundary takes its lanes' constants from both planes
/// (<see cref="Crosses"/>, <see cref="Leading{T}"/>). Each value is still computed from its own plane's constants by
/// the same operations, so the results are bit for bit those of the plane-by-plane loop. Planes must be at least one
/// step long, so that a step reaches across at most one boundary.
/// </remarks>
internal struct PlaneBoundaries
{
    private readonly int _spatial;
    private readonly int _step;

    /// <summary>The run offset where the plane after <see cref="Plane"/> starts.</summary>
    private int _next;

    /// <summary>
    /// Starts the walk at run offset <paramref name="start"/>, in planes of <paramref name="spatial"/> values, with
    /// vector steps of <paramref name="step"/> values.
    /// </summary>
    public PlaneBoundaries(int spatial, int start, int step)
    {
        Debug.Assert(spatial >= step && step > 0 && start >= 0);
        _spatial = spatial;
        _step = step;
        Plane = start / spatial;
        _next = (Plane + 1) * spatial;
    }

    /// <summary>The plane, counted from the run's start, of the first value of the next step.</summary>
    public int Plane { get; private set; }

    /// <summary>Whether planes of <paramref name="spatial"/> values can be walked in steps of <paramref name="step"/>: vectors on, and planes at least a step long.</summary>
    public static bool Serve(int spatial, int step) => Vector.IsHardwareAccelerated && spatial >= step;

    /// <summary>
    /// The values a chunk of planes (<see cref="ChunkScheduler.UnitsPerChunk"/>) writes in one contiguous run: the whole
    /// chunk if its planes are walked as one run (<see cref="Serve"/>), else one plane.
    /// </summary>
    public static int RunLength(int spatial, int step) => Serve(spatial, step) ? ChunkScheduler.UnitsPerChunk(spatial) * spatial : spatial;

    /// <summary>
    /// Whether the step at run offset <paramref name="i"/> reaches into the plane after <see cref="Plane"/>. If it does,
    /// its first <paramref name="inPlane"/> values (none, when the step starts exactly at the boundary) still belong to
    /// <see cref="Plane"/>, and <see cref="Plane"/> moves on to the next plane, which the others belong to. Steps must
    /// come in order, one step apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Crosses(int i, out int inPlane)
    {
        Debug.Assert(i + _step <= _next + _spatial);
        if (i + _step <= _next)
        {
            inPlane = _step;
            return false;
        }

        inPlane = _next - i;
        Plane++;
        _next += _spatial;
        return true;
    }

    /// <summary>A mask with all bits set in the first <paramref name="count"/> lanes (none for a count of 0 or less).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Leading<T>(int count)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        Vector.LessThan(Vector<T>.Indices, new Vector<T>(T.CreateTruncating(count)));
}
