using System;
using System.Globalization;
using System.Numerics;
using System.Runtime.InteropServices;
using MyTorch.Layers.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.Functional;

/// <summary>
/// The explicit forward and backward of 2-d (channel) dropout, as libtorch's <c>feature_dropout</c> computes it,
/// for people who drive the layer by hand. No autograd graph is built; <see cref="Dropout2d"/> wires these into autograd.
/// </summary>
/// <remarks>
/// The mask is libtorch's: <c>bernoulli_(1 − p)</c> over a tensor of N·C elements of the input's dtype, from the
/// given generator or TorchSharp's default CPU generator, then divided by (1 − p) in that dtype. MyTorch.Layers' kernel
/// makes those draws itself, from the generator's state, which it reads and hands back advanced as libtorch's draw
/// would advance it; a mask of 8,192 values or more is drawn in parts of whole samples, in order, while other threads
/// apply the parts drawn. Where libtorch does not draw with the generator's own engine (built with MKL, it can seed an
/// MKL stream instead) libtorch's <c>bernoulli_</c> draws the mask. Either way, after the same
/// <c>torch.manual_seed(s)</c> the result is bit for bit TorchSharp's <c>nn.functional.dropout2d</c>, and the generator
/// ends in the same state. The kernel's read and write of the state are one step for MyTorch.Layers' own draws, but not
/// for libtorch's: a libtorch operation drawing from the same generator on another thread at that moment repeats numbers.
/// </remarks>
public static class Dropout2dFunctional
{
    private const string LeafInPlace = "a leaf Variable that requires grad is being used in an in-place operation.";

