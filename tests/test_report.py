"""report.md is filled only from saved results; claims are verdicts computed from them."""
import json

import pytest

from mmlib import claims, report, results


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    return tmp_path


def test_markers_are_filled_from_saved_results_and_missing_ones_say_so(runs):
    results.save_table("cpu", "t", [{"a": 1.23456, "b": "x"}], formats={"a": ".2f"}, note="n")
    results.save("cpu", "v", {"deep": {"list": [0.5, 0.25]}})
    text = ("<!-- table:t -->old<!-- /table -->\n"
            "<!-- value:v.deep.list.1:.3f -->9<!-- /value --> <!-- value:gone.x --><!-- /value -->")
    out, missing = report.fill(text, "cpu")
    assert "| 1.23 | x |" in out and "*n*" in out and "old" not in out
    assert "<!-- value:v.deep.list.1:.3f -->0.250<!-- /value -->" in out
    assert "(not run: gone.x)" in out and missing == ["gone.x"]
    assert report.fill(out, "cpu")[0] == out  # a built report rebuilds to itself


def test_a_bad_marker_or_a_missing_field_names_the_template_and_line(runs):
    results.save("cpu", "v", {"i2t R@1": 1.5, "x": {"y": 2}})
    out, _ = report.fill("a\n<!-- value:v.i2t R@1:.1f -->?<!-- /value -->", "cpu", where="t.md")
    assert "-->1.5<!--" in out                       # a path part may contain spaces
    with pytest.raises(report.TemplateError, match=r"t\.md:3: the saved result 'v' has no 'x.z'"):
        report.fill("a\nb\n<!-- value:v.x.z -->?<!-- /value -->", "cpu", where="t.md")
    with pytest.raises(report.TemplateError, match=r"t\.md:2: cannot parse the marker"):
        report.fill("a\n<!-- value:v.x. -->?<!-- /value -->", "cpu", where="t.md")
    with pytest.raises(report.TemplateError, match="t.md:1"):
        report.fill("<!-- table:t -->no closing marker", "cpu", where="t.md")


def scores(b4, cider):
    return {"model": {**{f"seed BLEU-{n}": b4 * n for n in range(1, 5)}, "CIDEr-D": cider}}


def test_claims_follow_the_numbers(runs):
    for nb, b4, cider in [("02", 1, 10), ("03", 2, 20), ("04", 3, 30), ("05", 4, 25)]:
        results.save("cpu", f"{nb}_scores", scores(b4, cider))
    rows = {r["study's claim"][:20]: r["verdict"] for r in claims.check("cpu")}
    assert rows["Q-former + LLM (row "].startswith("holds")
    assert rows["CLIP beats the Image"].startswith("holds")
    assert rows["Q-former beats plain"].startswith("holds")
    assert rows["LoRA moves the style"] == "not run"
    results.save("cpu", "03_scores", scores(0.5, 5))
    rows = {r["study's claim"][:20]: r["verdict"] for r in claims.check("cpu")}
    assert rows["CLIP beats the Image"].startswith("does not hold")


def test_build_records_what_it_read_and_the_snapshot_rebuilds_the_report(runs, tmp_path):
    results.save("cpu", "v", {"x": 0.125})
    out = tmp_path / "r" / "report.md"
    out.parent.mkdir()
    report.build("cpu", out, tmp_path / "figs")
    snap = json.loads(out.with_suffix(".results.json").read_text())
    assert "v" not in snap          # the real templates do not read the key "v"
    text, _ = report.render("cpu", source=snap.get)
    assert text == out.read_text()


# ---- the committed report against its snapshot and the notebooks' saved results
COMMITTED = report.ROOT / "report.md"
SNAPSHOT = report.snapshot_path("cpu")


@pytest.mark.skipif(not SNAPSHOT.exists(), reason="no committed report snapshot (report/results-cpu.json)")
def test_committed_report_is_its_templates_filled_from_its_snapshot():
    """report.md = report/*.md filled from report/results-cpu.json: no number typed or left stale."""
    snap = json.loads(SNAPSHOT.read_text())
    text, _ = report.render("cpu", source=snap.get)
    assert text == COMMITTED.read_text(), "report.md is stale: rerun `python -m mmlib.report --profile cpu`"


def test_committed_report_matches_the_saved_cpu_results():
    """Where this machine has run the cpu notebooks, their saved results are the ones in report.md."""
    from mmlib.paths import RUNS
    saved_dir = RUNS / "cpu" / "results"
    if not saved_dir.is_dir() or not SNAPSHOT.exists():
        pytest.skip(f"no cpu run here ({saved_dir}); CI checks the report against its snapshot only")
    snap = json.loads(SNAPSHOT.read_text())
    differ = [k for k, v in snap.items() if results.load("cpu", k, default=None) != v]
    assert not differ, f"saved cpu results differ from report.md (rebuild the report): {differ[:10]}"
