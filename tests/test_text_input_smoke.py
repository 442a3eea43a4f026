"""benchmarks/text_input.py runs end to end on a small input: both engines on the same JSON and CSV files, in
processes of their own (Pathway from its virtual environment when it is installed)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import text_input
from benchmarks.nexmark.__main__ import PATHWAY_VENV


def test_the_text_input_benchmark_runs_both_engines_on_json_and_csv(tmp_path: Path) -> None:
    args = text_input.parser().parse_args(
        ["--events=20k", "--epoch-events=10k", f"--data={tmp_path}", "--repeats=1", "--queries=q2,tumble_count"]
    )
    rows = text_input.measure(args)
    assert {(r["format"], r["query"]) for r in rows} == {
        (f, q) for f in ("json", "csv") for q in ("q2", "tumble_count")
    }
    installed = (PATHWAY_VENV / "bin" / "python").exists()
    for row in rows:
        assert row["timelapse"]["median"] > 0, row
        if installed:
            assert row["pathway"]["median"] > 0 and row["ratio_timelapse_to_pathway"] > 0, row
        else:
            assert row["pathway"]["status"] == "not installed", row
        assert text_input.line(row).startswith(row["format"])
    data = next(tmp_path.glob("events-*"))
    assert (data / "json" / "bid").is_dir() and (data / "csv-header" / "bid").is_dir()
