"""Decoding speed: KV-cached batched decoding vs naive full recomputation (captions per second).

Usage: python benchmarks/decode_speed.py [--profile cpu] [--n 256] [--batch 64] [--max-len 20]

The decoder has the profile's 02 sizes (random weights: speed does not depend on them; EOS is
suppressed so every caption runs exactly ``max_len`` tokens and both modes do the same work).
Both modes produce identical tokens (checked here, and in tests/test_decoding.py). The result is
saved as the table ``decode_speed`` for report/02_caption_cnn.md.
"""
from __future__ import annotations

import argparse
import time

import torch

from mmlib import device, profiles, results
from mmlib.captioning.decoding import Recompute, beam_search, greedy
from mmlib.captioning.xattn import XAttnCaptioner, XAttnConfig


class NoEOS:
    """Wraps a StepModel so EOS is never the argmax: fixed-length captions, equal work per mode."""

    def __init__(self, model):
        self.model, self.bos_id, self.eos_id, self.pad_id = model, model.bos_id, model.eos_id, model.pad_id

    def start(self, memory):
        return self.model.start(memory)

    def step(self, tokens, cache):
        logits, cache = self.model.step(tokens, cache)
        logits[..., self.eos_id] = float("-inf")
        return logits, cache


def timed(fn, repeats: int = 2) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=profiles.current())
    ap.add_argument("--n", type=int, default=256, help="captions per measurement")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--beam", type=int, default=3)
    args = ap.parse_args()
    threads = device.set_threads()
    s = profiles.get(args.profile).caption_cnn
    n_tok, d_image = {"paper": (49, 512)}.get(args.profile, (16, 1280))
    torch.manual_seed(0)
    cfg = XAttnConfig(vocab_size=300 if args.profile != "paper" else 4090, d_image=d_image, n_image_tokens=n_tok,
                      n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, d_ff=s.d_ff, dropout=0.0,
                      block_size=args.max_len + 1)
    model = XAttnCaptioner(cfg).eval()
    memory = torch.randn(args.n, n_tok, d_image)
    rows = []
    for method in ("greedy", f"beam {args.beam}"):
        per_mode = {}
        for mode, m in (("KV cache", NoEOS(model)), ("recompute", Recompute(NoEOS(model)))):
            def run():
                outs = []
                for i in range(0, args.n, args.batch):
                    mem = memory[i:i + args.batch]
                    outs.append(greedy(m, mem, args.max_len) if method == "greedy"
                                else beam_search(m, mem, args.beam, args.max_len))
                return torch.cat(outs)
            seconds, toks = timed(run)
            per_mode[mode] = (seconds, toks)
        assert torch.equal(per_mode["KV cache"][1], per_mode["recompute"][1]), "cached and naive decoding differ"
        cached, naive = per_mode["KV cache"][0], per_mode["recompute"][0]
        rows.append({"decoding": method, "KV cache (captions/s)": args.n / cached,
                     "recompute (captions/s)": args.n / naive, "speed-up": naive / cached})
        print(rows[-1], flush=True)
    note = (f"{args.profile} decoder sizes ({cfg.n_layer}×{cfg.n_embd}, {n_tok} image tokens), batch {args.batch}, "
            f"{args.max_len} tokens per caption, fp32, {threads} thread(s); identical tokens in both modes.")
    results.save_table(args.profile, "decode_speed", rows, formats={"KV cache (captions/s)": ".0f",
                       "recompute (captions/s)": ".0f", "speed-up": ".1f"}, note=note)
    print(note)


if __name__ == "__main__":
    main()
