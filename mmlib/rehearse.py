"""Rehearse the ``paper`` profile end to end on this machine: the study's own code path, tiny and random.

Hub weights and Flickr8k images cannot be fetched here, so the rehearsal writes

- a Flickr8k folder in the Kaggle layout (``Images/*.jpg``, ``captions.txt`` with five captions an
  image, the study's ``train_captions.csv`` / ``val_captions.csv``) from world8k renders, without the
  scene records that only world8k has;
- into a weights folder read through ``$MMLIB_WEIGHTS_DIR``, a tiny randomly initialised stand-in for
  every hub model ``paper`` names (``STANDINS``), of the same class and configuration family as the real
  one and saved the way the real one is distributed (``save_pretrained`` folders, open_clip's
  safetensors file, a torchvision state dict);

then runs notebooks 01-09 with papermill in ``paper`` with ``MMLIB_PAPER_SIZES=rehearsal`` (sizes and step
counts from ``rehearsal_sizes.REHEARSAL``; every name, loader, tokenizer and prompt template stays ``paper``'s),
and builds a report from their results into the rehearsal folder, headed by a bold warning that its
weights are random and its numbers meaningless.

Nothing may come from the hub: ``MMLIB_WEIGHTS_STRICT=1`` turns a missing stand-in into an error and
``HF_HUB_OFFLINE=1`` stops any download. Every loader resolution is logged (``MMLIB_WEIGHTS_LOG``), and
``check_ledger`` fails when a stand-in was written but never read through ``pretrained.hub_source``, i.e.
when some ``paper`` code path loads that model some other way.

    python -m mmlib.rehearse [--out runs/rehearsal] [--only 02]... [--images 300]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import open_clip
import torch
import torchvision
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoTokenizer, BertConfig, BertModel, Blip2Config, Blip2ForConditionalGeneration,
                          LlamaConfig, LlamaForCausalLM, OPTConfig, T5Config, T5ForConditionalGeneration,
                          T5TokenizerFast)

from . import converted, pretrained, report
from .data import flickr8k, world
from .paths import ROOT, RUNS
from .t2i.sdxl.pipeline import TinySDXLConfig, build_tiny_pipeline

BANNER = ("**This is a rehearsal of the `paper` profile: every pretrained model is a tiny stand-in with "
          "random weights and the images are world8k renders, so every number and figure below is "
          "meaningless. It shows only that the study's code path runs end to end.**\n\n")

# TinyLlama-1.1B-Chat-v1.0's chat template (its tokenizer_config.json), the Zephyr format
TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")

BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)  # rehearsal_sizes.REHEARSAL
T5_WIDTH = 64                                                                                      # infinity d_text


# ------------------------------------------------------------------------------------- data
def write_flickr8k(out: Path, n_images: int = 300, size: int = 128, seed: int = 8) -> Path:
    """A Kaggle-layout Flickr8k folder of ``n_images`` world8k renders plus the study's split CSVs.

    world8k's ``scenes.jsonl`` is removed: real Flickr8k has no scene records, and ``paper`` must not
    find any."""
    if (out / "captions.txt").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    world.generate(out, n_images=n_images, size=size, seed=seed)
    (out / "scenes.jsonl").unlink()
    flickr8k.write_seed_split_csvs(flickr8k.read_captions(out / "captions.txt"), out)
    return out


# ---------------------------------------------------------------------------------- weights
def _bert(folder: Path) -> None:
    """bert-base-uncased: BertModel + its uncased WordPiece vocabulary (MiniLM ships the same 30,522)."""
    tok = AutoTokenizer.from_pretrained(str(pretrained.package_file("text_encoder")))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, **BERT)).save_pretrained(folder)
    tok.save_pretrained(folder)


def _tinyllama(folder: Path) -> None:
    """TinyLlama-1.1B-Chat: LlamaForCausalLM (grouped-query attention, untied head) with a byte-level
    BPE tokenizer (SmolLM2's; TinyLlama's SentencePiece file is not offline) carrying TinyLlama's
    chat template."""
    tok = AutoTokenizer.from_pretrained(str(converted.smollm2_dir(pretrained.package_file("causal_lm"))))
    tok.chat_template = TINYLLAMA_CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def _torchvision(arch: str) -> Callable[[Path], None]:
    """A writer of torchvision's ``arch`` (resnet18: 02's CNN; vgg16: LPIPS-VGG's trunk), full size, random,
    as the state-dict file its IMAGENET1K_V1 weights are."""
    def write(file: Path) -> None:
        torch.manual_seed(0)
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), file)
    return write


def _open_clip_vit_b32(file: Path) -> None:
    """open_clip ViT-B-32 with QuickGELU (the openai tag's configuration), full size (151 M parameters:
    the architecture is fixed by its name), random, as ``open_clip_model.safetensors``."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(file))


