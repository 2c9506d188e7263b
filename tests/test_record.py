"""README's table of the public record: each report's DIAGNOSIS, as quoted there, is one the judge prints.

The table quotes the start of each line ("sliding window halved twice (+-128)"); a rename in
gemma_np.verify.runtimes.judge.DIAGNOSES that leaves the README behind fails here, as does a quote that no
DIAGNOSIS begins with (or, for `inspect`, no finding of gemma_np.verify.runtimes.artifacts holds).
"""

from __future__ import annotations

import re
from pathlib import Path

from gemma_np.verify.runtimes.judge import DIAGNOSES

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### The public record: each report, and what gemma-np says of it"
ARTIFACTS = Path(__file__).resolve().parents[1] / "gemma_np" / "verify" / "runtimes" / "artifacts.py"


def record_rows() -> list[list[str]]:
    """The table's rows under HEADING, each as its four cells."""
    text = README.read_text()
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("| public report") or line.startswith("|---"):
            continue
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def quotes(cell: str) -> list[str]:
    """The quoted DIAGNOSIS starts of a cell; `...` inside a quote stands for text the table leaves out."""
    return re.findall(r'"([^"]+)"', cell)


def _starts(quote: str) -> list[str]:
    """A DIAGNOSIS start as the README quotes it: text, with "..." for any text left out."""
    return [part.strip() for part in quote.split("...") if part.strip()]


def _pattern(part: str) -> re.Pattern:
    """A quoted part as a regex over a DIAGNOSES template: a number may stand for a format field ("2048" for
    "{T}"), since the README quotes the line as printed."""
    return re.compile(re.sub(r"\d+", lambda m: f"(?:{m.group(0)}|\\{{[^}}]*\\}})", re.escape(part)))


def printed_by_judge(quote: str) -> bool:
    parts = [_pattern(p) for p in _starts(quote)]
    for line in DIAGNOSES.values():
        first = parts[0].match(line)
        if first is None:
            continue
        at = first.end()
        for part in parts[1:]:
            found = part.search(line, at)
            if found is None:
                break
            at = found.end()
        else:
            return True
    return False


def test_the_record_table_has_every_public_report_of_the_issue():
    cells = " ".join(row[0] for row in record_rows())
    for report in ("#40700", "#15867", "#882", "#45491", "#748", "#24318", "#4014", "#26732", "#1728", "#661",
                   "#732", "#3188", "#3388", "n_batch", "#16367", "#12426", "#1418", "#592", "porting pitfalls"):
        assert report in cells, f"README's record table has no row for {report}"


def said_by(cell: str) -> dict[str, list[str]]:
    """A DIAGNOSIS cell's quotes by who says them: the judge (first), then after "; `inspect`: " gemma-np inspect
    and after "; `--window`: " the window measured."""
    out = {"judge": [], "inspect": [], "--window": []}
    for i, part in enumerate(cell.split("; `")):
        who = "judge" if i == 0 else part.split("`", 1)[0]
        assert who in out, f"unknown speaker {who!r} in {cell!r}"
        out[who] += quotes(part)
    return out


def test_each_quoted_diagnosis_is_one_the_judge_prints():
    rows = record_rows()
    assert len(rows) >= 15
    for row in rows:
        assert len(row) == 4, f"a record row needs 4 cells: {row}"
        said = said_by(row[2])["judge"]
        assert said, f"the row for {row[0]} quotes no DIAGNOSIS"
        for q in said:
            # "no sliding window" (on --batches' ...): the quote is the line's start; the rest is the README's
            assert printed_by_judge(q), f"{row[0]}: no DIAGNOSIS line begins {q!r}"


def test_the_inspect_findings_and_windows_the_table_quotes_exist():
    from gemma_np.verify.runtimes.window import CANDIDATES, window_label

    source = ARTIFACTS.read_text()
    windows = {window_label(w) for w in CANDIDATES.values()}
    for row in record_rows():
        said = said_by(row[2])
        for q in said["inspect"]:
            first = _starts(q)[0]
            assert first in source, f"{row[0]}: gemma-np inspect prints no finding with {first!r}"
        for q in said["--window"]:
            assert q in windows, f"{row[0]}: --window never prints {q!r} (it prints {sorted(windows)})"


def test_the_checker_refuses_a_quote_no_diagnosis_begins_with():
    assert printed_by_judge("sliding window halved twice (+-128)")
    assert printed_by_judge("error past 2048 tokens")  # "error past {T} tokens" as printed
    assert not printed_by_judge("error past many tokens")
    assert not printed_by_judge("sliding window halved thrice (+-64)")
    assert not printed_by_judge("Dense layers skipped ... no such words")
