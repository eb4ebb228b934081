using System;
using System.Reflection;
using System.Runtime.InteropServices;

namespace MyTorch.Layers.Distributed.Mpi;

/// <summary>
/// The few MPI functions the process groups use, bound to the MPICH ABI: MPICH, Intel MPI, MVAPICH and Cray MPICH
/// share its library name (libmpi.so.12) and its integer handles, so one binding serves them all. Debian and Ubuntu
/// ship MPICH's library as libmpich.so.12; <c>MYTORCH_MPI_LIBRARY</c> names another path.
/// </summary>
internal static unsafe partial class Mpich
{
    private const string Library = "mpi";

    // Handles and constants of the MPICH ABI (mpi.h).
    public const int CommWorld = 0x44000000;
    public const int CommNull = 0x04000000;
    public const int GroupNull = 0x08000000;
    public const int Byte = 0x4c00010d;
    public const int Int = 0x4c000405;
    public const int Int64 = 0x4c00083a;
    public const int Float = 0x4c00040a;
    public const int Double = 0x4c00080b;
    public const int Max = 0x58000001;
    public const int Min = 0x58000002;
    public const int Sum = 0x58000003;
    public const int ErrorsReturn = 0x54000001;
    public const int ThreadSerialized = 2;
    public const int Success = 0;

    /// <summary>MPI_IN_PLACE.</summary>
    public static readonly void* InPlace = (void*)-1;
    private const int MaxErrorString = 512;

    /// <summary>MPI_STATUS_IGNORE.</summary>
    public static readonly void* StatusIgnore = (void*)1;

    private static readonly string[] Candidates = ["libmpi.so.12", "libmpich.so.12"];

    static Mpich() => NativeLibrary.SetDllImportResolver(typeof(Mpich).Assembly, Resolve);

    /// <summary>Whether an MPICH-ABI library can be loaded on this machine.</summary>
    public static bool Available()
    {
        if (Load() is { } handle)
        {
            NativeLibrary.Free(handle);
            return true;
        }

        return false;
    }

    /// <summary>Throws what MPI said, naming the call, unless it succeeded.</summary>
    public static void Check(int code, string call)
    {
        if (code != Success)
        {
            throw new InvalidOperationException($"{call} failed: {ErrorText(code)} (MPI error {code}).");
        }
    }

    private static string ErrorText(int code)
    {
        byte* text = stackalloc byte[MaxErrorString];
        int length = 0;
        return MPI_Error_string(code, text, &length) == Success ? Marshal.PtrToStringAnsi((IntPtr)text, length) : "unknown error";
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name != Library)
        {
            return IntPtr.Zero;
        }

        return Load() ?? throw new DllNotFoundException(
            "No MPI library of the MPICH ABI was found (libmpi.so.12, libmpich.so.12). Install MPICH (Debian and Ubuntu: " +
            "apt-get install mpich) or set MYTORCH_MPI_LIBRARY to the library's path.");
    }

    private static IntPtr? Load()
    {
        string? configured = Environment.GetEnvironmentVariable("MYTORCH_MPI_LIBRARY");
        foreach (string candidate in string.IsNullOrEmpty(configured) ? Candidates : [configured])
        {
            if (NativeLibrary.TryLoad(candidate, out var handle))
            {
                return handle;
            }
        }

        return null;
    }

    [LibraryImport(Library)]
    public static partial int MPI_Initialized(int* flag);

    [LibraryImport(Library)]
    public static partial int MPI_Finalized(int* flag);

    [LibraryImport(Library)]
    public static partial int MPI_Init_thread(int* argc, byte*** argv, int required, int* provided);

    [LibraryImport(Library)]
    public static partial int MPI_Finalize();

    [LibraryImport(Library)]
    public static partial int MPI_Abort(int comm, int errorcode);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_set_errhandler(int comm, int errhandler);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_rank(int comm, int* rank);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_size(int comm, int* size);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_group(int comm, int* group);

    [LibraryImport(Library)]
    public static partial int MPI_Group_incl(int group, int n, int* ranks, int* newgroup);

    [LibraryImport(Library)]
    public static partial int MPI_Group_translate_ranks(int group1, int n, int* ranks1, int group2, int* ranks2);

    [LibraryImport(Library)]
    public static partial int MPI_Group_free(int* group);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_create(int comm, int group, int* newcomm);

    [LibraryImport(Library)]
    public static partial int MPI_Comm_free(int* comm);

    [LibraryImport(Library)]
    public static partial int MPI_Iallgather(void* sendbuf, int sendcount, int sendtype, void* recvbuf, int recvcount, int recvtype, int comm, int* request);

    [LibraryImport(Library)]
    public static partial int MPI_Iallreduce(void* sendbuf, void* recvbuf, int count, int datatype, int op, int comm, int* request);

    [LibraryImport(Library)]
    public static partial int MPI_Ibcast(void* buffer, int count, int datatype, int root, int comm, int* request);

    [LibraryImport(Library)]
    public static partial int MPI_Ibarrier(int comm, int* request);

    [LibraryImport(Library)]
    public static partial int MPI_Test(int* request, int* flag, void* status);

    [LibraryImport(Library)]
    private static partial int MPI_Error_string(int errorcode, byte* text, int* resultlen);
}
