"""The runner reruns a notebook exactly when something it executes changed."""
import nbformat

from mmlib import runner


def make_tree(root):
    pkg = root / "mmlib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")    # a function-level import counts
    (pkg / "c.py").write_text("import importlib\nm = importlib.import_module('mmlib.d')\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "unrelated.py").write_text("y = 2\n")
    (root / "requirements.txt").write_text("torch\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%matplotlib inline\nfrom mmlib import a\nimport os")]
    path = root / "01_x.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_dependencies_follow_relative_nested_and_importlib_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    nb = make_tree(tmp_path)
    names = {p.relative_to(tmp_path / "mmlib").as_posix() for p in runner.dependencies(nb)}
    assert names == {"__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py", "d.py"}
    stamp = runner.inputs_stamp(nb, "cpu")
    (tmp_path / "mmlib" / "unrelated.py").write_text("y = 3\n")
    assert runner.inputs_stamp(nb, "cpu") == stamp            # an edit elsewhere does not rerun it
    (tmp_path / "mmlib" / "d.py").write_text("x = 2\n")
    assert runner.inputs_stamp(nb, "cpu") != stamp            # an edit to what it runs does
    assert runner.inputs_stamp(nb, "smoke") != runner.inputs_stamp(nb, "cpu")


def test_real_notebooks_depend_on_their_own_models_only():
    deps = {nb.name[:2]: {p.relative_to(runner.ROOT).as_posix() for p in runner.dependencies(nb)}
            for nb in runner.notebooks()}
    assert {"mmlib/data/world/scene.py", "mmlib/data/world/render.py", "mmlib/data/world/captions.py", "mmlib/data/world/dataset.py"} <= deps["01"] and not any("t2i" in p or "captioning" in p for p in deps["01"])
    assert "mmlib/captioning/qformer/llm.py" in deps["05"] and "mmlib/captioning/qformer/llm.py" not in deps["04"]
    # 09 times 06 and 07 through importlib.import_module: their code is part of its inputs
    assert {"mmlib/t2i/pixel_diffusion.py", "mmlib/t2i/latent_diffusion.py"} <= deps["09"]


# ---- runs: stamps, interruption, progress, summary, threads
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import papermill as pm
import psutil
import pytest

from mmlib import device, results

RUNNER_ENV = ("MMLIB_RUN_ID", "MMLIB_NOTEBOOK", "MMLIB_THREADS", "OMP_NUM_THREADS", "HF_HUB_OFFLINE",
              "TRANSFORMERS_OFFLINE")


@pytest.fixture
def runner_env(monkeypatch):
    """``runner.run`` exports these to its kernels; give them back unset afterwards."""
    for name in RUNNER_ENV:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the runner catches it, so no cleanup of its own runs."""


@pytest.fixture
def tree(tmp_path, monkeypatch, runner_env):
    """Two notebooks (01_x, 02_y) under a fake repository root, with their own runs folder."""
    make_tree(tmp_path)
    nb2 = nbformat.v4.new_notebook()
    nb2.cells = [nbformat.v4.new_code_cell("from mmlib import d")]
    nbformat.write(nb2, str(tmp_path / "02_y.ipynb"))
    for module, name in ((runner, "ROOT"), (runner, "NOTEBOOKS")):
        monkeypatch.setattr(module, name, tmp_path)
    monkeypatch.setattr(runner, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(results, "RUNS", tmp_path / "runs")
    return tmp_path


def fake_papermill(monkeypatch, outcome):
    """``pm.execute_notebook`` that writes the output notebook cell by cell, then does ``outcome(name)``:
    None (success), or raise (a cell error, a kill). Records every call's name and environment."""
    calls = []

    def execute(input_path, output_path, on_cell=None, **kw):
        name = os.path.basename(input_path)[:-len(".ipynb")]
        calls.append((name, os.environ.get("MMLIB_NOTEBOOK"), os.environ.get("MMLIB_THREADS")))
        nb = nbformat.read(input_path, as_version=4)
        for i, _ in enumerate(nb.cells):
            nbformat.write(nb, output_path)
            on_cell(i + 1, len(nb.cells))
        error = outcome(name)
        if error:
            raise error
    monkeypatch.setattr(runner.pm, "execute_notebook", execute)
    return calls


