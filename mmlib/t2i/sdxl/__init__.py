"""An SDXL-architecture pipeline and notebook 08's LoRA experiment (the study's section 2.1).

- ``pipeline``    the pipeline (SDXL-base-1.0 by name in ``paper``, a tiny one of the same component types
                  otherwise), its conditioning (two CLIP text encoders, micro-conditioning), sampling
- ``lora``        peft LoRA on the UNet's attention projections; diffusers-format adapter files
- ``stages``      the training stages through ``train.fit``: VAE, base diffusion, LoRA fine-tune
- ``experiment``  notebook 08: its settings (``SDLoRASettings``), data split, base and LoRA runs, style evaluation
"""
