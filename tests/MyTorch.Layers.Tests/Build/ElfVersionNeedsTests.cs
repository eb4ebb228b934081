using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using MyTorch.Layers.Build;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Build;

/// <summary>Tests for build/ElfVersionNeeds.cs, the patcher used by build/MyTorch.Layers.LibTorchSharpFix.targets.</summary>
[TestFixture]
public sealed class ElfVersionNeedsTests
{
    private const string StdCxx = "libstdc++.so.6";
    private const string Target = "GLIBCXX_3.4.32";

    private string tempDir = string.Empty;

    [SetUp]
    public void SetUp()
    {
        tempDir = Path.Combine(Path.GetTempPath(), "ElfVersionNeedsTests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tempDir);
    }

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(tempDir))
        {
            Directory.Delete(tempDir, recursive: true);
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void MarkVersionWeak_SetsWeakFlagOnlyOnThatEntry(bool is64)
    {
        SyntheticElf elf = SyntheticElf.Build(is64, SyntheticElf.DefaultNeeds);
        byte[] original = (byte[])elf.Bytes.Clone();
        int flags = elf.FlagsOffset(StdCxx, Target);

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        byte[] expected = (byte[])original.Clone();
        expected[flags] = 0x2; // vna_flags (little-endian u16) was 0; VER_FLG_WEAK is 0x2.
        expected[flags + 1] = 0x0;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(original[flags], Is.Zero);
            Assert.That(elf.Bytes, Is.EqualTo(expected));
            Assert.That(DifferingIndices(original, elf.Bytes), Is.EqualTo(new[] { flags }));
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void MarkVersionWeak_SecondCall_IsAlreadyWeakAndChangesNothing(bool is64)
    {
        SyntheticElf elf = SyntheticElf.Build(is64, SyntheticElf.DefaultNeeds);
        Assert.That(ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target), Is.EqualTo(ElfPatchResult.Marked));
        byte[] once = (byte[])elf.Bytes.Clone();

        ElfPatchResult second = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(second, Is.EqualTo(ElfPatchResult.AlreadyWeak));
            Assert.That(elf.Bytes, Is.EqualTo(once));
        }
    }

