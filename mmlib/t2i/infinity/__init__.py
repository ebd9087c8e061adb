"""Infinity (Han et al. 2024, arXiv 2412.04431): bitwise multi-scale autoregressive text-to-image.

One idea per file:

- ``bsq``         binary spherical quantization (eq. 2 of the study's report), straight-through
- ``tokenizer``   conv encoder/decoder + multi-scale residual BSQ (eqs. 3-4), bitwise self-correction's flips
- ``transformer`` next-scale transformer: block-causal mask, text start token, cross-attention,
                  adaptive LayerNorm, bitwise (infinite-vocabulary) head
- ``sampling``    CFG, temperature, top-k / top-p on bits, KV cache across scales
- ``text``        the frozen text encoder (flan-t5 in ``paper``, MiniLM offline)
- ``pipeline``    the two training stages and sampling for a profile (what notebook 09 calls)
- ``speed``       sampling speed against 06 and 07 in one run
"""
from .bsq import BSQ, bits_to_codes, bsq, codes_to_bits
from .sampling import SamplingConfig, generate, sample_bits
from .tokenizer import BitwiseTokenizer, MultiScaleBSQ, TokenizerConfig, psnr_per_scale
from .transformer import ScaleTransformer, Text, TransformerConfig, block_causal_mask, head_cost

__all__ = ["BSQ", "bits_to_codes", "bsq", "codes_to_bits", "SamplingConfig", "generate", "sample_bits",
           "BitwiseTokenizer", "MultiScaleBSQ", "TokenizerConfig", "psnr_per_scale", "ScaleTransformer",
           "Text", "TransformerConfig", "block_causal_mask", "head_cost"]
