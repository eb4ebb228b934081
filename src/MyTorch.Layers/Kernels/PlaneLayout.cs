namespace MyTorch.Layers.Kernels;

/// <summary>
/// Where element (n, c, s) of an (N, C, S) view of a 4-D tensor lives in a flat buffer, S = H·W being the
/// flattened spatial index. Both layouts the kernels read natively have one stride per axis:
/// contiguous NCHW (each channel plane is contiguous) and channels-last NHWC (each row of C values is contiguous).
/// </summary>
internal readonly struct PlaneLayout
{
    /// <summary>Creates the layout of an (N, C, S) buffer.</summary>
    public PlaneLayout(int batch, int channels, int spatial, bool channelsLast)
    {
        Batch = batch;
        Channels = channels;
        Spatial = spatial;
        ChannelsLast = channelsLast;
    }

    /// <summary>N.</summary>
    public int Batch { get; }

    /// <summary>C.</summary>
    public int Channels { get; }

    /// <summary>S = H·W.</summary>
    public int Spatial { get; }

    /// <summary>True for NHWC memory, false for NCHW.</summary>
    public bool ChannelsLast { get; }

    /// <summary>N·C·S, the number of elements.</summary>
    public int Length => Batch * Channels * Spatial;

    /// <summary>N·S, the number of values that share one channel.</summary>
    public int ValuesPerChannel => Batch * Spatial;

    /// <summary>Distance between consecutive samples.</summary>
    public int BatchStride => Channels * Spatial;

    /// <summary>Distance between consecutive channels of one sample and spatial position.</summary>
    public int ChannelStride => ChannelsLast ? 1 : Spatial;

    /// <summary>Distance between consecutive spatial positions of one channel.</summary>
    public int SpatialStride => ChannelsLast ? Channels : 1;
}