def _blip2(folder: Path) -> None:
    """Salesforce/blip2-opt-2.7b: Blip2ForConditionalGeneration (EVA-style vision tower at 224 px with
    14 px patches, so 257 tokens; BERT-vocabulary Q-former; OPT language model), all tiny."""
    torch.manual_seed(0)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                  image_size=224, patch_size=14)
    qformer = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=128, cross_attention_frequency=2, encoder_hidden_size=64)
    text = OPTConfig(vocab_size=512, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                     word_embed_proj_dim=32, max_position_embeddings=64)
    cfg = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(), num_query_tokens=8)
    Blip2ForConditionalGeneration(cfg).save_pretrained(folder)


def _sdxl(folder: Path) -> None:
    """stabilityai/stable-diffusion-xl-base-1.0: StableDiffusionXLPipeline with SDXL's component types
    (two CLIP text encoders, AutoencoderKL, text_time UNet, Euler scheduler), tiny."""
    build_tiny_pipeline(TinySDXLConfig(image_size=32, vae_channels=(16, 32), unet_channels=(32, 64, 64),
                                       text_width=32, head_dim=16, projection_dim=32, time_embed_dim=8,
                                       norm_num_groups=16), profile="cpu").save_pretrained(folder)


def _flan_t5(folder: Path) -> None:
    """google/flan-t5-base: T5ForConditionalGeneration (gated-GELU, relative attention) and a
    ``T5TokenizerFast`` -- a SentencePiece-style Unigram model trained here on world8k captions, since
    flan-t5's spiece.model is not offline (pad 0, eos 1, unk 2 as in T5)."""
    texts = [c for i in range(400) for c, _ in world.example(99, i)[1]]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=800, unk_token="<unk>",
                                                           special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(fast), d_model=T5_WIDTH, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


# hub name (as ``pretrained.hub_source`` is asked for it) -> (path under the weights folder, writer)
STANDINS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "bert-base-uncased": ("bert-base-uncased", _bert),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", _tinyllama),
    "resnet18/IMAGENET1K_V1": ("resnet18/IMAGENET1K_V1.pth", _torchvision("resnet18")),
    "vgg16/IMAGENET1K_V1": ("vgg16/IMAGENET1K_V1.pth", _torchvision("vgg16")),
    "timm/vit_base_patch32_clip_224.openai":
        ("timm/vit_base_patch32_clip_224.openai/open_clip_model.safetensors", _open_clip_vit_b32),
    "Salesforce/blip2-opt-2.7b": ("Salesforce/blip2-opt-2.7b", _blip2),
    "stabilityai/stable-diffusion-xl-base-1.0": ("stabilityai/stable-diffusion-xl-base-1.0", _sdxl),
    "google/flan-t5-base": ("google/flan-t5-base", _flan_t5),
}


