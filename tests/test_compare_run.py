"""A local run is compared with the committed report by a command (mmlib.compare_run), never by the
unit tests: the suite's report check passes whatever this machine's runs folder holds."""
import json
import os
import subprocess
import sys

import pytest

from mmlib import compare_run, report, results

SNAPSHOT = report.snapshot_path("cpu")
pytestmark = pytest.mark.skipif(not SNAPSHOT.exists(), reason="no committed report snapshot (report/results-cpu.json)")


def committed_row(notebook):
    snap = json.loads(SNAPSHOT.read_text())
    return next(r for r in snap[report.PROVENANCE]["rows"] if r["notebook"] == notebook), snap


def partial_run(runs, monkeypatch):
    """A partial cpu run under ``runs``: 01's data_summary as committed, 02's table in fp32 with other
    numbers, 02's timing from the report's own commit and precision with other wall times."""
    row, snap = committed_row("02_caption_cnn")
    data_row, _ = committed_row("01_data")
    monkeypatch.setattr(results, "RUNS", runs)

    def save(key, obj, row, **change):
        meta = {"profile": row["profile"], "precision": row["precision"], "threads": row["threads"],
                "cpu": row["CPU"], "device": "cpu", "commit": row["commit"], "dirty": False,
                "started": "2026-12-01T10:00:00+0000", "run_id": "local-1", "notebook": row["notebook"], **change}
        monkeypatch.setattr(results, "provenance", lambda profile: meta)
        results.save("cpu", key, obj)

    save("data_summary", snap["data_summary"], data_row)
    table = json.loads(json.dumps(snap["02_table1"]))
    table["rows"][0] = {c: 0.123 for c in table["columns"]}
    save("02_table1", table, row, precision="fp32" if row["precision"] != "fp32" else "bf16")
    save("02_timing", {**snap["02_timing"], "total_s": 1.0}, row)
    return snap, row


def test_compare_run_lists_what_differs_and_why_and_exits_0_unless_strict(tmp_path, monkeypatch, capsys):
    snap, row = partial_run(tmp_path, monkeypatch)
    c = compare_run.compare("cpu")
    assert c["same"] == ["data_summary"]
    assert set(c["differ"]) == {"02_table1", "02_timing"}
    assert c["differ"]["02_table1"].startswith("other precision (here ")
    assert f"report {row['precision']})" in c["differ"]["02_table1"] and "commit" not in c["differ"]["02_table1"]
    assert c["differ"]["02_timing"] == "holds wall times, which differ on every run"
    assert len(c["missing"]) == len(snap) - 1 - 3 and "03_table1" in c["missing"]

    assert compare_run.main([]) == 0
    out = capsys.readouterr().out
    assert "1 same, 2 differ, " in out and "  differs  02_table1: other precision" in out and "  not run  " in out
    assert compare_run.main(["--strict"]) == 1

    (tmp_path / "cpu" / "results" / "02_table1.meta.json").unlink()
    assert compare_run.compare("cpu")["differ"]["02_table1"] == "no .meta.json here: provenance unknown"


def test_results_left_out_without_the_study_fixtures_say_so(tmp_path, monkeypatch):
    snap, row = partial_run(tmp_path, monkeypatch)
    results.save_not_run("cpu", "02_paper_breakdown", "study fixtures absent, set MMLIB_SEED_DIR")
    table = json.loads(json.dumps(snap["02_table1"]))
    table["rows"][1] = {"model": table["rows"][1]["model"], "hidden": "(not run: study fixtures absent, set MMLIB_SEED_DIR)"}
    results.save("cpu", "02_table1", table)
    differ = compare_run.compare("cpu")["differ"]
    assert differ["02_paper_breakdown"] == "not run here: study fixtures absent, set MMLIB_SEED_DIR"
    assert differ["02_table1"].startswith('some rows marked "(not run: …)" here; ')


def test_the_suite_report_check_passes_beside_a_partial_differing_run(tmp_path, monkeypatch):
    """MMLIB_RUNS holding a partial run with other numbers: the committed-report check still passes,
    and the command (run as a user would) names the differing result and exits 0."""
    partial_run(tmp_path, monkeypatch)
    env = {**os.environ, "MMLIB_RUNS": str(tmp_path), "MMLIB_PRECISION": "fp32"}
    check = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_report.py", "-k", "committed"],
                           cwd=report.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert check.returncode == 0 and "1 passed" in check.stdout, check.stdout + check.stderr
    cmd = subprocess.run([sys.executable, "-m", "mmlib.compare_run"], cwd=report.ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert cmd.returncode == 0, cmd.stdout + cmd.stderr
    assert f"{tmp_path}/cpu/results against report/results-cpu.json: 1 same, 2 differ" in cmd.stdout
    assert "differs  02_table1: other precision" in cmd.stdout
