using System;
using System.Linq;
using MyTorch.Layers.Distributed.Tests.Worker;
using NUnit.Framework;

namespace MyTorch.Layers.Distributed.Tests;

/// <summary>
/// SyncBatchNorm, the process group and data-parallel training on two ranks of this machine (<c>mpiexec -n 2</c>),
/// each against single-process computation on the whole batch. Each scenario runs once; its tests judge the reports.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class TwoRankTests
{
    private static readonly Lazy<MpiRun> Layers = new(() => MpiRun.Launch("layers"));
    private static readonly Lazy<MpiRun> Training = new(() => MpiRun.Launch("training"));

    private static MpiRun Ran(Lazy<MpiRun> run)
    {
        MpiRun.RequireMpi();
        run.Value.AssertRanOnTwoRanks();
        return run.Value;
    }

    [TestCaseSource(typeof(SplitCases), nameof(SplitCases.Names))]
    public void SyncBatchNorm_OnTwoParts_MatchesBatchNormOnTheWholeBatch(string name)
    {
        var run = Ran(Layers);
        var split = SplitCases.All.Single(c => c.Name == name);
        foreach (var report in run.Reports)
        {
            var measures = report.Measures.Where(m => m.Case == name).ToList();
            Assert.That(measures, Has.Count.GreaterThanOrEqualTo(3), $"rank {report.Rank} compared outputs and gradients");
            Assert.Multiple(() =>
            {
                foreach (var m in measures)
                {
                    string what = $"rank {report.Rank}, {m.Quantity}: difference {m.Difference:E3}, tolerance {m.Tolerance:E3}";
                    if (split.Exact)
                    {
                        Assert.That(m.BitIdentical, Is.True, $"{what}; one part is empty, so bit for bit");
                    }
                    else
                    {
                        Assert.That(m.Ratio, Is.LessThanOrEqualTo(1.0), what);
                    }
                }

                foreach (var fact in report.Facts.Where(f => f.Case == name))
                {
                    Assert.That(fact.Holds, Is.True, $"rank {report.Rank}: {fact.Detail}");
                }
            });
        }
    }

    [TestCase("ChannelsDisagree", "ArgumentException", "ArgumentException", "disagree on the channel count")]
    [TestCase("OneRankRefusesItsDtype", "InvalidOperationException", "ArgumentException", "rank 1 of 2 refused its input")]
    [TestCase("OneValuePerChannelInTheWholeBatch", "ArgumentException", "ArgumentException", "Expected more than 1 value per channel when training")]
    public void SyncBatchNorm_Refusal_ThrowsOnEveryRank_AndChangesNothing(string name, string rank0, string rank1, string words)
    {
        var run = Ran(Layers);
        string[] expected = [rank0, rank1];
        foreach (var report in run.Reports)
        {
            var outcome = report.Outcomes.Single(o => o.Case == name);
            Assert.Multiple(() =>
            {
                Assert.That(outcome.Exception, Is.EqualTo(expected[report.Rank]), $"rank {report.Rank}: {outcome.Message}");
                Assert.That(outcome.Unchanged, Is.True, $"rank {report.Rank}: nothing changed");
            });
        }

        Assert.That(run.Reports[0].Outcomes.Single(o => o.Case == name).Message, Does.Contain(words));
    }

    [TestCase("AllReduce")]
    [TestCase("Broadcast")]
    [TestCase("NewGroup")]
    public void ProcessGroup_Collective_GivesEveryRankTheResult(string name)
    {
        var run = Ran(Layers);
        foreach (var report in run.Reports)
        {
            var facts = report.Facts.Where(f => f.Case == name).ToList();
            Assert.That(facts, Is.Not.Empty);
            Assert.That(facts.Where(f => !f.Holds).Select(f => $"rank {report.Rank}: {f.Detail}"), Is.Empty);
        }
    }

    [Test]
    public void DataParallelTraining_WithSyncBatchNorm_FollowsSingleProcessTrainingOnTheWholeBatch()
    {
        var run = Ran(Training);
        foreach (var report in run.Reports)
        {
            Assert.That(report.Facts.Where(f => f.Case != "Timing" && !f.Holds).Select(f => $"rank {report.Rank}, {f.Case}: {f.Detail}"), Is.Empty);
            var worst = report.Measures.Single(m => m.Case == "Training");
            Assert.That(worst.Ratio, Is.LessThanOrEqualTo(1.0), $"rank {report.Rank}, {worst.Quantity}");
            TestContext.Out.WriteLine($"rank {report.Rank}: {worst.Quantity}; {string.Join("; ", report.Facts.Where(f => f.Case == "Timing").Select(f => f.Detail))}");
        }
    }

    [Test]
    public void SyncBatchNorm_GradientWithCreateGraph_EndsTheJobWithTheRefusal()
    {
        MpiRun.RequireMpi();
        var run = MpiRun.Launch("second-order");
        Assert.That(run.ExitCode, Is.Not.Zero);
        Assert.That(run.Output, Does.Contain("NotSupportedException: SyncBatchNorm has no second-order gradients"));
    }

    [Test]
    public void Collective_ARankStaysAway_TimesOut_ThenAbortEndsBothRanks()
    {
        MpiRun.RequireMpi();
        var run = MpiRun.Launch("timeout");
        Assert.That(run.ExitCode, Is.Not.Zero, $"Abort ends the job with an error; mpiexec said:\n{run.Output}");
        var rank0 = run.Reports.Single(r => r.Rank == 0);
        Assert.That(rank0.Size, Is.EqualTo(MpiRun.Ranks));
        var timeout = rank0.Outcomes.Single(o => o.Case == "Timeout");
        var after = rank0.Outcomes.Single(o => o.Case == "AfterTimeout");
        Assert.Multiple(() =>
        {
            Assert.That(timeout.Exception, Is.EqualTo("TimeoutException"), timeout.Message);
            Assert.That(timeout.Message, Does.Contain("waited"));
            Assert.That(after.Exception, Is.EqualTo("InvalidOperationException"), after.Message);
            Assert.That(after.Message, Does.Contain("Abort()"));
        });
    }
}
