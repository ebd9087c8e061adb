"""The `paper` rehearsal's parts: size override, weight resolution and its ledger, the Flickr8k folder,
and every `paper` loader reading its stand-in through `pretrained.hub_source` (the notebooks' run is
tests/rehearsal/)."""
import json

import pytest
import torch

from mmlib import paths, pretrained, profiles, rehearse
from mmlib.data import flickr8k


def test_rehearsal_sizes_keep_every_paper_name_and_shrink_steps(monkeypatch):
    full = profiles.get("paper")
    monkeypatch.setenv("MMLIB_PAPER_SIZES", "rehearsal")
    small = profiles.get("paper")
    assert small.infinity.text_encoder == full.infinity.text_encoder == "google/flan-t5-base"
    assert small.qformer_llm.qformer == full.qformer_llm.qformer == "Salesforce/blip2-opt-2.7b"
    assert (small.caption_clip.clip.model_name, small.caption_clip.clip.pretrained) == ("ViT-B-32", "openai")
    assert small.sd_lora.pretrained == full.sd_lora.pretrained
    assert small.data.source == "flickr8k" and small.caption_cnn.steps < full.caption_cnn.steps
    assert small.qformer_pretrained.train.steps < full.qformer_pretrained.train.steps
    assert small.qformer_pretrained.train.lr == full.qformer_pretrained.train.lr      # merged key by key
    assert profiles.tiny("paper") and not profiles.tiny("cpu")
    monkeypatch.setenv("MMLIB_PAPER_SIZES", "huge")
    with pytest.raises(ValueError, match="MMLIB_PAPER_SIZES"):
        profiles.get("paper")


def test_rehearsal_dimensions_match_the_standins(monkeypatch):
    monkeypatch.setenv("MMLIB_PAPER_SIZES", "rehearsal")
    p = profiles.get("paper")
    assert p.qformer_pretrained.hidden_size == rehearse.BERT["hidden_size"]
    assert p.qformer_pretrained.num_layers <= rehearse.BERT["num_hidden_layers"]
    assert p.pixel_diffusion.model.text_dim == rehearse.BERT["hidden_size"]
    assert p.infinity.transformer.d_text == rehearse.T5_WIDTH


def test_hub_source_prefers_the_local_copy_logs_it_and_refuses_the_hub_when_strict(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    log = tmp_path / "read.jsonl"
    monkeypatch.setenv("MMLIB_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("MMLIB_WEIGHTS_LOG", str(log))
    monkeypatch.delenv("MMLIB_WEIGHTS_STRICT", raising=False)
    assert pretrained.hub_source("org/model") == str(tmp_path / "org" / "model")
    assert pretrained.hub_source("org/other") == "org/other"            # not local: the hub name
    monkeypatch.setenv("MMLIB_WEIGHTS_STRICT", "1")
    with pytest.raises(FileNotFoundError, match="org/other"):
        pretrained.hub_source("org/other")
    assert rehearse.read_ledger(log) == {"org/model"}
    rehearse.check_ledger(log, {"org/model"})
    with pytest.raises(AssertionError, match="org/other"):
        rehearse.check_ledger(log, {"org/model", "org/other"})


def test_flickr8k_folder_is_the_kaggle_layout_with_the_study_split_and_no_scene_records(tmp_path):
    folder = rehearse.write_flickr8k(tmp_path / "flickr8k", n_images=20, size=32)
    assert not (folder / "scenes.jsonl").exists()
    captions = flickr8k.load_folder(folder)
    assert len(captions) == 20 and all(len(c) == 5 for c in captions.values())
    assert all(n.endswith(".jpg") for n in captions)
    train, val = flickr8k.seed_split(captions)
    rows = (folder / "train_captions.csv").read_text().splitlines()
    assert rows[0] == "image,caption" and len(rows) == 1 + len(train) == 1 + 16
    assert len((folder / "val_captions.csv").read_text().splitlines()) == 1 + len(val)


@pytest.fixture(scope="module")
def standins():
    """Every stand-in, written once into runs/rehearsal/weights (what the rehearsal reads too)."""
    root = paths.RUNS / "rehearsal" / "weights"
    rehearse.write_weights(root)
    return root


def test_every_paper_loader_reads_its_standin_through_hub_source(standins, tmp_path, monkeypatch):
    from mmlib.captioning.qformer import llm, pretrained as blip2_pretrained
    from mmlib.t2i import perceptual
    from mmlib.t2i.sdxl import pipeline as sdxl_pipeline
    from mmlib.t2i.infinity import text

    log = tmp_path / "read.jsonl"
    monkeypatch.setenv("MMLIB_WEIGHTS_DIR", str(standins))
    monkeypatch.setenv("MMLIB_WEIGHTS_LOG", str(log))
    monkeypatch.setenv("MMLIB_WEIGHTS_STRICT", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok, bert = pretrained.text_encoder("paper")
    assert type(bert).__name__ == "BertModel" and tok("a dog")["input_ids"][0] == tok.cls_token_id
    assert tok.tokenize("a dog runs") == ["a", "dog", "runs"]                      # the uncased vocabulary
    grid = pretrained.cnn("paper")
    assert grid.name == "resnet18" and grid(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    clip = pretrained.clip_model("ViT-B-32", "openai")
    assert clip.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    vis = blip2_pretrained.blip2_vision(blip2_pretrained.BLIP2_HUB)
    assert vis(pixel_values=torch.rand(1, 3, 224, 224)).last_hidden_state.shape[1] == 257
    assert llm.blip2_qformer_config(blip2_pretrained.BLIP2_HUB)["num_queries"] == 8
    llm_tok, llm = pretrained.causal_lm("paper")
    assert type(llm).__name__ == "LlamaForCausalLM" and "<|assistant|>" in llm_tok.chat_template
    pipe = sdxl_pipeline.load_pipeline("paper")
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and pipe.text_encoder_2 is not None
    lp = perceptual.LPIPSDistance()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(lp(x, x), torch.zeros(2), atol=1e-6) and (lp(x, x.flip(0)) > 0).all()
    t5 = text.t5_encoder("google/flan-t5-base")
    assert type(t5.model).__name__ == "T5EncoderModel" and t5(["a dog"]).tokens.shape[-1] == rehearse.T5_WIDTH
    rehearse.check_ledger(log, set(rehearse.STANDINS))
    assert all(r["local"] for r in map(json.loads, log.read_text().splitlines()))
