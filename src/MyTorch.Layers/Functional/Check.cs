using System;
using System.Globalization;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// Argument checks shared by the functional entry points. Each throws before anything is written,
/// with a message that names the argument and the problem.
/// </summary>
internal static class Check
{
    /// <summary>Refuses a null or disposed tensor.</summary>
    public static void Alive(Tensor? tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (tensor.IsInvalid)
        {
            throw new ObjectDisposedException(name, $"The tensor '{name}' has been disposed.");
        }
    }

    /// <summary>Refuses a tensor that is not in CPU memory, naming its device.</summary>
    public static void OnCpu(Tensor tensor, string name)
    {
        if (tensor.device_type != DeviceType.CPU)
        {
            throw new NotSupportedException(
                $"'{name}' is on device {tensor.device}; MyTorch.Layers kernels run on the CPU only. Move the tensor with .cpu() first.");
        }
    }

    /// <summary>
    /// The checks every layer's input passes once its rank is known: on the CPU, of a dtype the kernels take, and few
    /// enough elements for a span to index.
    /// </summary>
    public static void KernelReadable(Tensor tensor, string name, long[] shape)
    {
        OnCpu(tensor, name);
        FloatingDtype(tensor, name);
        Layouts.CheckedLength(shape);
    }

    /// <summary>Refuses dtypes other than float32, float64, bfloat16 and float16.</summary>
    public static void FloatingDtype(Tensor tensor, string name)
    {
        if (tensor.dtype is not (ScalarType.Float32 or ScalarType.Float64) && !IsHalfPrecision(tensor.dtype))
        {
            throw new ArgumentException($"'{name}' has dtype {tensor.dtype}; expected Float32, Float64, BFloat16 or Float16.", name);
        }
    }

    /// <summary>Whether <paramref name="dtype"/> is one of the 16-bit floating dtypes, bfloat16 and float16.</summary>
    public static bool IsHalfPrecision(ScalarType dtype) => dtype is ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>Refuses a tensor whose dtype differs from <paramref name="expected"/>.</summary>
    public static void SameDtype(Tensor tensor, string name, ScalarType expected, string expectedFrom)
    {
        if (tensor.dtype != expected)
        {
            throw new ArgumentException(
                $"'{name}' has dtype {tensor.dtype} but {expectedFrom} has dtype {expected}; they must match.", name);
        }
    }

    /// <summary>An optional per-channel tensor: one dimension of <paramref name="channels"/> elements, contiguous.</summary>
    public static void PerChannel(Tensor? tensor, string name, long channels, ScalarType dtype, string dtypeFrom)
    {
        if (tensor is null)
        {
            return;
        }

        Alive(tensor, name);
        OnCpu(tensor, name);
        SameDtype(tensor, name, dtype, dtypeFrom);
        if (tensor.numel() != channels)
        {
            // libtorch's wording, so that messages read the same whichever implementation a user runs.
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"{name} should contain {channels} elements not {tensor.numel()}"), name);
        }

        if (tensor.dim() != 1 || !tensor.is_contiguous())
        {
            throw new ArgumentException($"'{name}' must be a contiguous 1-D tensor.", name);
        }
    }

    /// <summary>Refuses a tensor whose shape differs from <paramref name="shape"/>.</summary>
    public static void SameShape(Tensor tensor, string name, long[] shape, string shapeFrom)
    {
        if (!tensor.shape.SequenceEqual(shape))
        {
            throw new ArgumentException(
                $"'{name}' has shape {Format(tensor.shape)} but {shapeFrom} has shape {Format(shape)}; they must match.", name);
        }
    }

    /// <summary>
    /// Refuses, for writing, a tensor in which several elements share one memory location (a dimension of more than one
    /// element with stride 0, as <c>expand</c> makes), with libtorch's message. Like libtorch, overlaps that need more
    /// than that test to find are not looked for.
    /// </summary>
    public static void NoInternalOverlap(Tensor tensor, string name)
    {
        long[] shape = tensor.shape;
        long[] strides = tensor.stride();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] > 1 && strides[d] == 0)
            {
                throw new ArgumentException(
                    "unsupported operation: more than one element of the written-to tensor refers to a single memory location. " +
                    "Please clone() the tensor before performing the operation.",
                    name);
            }
        }
    }

    /// <summary>PyTorch's way of printing a size: [1, 3, 1, 1].</summary>
    public static string Format(long[] shape) =>
        "[" + string.Join(", ", shape.Select(s => s.ToString(CultureInfo.InvariantCulture))) + "]";
}
