using System;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MyTorch.Layers.Kernels;

/// <summary>
/// Copies a batch of planes from one of the two memory layouts the kernels read to the other: NCHW (each sample C
/// planes of S values) to NHWC (each sample S rows of C values) and back. Each sample is a matrix that is transposed,
/// rows × columns into columns × rows. Values are moved, never computed, so every bit arrives as it left (NaN payloads
/// and signed zeros included), whatever path or thread count moves it.
/// </summary>
/// <remarks>
/// A backward pass whose output gradient arrives in the other layout than its input (a channels-last network whose
/// loss, or a reshape after the layer, hands back a contiguous gradient) reads that gradient through such a copy.
/// </remarks>
internal static unsafe class LayoutKernels
{
    /// <summary>The side of the square blocks the copy moves at a time: two 64 × 64 blocks of doubles fill 64 KB.</summary>
    private const int Block = 64;

    /// <summary>
    /// The long side of a block when the other is shorter than a tile (a few channels): such a block is only a few
    /// sequential runs, so it need not be square to stay in the cache, and its ends, moved value by value, come rarely.
    /// </summary>
    private const int LongBlock = 2048;

    /// <summary>
    /// <paramref name="destination"/> = <paramref name="source"/> in the other layout: source in
    /// <paramref name="sourceLayout"/>, destination NHWC if the source is NCHW and NCHW if it is NHWC.
    /// </summary>
    public static void ToOtherLayout<T>(ReadOnlySpan<T> source, Span<T> destination, PlaneLayout sourceLayout, int threads = 1)
        where T : unmanaged
    {
        int rows = sourceLayout.ChannelsLast ? sourceLayout.Spatial : sourceLayout.Channels;
        int columns = sourceLayout.ChannelsLast ? sourceLayout.Channels : sourceLayout.Spatial;
        Transpose(source, destination, sourceLayout.Batch, rows, columns, threads);
    }

    /// <summary>
    /// destination[m, j, i] = source[m, i, j] for <paramref name="count"/> matrices of <paramref name="rows"/> ×
    /// <paramref name="columns"/> values, each stored row by row, on up to <paramref name="threads"/> threads.
    /// </summary>
    public static void Transpose<T>(ReadOnlySpan<T> source, Span<T> destination, int count, int rows, int columns, int threads = 1)
        where T : unmanaged
    {
        long length = (long)count * rows * columns;
        Debug.Assert(source.Length >= length && destination.Length >= length);
        if (length == 0)
        {
            return;
        }

        fixed (T* ps = source)
        fixed (T* pd = destination)
        {
            var job = new TransposeJob<T>(ps, pd, count, rows, columns);
            ChunkScheduler.Run(ref job, job.Chunks, ChunkScheduler.ThreadsFor((int)length, threads));
        }
    }

    /// <summary>
    /// rows[j·channels + c] = planes[c·spatial + j] for c &lt; <paramref name="channels"/> and j &lt; <paramref name="pixels"/>:
    /// a piece of one NCHW sample, its first <paramref name="pixels"/> positions from <paramref name="planes"/> on, as
    /// channels-last rows, moved as <see cref="Transpose{T}"/> moves its blocks. Nothing at or beyond
    /// <paramref name="planesEnd"/> is read; where the tiles go, each plane is asked for the piece that follows this one.
    /// </summary>
    public static void PlanesToRows<T>(T* planes, int spatial, int channels, int pixels, T* rows, T* planesEnd)
        where T : unmanaged
    {
        Debug.Assert(pixels <= spatial);
        MoveBlock(planes, rows, channels, pixels, spatial, channels, planesEnd, pixels);
    }

