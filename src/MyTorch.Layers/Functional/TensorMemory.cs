using System;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The one place where TorchSharp tensors become spans over their raw CPU memory.
/// </summary>
/// <remarks>
/// <see cref="Tensor.bytes"/> refuses strided tensors and tensors above 2 GiB, so the data pointer is taken from
/// TorchSharp's native library directly; it already includes the storage offset. Every caller has checked the
/// device, the dtype and the memory layout before it asks for a span, so the span covers exactly the elements
/// the layout can reach.
/// </remarks>
internal static partial class TensorMemory
{
    [LibraryImport("LibTorchSharp", EntryPoint = "THSTensor_data")]
    private static partial IntPtr TensorData(IntPtr tensor);

    /// <summary>A writable span over the <paramref name="length"/> elements at the tensor's data pointer.</summary>
    public static unsafe Span<T> Span<T>(Tensor tensor, long length)
        where T : unmanaged
    {
        if (length == 0)
        {
            return default;
        }

        if (length > int.MaxValue)
        {
            throw new NotSupportedException(
                $"Tensors of more than {int.MaxValue} elements are not supported (got {length}).");
        }

        IntPtr data = TensorData(tensor.Handle);
        if (data == IntPtr.Zero)
        {
            throw new InvalidOperationException("TorchSharp returned no data pointer for the tensor.");
        }

        return new Span<T>((void*)data, (int)length);
    }

    /// <summary>
    /// The address of a non-empty tensor's first element, for memory handed to another native library (MPI): the caller
    /// has checked that the tensor is a contiguous CPU tensor.
    /// </summary>
    public static IntPtr Address(Tensor tensor)
    {
        IntPtr data = TensorData(tensor.Handle);
        return data != IntPtr.Zero ? data : throw new InvalidOperationException("TorchSharp returned no data pointer for the tensor.");
    }

    /// <summary>A span over a 4-D tensor whose layout was classified as <paramref name="layout"/>.</summary>
    public static Span<T> Span<T>(Tensor tensor, PlaneLayout layout)
        where T : unmanaged => Span<T>(tensor, (long)layout.Batch * layout.Channels * layout.Spatial);

    /// <summary>A span over a contiguous 1-D tensor, or an empty span for <see langword="null"/>.</summary>
    public static Span<T> Vector<T>(Tensor? tensor)
        where T : unmanaged => tensor is null ? default : Span<T>(tensor, tensor.numel());
}
