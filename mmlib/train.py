"""One training loop for every model of the study.

``fit(model, loss_fn, data, cfg, out_dir, key)`` trains the parameters of ``model`` that require
grad with AdamW under an accelerate ``Accelerator`` (so ``accelerate launch`` scales it to several
GPUs), in the project's one precision (``mmlib.device.precision()``: bf16 autocast or fp32), an
optional EMA of the weights, a tqdm bar and a saved loss history.

Batches are a pure function of (seed, step): epoch ``e`` visits ``randperm(n, seed e)`` in order.
Together with the torch RNG state stored in every checkpoint, this makes an interrupted run that
resumes from its last checkpoint end bit-identical to an uninterrupted one on CPU.

Checkpoints live in ``out_dir/train-<hash>/``, the hash of the training config (with the *resolved*
precision), and ``key``: a checkpoint made under another config or precision is never picked up; a
finished run is reloaded instead of retrained, unless ``restart=True``.

Early stopping (``cfg.eval_every`` > 0 and a ``val_loss`` function): every ``eval_every`` steps the
validation loss is measured (eval mode, no grad, the run's precision) and a checkpoint written; the
weights with the lowest validation loss so far go to ``best.safetensors``; after ``cfg.patience``
evaluations without an improvement of more than ``cfg.min_delta`` the run ends there, and the model
returned holds the best weights. The validation curve lives in ``val.json``, so a resumed run makes
the same decisions as an uninterrupted one, and a stopped run is reloaded, not continued.

Several processes (``accelerate launch``, DDP): every rank takes its equal share of the step's global
batch (``cfg.batch_size`` is the global batch, whatever the number of processes), the gradients are
all-reduced (averaged), the logged losses are the global batch's mean, the validation loss is measured
by the main process and sent to the others (so all of them stop together), the main process alone
writes, and every rank's RNG state goes into the checkpoints, so each rank resumes its own stream
(rank ``r`` > 0 starts from ``torch.initial_seed() + r``: its noise is not a copy of rank 0's; rank 0
keeps the caller's stream, as in one process). ``loss_fn`` runs inside the DDP wrapper on the model
itself, so it may reach into the model (``model.cfg``, a submodule) as it does in one process.
``tests/test_distributed.py`` holds a 2-process CPU run (gloo) to the 1-process loss curve.

The ``Accelerator`` is always made with ``mixed_precision="no"`` and autocast is entered through
``mmlib.device.autocast``: accelerate keeps one process-wide state, and a second ``Accelerator``
with another mixed precision in the same kernel raises (``AcceleratorState has already been
initialized``). So one process may train an fp32 model (the oracle) and a bf16 one, in either order.
"""
from __future__ import annotations

import functools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object
from torch.utils.data import Dataset, default_collate
from tqdm import tqdm

from . import ckpt, device
from .results import atomic_write_text


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 0                 # linear warm-up steps
    schedule: str = "cosine"        # cosine | constant (after warm-up)
    min_lr_ratio: float = 0.0       # cosine floor, as a fraction of lr
    grad_clip: float | None = 1.0   # max grad norm; None disables
    ckpt_every: int = 0             # 0: only the final checkpoint
    keep: int = 2                   # checkpoints kept on disk
    seed: int = 0
    mixed_precision: str = "auto"   # auto: mmlib.device.precision() (MMLIB_PRECISION) | bf16 | no (fp32)
    ema: float | None = None        # EMA decay of the trainable weights, e.g. 0.995
    log_every: int = 10
    eval_every: int = 0             # early stopping: validation loss every k steps (0: off)
    patience: int = 0               # stop after this many evaluations without improvement (0: never stop)
    min_delta: float = 0.0          # an improvement must lower the validation loss by more than this


