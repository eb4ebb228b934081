using System;
using System.Collections;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers;

/// <summary>
/// Finding a model's submodules by their dotted names and putting other modules in their place, in the containers
/// TorchSharp has: <c>Sequential</c>, <c>ModuleList</c>, <c>ModuleDict</c>, and a module's own fields.
/// </summary>
/// <remarks>
/// A module's forward calls its children through whatever holds them: Sequential's list, a list or dictionary, or the
/// fields of a model class. Replacing only the registration would change <c>state_dict</c> but not what runs, so the
/// holder is changed too. TorchSharp keeps Sequential's list and every module's registrations private, and
/// <c>register_module</c> refuses a name that is taken: those are reached by reflection, checked before anything changes.
/// </remarks>
internal static class ModuleTree
{
    /// <summary>A child of <see cref="Parent"/> registered as <see cref="Name"/>, found by the dotted name <see cref="Path"/>.</summary>
    public sealed record Place(nn.Module Parent, string Name, nn.Module Module, string Path);

    /// <summary>Finds the submodule <paramref name="path"/> ("layer1.0.bn1") of <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">There is no such submodule.</exception>
    public static Place Find(nn.Module model, string path, string parameterName)
    {
        if (string.IsNullOrEmpty(path))
        {
            throw new ArgumentException("A module name is empty.", parameterName);
        }

        nn.Module parent = model;
        string[] names = path.Split('.');
        for (int i = 0; ; i++)
        {
            var child = parent.named_children().FirstOrDefault(c => c.name == names[i]).module;
            if (child is null)
            {
                string at = string.Join('.', names[..i]);
                throw new ArgumentException($"The model has no submodule '{path}': {(i == 0 ? "the model" : $"'{at}'")} has no child named '{names[i]}'.", parameterName);
            }

            if (i == names.Length - 1)
            {
                return new Place(parent, names[i], child, path);
            }

            parent = child;
        }
    }

    /// <summary>
    /// Refuses, with nothing changed, a place whose holder cannot take <paramref name="replacement"/>'s type: a field
    /// of a narrower type, or a container TorchSharp gives no way to change.
    /// </summary>
    public static void CheckReplaceable(Place place, Type replacement, string parameterName)
    {
        if (Registry?.FieldType != typeof(TorchSharp.Utils.OrderedDict<string, nn.Module>))
        {
            throw new NotSupportedException("This version of TorchSharp keeps a module's children where we cannot replace them.");
        }

        if (place.Parent is TorchSharp.Modules.Sequential)
        {
            if (SequentialList is null || !typeof(nn.IModule<Tensor, Tensor>).IsAssignableFrom(replacement))
            {
                throw new NotSupportedException($"'{place.Path}' is in a Sequential, whose list of modules this version of TorchSharp does not let us change.");
            }

            return;
        }

        if (Indexer(place) is { } indexer)
        {
            if (!indexer.PropertyType.IsAssignableFrom(replacement))
            {
                throw new ArgumentException(
                    $"'{place.Path}' is in a {place.Parent.GetType().Name}, which cannot hold a {replacement.Name}.", parameterName);
            }

            return;
        }

        var fields = HoldingFields(place).ToArray();
        if (fields.Length == 0)
        {
            throw new NotSupportedException(
                $"'{place.Path}' is not held in a field of {place.Parent.GetType().Name}, nor in a Sequential, ModuleList or ModuleDict, so its forward would keep calling it.");
        }

        foreach (var field in fields)
        {
            if (!field.FieldType.IsAssignableFrom(replacement))
            {
                throw new ArgumentException(
                    $"'{place.Path}' is held in the field '{field.Name}' of type {field.FieldType.Name}, which cannot hold a {replacement.Name}; declare it as nn.Module<Tensor, Tensor>.",
                    parameterName);
            }
        }
    }

    /// <summary>Puts <paramref name="replacement"/> in the place, both where the parent's forward finds it and in its registration.</summary>
    public static void Replace(Place place, nn.Module replacement)
    {
        var parent = place.Parent;
        switch (parent)
        {
            case TorchSharp.Modules.Sequential:
                {
                    var modules = (IList)SequentialList!.GetValue(parent)!;
                    var names = (IList)SequentialNames!.GetValue(parent)!;
                    modules[names.IndexOf(place.Name)] = replacement;
                    break;
                }

            default:
                if (Indexer(place) is { } indexer)
                {
                    indexer.SetValue(parent, replacement, [IndexOf(place, indexer)]);
                    break;
                }

                foreach (var field in HoldingFields(place))
                {
                    field.SetValue(parent, replacement);
                }

                break;
        }

        // register_module refuses a name that is taken: the registration is replaced where it stands, so that
        // state_dict keeps its order.
        ((TorchSharp.Utils.OrderedDict<string, nn.Module>)Registry!.GetValue(parent)!)[place.Name] = replacement;
    }

    private static readonly FieldInfo? Registry = typeof(nn.Module).GetField("_internal_submodules", BindingFlags.NonPublic | BindingFlags.Instance);

    private static readonly FieldInfo? SequentialList = typeof(TorchSharp.Modules.Sequential).GetField("_modules", BindingFlags.NonPublic | BindingFlags.Instance);

    private static readonly FieldInfo? SequentialNames = typeof(TorchSharp.Modules.Sequential).GetField("_names", BindingFlags.NonPublic | BindingFlags.Instance);

    /// <summary>
    /// The settable indexer of a ModuleList (by position, its children named "0", "1", …) or a ModuleDict (by name)
    /// holding the place, or null for a parent of another kind.
    /// </summary>
    private static PropertyInfo? Indexer(Place place)
    {
        var parent = place.Parent.GetType();
        if (!IsGeneric(parent, typeof(TorchSharp.Modules.ModuleList<>)) && !IsGeneric(parent, typeof(TorchSharp.Modules.ModuleDict<>)))
        {
            return null;
        }

        var key = IsGeneric(parent, typeof(TorchSharp.Modules.ModuleDict<>)) ? typeof(string) : typeof(int);
        var indexer = parent.GetProperty("Item", [key]);
        return indexer is { CanWrite: true } && typeof(nn.Module).IsAssignableFrom(indexer.PropertyType) ? indexer : null;
    }

    private static object IndexOf(Place place, PropertyInfo indexer) =>
        indexer.GetIndexParameters()[0].ParameterType == typeof(string) ? place.Name : int.Parse(place.Name, System.Globalization.CultureInfo.InvariantCulture);

    private static bool IsGeneric(Type? type, Type definition)
    {
        for (; type is not null; type = type.BaseType)
        {
            if (type.IsGenericType && type.GetGenericTypeDefinition() == definition)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The instance fields of the parent, its own and its base types', that hold the module.</summary>
    private static IEnumerable<FieldInfo> HoldingFields(Place place)
    {
        for (var type = place.Parent.GetType(); type is not null && type != typeof(nn.Module); type = type.BaseType)
        {
            foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (!field.FieldType.IsValueType && ReferenceEquals(field.GetValue(place.Parent), place.Module))
                {
                    yield return field;
                }
            }
        }
    }
}
