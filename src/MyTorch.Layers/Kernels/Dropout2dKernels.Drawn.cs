using System;
using System.Diagnostics;
using System.Numerics;
using System.Threading;

namespace MyTorch.Layers.Kernels;

/// <summary>The forward with the mask drawn while it is applied.</summary>
/// <remarks>
/// libtorch draws a Bernoulli mask one value at a time on one thread, about 10 ns a value: for a mask of N·C = 131,072
/// values that is more than a millisecond, five times as long as applying the mask to the input. Drawing the mask in
/// parts, in order, gives the same values and leaves the generator where one draw would (each value takes the next
/// numbers of the generator's sequence), so one thread can draw while the others apply the parts already drawn.
/// </remarks>
internal static partial class Dropout2dKernels
{
    /// <summary>About this many mask values per part of a drawn mask (whole samples, at least one).</summary>
    public const int DrawPartValues = 4096;

    /// <summary>
    /// Whether <see cref="DrawAndApplyMask{T}"/> pays for <paramref name="layout"/> on <paramref name="threads"/> threads:
    /// the mask has at least two parts and the input is large enough for the kernels to use more than one thread.
    /// </summary>
    public static bool DrawWhileApplying(PlaneLayout layout, int threads) =>
        threads > 1
        && ChunkScheduler.ThreadsFor(layout.Length, threads) > 1
        && (long)layout.Batch * layout.Channels >= 2 * DrawPartValues
        && layout.Batch >= 2;

    /// <summary>
    /// Draws the mask and applies it: <c>draw(state, first, count)</c> fills mask[first, first + count) with Bernoulli draws
    /// (each 0 or 1) for whole samples, in order, on one thread, and each part is scaled as <see cref="ScaleMask{T}"/>
    /// scales it; meanwhile the other threads compute y[n, c, s] = x[n, c, s] · mask[n·C + c], as
    /// <see cref="ApplyMask{T}"/> does, over the chunks whose samples are drawn, in memory order. The mask and y are
    /// what one draw of the whole mask, <see cref="ScaleMask{T}"/> and <see cref="ApplyMask{T}"/> give, bit for bit.
    /// <paramref name="y"/> may be <paramref name="x"/> itself.
    /// </summary>
    /// <remarks>
    /// <c>draw</c> is the caller's: it is called once per part, in order, on any one of the threads, and returns false
    /// if it failed. It must not throw, since it may run on a thread that cannot pass an exception on.
    /// </remarks>
    /// <returns>
    /// Whether every part was drawn. If not, the draw stopped at the part that failed, no value of that part or after it
    /// was applied, and y is partly written.
    /// </returns>
    public static unsafe bool DrawAndApplyMask<T>(
        ReadOnlySpan<T> x,
        Span<T> y,
        PlaneLayout layout,
        Span<T> mask,
        double keepProbability,
        delegate*<void*, int, int, bool> draw,
        void* state,
        int threads,
        bool? streamingStores = null)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Debug.Assert(x.Length >= layout.Length && y.Length >= layout.Length);
        Debug.Assert(mask.Length >= layout.Batch * layout.Channels && keepProbability > 0 && keepProbability <= 1);
        fixed (T* px = x)
        fixed (T* py = y)
        fixed (T* pm = mask)
        {
            var job = new DrawAndApplyJob<T>
            {
                Apply = ApplyMaskJob<T>.For(px, py, pm, layout, streamingStores),
                Draw = draw,
                State = state,
                Keep = keepProbability,
                SamplesPerPart = Math.Max(1, DrawPartValues / Math.Max(1, layout.Channels)),
                UnitsPerSample = layout.ChannelsLast ? layout.Spatial : layout.Channels,
            };

            // Piece 0 draws; each of the others applies the next chunk of the input whose samples are drawn.
            ChunkScheduler.Run(ref job, 1 + job.Apply.Chunks, threads);
            return job.Abandoned == 0;
        }
    }

    /// <summary>
    /// Piece 0 draws the mask part by part and publishes how many samples are drawn; each of the other pieces, one per
    /// chunk of <see cref="Apply"/>, claims the next chunk in order and waits for its samples.
    /// </summary>
    private unsafe struct DrawAndApplyJob<T> : IChunkJob
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        public ApplyMaskJob<T> Apply;
        public delegate*<void*, int, int, bool> Draw;
        public void* State;
        public double Keep;
        public int SamplesPerPart;
        public int UnitsPerSample;

        /// <summary>Samples whose mask values are drawn and scaled, published after their values.</summary>
        public int DrawnSamples;

        /// <summary>The next chunk of <see cref="Apply"/> to claim.</summary>
        public int NextChunk;

        /// <summary>Set when the draw failed: waiting pieces stop.</summary>
        public int Abandoned;

        public void Run(int chunk)
        {
            if (chunk == 0)
            {
                DrawAll();
                return;
            }

            // Pieces may run in any order on any thread; chunks are claimed in memory order, so each waits for the least.
            int claimed = Interlocked.Increment(ref NextChunk) - 1;
            int lastUnit = Math.Min(Apply.Units, (claimed + 1) * Apply.UnitsPerChunk) - 1;
            int needed = (lastUnit / UnitsPerSample) + 1;
            var spin = default(SpinWait);
            while (Volatile.Read(ref DrawnSamples) < needed)
            {
                if (Volatile.Read(ref Abandoned) != 0)
                {
                    return;
                }

                spin.SpinOnce(sleep1Threshold: -1);
            }

            Apply.Run(claimed);
        }

        private void DrawAll()
        {
            int batch = Apply.Layout.Batch;
            int channels = Apply.Layout.Channels;
            for (int first = 0; first < batch; first += SamplesPerPart)
            {
                int samples = Math.Min(SamplesPerPart, batch - first);
                if (!Draw(State, first * channels, samples * channels))
                {
                    Volatile.Write(ref Abandoned, 1);
                    return;
                }

                ScaleMask(new Span<T>(Apply.Mask + ((long)first * channels), samples * channels), Keep);
                Volatile.Write(ref DrawnSamples, first + samples);
            }
        }
    }
}
