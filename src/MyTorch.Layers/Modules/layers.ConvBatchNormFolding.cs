using System;
using System.Collections.Generic;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MyTorch.Layers;

// Lower-case on purpose, as in layers.cs.
#pragma warning disable CS8981

public static partial class layers
{
    /// <summary>
    /// Folds an evaluation-mode BatchNorm2d into the Conv2d before it, for inference: returns a new Conv2d whose output is
    /// <c>bn.forward(conv.forward(x))</c>. Per output channel o, with s[o] = γ[o] / sqrt(running_var[o] + eps):
    /// W'[o] = W[o] · s[o] and b'[o] = (b[o] − running_mean[o]) · s[o] + β[o],
    /// where γ = 1 and β = 0 when the BatchNorm is not affine, and b = 0 when the conv has no bias.
    /// </summary>
    /// <remarks>
    /// W' and b' are computed in float64 and rounded once to the conv's dtype. The new conv keeps the conv's channels,
    /// kernel size, stride, padding (including <see cref="Padding.Same"/>), dilation, groups, padding mode, dtype, device
    /// and mode, and always has a bias; its weight requires grad as the conv's does, its bias as the conv's bias (or,
    /// without one, the conv's weight); forward hooks are not carried over. Only the BatchNorm must be in evaluation mode:
    /// a Conv2d computes the same in both, though PyTorch's <c>fuse_conv_bn_eval</c> asks both to be. Nothing is changed
    /// or drawn: the new conv is made on the meta device.
    /// </remarks>
    /// <param name="conv">The convolution; unchanged.</param>
    /// <param name="bn">
    /// TorchSharp's <c>nn.BatchNorm2d</c> or <see cref="MyTorch.Layers.BatchNorm2d"/>, in evaluation mode, with running
    /// statistics, <c>num_features</c> equal to the conv's <c>out_channels</c>, and the conv's dtype and device; unchanged.
    /// </param>
    /// <returns>A new Conv2d, in training mode when <paramref name="conv"/> is.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="conv"/> or <paramref name="bn"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// <paramref name="bn"/> is not a BatchNorm2d (TorchSharp's or MyTorch.Layers': a BatchNorm1d, BatchNorm3d or other
    /// subclass of <see cref="BatchNorm"/> is refused); is in training mode (call <c>.eval()</c> first); has no running
    /// statistics (<c>track_running_stats: false</c>); has a <c>num_features</c> other than the conv's
    /// <c>out_channels</c>, or a per-channel tensor of another length; or has a dtype or device other than the conv's.
    /// Nothing is created.
    /// </exception>
    public static Conv2d fuse_conv_bn_eval(Conv2d conv, BatchNorm bn)
    {
        ArgumentNullException.ThrowIfNull(conv);
        ArgumentNullException.ThrowIfNull(bn);
        CheckFoldable(conv, bn, nameof(bn), pair: null);
        return Fold(conv, bn);
    }

