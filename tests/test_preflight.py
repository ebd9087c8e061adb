"""A clone without the study's fixtures (``../shared/seed``, ``$MMLIB_SEED_DIR``) runs every notebook to the
end, the rows that need them saved as "(not run: study fixtures absent, set MMLIB_SEED_DIR)"; a missing
required input (``FLICKR8K_DIR`` in paper) stops a notebook in its first cells, naming the variable."""
import json

import pytest

from mmlib import paths, preflight, profiles, report, results, runner
from mmlib.captioning import clip_pretrain
from mmlib.paths import ROOT

from test_data_notebook import fake_flickr8k

MARK = "(not run: study fixtures absent, set MMLIB_SEED_DIR)"


@pytest.fixture
def paper_folder(monkeypatch):
    """Point the paper profile's Flickr8k folder somewhere (``FLICKR8K_DIR`` is read when profiles is imported)."""
    def point(folder, env=True):
        monkeypatch.setitem(profiles.SECTIONS["data"]["paper"], "flickr8k_dir", str(folder))
        if env:
            monkeypatch.setenv("FLICKR8K_DIR", str(folder))
        else:
            monkeypatch.delenv("FLICKR8K_DIR", raising=False)
        profiles._build.cache_clear()
    yield point
    profiles._build.cache_clear()     # the next get() builds from the restored SECTIONS


def test_the_marker_is_the_one_the_issue_asks_for():
    assert preflight.NOT_RUN == MARK and f"(not run: {preflight.FIXTURES_ABSENT})" == MARK


def test_check_names_the_absent_fixtures_and_the_results_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "SEED_DIR", tmp_path)             # an empty fixtures folder
    printed = []
    inputs = preflight.check("smoke", "02_caption_cnn", out=printed.append)
    text = printed[0]
    assert "ABSENT" in text and str(tmp_path) in text and "MMLIB_SEED_DIR" in text
    assert "flickr8k_captions.txt" in text and "02_table1" in text and "02_paper_breakdown" in text
    assert MARK in text
    assert inputs.have("flickr8k_captions.txt") is False and inputs.absent == ["flickr8k_captions.txt"]
    with pytest.raises(KeyError, match="USES"):
        inputs.have("train_captions.csv")                         # a fixture 02 does not declare
    printed.clear()
    preflight.check("smoke", "01_data", out=printed.append)
    assert "flickr8k_captions.txt" in printed[0] and "qformer_tinyllama_generated_captions.txt" in printed[0]
    assert "data_summary" in printed[0] and "seed_captions_metrics" in printed[0]
    printed.clear()
    preflight.check("smoke", "06_pixel_diffusion", out=printed.append)
    assert "none used by this notebook" in printed[0] and "ABSENT" not in printed[0]

    (tmp_path / "flickr8k_captions.txt").write_text("image,caption\n")
    printed.clear()
    inputs = preflight.check("smoke", "02_caption_cnn", out=printed.append)
    assert inputs.have("flickr8k_captions.txt") and "ABSENT" not in printed[0] and "present" in printed[0]
    assert preflight.absent_fixtures("01_data") == ["qformer_tinyllama_generated_captions.txt"]


def test_paper_without_flickr8k_fails_fast_naming_the_variable(tmp_path, paper_folder):
    paper_folder(tmp_path / "nowhere")
    with pytest.raises(preflight.MissingInput, match=r"FLICKR8K_DIR=.*nowhere.* is not a folder.*set FLICKR8K_DIR"):
        preflight.check("paper", "02_caption_cnn", out=lambda s: None)
    paper_folder("data/flickr8k", env=False)                      # the default, relative to the notebooks' folder
    with pytest.raises(preflight.MissingInput, match="FLICKR8K_DIR is not set, so the default 'data/flickr8k'"):
        preflight.require("paper", cwd=tmp_path)
    (tmp_path / "empty").mkdir()
    paper_folder(tmp_path / "empty")
    with pytest.raises(preflight.MissingInput, match="has no Flickr8k layout.*set FLICKR8K_DIR"):
        preflight.require("paper")
    assert isinstance(preflight.MissingInput("x"), FileNotFoundError)
    paper_folder(fake_flickr8k(tmp_path / "flickr8k", n_images=2))
    assert "captions.txt, Images/" in preflight.require("paper") and "from FLICKR8K_DIR" in preflight.require("paper")


def test_the_runner_reruns_a_notebook_once_its_absent_fixtures_appear(tmp_path, monkeypatch):
    nbs = {nb.stem: nb for nb in runner.notebooks()}
    monkeypatch.setattr(paths, "SEED_DIR", tmp_path)
    absent = {name: runner.inputs_stamp(nb, "smoke") for name, nb in nbs.items() if name[:2] in ("02", "04")}
    for name in preflight.FIXTURES:
        (tmp_path / name).write_text("x\n")
    present = {name: runner.inputs_stamp(nbs[name], "smoke") for name in absent}
    assert absent["02_caption_cnn"] != present["02_caption_cnn"]     # 02 uses the real captions
    assert absent["04_qformer_bert"] == present["04_qformer_bert"]   # 04 uses no fixture


