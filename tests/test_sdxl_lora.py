"""08 — tiny SDXL-architecture pipeline + LoRA: runs end to end, LoRA is a pure add-on, only adapter weights are saved."""
import math
import pytest
import torch
from safetensors.torch import load_file

from mmlib import ckpt, train
from mmlib.t2i.sdxl import experiment as S
from mmlib.t2i.sdxl import lora, pipeline, stages

CFG = pipeline.TinySDXLConfig(image_size=16, vae_channels=(16, 16), unet_channels=(32, 32),
                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), head_dim=16, text_width=32,
                       text_layers=2, projection_dim=16, time_embed_dim=8, norm_num_groups=8)
FAST = pipeline.SampleSettings(steps=2, guidance=3.0, batch_size=4, original_size=64)
PROMPTS = ["a dog runs on the beach", "a girl in a pink dress"]


def tiny_pipe():
    return pipeline.build_tiny_pipeline(CFG, "smoke")


def tiny_data(pipe, n=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    caps = [[f"a {c} dog"] for c in ["red", "blue", "green", "black"] * (n // 4)]
    return stages.training_data(pipe, images, caps, pipeline.time_ids((64, 64), (0, 0), (16, 16)))


def perturb_lora(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.bf16
def test_pipeline_end_to_end_and_encode_prompt_matches_pipeline():
    pipe = tiny_pipe()
    assert pipe.unet.config.addition_embed_type == "text_time" and pipe.vae_scale_factor == 2
    assert pipe.tokenizer.model_max_length == 77 == pipe.tokenizer_2.model_max_length
    images = pipeline.generate(pipe, PROMPTS, FAST, seed=0)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images, pipeline.generate(pipe, PROMPTS, FAST, seed=0))   # same seed, same images
    ids, ids_2 = pipeline.tokenize(pipe, PROMPTS)
    with torch.no_grad():
        emb, pooled = pipeline.encode_prompt(pipe.text_encoder, pipe.text_encoder_2, ids, ids_2)
        ref, _, ref_pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(emb, ref) and torch.allclose(pooled, ref_pooled)


def test_lora_only_adapter_trains_and_scale_zero_is_base():
    pipe = tiny_pipe()
    base_images = pipeline.generate(pipe, PROMPTS, FAST, seed=3)
    base_weights = {n: p.clone() for n, p in pipe.unet.named_parameters()}
    names = lora.add_lora(pipe.unet, lora.LoraSettings(rank=4))
    assert names and all("lora_" in n for n in names)
    assert all(not p.requires_grad for n, p in pipe.unet.named_parameters() if "lora_" not in n)
    assert all(not p.requires_grad for p in pipe.text_encoder.parameters())
    perturb_lora(pipe.unet)
    assert torch.equal(pipeline.generate(pipe, PROMPTS, FAST, seed=3, lora_scale=0.0), base_images)
    assert not torch.equal(pipeline.generate(pipe, PROMPTS, FAST, seed=3, lora_scale=1.0), base_images)
    for n, p in pipe.unet.named_parameters():   # peft renames wrapped layers to .base_layer
        if "lora_" not in n:
            assert torch.equal(p, base_weights[n.replace(".base_layer", "")]), n


@pytest.mark.bf16
def test_fit_trains_only_lora_resumes_exactly_and_saves_only_lora(tmp_path):
    stage = stages.StageConfig(steps=4, batch_size=4, lr=1e-2)

    def run(out, stop_after=None, torch_seed=0):
        pipe = tiny_pipe()
        data = tiny_data(pipe)
        lora.add_lora(pipe.unet, lora.LoraSettings(rank=4))
        torch.manual_seed(torch_seed)
        before = {n: p.clone() for n, p in pipe.unet.named_parameters() if "lora_" not in n}
        fit = stages.fit_diffusion(pipe, data, stage, out, {"t": 1}, progress=False) if stop_after is None else \
            train.fit(pipeline.Denoiser(pipe), stages.diffusion_loss(stage), data, stage.train_config(), out, {"t": 1},
                      stop_after=stop_after, progress=False)
        for n, p in pipe.unet.named_parameters():
            if "lora_" not in n:
                assert torch.equal(p, before[n]), n          # the base never moves
        return pipe, fit

    pipe_a, fit_a = run(tmp_path / "a")
    state = ckpt.load_checkpoint(ckpt.checkpoints(fit_a.train_dir)[-1])
    assert state["weights"] and all("lora_" in k for k in state["weights"])   # fit's checkpoint: adapter only
    run(tmp_path / "b", stop_after=2)
    pipe_b, fit_b = run(tmp_path / "b", torch_seed=99)
    assert fit_b.resumed_from == 2 and fit_b.steps == 4
    la, lb = lora.lora_state(pipe_a.unet), lora.lora_state(pipe_b.unet)
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)

    path = lora.save_lora(pipe_a.unet, tmp_path / "lora")
    saved = load_file(path)
    assert saved and all("lora" in k for k in saved)
    pipe_a.unet.save_pretrained(tmp_path / "unet")   # with the adapter attached, diffusers saves the base
    assert lora.disk_size(path) < lora.disk_size(tmp_path / "unet")
    fresh = tiny_pipe()                               # same seed: the same base weights
    lora.load_lora(fresh, path, "photo")
    want = pipeline.generate(pipe_a, PROMPTS, FAST, seed=5)
    assert torch.allclose(pipeline.generate(fresh, PROMPTS, FAST, seed=5).float(), want.float(), atol=1)
    lora.set_lora_scale(fresh, 0.0, "photo")
    fresh.unload_lora_weights()
    assert torch.equal(pipeline.generate(fresh, PROMPTS, FAST, seed=5), pipeline.generate(tiny_pipe(), PROMPTS, FAST, seed=5))


def test_paper_loader_reads_a_saved_pipeline(tmp_path):
    pipe = tiny_pipe()
    pipe.save_pretrained(tmp_path / "sdxl")
    loaded = pipeline.load_pipeline("paper", tmp_path / "sdxl")
    assert type(loaded).__name__ == "StableDiffusionXLPipeline"
    assert loaded.tokenizer.model_max_length == 77 == loaded.tokenizer_2.model_max_length
    assert torch.equal(pipeline.generate(loaded, PROMPTS, FAST, seed=2), pipeline.generate(pipe, PROMPTS, FAST, seed=2))
    with pytest.raises(ValueError):
        pipeline.load_pipeline("cpu")                        # no SDXL weights offline


def test_paper_profile_is_the_studys_recipe():
    exp = S.settings("paper")
    f = exp.finetune
    assert exp.pretrained == pipeline.HUB_NAME and exp.lora.rank == 128 and exp.model.image_size == 512
    assert (f.steps, f.batch_size, f.lr, f.schedule, f.grad_clip, f.ckpt_every, f.seed, f.mixed_precision) == \
        (1000, 16, 1e-4, "cosine", 1.0, 100, 1337, "bf16")
    assert exp.lora_images == 7000 and exp.captions_per_image == 1 and exp.sample.steps == 100
    assert set(exp.lora.targets) == {"to_q", "to_k", "to_v", "to_out.0"}


def test_round_trip_psnr_reads_each_style_round_trip_against_its_originals():
    cartoon = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    photo = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    controls = {S.ROUND_TRIPS["cartoon"]: torch.full_like(cartoon, 51),   # off by 0.2 everywhere: MSE 0.04
                S.ROUND_TRIPS["photo"]: photo.clone(),                      # exact: MSE clamped at 1e-10
                "real cartoons, blurred": cartoon}
    got = S.round_trip_psnr(controls, cartoon, photo)
    assert got["cartoon"] == pytest.approx(10 * math.log10(1 / 0.04), abs=1e-3)
    assert got["photo"] == pytest.approx(100.0)
    assert set(S.ROUND_TRIPS.values()) <= set(S.CONTROLS)