    /// <summary>
    /// Folds, in a Sequential, every Conv2d directly followed by a BatchNorm2d (TorchSharp's or MyTorch.Layers'), as
    /// <see cref="fuse_conv_bn_eval(Conv2d, BatchNorm)"/> does: returns a new Sequential with the same child names in the
    /// same order, in which each such conv is replaced by the folded conv and the BatchNorm2d by <c>nn.Identity()</c> (in
    /// evaluation mode). Every other child is the same module object as in <paramref name="model"/>, not a copy.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Only direct children are considered: a pair inside a nested Sequential or another module is left as it is (the
    /// same object), as is a pair with anything between them (conv → ReLU → BatchNorm2d). A BatchNorm not directly after a
    /// Conv2d stays in place, in whatever mode it is; so does any BatchNorm other than a BatchNorm2d.
    /// </para>
    /// <para>
    /// Training mode: the model's own flag is neither checked nor changed, and the new Sequential gets the same flag
    /// (set before any child is added, so that it reaches none). What is checked is the mode of each BatchNorm2d to be
    /// folded: after <c>model.train()</c> every one is in training and the first pair is refused. The model's flag alone
    /// says nothing: <c>nn.Sequential</c> built from modules in evaluation mode reports training.
    /// </para>
    /// <para>
    /// Every pair is checked before any conv is made, so a refusal creates nothing and changes nothing.
    /// </para>
    /// <para>
    /// The two models share the children that are not replaced: <c>train()</c>, <c>eval()</c> or <c>to()</c> on one
    /// reaches them in the other, and disposing one disposes them.
    /// </para>
    /// </remarks>
    /// <param name="model">The model; unchanged.</param>
    /// <returns>A new Sequential with the model's child names and training flag.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="model"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// A Conv2d and the BatchNorm2d after it cannot be folded, for one of the reasons
    /// <see cref="fuse_conv_bn_eval(Conv2d, BatchNorm)"/> gives (most often: the BatchNorm2d is in training mode); the
    /// message names both children. Nothing is created.
    /// </exception>
    public static Sequential fuse_conv_bn_eval(Sequential model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var children = new List<(string Name, nn.Module Module)>(model.named_children());

        // Every pair is checked before the first conv is made: a refusal leaves nothing half-built.
        var folds = new bool[children.Count];
        for (int i = 0; i + 1 < children.Count; i++)
        {
            if (children[i].Module is Conv2d conv && children[i + 1].Module is BatchNorm bn && IsBatchNorm2d(bn))
            {
                CheckFoldable(conv, bn, nameof(model), $"'{children[i].Name}' and '{children[i + 1].Name}'");
                folds[i] = true;
                i++; // past the BatchNorm2d
            }
        }

        var result = nn.Sequential();
        result.train(model.training); // no children yet: train() reaches none of the shared ones
        for (int i = 0; i < children.Count; i++)
        {
            var (name, module) = children[i];
            if (folds[i])
            {
                var (bnName, bnModule) = children[i + 1];
                var bn = (BatchNorm)bnModule;
                result.append(name, Fold((Conv2d)module, bn));
                var identity = nn.Identity();
                identity.train(bn.training);
                result.append(bnName, identity);
                i++;
            }
            else
            {
                // A Sequential's children are all modules from tensor to tensor.
                result.append(name, (nn.IModule<Tensor, Tensor>)module);
            }
        }

        return result;
    }

    /// <summary>TorchSharp's and ours; any other BatchNorm has another rank, or a forward of its own.</summary>
    private static bool IsBatchNorm2d(BatchNorm bn) => bn is TorchSharp.Modules.BatchNorm2d or MyTorch.Layers.BatchNorm2d;

    /// <summary>Refuses a pair that cannot be folded, before anything is made; <paramref name="pair"/> names it in a Sequential.</summary>
    private static void CheckFoldable(Conv2d conv, BatchNorm bn, string paramName, string? pair)
    {
        string At(string message) => pair is null ? message : $"Cannot fold {pair}: {message}";

        if (!IsBatchNorm2d(bn))
        {
            throw new ArgumentException(
                At($"the BatchNorm is a {bn.GetType().FullName}; only TorchSharp's nn.BatchNorm2d and MyTorch.Layers.BatchNorm2d follow a Conv2d's (N, C, H, W) output."),
                paramName);
        }

        if (bn.training)
        {
            throw new ArgumentException(
                At("the BatchNorm2d is in training mode, where it normalises with each batch's statistics, which no convolution can absorb. " +
                   "Call .eval() on it (or on the model) first: folding is for inference, and PyTorch's fuse_conv_bn_eval refuses training mode too."),
                paramName);
        }

        var mean = bn.running_mean;
        var variance = bn.running_var;
        if (mean is null || variance is null)
        {
            throw new ArgumentException(
                At("the BatchNorm2d has no running statistics (track_running_stats: false), so it normalises with each batch's statistics even in evaluation mode; no convolution can absorb them."),
                paramName);
        }

        long channels = conv.out_channels;
        if (bn.num_features != channels)
        {
            throw new ArgumentException(
                At($"the BatchNorm2d has num_features {bn.num_features} but the Conv2d has out_channels {channels}."),
                paramName);
        }

        var weight = conv.weight;
        var gamma = bn.affine ? bn.weight : null;
        ReadOnlySpan<(string Name, Tensor? Tensor)> perChannel =
            [("running_mean", mean), ("running_var", variance), ("weight", gamma), ("bias", bn.bias)];
        foreach (var (name, tensor) in perChannel)
        {
            if (tensor is null)
            {
                continue;
            }

            if (tensor.numel() != channels)
            {
                throw new ArgumentException(At($"the BatchNorm2d's {name} has {tensor.numel()} elements, not {channels}."), paramName);
            }

            if (tensor.dtype != weight.dtype)
            {
                throw new ArgumentException(
                    At($"the BatchNorm2d's {name} has dtype {tensor.dtype} but the Conv2d's weight has dtype {weight.dtype}; they must match (move one with .to(dtype) first)."),
                    paramName);
            }

            if (!SameDevice(tensor, weight))
            {
                throw new ArgumentException(
                    At($"the BatchNorm2d's {name} is on device {tensor.device} but the Conv2d's weight is on {weight.device}; they must match."),
                    paramName);
            }
        }

        if (conv.bias is { } b && (b.dtype != weight.dtype || !SameDevice(b, weight)))
        {
            throw new ArgumentException(
                At($"the Conv2d's bias ({b.dtype} on {b.device}) and weight ({weight.dtype} on {weight.device}) differ in dtype or device."),
                paramName);
        }
    }