def test_a_killed_run_leaves_no_stamp_and_the_old_executed_copy_is_never_taken_for_new(tree, monkeypatch, capsys):
    fake_papermill(monkeypatch, lambda name: None)
    assert runner.run("smoke", ["01"]) == 0
    executed = tree / "runs" / "smoke" / "executed"
    stamp = executed / "01_x.stamp"
    old = (executed / "01_x.ipynb").read_bytes()
    assert stamp.read_text() == runner.inputs_stamp(tree / "01_x.ipynb", "smoke")

    fake_papermill(monkeypatch, lambda name: Killed())          # a forced rerun dies in the middle
    with pytest.raises(Killed):
        runner.run("smoke", ["01"], force=True)
    assert not stamp.exists()                                    # removed before the kernel started
    assert (executed / "01_x.ipynb").read_bytes() == old         # the finished copy of the earlier run, untouched
    assert (executed / ".01_x.partial.ipynb").exists()           # the interrupted one has a temporary name

    capsys.readouterr()
    calls = fake_papermill(monkeypatch, lambda name: None)
    assert runner.run("smoke", ["01"]) == 0
    out = capsys.readouterr().out
    assert calls and "up to date (cached)" not in out and re.search(r"01_x +run +\d+ s", out)
    assert stamp.exists() and not (executed / ".01_x.partial.ipynb").exists()
    assert runner.run("smoke", ["01"]) == 0
    assert re.search(r"01_x +cached +– ", capsys.readouterr().out)


def test_run_reports_progress_estimates_and_a_summary_table(tree, monkeypatch, capsys):
    calls = fake_papermill(monkeypatch, lambda name: None)
    monkeypatch.setenv("MMLIB_THREADS", "1")
    assert runner.run("smoke") == 0
    assert [c[:2] for c in calls] == [("01_x", "01_x"), ("02_y", "02_y")]   # each kernel knows its notebook
    assert {c[2] for c in calls} == {"1"}
    times = results.load("smoke", "runtime")["notebooks"]
    assert set(times) == {f"01_x|{device.precision()}", f"02_y|{device.precision()}"}
    assert results.load_provenance("smoke", "runtime")["notebook"] == runner.RUNNER
    inv = results.load("smoke", "runtime")["last_invocation"]
    assert inv["ran"] == 2 and inv["cached"] == 0 and inv["seconds"] >= 0
    total = results.load("smoke", "runtime_table")["rows"][-1]
    assert total["notebook"] == "all 2 (sum)" and total["first run (s)"] == pytest.approx(
        sum(t["seconds"] for t in results.load("smoke", "runtime")["notebooks"].values()))
    out = capsys.readouterr().out
    assert "1 thread per notebook" in out and "last run" not in out            # nothing recorded yet
    assert runner.run("smoke") == 0                                            # nothing changed: all cached
    assert results.load("smoke", "runtime")["last_invocation"] | {"seconds": 0} == {
        "seconds": 0, "precision": device.precision(), "ran": 0, "cached": 2}
    capsys.readouterr()

    error = pm.PapermillExecutionError(0, 3, "x", "ValueError", "bad", [])
    fake_papermill(monkeypatch, lambda name: error if name == "01_x" else None)
    assert runner.run("smoke", force=True) == 1
    out = capsys.readouterr().out
    last = times[f"01_x|{device.precision()}"]["last_seconds"]
    assert f"01_x.ipynb (profile smoke, {device.precision()}) ... last run {runner.duration(last)}" in out
    table = out[out.index("summary"):].splitlines()[1:]
    assert re.split(r"\s{2,}", table[0].strip()) == ["notebook", "status", "wall time", "precision"]
    assert re.split(r"\s{2,}", table[1].strip())[:2] == ["01_x", "failed"]
    assert re.split(r"\s{2,}", table[2].strip()) == ["02_y", "not reached", "–", device.precision()]


def test_progress_line_counts_cells_and_estimates_the_time_left():
    now = [100.0]
    p = runner.Progress("03_x", last=100.0, stream=io.StringIO(), clock=lambda: now[0])
    assert p.line() == "[run_all] 03_x: starting the kernel, 0 s elapsed, ≈ 1 min 40 s left (last run 1 min 40 s)"
    now[0] += 40
    p.cell(3, 10)
    assert p.line() == "[run_all] 03_x: cell 3/10, 40 s elapsed, ≈ 1 min 00 s left (last run 1 min 40 s)"
    now[0] += 3700
    assert p.line().endswith("1 h 02 min elapsed, longer than the last run (1 min 40 s)")
    assert runner.Progress("03_x", stream=io.StringIO(), clock=lambda: 0.0).line() == \
        "[run_all] 03_x: starting the kernel, 0 s elapsed"                   # no earlier run: no estimate
    log = io.StringIO()
    with runner.Progress("03_x", last=60.0, every=0.01, stream=log):
        time.sleep(0.2)
    assert log.getvalue().count("[run_all] 03_x: starting the kernel") >= 2   # a line per tick in a log