    /// <summary>
    /// Zeroes each channel (n, c) of the input with probability <paramref name="p"/> and scales the others by 1/(1 − p):
    /// output = input · mask, mask[n, c] = 0 for a dropped channel and T(1) / T(1 − p) for a kept one, both products
    /// taken in the input's dtype T. A 3-D input (C, H, W) is one sample: whole (H, W) planes are dropped.
    /// p = 1 gives input · 0 (NaN and ±∞ become NaN, negative values −0.0) and draws nothing, as libtorch does.
    /// Not training, p = 0 or an empty input: nothing is drawn or computed and the output is the input itself.
    /// </summary>
    /// <param name="input">(N, C, H, W) or (C, H, W), float32, float64, bfloat16 or float16, on the CPU, in any memory layout.</param>
    /// <param name="p">Probability of dropping a channel, in [0, 1].</param>
    /// <param name="training">Drop channels; when false the input is returned as it is.</param>
    /// <param name="inplace">Write the output into <paramref name="input"/>'s memory.</param>
    /// <param name="generator">Where the Bernoulli draws come from; <see langword="null"/> for TorchSharp's default CPU generator.</param>
    /// <returns>
    /// The output and the mask. The output is in the input's memory layout (contiguous or channels-last; other strides
    /// give a contiguous output). When nothing is dropped, or with <paramref name="inplace"/>, it is the input's own
    /// tensor under a new handle, as TorchSharp returns it: same storage, same autograd identity, and disposing it does
    /// not dispose <paramref name="input"/>. The mask has shape (N, C, 1, 1), or (C, 1, 1) for a 3-D input, and the
    /// input's dtype, so that output = input · mask broadcasts; it is all ones when nothing is dropped and all zeros
    /// when p = 1.
    /// </returns>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="input"/> has been disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="p"/> is outside [0, 1] or NaN: "dropout probability has to be between 0 and 1, but got 1.5", PyTorch's text.
    /// </exception>
    /// <exception cref="ArgumentException">
    /// The input is not 3-D or 4-D, or not float32, float64, bfloat16 or float16; or, with <paramref name="inplace"/>, several of its
    /// elements share memory (an expanded tensor), or it requires grad while grad mode is on (this function records no
    /// autograd history, so it would change the tensor behind autograd's back; a leaf gets libtorch's message).
    /// Nothing is written or drawn.
    /// </exception>
    /// <exception cref="NotSupportedException">The input is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static (Tensor Output, Tensor Mask) Forward(
        Tensor input,
        double p = 0.5,
        bool training = true,
        bool inplace = false,
        Generator? generator = null)
    {
        Check.Alive(input, nameof(input));
        CheckProbability(p);
        long[] shape = CheckInput(input, nameof(input));
        if (!Drops(input, p, training))
        {
            return (input.alias(), ones(MaskShape(shape), input.dtype));
        }

        if (inplace)
        {
            CheckInPlace(input, nameof(input), recordsHistory: false);
        }

        var output = Apply(input, shape, p, inplace, generator, out var mask);
        return (inplace ? input.alias() : output, mask);
    }

    /// <summary>
    /// Gradient of <see cref="Forward(Tensor, double, bool, bool, Generator?)"/> with respect to its input:
    /// gradInput = gradOutput · mask, per channel, in the dtype of both (what libtorch's MulBackward computes, so the
    /// result is bit for bit libtorch's).
    /// </summary>
    /// <param name="gradOutput">dy, (N, C, H, W) or (C, H, W), float32, float64, bfloat16 or float16, on the CPU, any memory layout.</param>
    /// <param name="mask">
    /// The mask <see cref="Forward(Tensor, double, bool, bool, Generator?)"/> returned: (N, C, 1, 1), or (C, 1, 1) for
    /// 3-D, contiguous, dy's dtype.
    /// </param>
    /// <returns>dx, a new tensor in gradOutput's memory layout (contiguous or channels-last; other strides give a contiguous one).</returns>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ObjectDisposedException">A tensor has been disposed.</exception>
    /// <exception cref="ArgumentException">
    /// <paramref name="gradOutput"/> is not 3-D or 4-D or not float32, float64, bfloat16 or float16; the mask's dtype differs from it, its
    /// shape is not the one above, or it is not contiguous.
    /// </exception>
    /// <exception cref="NotSupportedException">A tensor is not on the CPU, or has more than <see cref="int.MaxValue"/> elements.</exception>
    public static Tensor Backward(Tensor gradOutput, Tensor mask)
    {
        long[] shape = CheckInput(gradOutput, nameof(gradOutput));
        CheckMask(mask, gradOutput.dtype, MaskShape(shape));
        return BackwardOnPlanes(gradOutput, shape, mask);
    }

    /// <summary>
    /// <see cref="Forward(Tensor, double, bool, bool, Generator?)"/> for another channel dropout layer's
    /// <paramref name="ranks"/>: the input read as its planes (<see cref="DropoutRanks.AsPlanes"/>, the same memory and
    /// the same N·C channels, so the same draws), the output and the mask given the input's rank again.
    /// </summary>
    internal static (Tensor Output, Tensor Mask) Forward(
        Tensor input,
        double p,
        bool training,
        bool inplace,
        Generator? generator,
        DropoutRanks ranks)
    {
        Check.Alive(input, nameof(input));
        CheckProbability(p);
        long[] shape = ranks.Check(input, nameof(input));
        Check.KernelReadable(input, nameof(input), shape);
        long[] maskShape = ranks.MaskShape(shape);
        if (!Drops(input, p, training))
        {
            return (input.alias(), ones(maskShape, input.dtype));
        }

        if (inplace)
        {
            // On the input rather than on the view of it: a leaf gets libtorch's message, an expanded tensor the overlap's.
            CheckInPlace(input, nameof(input), recordsHistory: false, ranks.Layer);
        }

        long[] planeShape = ranks.Planes(shape);
        using var planes = ranks.AsPlanes(input, planeShape, inplace, nameof(input));
        var output = Apply(planes, planeShape, p, inplace, generator, out var mask);

        // In place the output is the planes' view itself, which the using disposes.
        return (inplace ? input.alias() : DropoutRanks.FromPlanes(output, shape), DropoutRanks.FromPlanes(mask, maskShape));
    }

    /// <summary>
    /// <see cref="Backward(Tensor, Tensor)"/> for another channel dropout layer's <paramref name="ranks"/>: dy and the
    /// mask read as Dropout2d's planes, dx given dy's rank again.
    /// </summary>
    internal static Tensor Backward(Tensor gradOutput, Tensor mask, DropoutRanks ranks)
    {
        long[] shape = ranks.Check(gradOutput, nameof(gradOutput));
        Check.KernelReadable(gradOutput, nameof(gradOutput), shape);
        CheckMask(mask, gradOutput.dtype, ranks.MaskShape(shape));
        long[] planeShape = ranks.Planes(shape);
        using var dy = ranks.AsPlanes(gradOutput, planeShape, inplace: false, nameof(gradOutput));
        using var planeMask = mask.view(MaskShape(planeShape));
        return DropoutRanks.FromPlanes(BackwardOnPlanes(dy, planeShape, planeMask), shape);
    }

    /// <summary>
    /// Input checks shared with the module: a live, 3-D or 4-D, float CPU tensor that a span can index. Returns its
    /// shape, for the caller to use rather than read again.
    /// </summary>
    internal static long[] CheckInput(Tensor input, string name)
    {
        Check.Alive(input, name);
        long[] shape = input.shape;
        if (shape.Length is not (3 or 4))
        {
            throw new ArgumentException(
                string.Create(
                    CultureInfo.InvariantCulture,
                    $"Dropout2d expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got a {shape.Length}-D input of size {Check.Format(shape)}. ") +
                "PyTorch has deprecated other ranks for dropout2d and MyTorch.Layers refuses them; reshape the input to 4-D.",
                name);
        }

        Check.KernelReadable(input, name, shape);
        return shape;
    }

    /// <summary>Refuses a drop probability outside [0, 1], or NaN, with PyTorch's message.</summary>
    internal static void CheckProbability(double p)
    {
        if (!(p >= 0 && p <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability has to be between 0 and 1, but got " + FormatProbability(p));
        }
    }

    /// <summary>Whether a forward changes anything: in training, with p &gt; 0, on a non-empty input.</summary>
    internal static bool Drops(Tensor input, double p, bool training) => training && p > 0 && input.numel() > 0;

    /// <summary>
    /// Checks that <paramref name="input"/> may be written in place, before anything is drawn or written: no shared
    /// memory, and, when autograd would track the write (grad mode on and the input requires grad), the rules libtorch
    /// applies to every in-place operation.
    /// </summary>
    /// <param name="input">The tensor to write.</param>
    /// <param name="name">The argument's name, for messages.</param>
    /// <param name="recordsHistory">
    /// Whether the caller records the write in the autograd graph (the module does). If not, a tensor that autograd
    /// tracks is refused. If so, libtorch itself checks it through a no-op in-place operation, <c>transpose_(0, 0)</c>,
    /// which refuses leaves that require grad, views of them, views made in no-grad mode and views from multi-output
    /// functions with libtorch's messages (the operation changes nothing and adds a free node to the graph).
    /// </param>
    /// <param name="layer">The layer whose explicit forward refuses a tracked tensor, for that message.</param>
    internal static void CheckInPlace(Tensor input, string name, bool recordsHistory, string layer = nameof(Dropout2d))
    {
        Check.NoInternalOverlap(input, name);
        if (!is_grad_enabled() || !input.requires_grad)
        {
            return;
        }

        if (!recordsHistory)
        {
            if (input.is_leaf)
            {
                throw new ArgumentException(LeafInPlace, name);
            }

            throw new ArgumentException(
                $"'{name}' requires grad, and {layer}Functional.{nameof(Forward)} records no autograd history, so an in-place " +
                $"forward would change the tensor behind autograd's back. Use MyTorch.Layers.{layer}, or call this under torch.no_grad().",
                name);
        }

        try
        {
            // libtorch's check_inplace, in its order: unsupported views first, then leaves.
            input.transpose_(0, 0);
        }
        catch (ExternalException e)
        {
            throw new ArgumentException(FirstLine(e.Message), name, e);
        }
    }

    /// <summary>
    /// The forward on a checked input that <see cref="Drops"/>: draws the mask, scales it and applies it.
    /// With <paramref name="inplace"/> the result is written into <paramref name="input"/>, whose version counter is
    /// advanced as any in-place operation does (so autograd detects a saved tensor that was overwritten), and
    /// <paramref name="input"/> itself is returned; otherwise a new tensor in the input's layout is.
    /// </summary>
    internal static Tensor Apply(Tensor input, long[] shape, double p, bool inplace, Generator? generator, out Tensor mask)
    {
        using var scope = NewDisposeScope();
        double keep = 1 - p;
        var source = Layouts.ReadablePlanes(input, shape, out var layout);
        var plane = Layouts.Plane(Layouts.AsBatch(shape), layout);
        var destination = inplace ? source : Layouts.EmptyPlanes(shape, input.dtype, layout);
        var factors = p == 1 ? zeros(MaskShape(shape), input.dtype) : empty(MaskShape(shape), input.dtype);
        DrawAndApplyMask(source, destination, plane, factors, keep, generator);

        Tensor output;
        if (inplace)
        {
            using (no_grad())
            {
                if (ReferenceEquals(source, input))
                {
                    // The kernel wrote behind libtorch's back: a no-op in-place operation advances the version counter.
                    input.transpose_(0, 0);
                }
                else
                {
                    // A strided input was computed in a contiguous copy: write it back (which advances the version counter).
                    input.copy_(source);
                }
            }

            output = input;
        }
        else
        {
            output = destination.MoveToOuterDisposeScope();
        }

        mask = factors.MoveToOuterDisposeScope();
        return output;
    }

    /// <summary>
    /// Refuses a mask that <see cref="Backward(Tensor, Tensor)"/> cannot apply to dy: disposed, not on the CPU, of
    /// another dtype than dy, not of the <paramref name="expected"/> shape, or not contiguous.
    /// </summary>
    private static void CheckMask(Tensor mask, ScalarType dtype, long[] expected)
    {
        Check.Alive(mask, nameof(mask));
        Check.OnCpu(mask, nameof(mask));
        Check.SameDtype(mask, nameof(mask), dtype, "gradOutput");
        Check.SameShape(mask, nameof(mask), expected, "the mask of gradOutput");
        if (!mask.is_contiguous())
        {
            throw new ArgumentException($"'{nameof(mask)}' must be contiguous.", nameof(mask));
        }
    }

    /// <summary>dx = dy · mask for a checked 3-D or 4-D dy of <paramref name="shape"/>, in dy's layout.</summary>
    private static Tensor BackwardOnPlanes(Tensor gradOutput, long[] shape, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var dy = Layouts.ReadablePlanes(gradOutput, shape, out var layout);
        var gradInput = Layouts.EmptyPlanes(shape, gradOutput.dtype, layout);
        var plane = Layouts.Plane(Layouts.AsBatch(shape), layout);
        if (gradOutput.dtype == ScalarType.Float32)
        {
            ChannelDropoutKernels.Backward(TensorMemory.Span<float>(dy, plane), TensorMemory.Span<float>(gradInput, plane), plane, TensorMemory.Vector<float>(mask), KernelThreads.Count);
        }
        else if (Check.IsHalfPrecision(gradOutput.dtype))
        {
            Span<ushort> source = TensorMemory.Span<ushort>(dy, plane);
            Span<ushort> destination = TensorMemory.Span<ushort>(gradInput, plane);
            Span<ushort> factors = TensorMemory.Vector<ushort>(mask);
            if (gradOutput.dtype == ScalarType.BFloat16)
            {
                ChannelDropoutKernels.ApplyHalfPrecisionMask<BFloat16Bits>(source, destination, plane, factors, KernelThreads.Count);
            }
            else
            {
                ChannelDropoutKernels.ApplyHalfPrecisionMask<Float16Bits>(source, destination, plane, factors, KernelThreads.Count);
            }
        }
        else
        {
            ChannelDropoutKernels.Backward(TensorMemory.Span<double>(dy, plane), TensorMemory.Span<double>(gradInput, plane), plane, TensorMemory.Vector<double>(mask), KernelThreads.Count);
        }

        return gradInput.MoveToOuterDisposeScope();
    }

    /// <summary>(N, C, 1, 1) for a 4-D shape, (C, 1, 1) for a 3-D one.</summary>
    internal static long[] MaskShape(long[] shape) => shape.Length == 3 ? [shape[0], 1, 1] : [shape[0], shape[1], 1, 1];

    /// <summary>Python's way of printing a float: 1.5, -0.1, 1e-05, nan, inf.</summary>
    private static string FormatProbability(double p) => p switch
    {
        double.NaN => "nan",
        double.PositiveInfinity => "inf",
        double.NegativeInfinity => "-inf",
        _ => p.ToString("R", CultureInfo.InvariantCulture).Replace('E', 'e'),
    };

    private static string FirstLine(string message)
    {
        int end = message.IndexOf('\n', StringComparison.Ordinal);
        return end < 0 ? message : message[..end];
    }

    /// <summary>
    /// Draws the mask, Bernoulli(keep) then divided by keep in the mask's dtype, and applies it; with keep = 0 (p = 1) the
    /// mask is the zeros given and nothing is drawn, as in libtorch. Where the kernels can make the generator's draws
    /// (<see cref="GeneratorState"/>) they draw from its state, while applying when that pays, and hand the state back;
    /// otherwise libtorch's <c>bernoulli_</c> draws the whole mask in one call.
    /// </summary>
    private static void DrawAndApplyMask(Tensor source, Tensor destination, PlaneLayout plane, Tensor mask, double keep, Generator? generator)
    {
        switch (source.dtype)
        {
            case ScalarType.Float32:
                DrawAndApplyMask<float>(source, destination, plane, mask, keep, generator);
                break;
            case ScalarType.Float64:
                DrawAndApplyMask<double>(source, destination, plane, mask, keep, generator);
                break;
            case ScalarType.BFloat16:
                DrawAndApplyHalfPrecisionMask<BFloat16Bits>(source, destination, plane, mask, keep, generator);
                break;
            default:
                DrawAndApplyHalfPrecisionMask<Float16Bits>(source, destination, plane, mask, keep, generator);
                break;
        }
    }

    /// <summary><see cref="DrawAndApplyMask{T}"/> for a 16-bit dtype: the same draws, in the same two ways.</summary>
    private static void DrawAndApplyHalfPrecisionMask<TFormat>(Tensor source, Tensor destination, PlaneLayout plane, Tensor mask, double keep, Generator? generator)
        where TFormat : struct, IHalfPrecision
    {
        Span<ushort> y = TensorMemory.Span<ushort>(destination, plane);
        ReadOnlySpan<ushort> x = ReferenceEquals(source, destination) ? y : TensorMemory.Span<ushort>(source, plane);
        Span<ushort> factors = TensorMemory.Vector<ushort>(mask);
        int threads = KernelThreads.Count;
        if (keep > 0 && ChannelDropoutKernels.DrawWhileApplying(plane, threads))
        {
            lock (GeneratorState.Gate)
            {
                using var state = GeneratorState.TryRead(generator, out var twister);
                if (state is not null)
                {
                    ChannelDropoutKernels.DrawAndApplyHalfPrecisionMask<TFormat>(x, y, plane, factors, keep, ref twister, threads);
                    GeneratorState.Write(generator, state, twister);
                    return;
                }
            }
        }

        if (keep > 0)
        {
            lock (GeneratorState.Gate)
            {
                using var state = GeneratorState.TryRead(generator, out var twister);
                if (state is null)
                {
                    mask.bernoulli_(keep, generator);
                }
                else
                {
                    ChannelDropoutKernels.DrawHalfPrecisionMask<TFormat>(ref twister, factors, keep);
                    GeneratorState.Write(generator, state, twister);
                }
            }

            ChannelDropoutKernels.ScaleHalfPrecisionMask<TFormat>(factors, keep);
        }

        ChannelDropoutKernels.ApplyHalfPrecisionMask<TFormat>(x, y, plane, factors, threads);
    }

    private static void DrawAndApplyMask<T>(Tensor source, Tensor destination, PlaneLayout plane, Tensor mask, double keep, Generator? generator)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
    {
        Span<T> y = TensorMemory.Span<T>(destination, plane);
        ReadOnlySpan<T> x = ReferenceEquals(source, destination) ? y : TensorMemory.Span<T>(source, plane);
        Span<T> factors = TensorMemory.Vector<T>(mask);
        int threads = KernelThreads.Count;
        if (keep == 0)
        {
            ChannelDropoutKernels.ApplyMask(x, y, plane, factors, threads);
            return;
        }

        if (ChannelDropoutKernels.DrawWhileApplying(plane, threads))
        {
            lock (GeneratorState.Gate)
            {
                using var state = GeneratorState.TryRead(generator, out var twister);
                if (state is not null)
                {
                    ChannelDropoutKernels.DrawAndApplyMask(x, y, plane, factors, keep, ref twister, threads);
                    GeneratorState.Write(generator, state, twister);
                    return;
                }
            }
        }

        DrawMask(mask, factors, keep, generator);
        ChannelDropoutKernels.ApplyMask(x, y, plane, factors, threads);
    }

    /// <summary>
    /// The channel factors of a float32 or float64 input of <paramref name="shape"/> (4-D), drawn as
    /// <see cref="Forward(Tensor, double, bool, bool, Generator?)"/> draws them: an (N, C, 1, 1) tensor of zeros and
    /// T(1)/T(1 − p), for a layer that applies them itself. p is in (0, 1].
    /// </summary>
    internal static Tensor DrawMask(long[] shape, ScalarType dtype, double p, Generator? generator)
    {
        System.Diagnostics.Debug.Assert(p > 0 && p <= 1 && dtype is ScalarType.Float32 or ScalarType.Float64);
        double keep = 1 - p;
        var mask = MaskToDraw(shape, dtype, p);
        if (keep > 0)
        {
            if (dtype == ScalarType.Float32)
            {
                DrawMask(mask, TensorMemory.Vector<float>(mask), keep, generator);
            }
            else
            {
                DrawMask(mask, TensorMemory.Vector<double>(mask), keep, generator);
            }
        }

        return mask;
    }

    /// <summary>
    /// The (N, C, 1, 1) tensor <see cref="DrawMask(long[], ScalarType, double, Generator?)"/> draws into: zeros for
    /// p = 1, which draws nothing, otherwise uninitialised.
    /// </summary>
    internal static Tensor MaskToDraw(long[] shape, ScalarType dtype, double p) =>
        p == 1 ? zeros(MaskShape(shape), dtype) : empty(MaskShape(shape), dtype);

    /// <summary>
    /// Bernoulli(keep) draws into <paramref name="factors"/> (the memory of <paramref name="mask"/>), then divided by keep:
    /// from the generator's state by our kernel where it can be read, otherwise by libtorch's <c>bernoulli_</c>.
    /// </summary>
    private static void DrawMask<T>(Tensor mask, Span<T> factors, double keep, Generator? generator)
        where T : unmanaged, IBinaryFloatingPointIeee754<T> =>
        DrawMaskBeside(mask, factors, keep, generator, default(NoWork));

    /// <summary>
    /// <see cref="DrawMask{T}(Tensor, Span{T}, double, Generator?)"/> while <paramref name="work"/> runs: where our
    /// kernel draws, it draws as a side piece of <paramref name="work"/>'s parallel run; otherwise before it.
    /// </summary>
    internal static unsafe void DrawMaskBeside<T, TWork>(Tensor mask, Span<T> factors, double keep, Generator? generator, TWork work)
        where T : unmanaged, IBinaryFloatingPointIeee754<T>
        where TWork : IWorkBeside, allows ref struct
    {
        lock (GeneratorState.Gate)
        {
            using var state = GeneratorState.TryRead(generator, out var twister);
            if (state is null)
            {
                mask.bernoulli_(keep, generator);
                ChannelDropoutKernels.ScaleMask(factors, keep);
                work.Run(default);
                return;
            }

            fixed (T* pf = factors)
            {
                var draw = new ChannelDropoutKernels.MaskDraw<T>(&twister, pf, factors.Length, keep);
                work.Run(SidePiece.Of(&draw));
            }

            GeneratorState.Write(generator, state, twister);
        }
    }

    /// <summary>Work that runs a side piece beside its own parallel run (see <see cref="SidePiece"/>).</summary>
    internal interface IWorkBeside
    {
        /// <summary>Runs the work, with <paramref name="side"/> beside it if present.</summary>
        void Run(SidePiece side);
    }

    /// <summary>No work: the side piece alone.</summary>
    private readonly struct NoWork : IWorkBeside
    {
        public void Run(SidePiece side)
        {
            if (side.Present)
            {
                side.Run();
            }
        }
    }
}