    /// <summary>Device by type and index: <see cref="Device"/> does not compare by value.</summary>
    private static bool SameDevice(Tensor a, Tensor b) => a.device_type == b.device_type && a.device_index == b.device_index;

    /// <summary>The folded conv of a checked pair (see <see cref="fuse_conv_bn_eval(Conv2d, BatchNorm)"/> for the formula).</summary>
    private static Conv2d Fold(Conv2d conv, BatchNorm bn)
    {
        var weight = conv.weight;
        var dtype = weight.dtype;
        var fused = NewConv2dLike(conv);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();

        // Scalars held by name: a temporary one may be finalised by a collection during the native call that reads it.
        using Scalar eps = bn.eps, one = 1;
        var mean = bn.running_mean!.detach().to(ScalarType.Float64);
        var deviation = bn.running_var!.detach().to(ScalarType.Float64).add(eps, one).sqrt();
        var scale = (bn.affine ? bn.weight : null) is { } gamma
            ? gamma.detach().to(ScalarType.Float64).div(deviation)
            : deviation.reciprocal();

        var w = weight.detach().to(ScalarType.Float64).mul(scale.view(-1, 1, 1, 1)).to(dtype);
        var shifted = conv.bias is { } b ? b.detach().to(ScalarType.Float64).sub(mean) : mean.neg();
        var folded = shifted.mul(scale);
        if (bn.bias is { } beta)
        {
            folded = folded.add(beta.detach().to(ScalarType.Float64), one);
        }

        // The setters take the parameters out of this scope.
        fused.weight = new Parameter(w, weight.requires_grad);
        fused.bias = new Parameter(folded.to(dtype), conv.bias?.requires_grad ?? weight.requires_grad);
        return fused;
    }

    /// <summary>
    /// A Conv2d with <paramref name="conv"/>'s geometry, padding and mode, and meta-device parameters for the caller to
    /// replace: on the meta device the constructor's initialisation draws no random numbers and fills no memory.
    /// </summary>
    private static Conv2d NewConv2dLike(Conv2d conv)
    {
        var shape = conv.weight.shape;
        var fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (shape[2], shape[3]),
            padding_mode: conv.padding_mode,
            groups: conv.groups,
            bias: true,
            device: META,
            dtype: conv.weight.dtype);

        // The arrays as the conv holds them (their setters are public, and may have been used), then the padding, whose
        // 'same' form is worked out from them.
        fused.kernel_size = (long[])conv.kernel_size.Clone();
        fused.stride = (long[])conv.stride.Clone();
        fused.dilation = (long[])conv.dilation.Clone();
        if (conv.padding_type is { } type)
        {
            fused.SetPadding(type);
        }
        else
        {
            fused.SetPadding(conv.padding is { } padding ? (long[])padding.Clone() : [0, 0]);
        }

        fused.train(conv.training);
        return fused;
    }
}
#pragma warning restore CS8981
