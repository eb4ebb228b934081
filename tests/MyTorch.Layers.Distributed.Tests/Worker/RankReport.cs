using System.Collections.Generic;
using System.IO;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MyTorch.Layers.Distributed.Tests.Worker;

/// <summary>
/// One comparison a rank made: the worst element's difference from the oracle and its tolerance (Ratio is their
/// quotient, at most 1 to pass), or, where the case is exact, whether every bit agreed.
/// </summary>
public sealed record Measure(string Case, string Quantity, double Ratio, double Difference, double Tolerance, bool Exact, bool BitIdentical);

/// <summary>What a call that was meant to be refused did on one rank.</summary>
public sealed record Outcome(string Case, string? Exception, string Message, bool Unchanged);

/// <summary>A property a rank checked, and what it saw.</summary>
public sealed record Fact(string Case, bool Holds, string Detail);

/// <summary>Everything one rank measured in a scenario.</summary>
public sealed class RankReport
{
    public int Rank { get; set; }

    public int Size { get; set; }

    public List<Measure> Measures { get; set; } = [];

    public List<Outcome> Outcomes { get; set; } = [];

    public List<Fact> Facts { get; set; } = [];

    public string? Failure { get; set; }

    private static readonly JsonSerializerOptions Options = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Options));

    public static RankReport Load(string path) => JsonSerializer.Deserialize<RankReport>(File.ReadAllText(path), Options)!;
}