def test_notebooks_get_every_available_core_unless_told_otherwise(runner_env, monkeypatch):
    assert runner.threads_for_kernels() == device.available_cores()
    assert os.environ["MMLIB_THREADS"] == os.environ["OMP_NUM_THREADS"] == str(device.available_cores())
    monkeypatch.setenv("MMLIB_THREADS", "1")
    assert runner.threads_for_kernels() == 1
    assert runner.threads_for_kernels(10_000) == device.available_cores()   # never more than the cores


# ---- a real smoke notebook, killed with SIGKILL once a training checkpoint exists, then rerun
KILLED_NOTEBOOK = "03_caption_clip"   # trains its CLIP (one checkpoint), then the decoder on CLIP features
RUN_HISTORY = re.compile(r"(seconds|_s|cached|cached_train|threads|load|load_avg)$")   # not the run's numbers


def start_runner(runs, *args):
    """The runner on the smoke notebook, in its own process group, writing under ``runs``; its output
    goes to a file (``proc.log``), so a pipe that nobody reads can never block it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MMLIB_RUN_ID", "MMLIB_NOTEBOOK")}
    env.update(MMLIB_RUNS=str(runs), MMLIB_PROFILE="smoke", PYTHONUNBUFFERED="1", MMLIB_PROGRESS_EVERY="1")
    cmd = [sys.executable, "-m", "mmlib.runner", "--profile", "smoke", "--only", KILLED_NOTEBOOK[:2], "--threads", "1",
           "--no-report", *args]
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / f"runner-{time.monotonic_ns()}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=runner.ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc.log = log
    return proc


def finish(proc, timeout=300):
    proc.wait(timeout=timeout)
    out = proc.log.read_text()
    assert proc.returncode == 0, out
    return out


def kill_everything(proc):
    """SIGKILL the runner's process group and its kernel (jupyter_client starts kernels in a session of their own)."""
    try:
        kernels = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):    # it had ended already
        kernels = []
    for p in kernels:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(kernels, timeout=30)
    proc.wait(timeout=30)


def saved_numbers(runs):
    """Every result the notebook saved, without the fields that describe the run (times, cache hits, threads)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not RUN_HISTORY.search(k)}
        return [strip(v) for v in x] if isinstance(x, list) else x
    files = sorted((runs / "smoke" / "results").glob("*.json"))
    return {f.stem: strip(json.loads(f.read_text())) for f in files
            if not f.name.endswith(".meta.json") and not f.stem.startswith("runtime")}


def test_a_notebook_killed_after_a_checkpoint_resumes_and_saves_the_same_numbers(tmp_path):
    """``kill -9`` of the runner (and its kernel) in 03 once its CLIP's checkpoint is written: 03 then
    spends seconds on features, the decoder, decoding and figures, so the kill (polled every 10 ms; no
    hook slows the notebook) lands before the end, which the first asserts check. The rerun must resume
    from that checkpoint and save the numbers of an uninterrupted run in another runs folder."""
    whole, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = start_runner(whole)                       # side by side: one thread each
    proc = start_runner(killed)
    deadline = time.monotonic() + 240
    while not (ckpts := sorted((killed / "smoke" / KILLED_NOTEBOOK[:2]).rglob("ckpt-*.pt"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_everything(proc)
            pytest.fail(f"no checkpoint before the runner ended or timed out:\n{proc.log.read_text()}")
        time.sleep(0.01)
    kill_everything(proc)
    executed = killed / "smoke" / "executed"
    assert not (executed / f"{KILLED_NOTEBOOK}.ipynb").exists(), "the kill came after the notebook had finished"
    assert not (executed / f"{KILLED_NOTEBOOK}.stamp").exists()
    assert (executed / f".{KILLED_NOTEBOOK}.partial.ipynb").exists()
    first = ckpts[0]
    written = first.stat().st_mtime_ns

    out = finish(start_runner(killed))                    # while the uninterrupted run may still go on
    assert "up to date (cached)" not in out and re.search(rf"{KILLED_NOTEBOOK} +run +\d", out), out
    assert re.search(rf"\[run_all\] {KILLED_NOTEBOOK}: cell \d+/\d+, \d+ s elapsed", out), out   # papermill's cells
    assert first.stat().st_mtime_ns == written            # resumed from it, not trained again
    assert json.loads((killed / "smoke" / "results" / "03_clip_retrieval.json").read_text())["cached"] is True
    finish(reference)
    assert saved_numbers(killed) == saved_numbers(whole)
    assert len(saved_numbers(whole)) >= 5
    # finished now: the next run skips it (the runner's own test, without starting it a third time)
    nb = runner.NOTEBOOKS / f"{KILLED_NOTEBOOK}.ipynb"
    assert (executed / nb.name).exists()
    assert (executed / f"{nb.stem}.stamp").read_text() == runner.inputs_stamp(nb, "smoke")
