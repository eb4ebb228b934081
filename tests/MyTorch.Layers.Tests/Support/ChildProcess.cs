using System;
using System.Collections.Generic;
using System.Diagnostics;
using NUnit.Framework;

namespace MyTorch.Layers.Tests.Support;

/// <summary>A program run as a user runs it, for the tests of the examples app.</summary>
internal static class ChildProcess
{
    /// <summary>
    /// Runs <paramref name="program"/> with <paramref name="arguments"/>, its output captured; fails the test if it has
    /// not finished within <paramref name="timeout"/>. What it printed goes to the test's output.
    /// </summary>
    /// <returns>Its exit code and standard output.</returns>
    public static (int ExitCode, string Output) Run(string program, IEnumerable<string> arguments, TimeSpan timeout, Action<ProcessStartInfo>? configure = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        configure?.Invoke(start);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string text = process.StandardOutput.ReadToEnd();
        Assert.That(process.WaitForExit(timeout), Is.True, $"{program} finishes within {timeout}");
        TestContext.Out.WriteLine(text);
        TestContext.Out.WriteLine(error.Result);
        return (process.ExitCode, text);
    }
}
