using System;
using System.Collections.Generic;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading;
using TorchSharp;
using MyTorch.Layers.Functional;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// The memory of the layers' large outputs (y, dx and their like, 1 MiB and more): kept when libtorch frees such a
/// tensor, and handed to the next output of the same byte length, so that a training loop's steps write into memory
/// that is already mapped. At most <see cref="Capacity"/> bytes are kept (1 GiB unless set); <see cref="Trim"/> frees
/// kept memory, and a capacity of 0 keeps none.
/// </summary>
/// <remarks>
/// <para>
/// Memory that the C allocator hands back to the system is faulted in again, page by page, by the next tensor that
/// lands there: a 25.7 MB output is 6,272 pages, and at training-step sizes those faults can cost more than the
/// layer's arithmetic. Whether the C allocator keeps freed memory or returns it depends on everything else the
/// process allocates, so a layer's time would change with its neighbours'. Memory kept here stays mapped.
/// </para>
/// <para>
/// A buffer becomes a tensor through TorchSharp's native <c>THSTensor_new</c> (libtorch's <c>from_blob</c> with a
/// deleter, which libtorch calls when the tensor's storage is freed, on whatever thread frees it). That export is not
/// part of TorchSharp's public API, so buffers are used only with the TorchSharp version whose signature is known
/// here (0.107), and only after a first tensor made that way has shown the shape, dtype and data pointer asked for and
/// given its buffer back when disposed; otherwise (<see cref="IsSupported"/> false), and for smaller outputs, outputs
/// come from libtorch's allocator. The tensors are ordinary CPU tensors in every other respect, except that, like any
/// tensor made over existing memory, their storage cannot grow (TorchSharp has no <c>resize_</c>; native code that
/// resized one in place would get libtorch's "not resizable" error).
/// </para>
/// </remarks>
public static unsafe partial class OutputMemory
{
    /// <summary>Outputs smaller than this come from libtorch's allocator: the C allocator reuses small blocks well.</summary>
    internal const long MinimumBytes = 1L << 20;

    /// <summary>libtorch's own CPU alignment, which vectorised code (ours and libtorch's) may count on.</summary>
    private const nuint Alignment = 64;

    private static readonly Lock Gate = new();

    /// <summary>Kept buffers by byte length.</summary>
    private static readonly Dictionary<long, Stack<nint>> Kept = [];

    /// <summary>Buffers that back a live tensor, with their byte lengths.</summary>
    private static readonly Dictionary<nint, long> Lent = [];

    private static readonly Lazy<bool> Works = new(SelfCheck);

    /// <summary>The dimension order that views (N, H, W, C) memory as (N, C, H, W), and (H, W, C) as (C, H, W).</summary>
    private static readonly long[] FromNhwc = [0, 3, 1, 2];
    private static readonly long[] FromHwc = [2, 0, 1];

    private static long _keptBytes;

    private static long _capacity = 1L << 30;

