using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;

namespace MyTorch.Layers.Examples;

/// <summary>A plain-text table with fixed-width columns: text left-aligned, numbers right-aligned.</summary>
internal sealed class TextTable
{
    private readonly (string Header, bool AlignRight)[] _columns;
    private readonly List<string[]> _rows = [];

    public TextTable(params (string Header, bool AlignRight)[] columns)
    {
        _columns = columns;
    }

    public void Add(params string[] cells)
    {
        ArgumentNullException.ThrowIfNull(cells);
        if (cells.Length != _columns.Length)
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"expected {_columns.Length} cells, got {cells.Length}"), nameof(cells));
        }

        _rows.Add(cells);
    }

    /// <summary>Scientific notation with three significant digits, e.g. 1.23e-06; "0" for zero.</summary>
    public static string Scientific(double value) =>
        value == 0 ? "0" : value.ToString("0.00e+00", CultureInfo.InvariantCulture);

    /// <summary>At least three significant digits for values below 100: 123.4, 12.34, 1.234, 0.1234, 0.01234.</summary>
    public static string Milliseconds(double value)
    {
        string format = value switch
        {
            >= 100 => "F1",
            >= 10 => "F2",
            >= 1 => "F3",
            >= 0.1 => "F4",
            _ => "F5",
        };
        return value.ToString(format, CultureInfo.InvariantCulture);
    }

    public static string Ratio(double value) => value.ToString("F2", CultureInfo.InvariantCulture) + "x";

    public override string ToString()
    {
        int[] widths = _columns
            .Select((column, k) => _rows.Select(row => row[k].Length).Append(column.Header.Length).Max())
            .ToArray();
        var text = new StringBuilder();
        AppendLine(text, widths, _columns.Select(c => c.Header).ToArray());
        AppendLine(text, widths, widths.Select(w => new string('-', w)).ToArray());
        foreach (string[] row in _rows)
        {
            AppendLine(text, widths, row);
        }

        return text.ToString();
    }

    private void AppendLine(StringBuilder text, int[] widths, string[] cells)
    {
        var line = new StringBuilder("  ");
        for (int k = 0; k < cells.Length; k++)
        {
            if (k > 0)
            {
                line.Append("  ");
            }

            line.Append(_columns[k].AlignRight ? cells[k].PadLeft(widths[k]) : cells[k].PadRight(widths[k]));
        }

        text.Append(line.ToString().TrimEnd()).Append('\n');
    }
}