    [Test]
    public void MarkVersionWeak_KeepsOtherFlagBits()
    {
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds);
        int flags = elf.FlagsOffset(StdCxx, Target);
        elf.Bytes[flags] = 0x1; // VER_FLG_BASE, just to have another bit set.
        elf.Bytes[flags + 1] = 0x80;

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(elf.Bytes[flags], Is.EqualTo(0x3));
            Assert.That(elf.Bytes[flags + 1], Is.EqualTo(0x80));
        }
    }

    [Test]
    public void MarkVersionWeak_IgnoresSameVersionNameUnderAnotherLibrary()
    {
        var needs = new List<(string Library, string[] Versions)>(SyntheticElf.DefaultNeeds)
        {
            ("libdecoy.so.1", new[] { Target }),
        };
        SyntheticElf elf = SyntheticElf.Build(is64: true, needs);
        byte[] original = (byte[])elf.Bytes.Clone();

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(DifferingIndices(original, elf.Bytes), Is.EqualTo(new[] { elf.FlagsOffset(StdCxx, Target) }));
            Assert.That(elf.Bytes[elf.FlagsOffset("libdecoy.so.1", Target)], Is.Zero);
        }
    }

    [Test]
    public void MarkVersionWeak_WithoutVersionNeedsSection_IsNotFoundAndUnchanged()
    {
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds, includeVerneed: false);
        byte[] original = (byte[])elf.Bytes.Clone();

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.NotFound));
            Assert.That(elf.Bytes, Is.EqualTo(original));
        }
    }

    [Test]
    public void MarkVersionWeak_WithoutThatVersion_IsNotFoundAndUnchanged()
    {
        var needs = new List<(string Library, string[] Versions)>
        {
            ("libc.so.6", new[] { "GLIBC_2.2.5" }),
            (StdCxx, new[] { "GLIBCXX_3.4.30" }),
        };
        SyntheticElf elf = SyntheticElf.Build(is64: true, needs);
        byte[] original = (byte[])elf.Bytes.Clone();

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.NotFound));
            Assert.That(elf.Bytes, Is.EqualTo(original));
        }
    }

    [Test]
    public void MarkVersionWeak_BigEndian_Throws()
    {
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds);
        elf.Bytes[5] = 2; // EI_DATA = ELFDATA2MSB
        byte[] original = (byte[])elf.Bytes.Clone();

        Assert.That(
            () => ElfVersionNeeds.MarkVersionWeak(elf.Bytes, StdCxx, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("big-endian"));
        Assert.That(elf.Bytes, Is.EqualTo(original));
    }

    [TestCase("verneed-offset")]
    [TestCase("strtab-link")]
    [TestCase("vn-aux")]
    [TestCase("vna-name")]
    [TestCase("shoff")]
    public void MarkVersionWeak_CorruptImage_ThrowsAndLeavesBytesUnchanged(string corruption)
    {
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds);
        byte[] b = elf.Bytes;
        int verneedHeader = elf.SectionHeaderOffset(SyntheticElf.VerneedSectionIndex);
        int stdcxxVerneed = elf.VerneedOffset(StdCxx);
        switch (corruption)
        {
            case "verneed-offset":
                WriteUInt64(b, verneedHeader + 24, (ulong)b.Length - 8); // sh_offset: section runs past EOF
                break;
            case "strtab-link":
                WriteUInt32(b, verneedHeader + 40, 99); // sh_link: no such section
                break;
            case "vn-aux":
                WriteUInt32(b, stdcxxVerneed + 8, 0x10000); // vn_aux: outside the section
                break;
            case "vna-name":
                WriteUInt32(b, elf.FlagsOffset(StdCxx, Target) + 4, 0xFFFFFF); // vna_name: outside .dynstr
                break;
            case "shoff":
                WriteUInt64(b, 40, ulong.MaxValue - 10); // e_shoff
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(corruption));
        }

        byte[] original = (byte[])b.Clone();

        Assert.That(() => ElfVersionNeeds.MarkVersionWeak(b, StdCxx, Target), Throws.TypeOf<InvalidDataException>());
        Assert.That(b, Is.EqualTo(original));
    }

    [Test]
    public void MarkVersionWeakInFile_PatchesFileOnceThenReportsAlreadyWeak()
    {
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds);
        string path = Path.Combine(tempDir, "libsynthetic.so");
        File.WriteAllBytes(path, elf.Bytes);

        ElfPatchResult first = ElfVersionNeeds.MarkVersionWeakInFile(path, StdCxx, Target);
        byte[] afterFirst = File.ReadAllBytes(path);
        DateTime stamp = new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(path, stamp);

        ElfPatchResult second = ElfVersionNeeds.MarkVersionWeakInFile(path, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(first, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(DifferingIndices(elf.Bytes, afterFirst), Is.EqualTo(new[] { elf.FlagsOffset(StdCxx, Target) }));
            Assert.That(second, Is.EqualTo(ElfPatchResult.AlreadyWeak));
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(afterFirst));
            Assert.That(File.GetLastWriteTimeUtc(path), Is.EqualTo(stamp), "an already-weak file must not be rewritten");
            Assert.That(Directory.GetFiles(tempDir), Is.EqualTo(new[] { path }), "no temporary file may be left behind");
        }
    }

    [Test]
    public void MarkVersionWeakInFile_WithoutSection_IsNotFoundAndDoesNotWrite()
    {
        SyntheticElf elf = SyntheticElf.Build(is64: false, SyntheticElf.DefaultNeeds, includeVerneed: false);
        string path = WriteWithOldTimestamp("libnoverneed.so", elf.Bytes, out DateTime stamp);

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeakInFile(path, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.NotFound));
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(elf.Bytes));
            Assert.That(File.GetLastWriteTimeUtc(path), Is.EqualTo(stamp));
        }
    }

    [Test]
    public void MarkVersionWeakInFile_NonElfFile_ThrowsAndLeavesFileAlone()
    {
        byte[] content = Encoding.ASCII.GetBytes("#!/bin/sh\necho this is not a shared object\n");
        string path = WriteWithOldTimestamp("not-elf.so", content, out DateTime stamp);

        Assert.That(
            () => ElfVersionNeeds.MarkVersionWeakInFile(path, StdCxx, Target),
            Throws.TypeOf<InvalidDataException>()
                .With.Message.Contains("not an ELF file")
                .And.Message.Contains(path));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(content));
            Assert.That(File.GetLastWriteTimeUtc(path), Is.EqualTo(stamp));
            Assert.That(Directory.GetFiles(tempDir), Is.EqualTo(new[] { path }));
        }
    }

    [TestCase(true, 10)]
    [TestCase(true, 40)]
    [TestCase(true, -1)]
    [TestCase(false, -1)]
    public void MarkVersionWeakInFile_TruncatedFile_ThrowsAndLeavesFileAlone(bool is64, int length)
    {
        SyntheticElf elf = SyntheticElf.Build(is64, SyntheticElf.DefaultNeeds);

        // -1: cut inside the section header table (the .gnu.version_r header is then missing).
        int cut = length >= 0 ? length : elf.SectionHeaderOffset(SyntheticElf.VerneedSectionIndex) + 8;
        byte[] truncated = elf.Bytes.Take(cut).ToArray();
        string path = WriteWithOldTimestamp("libtruncated.so", truncated, out DateTime stamp);

        Assert.That(
            () => ElfVersionNeeds.MarkVersionWeakInFile(path, StdCxx, Target),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains(path));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(File.ReadAllBytes(path), Is.EqualTo(truncated));
            Assert.That(File.GetLastWriteTimeUtc(path), Is.EqualTo(stamp));
            Assert.That(Directory.GetFiles(tempDir), Is.EqualTo(new[] { path }));
        }
    }

    [Test]
    public void MarkVersionWeakInFile_ThroughSymbolicLink_DoesNotModifyLinkTarget()
    {
        // MSBuild may copy with links into the package cache; the cache copy must never change.
        SyntheticElf elf = SyntheticElf.Build(is64: true, SyntheticElf.DefaultNeeds);
        string cacheDir = Path.Combine(tempDir, "cache");
        string outDir = Path.Combine(tempDir, "out");
        Directory.CreateDirectory(cacheDir);
        Directory.CreateDirectory(outDir);
        string cached = Path.Combine(cacheDir, "libcached.so");
        File.WriteAllBytes(cached, elf.Bytes);
        string link = Path.Combine(outDir, "libcached.so");
        try
        {
            File.CreateSymbolicLink(link, cached);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            Assert.Ignore("Cannot create symbolic links here: " + ex.Message);
        }

        ElfPatchResult result = ElfVersionNeeds.MarkVersionWeakInFile(link, StdCxx, Target);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(File.ReadAllBytes(cached), Is.EqualTo(elf.Bytes));
            Assert.That(new FileInfo(link).LinkTarget, Is.Null, "the link is replaced by a patched regular file");
            Assert.That(DifferingIndices(elf.Bytes, File.ReadAllBytes(link)), Is.EqualTo(new[] { elf.FlagsOffset(StdCxx, Target) }));
        }
    }

    [Test]
    public void MarkVersionWeakInFile_RealLibTorchSharp_MarksCopyAndLeavesCacheAlone()
    {
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string cached = Path.Combine(packages, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (!File.Exists(cached))
        {
            Assert.Ignore("TorchSharp 0.107.0's libLibTorchSharp.so is not in the NuGet package cache: " + cached);
        }

        byte[] cacheBefore = File.ReadAllBytes(cached);
        DateTime cacheStamp = File.GetLastWriteTimeUtc(cached);
        string copy = Path.Combine(tempDir, "libLibTorchSharp.so");
        File.Copy(cached, copy);

        ElfPatchResult first = ElfVersionNeeds.MarkVersionWeakInFile(copy, StdCxx, Target);
        byte[] patched = File.ReadAllBytes(copy);
        ElfPatchResult second = ElfVersionNeeds.MarkVersionWeakInFile(copy, StdCxx, Target);

        // readelf -V: .gnu.version_r at file offset 0x3f8f0; the GLIBCXX_3.4.32 Vernaux entry is at +0x140,
        // its vna_flags at +4 within the entry.
        const int expectedFlagsOffset = 0x3f8f0 + 0x140 + 4;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(first, Is.EqualTo(ElfPatchResult.Marked));
            Assert.That(DifferingIndices(cacheBefore, patched), Is.EqualTo(new[] { expectedFlagsOffset }));
            Assert.That(patched[expectedFlagsOffset], Is.EqualTo(0x2));
            Assert.That(second, Is.EqualTo(ElfPatchResult.AlreadyWeak));
            Assert.That(File.ReadAllBytes(copy), Is.EqualTo(patched));
            Assert.That(File.ReadAllBytes(cached), Is.EqualTo(cacheBefore), "the NuGet cache copy must not change");
            Assert.That(File.GetLastWriteTimeUtc(cached), Is.EqualTo(cacheStamp));
        }
    }

    private string WriteWithOldTimestamp(string name, byte[] content, out DateTime stamp)
    {
        string path = Path.Combine(tempDir, name);
        File.WriteAllBytes(path, content);
        stamp = new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(path, stamp);
        return path;
    }

    private static int[] DifferingIndices(byte[] a, byte[] b)
    {
        Assert.That(b, Has.Length.EqualTo(a.Length));
        return Enumerable.Range(0, a.Length).Where(i => a[i] != b[i]).ToArray();
    }

    private static void WriteUInt16(byte[] b, int at, int value)
    {
        b[at] = (byte)value;
        b[at + 1] = (byte)(value >> 8);
    }

    private static void WriteUInt32(byte[] b, int at, uint value)
    {
        for (int i = 0; i < 4; i++)
        {
            b[at + i] = (byte)(value >> (8 * i));
        }
    }

    private static void WriteUInt64(byte[] b, int at, ulong value)
    {
        for (int i = 0; i < 8; i++)
        {
            b[at + i] = (byte)(value >> (8 * i));
        }
    }

    /// <summary>
    /// A minimal little-endian ELF image: header, a filler ".text" (PROGBITS), ".dynstr", ".gnu.version_r"
    /// (optional) and ".shstrtab", followed by the section header table.
    /// </summary>
    private sealed class SyntheticElf
    {
        public const int VerneedSectionIndex = 3;

        private readonly Dictionary<string, int> flagOffsets = new(StringComparer.Ordinal);
        private readonly Dictionary<string, int> verneedOffsets = new(StringComparer.Ordinal);
        private int shoff;
        private int shentsize;

        private SyntheticElf()
        {
        }

        public static IReadOnlyList<(string Library, string[] Versions)> DefaultNeeds { get; } = new[]
        {
            ("libc.so.6", new[] { "GLIBC_2.2.5", "GLIBC_2.14" }),
            (StdCxx, new[] { "GLIBCXX_3.4.30", Target, "CXXABI_1.3.13" }),
            ("libm.so.6", new[] { "GLIBC_2.2.5" }),
        };

        public byte[] Bytes { get; private set; } = Array.Empty<byte>();

        public int FlagsOffset(string library, string version) => flagOffsets[library + "/" + version];

        public int VerneedOffset(string library) => verneedOffsets[library];

        public int SectionHeaderOffset(int index) => shoff + (index * shentsize);

        public static SyntheticElf Build(bool is64, IEnumerable<(string Library, string[] Versions)> needs, bool includeVerneed = true)
        {
            var result = new SyntheticElf();
            var needList = needs.ToList();
            int headerSize = is64 ? 64 : 52;
            result.shentsize = is64 ? 64 : 40;
            var image = new List<byte>(new byte[headerSize]);

            // .text filler with a non-trivial pattern, so that stray writes would be noticed.
            int textOffset = image.Count;
            for (int i = 0; i < 48; i++)
            {
                image.Add((byte)((i * 37) + 11));
            }

            // .dynstr
            int dynstrOffset = image.Count;
            var dynstr = new List<byte> { 0 };
            var stringIndex = new Dictionary<string, int>(StringComparer.Ordinal);
            int AddString(string s)
            {
                if (!stringIndex.TryGetValue(s, out int index))
                {
                    index = dynstr.Count;
                    dynstr.AddRange(Encoding.ASCII.GetBytes(s));
                    dynstr.Add(0);
                    stringIndex[s] = index;
                }

                return index;
            }

            foreach ((string library, string[] versions) in needList)
            {
                AddString(library);
                foreach (string v in versions)
                {
                    AddString(v);
                }
            }

            image.AddRange(dynstr);
            Pad(image, 8, 0xCC);

            // .gnu.version_r
            int verneedOffset = image.Count;
            var verneed = new List<byte>();
            if (includeVerneed)
            {
                ushort versionIndex = 2;
                for (int n = 0; n < needList.Count; n++)
                {
                    (string library, string[] versions) = needList[n];
                    int entry = verneed.Count;
                    result.verneedOffsets[library] = verneedOffset + entry;
                    bool last = n == needList.Count - 1;
                    var vn = new byte[16];
                    WriteUInt16(vn, 0, 1);
                    WriteUInt16(vn, 2, versions.Length);
                    WriteUInt32(vn, 4, (uint)AddString(library));
                    WriteUInt32(vn, 8, 16);
                    WriteUInt32(vn, 12, last ? 0u : (uint)(16 + (16 * versions.Length)));
                    verneed.AddRange(vn);
                    for (int k = 0; k < versions.Length; k++)
                    {
                        var vna = new byte[16];
                        WriteUInt32(vna, 0, ElfHash(versions[k]));
                        WriteUInt16(vna, 4, 0);
                        WriteUInt16(vna, 6, versionIndex++);
                        WriteUInt32(vna, 8, (uint)AddString(versions[k]));
                        WriteUInt32(vna, 12, k == versions.Length - 1 ? 0u : 16u);
                        result.flagOffsets[library + "/" + versions[k]] = verneedOffset + verneed.Count + 4;
                        verneed.AddRange(vna);
                    }
                }

                image.AddRange(verneed);
            }

            // .shstrtab
            int shstrtabOffset = image.Count;
            byte[] shstrtab = Encoding.ASCII.GetBytes("\0.text\0.dynstr\0.gnu.version_r\0.shstrtab\0");
            image.AddRange(shstrtab);
            Pad(image, 8, 0xCC);

            // Section header table.
            result.shoff = image.Count;
            var sections = new List<(uint Name, uint Type, int Offset, int Size, uint Link, uint Info, int Align)>
            {
                (0, 0, 0, 0, 0, 0, 0),
                (1, 1, textOffset, 48, 0, 0, 16), // .text, SHT_PROGBITS
                (7, 3, dynstrOffset, dynstr.Count, 0, 0, 1), // .dynstr, SHT_STRTAB
            };
            if (includeVerneed)
            {
                sections.Add((15, ElfVersionNeeds.ShtGnuVerneed, verneedOffset, verneed.Count, 2, (uint)needList.Count, 8));
            }

            sections.Add((30, 3, shstrtabOffset, shstrtab.Length, 0, 0, 1)); // .shstrtab
            foreach (var s in sections)
            {
                var sh = new byte[result.shentsize];
                WriteUInt32(sh, 0, s.Name);
                WriteUInt32(sh, 4, s.Type);
                if (is64)
                {
                    WriteUInt64(sh, 8, s.Type == ElfVersionNeeds.ShtGnuVerneed ? 2u : 0u); // SHF_ALLOC
                    WriteUInt64(sh, 16, s.Type == 0 ? 0ul : (ulong)s.Offset + 0x1000); // sh_addr
                    WriteUInt64(sh, 24, (ulong)s.Offset);
                    WriteUInt64(sh, 32, (ulong)s.Size);
                    WriteUInt32(sh, 40, s.Link);
                    WriteUInt32(sh, 44, s.Info);
                    WriteUInt64(sh, 48, (ulong)s.Align);
                }
                else
                {
                    WriteUInt32(sh, 8, s.Type == ElfVersionNeeds.ShtGnuVerneed ? 2u : 0u);
                    WriteUInt32(sh, 12, s.Type == 0 ? 0u : (uint)s.Offset + 0x1000);
                    WriteUInt32(sh, 16, (uint)s.Offset);
                    WriteUInt32(sh, 20, (uint)s.Size);
                    WriteUInt32(sh, 24, s.Link);
                    WriteUInt32(sh, 28, s.Info);
                    WriteUInt32(sh, 32, (uint)s.Align);
                }

                image.AddRange(sh);
            }

            byte[] bytes = image.ToArray();

            // ELF header.
            bytes[0] = 0x7f;
            bytes[1] = (byte)'E';
            bytes[2] = (byte)'L';
            bytes[3] = (byte)'F';
            bytes[4] = (byte)(is64 ? 2 : 1); // EI_CLASS
            bytes[5] = 1; // EI_DATA = little-endian
            bytes[6] = 1; // EI_VERSION
            WriteUInt16(bytes, 16, 3); // e_type = ET_DYN
            WriteUInt16(bytes, 18, is64 ? 62 : 3); // e_machine = x86-64 / i386
            WriteUInt32(bytes, 20, 1); // e_version
            int shstrndx = sections.Count - 1;
            if (is64)
            {
                WriteUInt64(bytes, 40, (ulong)result.shoff);
                WriteUInt16(bytes, 52, headerSize);
                WriteUInt16(bytes, 58, result.shentsize);
                WriteUInt16(bytes, 60, sections.Count);
                WriteUInt16(bytes, 62, shstrndx);
            }
            else
            {
                WriteUInt32(bytes, 32, (uint)result.shoff);
                WriteUInt16(bytes, 40, headerSize);
                WriteUInt16(bytes, 46, result.shentsize);
                WriteUInt16(bytes, 48, sections.Count);
                WriteUInt16(bytes, 50, shstrndx);
            }

            result.Bytes = bytes;
            return result;
        }

        private static void Pad(List<byte> image, int alignment, byte filler)
        {
            while (image.Count % alignment != 0)
            {
                image.Add(filler);
            }
        }

        private static uint ElfHash(string name)
        {
            uint h = 0;
            foreach (char c in name)
            {
                h = (h << 4) + c;
                uint g = h & 0xf0000000;
                if (g != 0)
                {
                    h ^= g >> 24;
                }

                h &= ~g;
            }

            return h;
        }
    }
}
