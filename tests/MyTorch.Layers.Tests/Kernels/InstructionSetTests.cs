using System;
using System.IO;
using System.Linq;
using System.Numerics;
using System.Runtime.Intrinsics.X86;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Kernels;

/// <summary>
/// The kernels run on the instruction sets a test run means them to. CI runs the kernel tests again with hardware
/// intrinsics off and with AVX-512 off, through runtime switches, and says which it meant in
/// <c>MYTORCH_KERNEL_ISA</c> (<c>scalar</c>, <c>avx2</c>). The runtime ignores a switch it does not know without a word
/// (.NET 10 reads <c>DOTNET_EnableAVX512</c>, not the earlier <c>DOTNET_EnableAVX512F</c>), and such a run would prove
/// the same loops again; this test fails it instead. Without the variable, the run means the processor's own best.
/// </summary>
[TestFixture]
public class InstructionSetTests
{
    [Test]
    public void Kernels_RunOnTheInstructionSetsTheRunMeans()
    {
        string meant = Environment.GetEnvironmentVariable("MYTORCH_KERNEL_ISA") ?? ProcessorBest();
        switch (meant)
        {
            case "scalar":
                Assert.That(Vector.IsHardwareAccelerated, Is.False, "vectors accelerated in a run meant to be scalar");
                break;
            case "avx2":
                Assert.That((Avx2.IsSupported, Avx512F.IsSupported), Is.EqualTo((true, false)), "(AVX2, AVX-512) in a run meant for AVX2");
                break;
            case "below avx2":
                Assert.That(Avx2.IsSupported, Is.False, "AVX2 used where the processor does not list it");
                break;
            case "avx512":
                Assert.That(Avx512F.IsSupported, Is.True, "AVX-512 not used where the processor has it");
                break;
            default:
                Assert.Fail($"MYTORCH_KERNEL_ISA is '{meant}'; expected scalar, avx2 or avx512");
                break;
        }
    }

    /// <summary>What the processor offers, as /proc/cpuinfo lists it: the runtime takes AVX-512 only with all five sets.</summary>
    private static string ProcessorBest()
    {
        const string cpuinfo = "/proc/cpuinfo";
        if (!File.Exists(cpuinfo))
        {
            Assert.Ignore("needs /proc/cpuinfo, or MYTORCH_KERNEL_ISA, to know which instruction sets the run means");
        }

        string? line = File.ReadLines(cpuinfo).FirstOrDefault(line => line.StartsWith("flags", StringComparison.Ordinal));
        if (line is null)
        {
            Assert.Ignore("/proc/cpuinfo lists no x86 flags");
        }

        var flags = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return new[] { "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl" }.All(flags.Contains) ? "avx512"
            : flags.Contains("avx2") ? "avx2"
            : "below avx2";
    }
}