def write_weights(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write every stand-in (or ``names``) under ``root``, each atomically (skipped when present)."""
    out = {}
    for name in names or list(STANDINS):
        rel, write = STANDINS[name]
        target = root / rel
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            if tmp.is_dir():                   # a half-written stand-in of an interrupted run
                shutil.rmtree(tmp)
            else:
                tmp.unlink(missing_ok=True)
            write(tmp)
            tmp.rename(target)
        out[name] = target
    return out


# ----------------------------------------------------------------------------------- ledger
def read_ledger(log: Path) -> set[str]:
    """Hub names that a ``paper`` loader resolved to a local stand-in (``pretrained.hub_source``)."""
    if not log.exists():
        return set()
    return {r["name"] for r in map(json.loads, log.read_text().splitlines()) if r["local"]}


def check_ledger(log: Path, expected: set[str]) -> None:
    """Every stand-in in ``expected`` was read through ``pretrained.hub_source``; else an error naming
    the ones some other code path loaded (or never loaded)."""
    unread = sorted(expected - read_ledger(log))
    if unread:
        raise AssertionError(f"stand-ins written but never read by a paper loader (pretrained.hub_source): {unread}")


# ------------------------------------------------------------------------------------- run
def environment(out: Path) -> dict[str, str]:
    """What the notebooks of a rehearsal see: paper, rehearsal sizes, local weights only, offline."""
    return {**os.environ, "MMLIB_PROFILE": "paper", "MMLIB_PAPER_SIZES": "rehearsal",
            "MMLIB_RUNS": str(out / "runs"), "MMLIB_WEIGHTS_DIR": str(out / "weights"),
            "MMLIB_WEIGHTS_STRICT": "1", "MMLIB_WEIGHTS_LOG": str(out / "weights-read.jsonl"),
            "FLICKR8K_DIR": str(out / "flickr8k"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# the stand-ins each notebook reads (for --only: the ledger check covers what ran)
READS = {"02": {"resnet18/IMAGENET1K_V1"}, "03": {"timm/vit_base_patch32_clip_224.openai"},
         "04": {"Salesforce/blip2-opt-2.7b", "bert-base-uncased"},
         "05": {"Salesforce/blip2-opt-2.7b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"},
         "06": {"bert-base-uncased"}, "07": {"timm/vit_base_patch32_clip_224.openai", "vgg16/IMAGENET1K_V1"},
         "08": {"stabilityai/stable-diffusion-xl-base-1.0"}, "09": {"google/flan-t5-base"}}


def rehearse(out: Path, only: list[str] | None = None, n_images: int = 300, report: bool = True) -> int:
    """Write data and stand-ins, run the notebooks in ``paper`` (rehearsal sizes), check the ledger,
    build ``out/report.md``. Returns the runner's exit code."""
    out = out.resolve()
    t0 = time.perf_counter()
    write_flickr8k(out / "flickr8k", n_images)
    write_weights(out / "weights")
    print(f"[rehearse] data and stand-ins in {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    env = environment(out)
    Path(env["MMLIB_WEIGHTS_LOG"]).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mmlib.runner", "--profile", "paper", "--force", "--no-report"]
    for nb in only or []:
        cmd += ["--only", nb]
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code == 0:
        ran = only or sorted(READS) + ["01"]
        check_ledger(Path(env["MMLIB_WEIGHTS_LOG"]), set().union(*(READS.get(n, set()) for n in ran)))
    if report:   # in a process of the rehearsal's environment: paths.RUNS is read at import
        code = subprocess.call([sys.executable, "-c", "import sys; from mmlib import rehearse; "
                                "rehearse.build_report(sys.argv[1])", str(out)], cwd=ROOT, env=env) or code
    print(f"[rehearse] {'passed' if code == 0 else 'FAILED'} in {time.perf_counter() - t0:.0f} s", flush=True)
    return code


def build_report(out: str | Path) -> Path:
    """``out/report.md`` (and ``out/figures/``) from the rehearsal's results, headed by ``BANNER``."""
    out = Path(out)
    missing = report.build("paper", out / "report.md", out / "figures", allow_mixed=True)
    path = out / "report.md"
    path.write_text(BANNER + path.read_text())
    print(f"[rehearse] wrote {path}" + (f"; {len(missing)} results not produced in paper" if missing else ""))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RUNS / "rehearsal"))
    ap.add_argument("--only", action="append", help="notebook number, e.g. 02 (repeatable)")
    ap.add_argument("--images", type=int, default=300, help="world8k renders in the Flickr8k folder")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    sys.exit(rehearse(Path(args.out), args.only, args.images, not args.no_report))


if __name__ == "__main__":
    main()
