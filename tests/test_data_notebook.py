"""01_data runs in the paper profile on a tiny fake Flickr8k folder in the real (Kaggle) layout."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from mmlib.paths import ROOT


def fake_flickr8k(folder, n_images=10):
    (folder / "Images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(folder / "captions.txt", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "caption"])
        for i in range(n_images):
            name = f"{1000 + i}_fake{i:02d}.jpg"
            Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / "Images" / name)
            for k in range(5):
                w.writerow([name, f"A dog number {i} runs , caption {k} ."])
    return folder


def test_01_data_runs_in_paper_profile_on_a_fake_folder(tmp_path, monkeypatch):
    pm = pytest.importorskip("papermill")
    folder = fake_flickr8k(tmp_path / "flickr8k")
    monkeypatch.setenv("FLICKR8K_DIR", str(folder))
    monkeypatch.setenv("MMLIB_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "01.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "01_data.ipynb"), str(out), parameters={"profile": "paper"},
                        kernel_name="mmlib", cwd=str(ROOT / "notebooks"), progress_bar=False)
    summary = json.loads((tmp_path / "runs" / "paper" / "results" / "data_summary.json").read_text())
    assert summary == {"n_train": 8, "n_val": 2, "source": "flickr8k",
                       "top25_overlap_with_real": summary["top25_overlap_with_real"]}
    ceiling = json.loads((tmp_path / "runs" / "paper" / "results" / "human_ceiling.json").read_text())
    assert {r["mode"] for r in ceiling["rows"]} == {"seed", "standard"}
    assert (tmp_path / "runs" / "paper" / "figures" / "data_samples.png").exists()