    /// <summary>
    /// Consecutive blocks of <see cref="Transpose{T}"/>, in the order (matrix, block row, block column): a chunk moves
    /// about <see cref="ChunkScheduler.ChunkElements"/> values, a band of blocks across the source's rows.
    /// </summary>
    private readonly struct TransposeJob<T> : IChunkJob
        where T : unmanaged
    {
        private readonly T* source;
        private readonly T* destination;
        private readonly T* sourceEnd;
        private readonly int rows;
        private readonly int columns;
        private readonly int rowsPerBlock;
        private readonly int columnsPerBlock;
        private readonly int blockRows;
        private readonly int blockColumns;
        private readonly long blocks;
        private readonly int blocksPerChunk;
        private readonly long prefetchOffset;

        public TransposeJob(T* source, T* destination, int count, int rows, int columns)
        {
            this.source = source;
            this.destination = destination;
            sourceEnd = source + ((long)count * rows * columns);
            this.rows = rows;
            this.columns = columns;
            rowsPerBlock = columns < 8 ? LongBlock : Block;
            columnsPerBlock = rows < 8 ? LongBlock : Block;
            blockRows = Bands(rows, rowsPerBlock);
            blockColumns = Bands(columns, columnsPerBlock);
            blocks = (long)count * blockRows * blockColumns;
            blocksPerChunk = ChunkScheduler.UnitsPerChunk(Math.Min(rows, rowsPerBlock) * Math.Min(columns, columnsPerBlock));

            // Where the rows a block reads go on: two blocks further along them, or, where they are that short, in
            // the rows of the next band of blocks.
            prefetchOffset = columns > 2 * columnsPerBlock ? 2L * columnsPerBlock : (long)rowsPerBlock * columns;
        }

        public int Chunks => (int)((blocks + blocksPerChunk - 1) / blocksPerChunk);

        /// <summary>
        /// How many bands of <paramref name="perBand"/> a side of <paramref name="length"/> takes, the last one
        /// taking the rest: a rest shorter than a tile (8) goes to the band before it rather than into a band of its
        /// own, which would be moved value by value.
        /// </summary>
        private static int Bands(int length, int perBand) =>
            length % perBand is > 0 and < 8 && length > perBand ? length / perBand : (length + perBand - 1) / perBand;

        public void Run(int chunk)
        {
            long first = (long)chunk * blocksPerChunk;
            long end = Math.Min(blocks, first + blocksPerChunk);
            int perMatrix = blockRows * blockColumns;
            long matrixLength = (long)rows * columns;
            for (long b = first; b < end; b++)
            {
                long matrix = b / perMatrix;
                int inMatrix = (int)(b - (matrix * perMatrix));
                int row = inMatrix / blockColumns * rowsPerBlock;
                int column = inMatrix % blockColumns * columnsPerBlock;
                MoveBlock(
                    source + (matrix * matrixLength) + ((long)row * columns) + column,
                    destination + (matrix * matrixLength) + ((long)column * rows) + row,
                    inMatrix / blockColumns < blockRows - 1 ? rowsPerBlock : rows - row,
                    inMatrix % blockColumns < blockColumns - 1 ? columnsPerBlock : columns - column,
                    columns,
                    rows,
                    sourceEnd,
                    prefetchOffset);
            }
        }
    }

