// Marks one version requirement of an ELF shared object as weak (VER_FLG_WEAK), so that the
// dynamic loader no longer refuses to load the object when the needed library lacks that version.
//
// This file is compiled twice:
//  * by MSBuild's RoslynCodeTaskFactory (build/MyTorch.Layers.LibTorchSharpFix.targets), against
//    netstandard 2.0 reference assemblies plus Microsoft.Build.Framework/Utilities.Core;
//  * by the test project, which defines ELF_VERSION_NEEDS_NO_MSBUILD so that only the pure
//    ElfVersionNeeds class (no MSBuild types) is compiled.
// Keep it to netstandard 2.0 APIs (no Span, no BinaryPrimitives, no File.Move overwrite).

#nullable enable

using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace MyTorch.Layers.Build;

/// <summary>Outcome of <see cref="ElfVersionNeeds.MarkVersionWeak"/>.</summary>
public enum ElfPatchResult
{
    /// <summary>No version requirement with that library and version name exists (or the file has no .gnu.version_r section).</summary>
    NotFound = 0,

    /// <summary>The requirement exists and is already marked weak; nothing was changed.</summary>
    AlreadyWeak = 1,

    /// <summary>The requirement was found and VER_FLG_WEAK has been set.</summary>
    Marked = 2,
}

/// <summary>
/// Edits the version-needs section (SHT_GNU_verneed, ".gnu.version_r") of little-endian ELF32/ELF64 files.
/// </summary>
public static class ElfVersionNeeds
{
    /// <summary>Section type of .gnu.version_r.</summary>
    public const uint ShtGnuVerneed = 0x6ffffffe;

    /// <summary>The "weak" flag of a Vernaux entry's vna_flags.</summary>
    public const ushort VerFlgWeak = 0x2;

    private const uint ShtNobits = 8;
    private const int VerneedSize = 16;
    private const int VernauxSize = 16;
    private const int MaxNameLength = 4096;

    /// <summary>
    /// Sets VER_FLG_WEAK on every Vernaux entry named <paramref name="version"/> under a Verneed entry
    /// whose vn_file is <paramref name="library"/>. The array is changed only when the result is
    /// <see cref="ElfPatchResult.Marked"/>; on any error it is left untouched.
    /// </summary>
    /// <param name="elf">The whole ELF file.</param>
    /// <param name="library">The needed library's soname, e.g. "libstdc++.so.6".</param>
    /// <param name="version">The version name, e.g. "GLIBCXX_3.4.32".</param>
    /// <returns>Whether the requirement was not found, already weak, or has been marked weak.</returns>
    /// <exception cref="InvalidDataException">The data is not a valid little-endian ELF file.</exception>
    public static ElfPatchResult MarkVersionWeak(byte[] elf, string library, string version)
    {
        if (elf == null)
        {
            throw new ArgumentNullException(nameof(elf));
        }

        if (library == null)
        {
            throw new ArgumentNullException(nameof(library));
        }

        if (version == null)
        {
            throw new ArgumentNullException(nameof(version));
        }

        List<int> flagOffsets = FindVernauxFlagOffsets(elf, library, version);
        if (flagOffsets.Count == 0)
        {
            return ElfPatchResult.NotFound;
        }

        bool changed = false;
        foreach (int offset in flagOffsets)
        {
            // vna_flags is a little-endian 16-bit field; VER_FLG_WEAK lives in its low byte.
            if ((elf[offset] & VerFlgWeak) == 0)
            {
                elf[offset] = (byte)(elf[offset] | VerFlgWeak);
                changed = true;
            }
        }

        return changed ? ElfPatchResult.Marked : ElfPatchResult.AlreadyWeak;
    }

