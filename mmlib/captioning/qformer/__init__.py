"""BLIP-2's Q-former (rows 3 and 4 of the captioning tables; notebooks 04 and 05).

- ``model``       the Q-former: learned queries + BERT layers, the ITC / ITM / ITG masks, heads and losses
- ``stage1``      notebook 04 (and 05's stage 1): image tokens, caption tensors, the training run, rows
- ``llm``         stage 2: the Q-former's queries projected into a frozen causal LLM, its loss and decoding
- ``stage2``      notebook 05: the LLM for a profile, the data, the training run, its tables
- ``pretrained``  BLIP-2's checkpoint tensors and the frozen EVA ViT-g/14 (``paper``)
"""