    /// <summary>
    /// destination[j·destinationStride + i] = source[i·sourceStride + j] for i &lt; height, j &lt; width: whole tiles of
    /// 8 × 8 four-byte (16 × 16 with AVX-512) or 4 × 4 eight-byte values in vector registers, the rest value by value. Nothing at or beyond
    /// <paramref name="sourceEnd"/> is read. Tiled rows ask for their lines <paramref name="prefetchOffset"/> values on.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void MoveBlock<T>(T* source, T* destination, int height, int width, int sourceStride, int destinationStride, T* sourceEnd, long prefetchOffset)
        where T : unmanaged
    {
        int tile = !Avx.IsSupported ? 0 : sizeof(T) == 4 ? 8 : sizeof(T) == 8 ? 4 : 0;
        if (tile == 8 && height == 3 && width >= 8 && destinationStride == 3 && Avx2.IsSupported)
        {
            Interleave3((float*)source, (float*)destination, width, sourceStride);
            return;
        }

        if (tile == 8 && width == 3 && height >= 8 && sourceStride == 3 && Avx2.IsSupported)
        {
            Deinterleave3((float*)source, (float*)destination, height, destinationStride);
            return;
        }

        if (tile == 8 && height < 8 && width >= 8 && destinationStride == height)
        {
            ShortRows((float*)source, (float*)destination, height, width, sourceStride);
            return;
        }

        if (tile == 8 && width < 8 && height >= 8 && sourceStride == width)
        {
            ShortColumns((float*)source, (float*)destination, height, width, destinationStride, (float*)sourceEnd);
            return;
        }

        // Tiles cover every side at least a tile long, the last one overlapping the one before it where the side is
        // not a whole number of tiles (its values are moved twice, the same way); shorter sides go value by value.
        // With AVX-512, float32 blocks at least 16 a side go through 16 × 16 tiles, each row a whole cache line read or
        // written at once, where the destination's rows are whole lines too (a 64-byte store that straddles two lines
        // costs two). At the transposition alone, 16 × 16 tiles were the faster where those rows are whole lines and the
        // slower where they are not (NCHW rows of 196 values), hence that condition.
        if (tile == 8 && Avx512F.IsSupported && height >= 16 && width >= 16 && destinationStride % 16 == 0)
        {
            tile = 16;
        }

        int tiledHeight = tile > 0 && height >= tile ? height : 0;
        int tiledWidth = tile > 0 && width >= tile ? width : 0;
        // Tiles go along the source's rows, so that the two halves of each cache line a tile row reads (32 bytes) are
        // read one right after the other, unless the destination's rows lie a multiple of 4 KB apart: such lines
        // share a set of the L1 cache, and a block's 64 of them would not stay there until the tiles a band later
        // write their other halves, so then the tiles go along the destination's rows instead, which was much the
        // faster there (NHWC to NCHW with 32×32 planes); elsewhere the two orders were close, along the source's rows
        // mostly the faster.
        bool alongSourceRows = !IsPageMultiple<T>(destinationStride) || IsPageMultiple<T>(sourceStride);
        int outer = alongSourceRows ? tiledHeight : tiledWidth;
        int inner = alongSourceRows ? tiledWidth : tiledHeight;
        for (int u = 0; u < outer; u = NextTile(u, outer, tile))
        {
            for (int v = 0; v < inner; v = NextTile(v, inner, tile))
            {
                (int i, int j) = alongSourceRows ? (u, v) : (v, u);
                T* from = source + ((long)i * sourceStride) + j;
                T* to = destination + ((long)j * destinationStride) + i;

                // A block reads its rows as that many sequential runs, more than the hardware prefetcher follows at
                // once; each tile row asks, once per cache line, for the line that a block to come reads there, into
                // L1 (in probes, faster than asking into L2, and than asking 4 KB ahead).
                if (j % (StreamingStores.LineBytes / sizeof(T)) == 0)
                {
                    for (int r = 0; r < tile; r++)
                    {
                        Prefetch.IntoL1(from + ((long)r * sourceStride) + prefetchOffset, sourceEnd);
                    }
                }

                if (tile == 16)
                {
                    Tile16x16((float*)from, (float*)to, sourceStride, destinationStride);
                }
                else if (tile == 8)
                {
                    Tile8x8((float*)from, (float*)to, sourceStride, destinationStride);
                }
                else
                {
                    Tile4x4((double*)from, (double*)to, sourceStride, destinationStride);
                }
            }
        }

        // A side shorter than a tile: the whole block value by value.
        Scalar(source, destination, 0, height, tiledWidth, width, sourceStride, destinationStride);
        Scalar(source, destination, tiledHeight, height, 0, tiledWidth, sourceStride, destinationStride);
    }

    /// <summary>Whether rows <paramref name="stride"/> values of <typeparamref name="T"/> apart start at the same offset in a 4 KB page.</summary>
    private static bool IsPageMultiple<T>(int stride)
        where T : unmanaged => (long)stride * sizeof(T) % 4096 == 0;

    /// <summary>The start of the tile after the one at <paramref name="at"/> along a side of <paramref name="extent"/>, or the extent itself after the last.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int NextTile(int at, int extent, int tile) => at + tile >= extent ? extent : Math.Min(at + tile, extent - tile);