    /// <summary>
    /// The most memory, in bytes, kept for reuse at any time: a buffer released by libtorch that would take the kept
    /// memory past it is freed. Lowering it frees kept buffers at once.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a negative value.</exception>
    public static long Capacity
    {
        get
        {
            lock (Gate)
            {
                return _capacity;
            }
        }

        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            lock (Gate)
            {
                _capacity = value;
            }

            Trim(value);
        }
    }

    /// <summary>The memory, in bytes, kept for reuse now (not counting buffers behind live tensors).</summary>
    public static long KeptBytes
    {
        get
        {
            lock (Gate)
            {
                return _keptBytes;
            }
        }
    }

    /// <summary>
    /// Whether outputs reuse kept memory in this process: true with the TorchSharp version this library was built
    /// against, once a first tensor made over a buffer has passed its check (see the remarks on the class).
    /// </summary>
    public static bool IsSupported => Works.Value;

    /// <summary>Frees kept buffers until at most <paramref name="bytes"/> are kept; tensors in use keep their memory.</summary>
    /// <param name="bytes">How much kept memory may remain; 0 frees it all.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative.</exception>
    public static void Trim(long bytes = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        var freed = new List<nint>();
        lock (Gate)
        {
            foreach (var (length, stack) in Kept)
            {
                while (_keptBytes > bytes && stack.Count > 0)
                {
                    freed.Add(stack.Pop());
                    _keptBytes -= length;
                }
            }
        }

        foreach (nint p in freed)
        {
            NativeMemory.AlignedFree((void*)p);
        }
    }

    /// <summary>
    /// An uninitialised CPU tensor of <paramref name="shape"/> (3-D or 4-D), contiguous or channels-last, backed by a
    /// kept buffer when it is large enough and buffers are <see cref="IsSupported"/>; <see langword="null"/> when it is
    /// not, for the caller to allocate it as it otherwise would.
    /// </summary>
    /// <remarks>
    /// The tensor is a tensor of its own, not a view (autograd would refuse in-place changes to a view returned from
    /// a custom function): channels-last strides are set onto a fresh tensor with <c>set_</c>.
    /// </remarks>
    internal static Tensor? TryEmpty(long[] shape, ScalarType dtype, bool channelsLast)
    {
        int elementBytes = dtype switch
        {
            ScalarType.Float64 => 8,
            ScalarType.Float32 => 4,
            ScalarType.BFloat16 or ScalarType.Float16 => 2,
            _ => 0,
        };
        if (elementBytes == 0)
        {
            return null;
        }

        long bytes = Layouts.CheckedLength(shape) * elementBytes;
        if (bytes < MinimumBytes || !IsSupported)
        {
            return null;
        }

        // Channels-last memory is (N, H, W, C), or (H, W, C) for one sample: C moves from after the batch to the end.
        int channel = shape.Length - 3;
        Span<long> sizes = stackalloc long[shape.Length];
        shape.CopyTo(sizes);
        if (channelsLast)
        {
            sizes[^1] = shape[channel];
            shape.AsSpan(channel + 1).CopyTo(sizes[channel..]);
        }

        var tensor = FromBuffer(Rent(bytes), sizes, dtype);
        if (tensor is null || !channelsLast)
        {
            return tensor;
        }

        using var noGrad = no_grad();
        using (tensor)
        using (var view = tensor.permute(shape.Length == 4 ? FromNhwc : FromHwc))
        {
            return empty(0, dtype).set_(view);
        }
    }

    /// <summary>Hands out a buffer of <paramref name="bytes"/>: a kept one if there is one, a new one otherwise.</summary>
    private static nint Rent(long bytes)
    {
        nint data = TakeKept(bytes);
        if (data == 0)
        {
            data = (nint)NativeMemory.AlignedAlloc((nuint)bytes, Alignment);
        }

        lock (Gate)
        {
            Lent.Add(data, bytes);
        }

        return data;
    }

    /// <summary>A kept buffer of <paramref name="bytes"/>, no longer counted as kept; 0 if there is none.</summary>
    private static nint TakeKept(long bytes)
    {
        lock (Gate)
        {
            if (Kept.TryGetValue(bytes, out var stack) && stack.Count > 0)
            {
                _keptBytes -= bytes;
                return stack.Pop();
            }
        }

        return 0;
    }

    /// <summary>Takes back a lent buffer: kept within <see cref="Capacity"/>, freed beyond it. Unknown pointers are ignored.</summary>
    private static void Return(nint data)
    {
        lock (Gate)
        {
            if (!Lent.Remove(data, out long bytes))
            {
                return;
            }

            if (_keptBytes + bytes <= _capacity)
            {
                if (!Kept.TryGetValue(bytes, out var stack))
                {
                    stack = new Stack<nint>();
                    Kept.Add(bytes, stack);
                }

                stack.Push(data);
                _keptBytes += bytes;
                return;
            }
        }

        NativeMemory.AlignedFree((void*)data);
    }

    /// <summary>A contiguous tensor of <paramref name="sizes"/> over a lent buffer, or null if TorchSharp refused.</summary>
    private static Tensor? FromBuffer(nint data, ReadOnlySpan<long> sizes, ScalarType dtype)
    {
        IntPtr handle;
        fixed (long* p = sizes)
        {
            handle = NewTensor((void*)data, &Release, p, sizes.Length, (sbyte)dtype, (sbyte)dtype, (int)DeviceType.CPU, -1, false);
        }

        if (handle == IntPtr.Zero)
        {
            // libtorch may or may not have called the deleter on its way out; if it did, the buffer is kept and may
            // already back another thread's tensor. So it is left alone: at worst one buffer stays lent for good.
            return null;
        }

        return Tensor.UnsafeCreateTensor(handle);
    }

    /// <summary>The deleter libtorch calls when a tensor's storage made by <see cref="FromBuffer"/> is freed.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void Release(void* data)
    {
        // Nothing may escape into libtorch's native frames; Return takes a lock and touches dictionaries only.
        try
        {
            Return((nint)data);
        }
#pragma warning disable CA1031 // An exception here would cross into native code and end the process.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>
    /// Whether this TorchSharp's <c>THSTensor_new</c> has the signature used here and behaves as expected: the
    /// version is the one it was written against, and a small tensor made from a buffer has the shape, dtype and
    /// data pointer asked for, and gives the buffer back when disposed.
    /// </summary>
    private static bool SelfCheck()
    {
        var version = typeof(torch).Assembly.GetName().Version;
        if (version is not { Major: 0, Minor: 107 })
        {
            return false;
        }

        try
        {
            nint data = Rent(64);
            var tensor = FromBuffer(data, [2, 8], ScalarType.Float32);
            if (tensor is null)
            {
                return false;
            }

            bool right;
            using (tensor)
            {
                right = tensor.dtype == ScalarType.Float32
                    && tensor.shape is [2, 8]
                    && tensor.is_contiguous()
                    && TensorMemory.Span<float>(tensor, 16) is var span
                    && Unsafe.AreSame(ref MemoryMarshal.GetReference(span), ref *(float*)data);
            }

            bool released;
            lock (Gate)
            {
                released = !Lent.ContainsKey(data);
            }

            // The check's own buffer is not kept for outputs.
            if (released && TakeKept(64) is var kept and not 0)
            {
                NativeMemory.AlignedFree((void*)kept);
            }

            return right && released;
        }
#pragma warning disable CA1031 // Whatever goes wrong here, the layers fall back to libtorch's allocator.
        catch (Exception)
#pragma warning restore CA1031
        {
            return false;
        }
    }

    [LibraryImport("LibTorchSharp", EntryPoint = "THSTensor_new")]
    private static partial IntPtr NewTensor(
        void* data,
        delegate* unmanaged[Cdecl]<void*, void> deleter,
        long* sizes,
        int dimensions,
        sbyte type,
        sbyte dtype,
        int deviceType,
        int deviceIndex,
        [MarshalAs(UnmanagedType.U1)] bool requiresGrad);
}