def test_a_notebook_stops_in_its_first_cells_when_a_required_input_is_missing(tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    monkeypatch.setenv("FLICKR8K_DIR", str(tmp_path / "no_flickr8k"))
    monkeypatch.setenv("MMLIB_RUNS", str(tmp_path / "runs"))
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(ROOT / "notebooks" / "02_caption_cnn.ipynb"), str(tmp_path / "02.ipynb"),
                            parameters={"profile": "paper"}, kernel_name="mmlib", cwd=str(ROOT / "notebooks"),
                            progress_bar=False)
    assert e.value.ename == "MissingInput" and "FLICKR8K_DIR" in e.value.evalue
    assert e.value.exec_count <= 3            # parameters, injected parameters, the preflight cell: nothing trained
    assert not (tmp_path / "runs" / "paper" / "results").exists()


def test_smoke_notebooks_run_without_the_study_fixtures_and_the_report_says_what_was_not_run(tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    seed, runs = tmp_path / "empty_seed", tmp_path / "runs"
    seed.mkdir()
    for k, v in {"MMLIB_SEED_DIR": str(seed), "MMLIB_RUNS": str(runs), "MMLIB_THREADS": "1",
                 "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    for name in ("MMLIB_NOTEBOOK", "MMLIB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for nb in ("01_data", "02_caption_cnn", "03_caption_clip"):
        monkeypatch.setenv("MMLIB_NOTEBOOK", nb)
        pm.execute_notebook(str(ROOT / "notebooks" / f"{nb}.ipynb"), str(tmp_path / f"{nb}.ipynb"),
                            parameters={"profile": "smoke"}, kernel_name="mmlib", cwd=str(ROOT / "notebooks"),
                            progress_bar=False)
    out = (tmp_path / "02_caption_cnn.ipynb").read_text()
    assert "flickr8k_captions.txt" in out and "02_table1" in out   # the first cells said what would be left out

    monkeypatch.setattr(results, "RUNS", runs)
    load = lambda key: results.load("smoke", key, default=None)   # noqa: E731
    for nn in ("02", "03"):                    # the profile's row is counted, the paper-sizes row is marked
        model_row, paper_row = load(f"{nn}_table1")["rows"]
        assert isinstance(model_row["total"], str) and model_row["total"].endswith("M")
        assert paper_row["profile / data"] == "paper sizes (meta device)" and paper_row["hidden"] == MARK
        assert paper_row.get("total") is None
        assert results.not_run(load(f"{nn}_paper_breakdown")) == preflight.FIXTURES_ABSENT
        assert load(f"{nn}_table2") is not None and load(f"{nn}_truth") is not None   # the rest ran
    stats = load("data_caption_stats")["rows"]
    assert stats[-1] == {"captions": "real Flickr8k (seed file)", "n": MARK} and len(stats) == 2
    assert load("data_summary")["top25_overlap_with_real"] == MARK
    assert all("real" not in r["references"] for r in load("human_ceiling")["rows"])  # smoke scores no real ceiling
    assert load("seed_captions_metrics") is None                                      # nor the study's captions

    text, missing = report.render("smoke")
    assert "| ResNet-18 + cross-attn decoder | paper sizes (meta device) | " + MARK in text
    assert "| CLIP (ViT-B/32) + cross-attn decoder | paper sizes (meta device) | " + MARK in text
    assert "| real Flickr8k (seed file) | " + MARK in text
    assert f"<!-- value:data_summary.top25_overlap_with_real:.2f -->{MARK}<!-- /value -->" in text
    assert f"<!-- value:02_paper_breakdown.MLP:, -->{MARK}<!-- /value -->" in text
    assert "02_paper_breakdown.MLP" in missing and "data_summary.top25_overlap_with_real" not in missing
    out_md = tmp_path / "report" / "report.md"
    out_md.parent.mkdir()
    report.build("smoke", out_md, tmp_path / "report" / "figures", allow_mixed=True)   # the tree may be dirty
    built, snap = out_md.read_text(), json.loads(out_md.with_suffix(".results.json").read_text())
    assert built.count(MARK) >= 7 and report.render("smoke", source=snap.get)[0] == built   # rebuilds to itself
    assert results.not_run(snap["02_paper_breakdown"]) == preflight.FIXTURES_ABSENT


def test_07_stops_in_its_first_cell_when_03s_world_clip_is_not_there(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUNS", tmp_path)                 # no notebook has run here
    with pytest.raises(preflight.MissingInput, match="03_caption_clip.*--only 03"):
        preflight.check("smoke", "07_latent_diffusion", out=lambda _: None)
    saved = tmp_path / "smoke" / "03" / "clip" / "model.safetensors"
    assert saved == clip_pretrain.clip_dir("smoke") / "model.safetensors"    # where 03 saves it
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"")
    preflight.check("smoke", "07_latent_diffusion", out=lambda _: None)   # there: 07 goes on