    /// <summary>
    /// A matrix of fewer than 8 rows of four-byte values (NCHW to NHWC with a few channels), whose destination,
    /// <paramref name="width"/> rows of <paramref name="height"/> values, is one run. Each 8 columns go through an 8 × 8
    /// tile whose missing rows are zeros, and each of its 8 output rows is stored whole: the values past a row's
    /// <paramref name="height"/> land on the next rows, which the next stores (in order) overwrite. The last columns,
    /// whose spare values would land past the run, are moved one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ShortRows(float* source, float* destination, int height, int width, int sourceStride)
    {
        Debug.Assert(height is > 0 and < 8 && width >= 8);
        float* tile = stackalloc float[64];
        new Span<float>(tile + (8 * height), 8 * (8 - height)).Clear();
        int run = width * height;
        int j = 0;
        for (; j + 8 <= width && ((j + 7) * height) + 8 <= run; j += 8)
        {
            for (int k = 0; k < height; k++)
            {
                Avx.Store(tile + (8 * k), Avx.LoadVector256(source + ((long)k * sourceStride) + j));
            }

            // Tile8x8 stores its output rows in order, each 8 values from j·height + q·height on.
            Tile8x8(tile, destination + (j * height), 8, height);
        }

        Scalar(source, destination, 0, height, j, width, sourceStride, height);
    }

    /// <summary>
    /// A matrix of fewer than 8 columns of four-byte values (NHWC to NCHW with a few channels), whose rows lie back
    /// to back: 8 rows at a time go through an 8 × 8 tile loaded from 8 row starts, each load reaching on into the
    /// next rows (never to <paramref name="sourceEnd"/>), and the first <paramref name="width"/> output rows are stored.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void ShortColumns(float* source, float* destination, int height, int width, int destinationStride, float* sourceEnd)
    {
        Debug.Assert(width is > 0 and < 8 && height >= 8);
        float* tile = stackalloc float[64];
        int i = 0;
        for (; i + 8 <= height && source + ((long)(i + 7) * width) + 8 <= sourceEnd; i += 8)
        {
            Tile8x8(source + ((long)i * width), tile, width, 8);
            for (int q = 0; q < width; q++)
            {
                Avx.Store(destination + ((long)q * destinationStride) + i, Avx.LoadVector256(tile + (8 * q)));
            }
        }

        Scalar(source, destination, i, height, 0, width, width, destinationStride);
    }