    /// <summary>
    /// Reads the file at <paramref name="path"/>, applies <see cref="MarkVersionWeak"/> and writes the
    /// file back only when something changed. The new content is written to a temporary copy in the same
    /// directory that then replaces the file, so hard or symbolic links to other copies (such as the NuGet
    /// package cache) are never written through.
    /// </summary>
    /// <param name="path">The ELF file to patch.</param>
    /// <param name="library">The needed library's soname, e.g. "libstdc++.so.6".</param>
    /// <param name="version">The version name, e.g. "GLIBCXX_3.4.32".</param>
    /// <returns>Whether the requirement was not found, already weak, or has been marked weak.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid little-endian ELF file; it is not written.</exception>
    public static ElfPatchResult MarkVersionWeakInFile(string path, string library, string version)
    {
        if (path == null)
        {
            throw new ArgumentNullException(nameof(path));
        }

        byte[] elf = File.ReadAllBytes(path);
        ElfPatchResult result;
        try
        {
            result = MarkVersionWeak(elf, library, version);
        }
        catch (InvalidDataException ex)
        {
            throw new InvalidDataException("'" + path + "': " + ex.Message, ex);
        }

        if (result != ElfPatchResult.Marked)
        {
            return result;
        }

        string fullPath = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(fullPath) ?? ".";
        string temp = Path.Combine(directory, "." + Path.GetFileName(fullPath) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            // Copy first so the replacement keeps the original's permission bits, then overwrite its content.
            File.Copy(fullPath, temp, true);
            File.WriteAllBytes(temp, elf);
            File.Replace(temp, fullPath, null);
        }
        finally
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }
        }

        return result;
    }

    private static List<int> FindVernauxFlagOffsets(byte[] elf, string library, string version)
    {
        if (elf.Length < 16 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
        {
            throw new InvalidDataException("not an ELF file (missing \\x7fELF magic).");
        }

        byte elfClass = elf[4];
        byte elfData = elf[5];
        if (elfClass != 1 && elfClass != 2)
        {
            throw new InvalidDataException("unknown ELF class " + elfClass + " (expected 1 = ELF32 or 2 = ELF64).");
        }

        if (elfData == 2)
        {
            throw new InvalidDataException("big-endian ELF files are not supported.");
        }

        if (elfData != 1)
        {
            throw new InvalidDataException("unknown ELF data encoding " + elfData + " (expected 1 = little-endian).");
        }

        bool is64 = elfClass == 2;
        int headerSize = is64 ? 64 : 52;
        Require(elf, 0, (ulong)headerSize, "ELF header");

        ulong shoff = is64 ? ReadUInt64(elf, 40) : ReadUInt32(elf, 32);
        int shentsize = ReadUInt16(elf, is64 ? 58 : 46);
        ulong shnum = ReadUInt16(elf, is64 ? 60 : 48);

        var result = new List<int>();
        if (shoff == 0)
        {
            // No section header table: nothing we can find.
            return result;
        }

        int minEntrySize = is64 ? 64 : 40;
        if (shentsize < minEntrySize)
        {
            throw new InvalidDataException("section header entry size " + shentsize + " is smaller than " + minEntrySize + ".");
        }

        Require(elf, shoff, (ulong)shentsize, "section header table");
        if (shnum == 0)
        {
            // More than 0xff00 sections: the real count is in section 0's sh_size.
            shnum = ReadSection(elf, is64, (int)shoff).Size;
        }

        if (shnum > (ulong)elf.Length / (ulong)shentsize)
        {
            throw new InvalidDataException("section header table (" + shnum + " entries) does not fit in the file.");
        }

        Require(elf, shoff, shnum * (ulong)shentsize, "section header table");

        for (ulong i = 0; i < shnum; i++)
        {
            Section verneed = ReadSection(elf, is64, (int)(shoff + (i * (ulong)shentsize)));
            if (verneed.Type != ShtGnuVerneed)
            {
                continue;
            }

            if (verneed.Link >= shnum)
            {
                throw new InvalidDataException("section " + i + " (.gnu.version_r) links to string table section " + verneed.Link + ", which does not exist.");
            }

            Section strtab = ReadSection(elf, is64, (int)(shoff + (verneed.Link * (ulong)shentsize)));
            if (strtab.Type == ShtNobits)
            {
                throw new InvalidDataException("string table section " + verneed.Link + " of .gnu.version_r has no data in the file.");
            }

            Require(elf, verneed.Offset, verneed.Size, ".gnu.version_r section");
            Require(elf, strtab.Offset, strtab.Size, "string table of .gnu.version_r");
            ScanVerneed(elf, verneed, strtab, library, version, result);
        }

        return result;
    }

    private static void ScanVerneed(byte[] elf, Section verneed, Section strtab, string library, string version, List<int> result)
    {
        int start = (int)verneed.Offset;
        int end = (int)(verneed.Offset + verneed.Size);

        // sh_info holds the number of Verneed entries; fall back to following vn_next when it is 0.
        // Either way the walk is bounded so that a corrupt chain cannot loop forever.
        ulong maxEntries = verneed.Size / VerneedSize;
        ulong count = verneed.Info != 0 ? verneed.Info : maxEntries;
        if (count > maxEntries)
        {
            throw new InvalidDataException(".gnu.version_r declares " + verneed.Info + " entries but only has room for " + maxEntries + ".");
        }

        int entry = start;
        for (ulong n = 0; n < count; n++)
        {
            RequireIn(entry, VerneedSize, start, end, "Verneed entry");
            int vnVersion = ReadUInt16(elf, entry);
            if (vnVersion != 1)
            {
                throw new InvalidDataException("unsupported Verneed version " + vnVersion + " at file offset 0x" + entry.ToString("x") + ".");
            }

            int vnCnt = ReadUInt16(elf, entry + 2);
            uint vnFile = ReadUInt32(elf, entry + 4);
            uint vnAux = ReadUInt32(elf, entry + 8);
            uint vnNext = ReadUInt32(elf, entry + 12);

            bool libraryMatches = string.Equals(ReadString(elf, strtab, vnFile), library, StringComparison.Ordinal);
            long aux = (long)entry + vnAux;
            for (int k = 0; k < vnCnt; k++)
            {
                if (aux < start || aux > end)
                {
                    throw new InvalidDataException("Vernaux entry offset is outside .gnu.version_r.");
                }

                RequireIn((int)aux, VernauxSize, start, end, "Vernaux entry");
                int auxOffset = (int)aux;
                uint vnaName = ReadUInt32(elf, auxOffset + 8);
                uint vnaNext = ReadUInt32(elf, auxOffset + 12);
                string name = ReadString(elf, strtab, vnaName);
                if (libraryMatches && string.Equals(name, version, StringComparison.Ordinal))
                {
                    result.Add(auxOffset + 4);
                }

                if (vnaNext == 0)
                {
                    if (k != vnCnt - 1)
                    {
                        throw new InvalidDataException("Verneed entry declares " + vnCnt + " Vernaux entries but its chain ends after " + (k + 1) + ".");
                    }

                    break;
                }

                aux += vnaNext;
            }

            if (vnNext == 0)
            {
                break;
            }

            long next = (long)entry + vnNext;
            if (next > end)
            {
                throw new InvalidDataException("Verneed vn_next points outside .gnu.version_r.");
            }

            entry = (int)next;
        }
    }

    private static string ReadString(byte[] elf, Section strtab, uint index)
    {
        if (index >= strtab.Size)
        {
            throw new InvalidDataException("string index " + index + " is outside the string table (size " + strtab.Size + ").");
        }

        int start = (int)(strtab.Offset + index);
        int limit = (int)(strtab.Offset + strtab.Size);
        int end = start;
        while (end < limit && elf[end] != 0)
        {
            end++;
            if (end - start > MaxNameLength)
            {
                throw new InvalidDataException("string at index " + index + " is longer than " + MaxNameLength + " bytes.");
            }
        }

        if (end >= limit)
        {
            throw new InvalidDataException("string at index " + index + " is not NUL-terminated within the string table.");
        }

        return Encoding.UTF8.GetString(elf, start, end - start);
    }

    private static Section ReadSection(byte[] elf, bool is64, int at)
    {
        var section = new Section();
        if (is64)
        {
            section.Type = ReadUInt32(elf, at + 4);
            section.Offset = ReadUInt64(elf, at + 24);
            section.Size = ReadUInt64(elf, at + 32);
            section.Link = ReadUInt32(elf, at + 40);
            section.Info = ReadUInt32(elf, at + 44);
        }
        else
        {
            section.Type = ReadUInt32(elf, at + 4);
            section.Offset = ReadUInt32(elf, at + 16);
            section.Size = ReadUInt32(elf, at + 20);
            section.Link = ReadUInt32(elf, at + 24);
            section.Info = ReadUInt32(elf, at + 28);
        }

        return section;
    }

    private static void Require(byte[] elf, ulong offset, ulong size, string what)
    {
        ulong length = (ulong)elf.Length;
        if (offset > length || size > length - offset)
        {
            throw new InvalidDataException(
                "truncated or corrupt file: " + what + " (offset 0x" + offset.ToString("x") + ", size 0x" + size.ToString("x")
                + ") extends past the end of the file (size 0x" + length.ToString("x") + ").");
        }
    }

    private static void RequireIn(int offset, int size, int start, int end, string what)
    {
        if (offset < start || offset > end - size)
        {
            throw new InvalidDataException(what + " at file offset 0x" + offset.ToString("x") + " is outside .gnu.version_r.");
        }
    }

    private static ushort ReadUInt16(byte[] b, int at)
    {
        return (ushort)(b[at] | (b[at + 1] << 8));
    }

    private static uint ReadUInt32(byte[] b, int at)
    {
        return b[at] | ((uint)b[at + 1] << 8) | ((uint)b[at + 2] << 16) | ((uint)b[at + 3] << 24);
    }

    private static ulong ReadUInt64(byte[] b, int at)
    {
        return ReadUInt32(b, at) | ((ulong)ReadUInt32(b, at + 4) << 32);
    }

    private struct Section
    {
        public uint Type;
        public ulong Offset;
        public ulong Size;
        public uint Link;
        public uint Info;
    }
}

