"""The `paper` profile rehearsed end to end: notebooks 01-09 in `paper` on tiny random stand-ins of every
hub model, each read by its unchanged `paper` loader (the ledger), and the rehearsal's report.

Run by ./run_tests.sh as its own stage (about 4-5 minutes on 2 idle cores); alone:
    .venv/bin/python -m pytest tests/rehearsal
"""
import os

from mmlib import paths, rehearse


def test_all_nine_notebooks_run_in_paper_and_every_standin_is_read_by_its_loader():
    out = paths.RUNS / "rehearsal"
    code = rehearse.rehearse(out)          # the ledger check raises inside when a loader was bypassed
    assert code == 0, f"rehearsal failed: see {out / 'runs' / 'paper' / 'executed'}"
    log = out / "weights-read.jsonl"
    assert rehearse.read_ledger(log) == set(rehearse.STANDINS)
    report = (out / "report.md").read_text()
    assert report.startswith(rehearse.BANNER)
    assert os.listdir(out / "figures"), "the rehearsal's report has no figures"
