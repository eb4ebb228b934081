using System;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Examples;

/// <summary>
/// Keeps libtorch's oneDNN to AVX kernels on AMD family 1Ah (Zen 5) processors, where libtorch 2.10's oneDNN computes
/// float32 Conv2d input gradients wrongly with its AVX2 and AVX-512 kernels for some shapes (docs/compatibility.md). The
/// model's convolutions are TorchSharp's in both runs, and the comparison means something only if they are right.
/// </summary>
internal static partial class OneDnnIsa
{
    private const string Variable = "DNNL_MAX_CPU_ISA";

    /// <summary>
    /// Sets <c>DNNL_MAX_CPU_ISA=AVX</c> in the process environment, unless it is set already, on an affected processor.
    /// oneDNN reads it once, at its first primitive, so this must run before any TorchSharp computation.
    /// </summary>
    /// <returns>A line for the run's header when the setting was made, otherwise <see langword="null"/>.</returns>
    public static string? KeepToAvxWhereNeeded()
    {
        if (!OperatingSystem.IsLinux() || !IsAmdFamily1Ah() || Environment.GetEnvironmentVariable(Variable) is not null)
        {
            return null;
        }

        // .NET keeps its own copy of the environment on Linux; oneDNN reads the C library's.
        if (SetEnv(Variable, "AVX", overwrite: 0) != 0)
        {
            return null;
        }

        Environment.SetEnvironmentVariable(Variable, "AVX");
        return $"  {Variable}=AVX set by this app: libtorch's oneDNN AVX2 and AVX-512 Conv2d input gradients can be wrong on AMD family 1Ah (docs/compatibility.md)";
    }

    private static bool IsAmdFamily1Ah()
    {
        if (!X86Base.IsSupported)
        {
            return false;
        }

        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        bool amd = ebx == 0x68747541 && edx == 0x69746E65 && ecx == 0x444D4163; // "AuthenticAMD"
        int signature = X86Base.CpuId(1, 0).Eax;
        int family = (signature >> 8) & 0xF;
        if (family == 0xF)
        {
            family += (signature >> 20) & 0xFF;
        }

        return amd && family == 0x1A;
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
