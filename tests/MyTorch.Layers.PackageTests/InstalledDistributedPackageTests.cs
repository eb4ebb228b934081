using System;
using System.IO;
using System.Linq;
using System.Reflection;
using MyTorch.Layers.Distributed;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace MyTorch.Layers.PackageTests;

/// <summary>
/// The installed MyTorch.Layers.Distributed package: it depends on exactly this version of MyTorch.Layers (it runs on
/// its internals), and its SyncBatchNorm, in a world of one process, is our BatchNorm2d bit for bit.
/// </summary>
[TestFixture]
public class InstalledDistributedPackageTests
{
    private static string Version => typeof(InstalledDistributedPackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "MyTorchLayersPackageVersion").Value!;

    [Test]
    public void Package_DependsOnExactlyItsOwnVersionOfMyTorchLayers()
    {
        string folder = typeof(InstalledDistributedPackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "MyTorchLayersPackageFolder").Value!;
        string nuspec = File.ReadAllText(Path.Combine(folder, "..", "..", "mytorch.layers.distributed", Version, "mytorch.layers.distributed.nuspec"));
        Assert.That(nuspec, Does.Contain($"<dependency id=\"MyTorch.Layers\" version=\"[{Version}]\""));
        Assert.That(typeof(SyncBatchNorm).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0], Is.EqualTo(Version));
    }

    [Test]
    public void SyncBatchNorm_ConvertedInAWorldOfOne_IsBatchNorm2d_BitForBit()
    {
        if (!ProcessGroup.IsAvailable)
        {
            Assert.Ignore("No MPI library of the MPICH ABI on this machine (apt-get install mpich); SyncBatchNorm's world of one needs one.");
        }

        manual_seed(3);
        var reference = new BatchNorm2d(3);
        var model = SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(("bn", new BatchNorm2d(3))), ProcessGroup.World);
        Assert.That(model.modules().OfType<SyncBatchNorm>().Count(), Is.EqualTo(1));
        var x = randn(4, 3, 5, 5);
        var xr = x.clone().requires_grad_();
        var xs = x.clone().requires_grad_();
        var yr = reference.forward(xr);
        var ys = ((nn.Module<Tensor, Tensor>)model).forward(xs);
        yr.backward([ones_like(yr)]);
        ys.backward([ones_like(ys)]);
        Assert.Multiple(() =>
        {
            Assert.That(ys.bytes.ToArray(), Is.EqualTo(yr.bytes.ToArray()), "output");
            Assert.That(xs.grad!.bytes.ToArray(), Is.EqualTo(xr.grad!.bytes.ToArray()), "input gradient");
        });
    }
}
