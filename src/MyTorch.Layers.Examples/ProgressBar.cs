using System;

namespace MyTorch.Layers.Examples;

/// <summary>
/// A one-line progress bar redrawn in place with a carriage return. Drawn only on a terminal: when the output is
/// redirected to a file or a pipe it prints nothing, so logs hold the epoch lines alone.
/// </summary>
internal sealed class ProgressBar
{
    private const int Width = 30;
    private readonly bool _enabled = !Console.IsOutputRedirected;
    private int _lastLength;

    public void Report(string label, int done, int total)
    {
        if (!_enabled || total <= 0)
        {
            return;
        }

        int filled = (int)((long)Width * done / total);
        string line = $"  {label} [{new string('#', filled)}{new string('.', Width - filled)}] {done}/{total}";
        Console.Out.Write("\r" + line.PadRight(_lastLength));
        _lastLength = line.Length;
    }

    public void Clear()
    {
        if (!_enabled || _lastLength == 0)
        {
            return;
        }

        Console.Out.Write("\r" + new string(' ', _lastLength) + "\r");
        _lastLength = 0;
    }
}