    /// <summary>
    /// Three rows of four-byte values (NCHW to NHWC with three channels, an image's colours) into one run of
    /// <paramref name="width"/> triples: each 8 columns are three loads, and each of the three output vectors takes
    /// its lanes from all three rows (one permutation of each row, two blends). The last columns are moved one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Interleave3(float* source, float* destination, int width, int sourceStride)
    {
        // Output value m = 8k + l of a group of 24 is row m % 3 at column m / 3.
        var (from0, from1, from2) = (Interleaving.From0, Interleaving.From1, Interleaving.From2);
        int j = 0;
        for (; j + 8 <= width; j += 8)
        {
            var a = Avx.LoadVector256(source + j);
            var b = Avx.LoadVector256(source + sourceStride + j);
            var c = Avx.LoadVector256(source + (2L * sourceStride) + j);
            float* to = destination + (3L * j);
            Avx.Store(to, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(a, from0), Avx2.PermuteVar8x32(b, from0), 0b1001_0010), Avx2.PermuteVar8x32(c, from0), 0b0010_0100));
            Avx.Store(to + 8, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(a, from1), Avx2.PermuteVar8x32(b, from1), 0b0010_0100), Avx2.PermuteVar8x32(c, from1), 0b0100_1001));
            Avx.Store(to + 16, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(a, from2), Avx2.PermuteVar8x32(b, from2), 0b0100_1001), Avx2.PermuteVar8x32(c, from2), 0b1001_0010));
        }

        Scalar(source, destination, 0, 3, j, width, sourceStride, 3);
    }

    /// <summary>
    /// One run of <paramref name="height"/> triples of four-byte values (NHWC to NCHW with three channels) into three
    /// rows: each 8 triples are three loads, and each output row takes its lanes from all three (one permutation of
    /// each, two blends). The last triples are moved one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Deinterleave3(float* source, float* destination, int height, int destinationStride)
    {
        // Row r's value at column p is input value 3p + r of a group of 24: vector (3p + r) / 8, lane (3p + r) % 8.
        var (to0, to1, to2) = (Interleaving.To0, Interleaving.To1, Interleaving.To2);
        int i = 0;
        for (; i + 8 <= height; i += 8)
        {
            float* from = source + (3L * i);
            var v0 = Avx.LoadVector256(from);
            var v1 = Avx.LoadVector256(from + 8);
            var v2 = Avx.LoadVector256(from + 16);
            Avx.Store(destination + i, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(v0, to0), Avx2.PermuteVar8x32(v1, to0), 0b0011_1000), Avx2.PermuteVar8x32(v2, to0), 0b1100_0000));
            Avx.Store(destination + destinationStride + i, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(v0, to1), Avx2.PermuteVar8x32(v1, to1), 0b0001_1000), Avx2.PermuteVar8x32(v2, to1), 0b1110_0000));
            Avx.Store(destination + (2L * destinationStride) + i, Avx.Blend(Avx.Blend(Avx2.PermuteVar8x32(v0, to2), Avx2.PermuteVar8x32(v1, to2), 0b0001_1100), Avx2.PermuteVar8x32(v2, to2), 0b1110_0000));
        }

        Scalar(source, destination, i, height, 0, 3, 3, destinationStride);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static void Scalar<T>(T* source, T* destination, int rowStart, int rowEnd, int columnStart, int columnEnd, int sourceStride, int destinationStride)
        where T : unmanaged
    {
        // Along the longer side in the inner loop, so that it runs long enough to pipeline.
        if (rowEnd - rowStart >= columnEnd - columnStart)
        {
            for (int j = columnStart; j < columnEnd; j++)
            {
                T* to = destination + ((long)j * destinationStride);
                for (int i = rowStart; i < rowEnd; i++)
                {
                    to[i] = source[((long)i * sourceStride) + j];
                }
            }
        }
        else
        {
            for (int i = rowStart; i < rowEnd; i++)
            {
                T* from = source + ((long)i * sourceStride);
                for (int j = columnStart; j < columnEnd; j++)
                {
                    destination[((long)j * destinationStride) + i] = from[j];
                }
            }
        }
    }

    /// <summary>
    /// A 16 × 16 tile of four-byte values in AVX-512 registers: unpack pairs of rows, then pairs of pairs, which leaves
    /// in each 128-bit lane L of vector 4g + m the values of column 4L + m in rows 4g to 4g + 3; then, for each m, the
    /// 4 × 4 matrix of 128-bit lanes is transposed in two rounds of lane shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile16x16(float* source, float* destination, int sourceStride, int destinationStride)
    {
        var (u0, u1, u2, u3) = FourColumns(source, sourceStride);
        var (u4, u5, u6, u7) = FourColumns(source + (4L * sourceStride), sourceStride);
        var (u8, u9, u10, u11) = FourColumns(source + (8L * sourceStride), sourceStride);
        var (u12, u13, u14, u15) = FourColumns(source + (12L * sourceStride), sourceStride);
        LaneTranspose(u0, u4, u8, u12, destination, destinationStride);
        LaneTranspose(u1, u5, u9, u13, destination + destinationStride, destinationStride);
        LaneTranspose(u2, u6, u10, u14, destination + (2L * destinationStride), destinationStride);
        LaneTranspose(u3, u7, u11, u15, destination + (3L * destinationStride), destinationStride);
    }

    /// <summary>
    /// Four rows of 16 four-byte values as four vectors m = 0…3, each 128-bit lane L of vector m holding column 4L + m
    /// of the four rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float>, Vector512<float>, Vector512<float>, Vector512<float>) FourColumns(float* rows, int stride)
    {
        var r0 = Vector512.Load(rows);
        var r1 = Vector512.Load(rows + stride);
        var r2 = Vector512.Load(rows + (2L * stride));
        var r3 = Vector512.Load(rows + (3L * stride));
        var t0 = Avx512F.UnpackLow(r0, r1);
        var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3);
        var t3 = Avx512F.UnpackHigh(r2, r3);
        return (Avx512F.Shuffle(t0, t2, 0x44), Avx512F.Shuffle(t0, t2, 0xEE), Avx512F.Shuffle(t1, t3, 0x44), Avx512F.Shuffle(t1, t3, 0xEE));
    }

    /// <summary>
    /// Output rows m, 4 + m, 8 + m and 12 + m (<paramref name="destination"/> is row m's start) from the four vectors
    /// m of <see cref="FourColumns"/> of row groups 0 to 3: row 4L + m is lane L of each of them, in group order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LaneTranspose(Vector512<float> g0, Vector512<float> g1, Vector512<float> g2, Vector512<float> g3, float* destination, int stride)
    {
        var v0 = Avx512F.Shuffle4x128(g0, g1, 0x44);
        var v1 = Avx512F.Shuffle4x128(g0, g1, 0xEE);
        var v2 = Avx512F.Shuffle4x128(g2, g3, 0x44);
        var v3 = Avx512F.Shuffle4x128(g2, g3, 0xEE);
        Avx512F.Shuffle4x128(v0, v2, 0x88).Store(destination);
        Avx512F.Shuffle4x128(v0, v2, 0xDD).Store(destination + (4L * stride));
        Avx512F.Shuffle4x128(v1, v3, 0x88).Store(destination + (8L * stride));
        Avx512F.Shuffle4x128(v1, v3, 0xDD).Store(destination + (12L * stride));
    }

    /// <summary>An 8 × 8 tile of four-byte values: unpack pairs of rows, then pairs of pairs, then swap 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile8x8(float* source, float* destination, int sourceStride, int destinationStride)
    {
        var r0 = Avx.LoadVector256(source);
        var r1 = Avx.LoadVector256(source + sourceStride);
        var r2 = Avx.LoadVector256(source + (2L * sourceStride));
        var r3 = Avx.LoadVector256(source + (3L * sourceStride));
        var r4 = Avx.LoadVector256(source + (4L * sourceStride));
        var r5 = Avx.LoadVector256(source + (5L * sourceStride));
        var r6 = Avx.LoadVector256(source + (6L * sourceStride));
        var r7 = Avx.LoadVector256(source + (7L * sourceStride));

        // Per 128-bit half, tK holds the elements of two rows interleaved: (a0 b0 a1 b1 | a4 b4 a5 b5) and so on.
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);

        // Per half, column k of four rows: (a0 b0 c0 d0 | a4 b4 c4 d4) and so on.
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);

        Avx.Store(destination, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(destination + destinationStride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(destination + (2L * destinationStride), Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(destination + (3L * destinationStride), Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(destination + (4L * destinationStride), Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(destination + (5L * destinationStride), Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(destination + (6L * destinationStride), Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(destination + (7L * destinationStride), Avx.Permute2x128(u3, u7, 0x31));
    }

    /// <summary>A 4 × 4 tile of eight-byte values: unpack pairs of rows, then swap 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tile4x4(double* source, double* destination, int sourceStride, int destinationStride)
    {
        var r0 = Avx.LoadVector256(source);
        var r1 = Avx.LoadVector256(source + sourceStride);
        var r2 = Avx.LoadVector256(source + (2L * sourceStride));
        var r3 = Avx.LoadVector256(source + (3L * sourceStride));

        // (a0 b0 | a2 b2), (a1 b1 | a3 b3), (c0 d0 | c2 d2), (c1 d1 | c3 d3).
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);

        Avx.Store(destination, Avx.Permute2x128(t0, t2, 0x20));
        Avx.Store(destination + destinationStride, Avx.Permute2x128(t1, t3, 0x20));
        Avx.Store(destination + (2L * destinationStride), Avx.Permute2x128(t0, t2, 0x31));
        Avx.Store(destination + (3L * destinationStride), Avx.Permute2x128(t1, t3, 0x31));
    }

    /// <summary>
    /// The lane permutations of <see cref="Interleave3"/> and <see cref="Deinterleave3"/>. From: for output vector k,
    /// lane l takes column (8k + l) / 3 of whichever row it is blended from. To: for output row r, lane p takes lane
    /// (3p + r) % 8 of whichever input vector it is blended from.
    /// </summary>
    private static class Interleaving
    {
        public static readonly Vector256<int> From0 = Vector256.Create(0, 0, 0, 1, 1, 1, 2, 2);
        public static readonly Vector256<int> From1 = Vector256.Create(2, 3, 3, 3, 4, 4, 4, 5);
        public static readonly Vector256<int> From2 = Vector256.Create(5, 5, 6, 6, 6, 7, 7, 7);
        public static readonly Vector256<int> To0 = Vector256.Create(0, 3, 6, 1, 4, 7, 2, 5);
        public static readonly Vector256<int> To1 = Vector256.Create(1, 4, 7, 2, 5, 0, 3, 6);
        public static readonly Vector256<int> To2 = Vector256.Create(2, 5, 0, 3, 6, 1, 4, 7);
    }
}
