using System;
using System.Collections.Generic;
using System.Linq;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

#pragma warning disable CS8981

public static partial class layers
{
    /// <summary>
    /// Fuses groups of a model's submodules, each a BatchNorm2d followed by a ReLU, a Dropout2d or both, into one
    /// <see cref="MyTorch.Layers.BatchNormReLUDropout2d"/>, in the spirit of PyTorch's
    /// <c>torch.ao.quantization.fuse_modules</c>: the block takes the BatchNorm2d's place and <c>nn.Identity</c> the
    /// others'. The model is changed in place and returned, as TorchSharp has no general way to copy a module.
    /// </summary>
    /// <remarks>
    /// The block shares the BatchNorm2d's parameters and buffers (the same tensors: an optimizer made before fusing
    /// keeps training them) and its <c>state_dict</c> keys, so a model saved before fusing loads after it, and the other way
    /// round. Its results are bit for bit those of our BatchNorm2d, TorchSharp's ReLU and our Dropout2d one after another;
    /// a TorchSharp BatchNorm2d or Dropout2d in a group is replaced by what ours computes. It follows <c>train()</c> and
    /// <c>eval()</c> from then on; a group whose modules are in different modes is refused. Names are dotted paths from
    /// the model ("layer1.0.bn1"); a module may sit in a field of a model class (which must be able to hold the new
    /// module: declare it as <c>nn.Module&lt;Tensor, Tensor&gt;</c>), a Sequential, a ModuleList or a ModuleDict.
    /// Every group is checked before anything changes.
    /// </remarks>
    /// <typeparam name="TModel">The model's type.</typeparam>
    /// <param name="model">The model to change.</param>
    /// <param name="modules_to_fuse">
    /// Groups of two or three names: a BatchNorm2d (ours or TorchSharp's), then TorchSharp's ReLU, our or TorchSharp's
    /// Dropout2d, or both in that order, e.g. <c>[["bn1", "relu1", "drop1"], ["bn2", "relu2"]]</c>.
    /// </param>
    /// <returns><paramref name="model"/>, changed.</returns>
    /// <exception cref="ArgumentNullException">An argument or a group is null.</exception>
    /// <exception cref="ArgumentException">
    /// A name does not name a submodule or appears twice; a group is not a BatchNorm2d followed by a ReLU and/or a
    /// Dropout2d; its modules are in different training modes; its BatchNorm2d is not float32 or float64; a field holding
    /// a module cannot hold its replacement. Nothing is changed.
    /// </exception>
    /// <exception cref="NotSupportedException">A module is held where it cannot be replaced (not in a field or a TorchSharp container). Nothing is changed.</exception>
    public static TModel fuse_modules<TModel>(TModel model, string[][] modules_to_fuse)
        where TModel : nn.Module
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(modules_to_fuse);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var plans = new List<(ModuleTree.Place[] Places, Func<BatchNormReLUDropout2d> Build)>();
        foreach (var group in modules_to_fuse)
        {
            ArgumentNullException.ThrowIfNull(group, nameof(modules_to_fuse));
            foreach (var name in group)
            {
                if (!seen.Add(name))
                {
                    throw new ArgumentException($"'{name}' appears in more than one place in the groups to fuse.", nameof(modules_to_fuse));
                }
            }

            var places = group.Select(name => ModuleTree.Find(model, name, nameof(modules_to_fuse))).ToArray();
            plans.Add((places, Plan(places)));
        }

        foreach (var (places, _) in plans)
        {
            ModuleTree.CheckReplaceable(places[0], typeof(BatchNormReLUDropout2d), nameof(modules_to_fuse));
            foreach (var place in places.Skip(1))
            {
                ModuleTree.CheckReplaceable(place, typeof(TorchSharp.Modules.Identity), nameof(modules_to_fuse));
            }
        }

        // Every check has passed: from here on the model changes.
        foreach (var (places, build) in plans)
        {
            ModuleTree.Replace(places[0], build());
            foreach (var place in places.Skip(1))
            {
                ModuleTree.Replace(place, nn.Identity());
            }
        }

        return model;
    }

    /// <summary>Checks one group and returns how to build its block.</summary>
    private static Func<BatchNormReLUDropout2d> Plan(ModuleTree.Place[] places)
    {
        string Describe() => "[" + string.Join(", ", places.Select(p => $"'{p.Path}' ({p.Module.GetType().Name})")) + "]";

        if (places.Length is < 2 or > 3)
        {
            throw new ArgumentException($"A group to fuse has 2 or 3 modules, a BatchNorm2d followed by a ReLU and/or a Dropout2d; got {Describe()}.", "modules_to_fuse");
        }

        if (places[0].Module is not (MyTorch.Layers.BatchNorm2d or TorchSharp.Modules.BatchNorm2d))
        {
            throw new ArgumentException($"A group to fuse starts with a BatchNorm2d (ours or TorchSharp's); got {Describe()}.", "modules_to_fuse");
        }

        var norm = (TorchSharp.Modules.BatchNorm)places[0].Module;
        bool relu = false;
        double p = 0;
        Generator? generator = null;
        int next = 1;
        if (places[next].Module is TorchSharp.Modules.ReLU)
        {
            relu = true;
            next++;
        }

        if (next < places.Length)
        {
            switch (places[next].Module)
            {
                case MyTorch.Layers.Dropout2d ours:
                    (p, generator) = (ours.p, ours.generator);
                    next++;
                    break;
                case TorchSharp.Modules.Dropout2d theirs:
                    p = theirs.p;
                    next++;
                    break;
            }
        }

        if (next != places.Length)
        {
            throw new ArgumentException(
                $"A group to fuse is a BatchNorm2d followed by TorchSharp's ReLU, a Dropout2d (ours or TorchSharp's), or both in that order; got {Describe()}.", "modules_to_fuse");
        }

        if (places.Any(place => place.Module.training != norm.training))
        {
            throw new ArgumentException($"The modules of a group to fuse must all be in training or all in evaluation mode; {Describe()} are not.", "modules_to_fuse");
        }

        var dtype = (norm.weight ?? norm.running_mean)?.dtype ?? ScalarType.Float32;
        if (dtype is not (ScalarType.Float32 or ScalarType.Float64))
        {
            throw new ArgumentException($"'{places[0].Path}' is {dtype}; BatchNormReLUDropout2d is Float32 or Float64.", "modules_to_fuse");
        }

        return () => MyTorch.Layers.BatchNormReLUDropout2d.Sharing(norm, relu, p, generator);
    }
}