#if !ELF_VERSION_NEEDS_NO_MSBUILD
/// <summary>
/// MSBuild task: marks the libstdc++.so.6 requirement GLIBCXX_3.4.32 weak in each of <see cref="Files"/>.
/// </summary>
public sealed class MarkGlibcxxVersionWeak : Microsoft.Build.Utilities.Task
{
    private const string Library = "libstdc++.so.6";
    private const string Version = "GLIBCXX_3.4.32";

    /// <summary>The ELF files to patch in place.</summary>
    [Microsoft.Build.Framework.Required]
    public Microsoft.Build.Framework.ITaskItem[] Files { get; set; } = Array.Empty<Microsoft.Build.Framework.ITaskItem>();

    /// <inheritdoc />
    public override bool Execute()
    {
        foreach (Microsoft.Build.Framework.ITaskItem item in Files)
        {
            string path = item.GetMetadata("FullPath");
            if (string.IsNullOrEmpty(path))
            {
                path = item.ItemSpec;
            }

            ElfPatchResult result;
            try
            {
                result = ElfVersionNeeds.MarkVersionWeakInFile(path, Library, Version);
            }
            catch (InvalidDataException ex)
            {
                Log.LogError("MyTorch.Layers: cannot mark " + Version + " weak: " + ex.Message);
                return false;
            }
            catch (IOException ex)
            {
                Log.LogError("MyTorch.Layers: cannot mark " + Version + " weak in '" + path + "': " + ex.Message);
                return false;
            }
            catch (UnauthorizedAccessException ex)
            {
                Log.LogError("MyTorch.Layers: cannot mark " + Version + " weak in '" + path + "': " + ex.Message);
                return false;
            }

            string message;
            switch (result)
            {
                case ElfPatchResult.Marked:
                    message = "MyTorch.Layers: marked " + Version + " weak in " + path;
                    break;
                case ElfPatchResult.AlreadyWeak:
                    message = "MyTorch.Layers: " + Version + " already weak in " + path;
                    break;
                default:
                    message = "MyTorch.Layers: " + path + " does not need " + Version + "; left unchanged";
                    break;
            }

            Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, message);
        }

        return !Log.HasLoggedErrors;
    }
}
#endif