@dataclass
class FitResult:
    history: list[dict[str, float]]
    steps: int
    call_seconds: float             # wall time spent training in this call (0 when reloaded finished)
    resumed_from: int | None        # step of the checkpoint we started from, if any
    train_dir: Path
    mixed_precision: str            # "bf16" or "no" (fp32): the precision the run was trained in
    ema: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    train_seconds: float | None = None  # THE training time: wall time of the whole run, summed over the calls
                                        # that trained it, also when reloaded (None: checkpoint predates timing)
    val_history: list[dict[str, float]] = field(default_factory=list)   # [{"step", "val_loss"}] (early stopping)
    best_step: int | None = None        # step of the weights returned when early stopping is on
    stopped_early: bool = False         # the patience ran out before cfg.steps

    @property
    def cached(self) -> bool:
        return self.resumed_from == self.steps


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine to ``min_lr_ratio`` (or constant). Kept here rather than taken from
    transformers' ``get_cosine_with_min_lr_schedule_with_warmup``: that one starts the warm-up at lr 0
    (a wasted first step) and has no constant variant; changing it would change every trained model."""
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return 1.0
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return f


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: epochs are seeded permutations, the last partial batch dropped."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size] if n >= batch_size else perm


def take(data: Mapping[str, torch.Tensor] | Dataset, idx: torch.Tensor) -> Any:
    if isinstance(data, Mapping):
        return {k: v[idx] for k, v in data.items()}
    return default_collate([data[int(i)] for i in idx])


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to the training device; a no-op on CPU."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def data_len(data: Mapping[str, torch.Tensor] | Dataset) -> int:
    if isinstance(data, Mapping):
        lens = {len(v) for v in data.values()}
        if len(lens) != 1:
            raise ValueError(f"all tensors of a batch dict need the same first dimension, got {lens}")
        return lens.pop()
    return len(data)


def resolve_precision(mode: str) -> str:
    """``"bf16"`` or ``"no"`` (fp32). ``MMLIB_PRECISION=fp32|bf16`` decides for every run; under
    ``auto`` a config's fixed mode (the paper recipe's ``"bf16"``) is kept and ``"auto"`` follows
    ``mmlib.device.precision()``."""
    if mode not in ("auto", "bf16", "no"):
        raise ValueError(f"mixed_precision={mode!r}: choose auto, bf16 or no")
    if mode != "auto" and device.setting() == "auto":
        return mode
    return "bf16" if device.precision() == "bf16" else "no"


def train_dir_for(cfg: TrainConfig, key: dict[str, Any], out_dir: Path) -> Path:
    """The checkpoint folder ``fit`` uses for this config, key and (resolved) precision."""
    return Path(out_dir) / f"train-{ckpt.config_key(_full_key(cfg, key))}"


def _full_key(cfg: TrainConfig, key: dict[str, Any]) -> dict[str, Any]:
    return {"train": {**asdict(cfg), "mixed_precision": resolve_precision(cfg.mixed_precision)}, "model": key}


class _Loss(torch.nn.Module):
    """``loss_fn(model, batch)`` as a module's forward: what ``accelerator.prepare`` wraps in DDP under
    several processes. DDP all-reduces the gradients of a forward it runs itself only, and the losses
    reach into their model (``model.cfg``, ``model.vq(...)``, ``model.vae.encode``), which a DDP wrapper
    does not expose; inside this forward they get the model itself. (``loss_fn`` is kept out of the
    module tree: a loss object's own tensors are no parameters of the model.)"""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.__dict__["loss_fn"] = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
    data: Mapping[str, torch.Tensor] | Dataset,
    cfg: TrainConfig,
    out_dir: Path,
    key: dict[str, Any],
    stop_after: int | None = None,
    progress: bool = True,
    restart: bool = False,
    val_loss: Callable[[torch.nn.Module], float] | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the loss history and where the checkpoints are.

    ``loss_fn(model, batch)`` returns the loss or ``(loss, {name: value})`` for extra curves.
    ``key`` is everything that defines the run besides ``cfg`` (model config, data config); its
    hash names the checkpoint folder. ``stop_after`` ends the call early after that many steps
    (with a checkpoint), which the tests use to simulate an interruption. ``restart=True`` deletes
    this config's checkpoints first and trains from step 0. ``val_loss(model)`` (the model in eval
    mode, under no_grad and the run's autocast) turns on early stopping when ``cfg.eval_every`` > 0.
    """
    precision = resolve_precision(cfg.mixed_precision)
    full_key = _full_key(cfg, key)
    train_dir = train_dir_for(cfg, key, out_dir)
    # find_unused_parameters: some trainable parameters get no gradient in a step (VQGAN's step counter,
    # a discriminator before its start); without it DDP fails at the next step. Ignored in one process.
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    ranks, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.is_main_process:
        if restart:
            shutil.rmtree(train_dir, ignore_errors=True)
        train_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(train_dir / "config.json", json.dumps(full_key, indent=1, sort_keys=True, default=str))
    accelerator.wait_for_everyone()
    autocast = functools.partial(device.autocast, accelerator.device, bf16=precision == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    step_loss, opt = accelerator.prepare(_Loss(model, loss_fn), opt)   # DDP under several processes
    ema = {n: p.detach().clone().float() for n, p in zip(names, params)} if cfg.ema else None

    step, history, resumed_from = 0, [], None
    timing_file = train_dir / "timing.json"     # {"step": s, "seconds": training wall time up to step s}
    found = ckpt.checkpoints(train_dir)
    if not found and rank > 0:
        torch.manual_seed(torch.initial_seed() + rank)    # as accelerate's set_seed(device_specific=True)
    if found:
        state = ckpt.load_checkpoint(found[-1])
        missing = set(names) - set(state["weights"])
        if missing:
            raise ValueError(f"{found[-1]} lacks trainable weights {sorted(missing)[:5]}")
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in state["weights"]:
                    p.copy_(state["weights"][n])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rngs = state.get("rng_ranks", [state["rng"]])      # every rank's state (several processes)
        torch.set_rng_state(rngs[rank] if len(rngs) == ranks else state["rng"])
        if len(rngs) != ranks and rank > 0:                 # made with another number of processes
            torch.manual_seed(torch.initial_seed() + rank)
        if ema is not None:
            ema = state["ema"]
        step = resumed_from = int(state["step"])
        history = [h for h in json.loads((train_dir / "history.json").read_text()) if h["step"] <= step]
    early = bool(cfg.eval_every) and val_loss is not None
    val_file, best_file = train_dir / "val.json", train_dir / "best.safetensors"
    val_history = [v for v in json.loads(val_file.read_text()) if v["step"] <= step] if early and val_file.exists() else []
    best_step, bad = patience_state(val_history, cfg.min_delta)
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else None
    before = timing["seconds"] if timing and timing["step"] == step else (0.0 if step == 0 else None)
    elapsed = {"seconds": before}

    def out_of_patience() -> bool:
        return early and cfg.patience > 0 and bad >= cfg.patience

    def checkpoint(at: int) -> None:                   # every rank calls it (the RNG states are gathered)
        state = {"weights": ckpt.trainable_state(model), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "step": at, "rng": torch.get_rng_state(),
                 "config": json.dumps(full_key, sort_keys=True, default=str)}
        if ranks > 1:
            state["rng_ranks"] = gather_object([state["rng"]])
        if ema is not None:
            state["ema"] = ema
        if accelerator.is_main_process:
            atomic_write_text(train_dir / "history.json", json.dumps(history))
            if early:
                atomic_write_text(val_file, json.dumps(val_history))
            if before is not None:
                elapsed["seconds"] = before + time.perf_counter() - t0
                atomic_write_text(timing_file, json.dumps({"step": at, **elapsed}))
            ckpt.save_checkpoint(train_dir / f"ckpt-{at:07d}.pt", state)
            ckpt.prune(train_dir, cfg.keep)

    n = data_len(data)
    if min(n, cfg.batch_size) % ranks:
        raise ValueError(f"a batch of {min(n, cfg.batch_size)} does not split evenly over {ranks} processes: "
                         "the gradients averaged over the ranks would not be the global batch's")
    t0, end = time.perf_counter(), cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    if out_of_patience():
        end = step                                  # a run that stopped early is reloaded, not continued
    step_loss.train()
    bar = tqdm(total=cfg.steps, initial=step, mininterval=2.0,
               disable=not progress or step >= end or not accelerator.is_main_process,
               desc=train_dir.parent.name, leave=False)
    while step < end:
        idx = batch_indices(n, cfg.batch_size, step, cfg.seed)
        idx = idx[accelerator.process_index::accelerator.num_processes]  # data parallel shard
        batch = to_device(take(data, idx), accelerator.device)
        with autocast():
            out = step_loss(batch)
        loss, logs = (out if isinstance(out, tuple) else (out, {}))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        if ema is not None:
            with torch.no_grad():
                for n_, p in zip(names, params):
                    # plain EMA (no decay warm-up, unlike diffusers' EMAModel): its fp32 shadow lives in
                    # fit's own checkpoint, so a resumed run continues it exactly
                    ema[n_].lerp_(p.detach().float(), 1 - cfg.ema)
        if step % cfg.log_every == 0 or step == cfg.steps:
            logged = {"loss": loss.item(), **{k: float(v) for k, v in logs.items()}}
            if ranks > 1:                               # the mean over the ranks' equal shares of the batch
                mean = accelerator.reduce(torch.tensor(list(logged.values()), dtype=torch.float64,
                                                       device=accelerator.device), "mean")
                logged = dict(zip(logged, mean.tolist()))
            history.append({"step": step, "loss": logged.pop("loss"), "lr": sched.get_last_lr()[0], **logged})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        bar.update(1)
        evaluated = early and (step % cfg.eval_every == 0 or step == cfg.steps)
        if evaluated:
            model.eval()
            v = math.nan
            if accelerator.is_main_process:             # measured once, the same decision on every rank
                with torch.no_grad(), autocast():
                    v = float(val_loss(model))
            if ranks > 1:
                v = broadcast_object_list([v])[0]
            model.train()
            if not math.isfinite(v):
                raise FloatingPointError(f"validation loss {v} at step {step} ({train_dir})")
            val_history.append({"step": step, "val_loss": v})
            best_step, bad = patience_state(val_history, cfg.min_delta)
            if best_step == step and accelerator.is_main_process:
                ckpt.save_weights(best_file, ckpt.trainable_state(model), {"step": step})
            if out_of_patience():
                end = step
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or evaluated or step == end:
            checkpoint(step)
    bar.close()
    step_loss.eval()
    accelerator.wait_for_everyone()                 # the main process's files are complete for every rank
    if early and best_step is not None:              # return the weights with the lowest validation loss
        copy_weights(model, ckpt.load_weights(best_file, expect_config={"step": best_step}))
    call_seconds = time.perf_counter() - t0 if resumed_from != step else 0.0
    return FitResult(history=history, steps=step, call_seconds=call_seconds, resumed_from=resumed_from, train_dir=train_dir,
                     mixed_precision=precision, ema=ema, train_seconds=elapsed["seconds"],
                     val_history=val_history, best_step=best_step if early else None, stopped_early=out_of_patience())


def patience_state(val_history: list[dict[str, float]], min_delta: float = 0.0) -> tuple[int | None, int]:
    """(step of the lowest validation loss, evaluations since the last improvement) of a validation
    curve ``[{"step", "val_loss"}]``; an improvement must beat the best so far by more than ``min_delta``."""
    best_step, best, bad = None, math.inf, 0
    for v in val_history:
        if v["val_loss"] < best - min_delta:
            best_step, best, bad = v["step"], v["val_loss"], 0
        else:
            bad += 1
    return best_step, bad


def copy_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy the named ``tensors`` into ``model``'s parameters of the same names (cast to their dtype)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in tensors:
                p.copy_(tensors[n].to(p.dtype))


def load_ema(model: torch.nn.Module, ema: dict[str, torch.Tensor]) -> None:
    """Copy EMA weights into ``model`` (for sampling/evaluation)."""
    copy_weights(model, ema)
