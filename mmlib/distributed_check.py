"""Data-parallel smoke check of ``train.fit``: a tiny regression net trained on fixed synthetic data.

    python -m mmlib.distributed_check OUT_DIR [--steps 20] [--batch-size 16] [--stop-after N]
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no -m mmlib.distributed_check OUT_DIR         # 2 processes (gloo on CPU)

The global batch is ``--batch-size`` whatever the number of processes (``fit`` gives each rank its
share of it), so one process and N processes train the same curve up to fp32 reduction order;
``tests/test_distributed.py`` holds them to that. The net is shaped like the study's models where
data parallelism can go wrong: its loss reaches into the model (``model.cfg``, a submodule called
directly, not ``forward``), it has a frozen part and a trainable parameter that never gets a gradient
(VQGAN's step counter), and the loss consumes the global RNG (as diffusion noise does) for a logged
value, which makes a resumed run's history show whether every rank got its own RNG stream back.
Early stopping's bookkeeping is on (a validation loss every 5 steps, the best weights returned; no
patience, so every run goes to its last step).

The main process writes ``OUT_DIR/<--curve>`` (JSON): the loss history (with the rows each rank took
per step, averaged over the ranks), the validation curve, the loss on all the data before and after (the best weights), the final trainable weights,
the largest difference of any weight between the ranks (0: the gradients were all-reduced) and one
draw of each rank's RNG after training (different: the ranks' streams are not copies of each other).
Checkpoints go to ``OUT_DIR/train-<hash>/``: a second call with the same OUT_DIR resumes there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch import nn

from . import train
from .results import atomic_write_text


class SmokeNet(nn.Module):
    def __init__(self, d: int = 8, hidden: int = 32):
        super().__init__()
        self.cfg = {"d": d, "hidden": hidden}           # read by the loss, like the study's models' cfg
        self.frozen = nn.Linear(d, d).requires_grad_(False)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.counter = nn.Parameter(torch.zeros(()))    # trainable, never in the graph (cf. VQGAN's step counter)


def loss_fn(model: SmokeNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    x = batch["x"][:, :model.cfg["d"]]
    pred = model.net(model.frozen(x)).squeeze(-1)      # a submodule, not forward: what DDP cannot see
    return nn.functional.mse_loss(pred, batch["y"]), {"noise": torch.randn(()).item(), "rows": len(x)}


def smoke_data(n: int = 256, d: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g) / d ** 0.5 + 0.1 * torch.randn(n, generator=g)
    return {"x": x, "y": y}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--curve", default="curve.json")
    args = ap.parse_args(argv)

    torch.manual_seed(0)                                 # the same initial weights in every process
    model, data = SmokeNet(), smoke_data()

    def data_loss() -> float:                            # the loss on all the data (the same on every rank)
        with torch.no_grad():
            return float(loss_fn(model, train.to_device(data, next(model.parameters()).device))[0])

    before = data_loss()
    cfg = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=3e-2, warmup=2, ckpt_every=5,
                            ema=0.9, log_every=1, eval_every=5, mixed_precision="no")
    fit = train.fit(model, loss_fn, data, cfg, args.out_dir, {"model": "distributed_check"},
                    stop_after=args.stop_after, progress=False, val_loss=lambda m: data_loss())

    state = PartialState()
    weights = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad]).cpu()
    every = gather_object([weights]) if state.num_processes > 1 else [weights]
    draws = gather_object([torch.randn(()).item()]) if state.num_processes > 1 else [torch.randn(()).item()]
    out = {"num_processes": state.num_processes, "steps": fit.steps, "resumed_from": fit.resumed_from,
           "history": fit.history, "val_history": fit.val_history, "best_step": fit.best_step,
           "data_loss": [before, data_loss()], "weights": weights.tolist(),
           "rank_weight_spread": max(float((w - weights).abs().max()) for w in every),
           "rank_draws": draws}
    if state.is_main_process:
        atomic_write_text(Path(args.out_dir) / args.curve, json.dumps(out))
    state.wait_for_everyone()
    state.destroy_process_group()   # left to exit, gloo's threads sometimes aborted it ("terminate called ...")
    return out


if __name__ == "__main__":
    main()
