"""Data parallelism of ``train.fit``: ``accelerate launch`` with 2 CPU processes (gloo) trains the
1-process loss curve at the same global batch, and resumes bit-identically.

The runs are ``python -m mmlib.distributed_check`` (one process, as the notebooks train) and
``accelerate launch --multi_gpu --num_processes 2`` of the same module: ``--multi_gpu`` is what makes
accelerate spawn the processes (torchrun); with ``--cpu`` it starts one process, whatever
``--num_processes``. ``CUDA_VISIBLE_DEVICES=""`` keeps them on the CPU (gloo) on a GPU machine too,
``MMLIB_PRECISION=fp32`` in fp32 in either pass of ``run_tests.sh``, and ``OMP_NUM_THREADS=1`` gives one
thread to each process (two processes on the CI's two cores). About 30 s on 2 cores: four launches,
of 20, 20, 10 and 10 steps; nearly all of it is the processes' start-up.

Tolerance: each step's loss within a relative 1e-5 of the 1-process loss (and the final weights
within 1e-5). The two runs compute the same sums in another order: one mean over 16 rows against
the mean of two means over 8 rows (the loss, and the gradients that DDP averages), which AdamW carries
from step to step. That is a few fp32 ulps (eps 1.2e-7); measured 1.5e-7 relative on the loss and
1.2e-7 on the weights after 20 steps, so 1e-5 leaves a margin of ~70x. What it guards against is
orders larger: rank 0's own loss logged instead of the global batch's is 20% off at step 1 here, and
ranks whose gradients are not averaged depart from the second step on.
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-5
STEPS, BATCH = 20, 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out_dir: Path, processes: int, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MMLIB_PRECISION": "fp32",
           "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    module = ["-m", "mmlib.distributed_check", str(out_dir), "--steps", str(STEPS), "--batch-size", str(BATCH), *args]
    if processes == 1:
        cmd = [sys.executable, *module]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", "--main_process_port", str(free_port()), *module]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    out = json.loads((out_dir / "curve.json").read_text())
    out["seconds"] = time.perf_counter() - t0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    one = run(tmp / "one", 1)
    two = run(tmp / "two", 2)
    part = run(tmp / "resumed", 2, "--stop-after", "10")
    resumed = run(tmp / "resumed", 2)
    return {"one": one, "two": two, "part": part, "resumed": resumed}


def losses(r: dict) -> list[float]:
    return [h["loss"] for h in r["history"]]


def test_two_processes_train_the_one_process_curve(runs):
    one, two = runs["one"], runs["two"]
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert [h["step"] for h in one["history"]] == [h["step"] for h in two["history"]] == list(range(1, STEPS + 1))
    # each rank took its half of the global batch, not the whole batch
    assert {h["rows"] for h in one["history"]} == {BATCH} and {h["rows"] for h in two["history"]} == {BATCH / 2}
    a, b = losses(one), losses(two)
    worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    assert worst <= RTOL, f"per-step loss differs by {worst:.2e} relative (tolerance {RTOL:g})\n{a}\n{b}"
    assert max(abs(x - y) for x, y in zip(one["weights"], two["weights"])) <= RTOL
    assert [v["step"] for v in two["val_history"]] == [5, 10, 15, 20] and two["best_step"] == one["best_step"]
    assert two["rank_weight_spread"] == 0.0          # the gradients were all-reduced: the ranks hold one model
    for r in (one, two):                             # both trained
        before, after = r["data_loss"]
        assert after < 0.75 * before
        assert sum(losses(r)[-5:]) < sum(losses(r)[:5])


def test_ranks_draw_their_own_noise(runs):
    one, two = runs["one"], runs["two"]
    assert two["rank_draws"][0] == one["rank_draws"][0]   # rank 0 keeps the caller's stream, as one process
    assert two["rank_draws"][0] != two["rank_draws"][1]   # rank 1's noise is not a copy of it


def test_two_process_resume_equals_uninterrupted(runs):
    part, resumed, two = runs["part"], runs["resumed"], runs["two"]
    assert part["steps"] == 10 and resumed["resumed_from"] == 10 and resumed["steps"] == STEPS
    # bit-identical, the logged noise (the mean of both ranks' draws) included: every rank got its RNG back
    assert resumed["history"] == two["history"] and resumed["val_history"] == two["val_history"]
    assert resumed["weights"] == two["weights"]
