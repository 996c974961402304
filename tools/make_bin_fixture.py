#!/usr/bin/env python3
"""The DistilBERT reference model's weights as PyTorch `pytorch_model.bin`, for the test that
tunekit reads PyTorch checkpoints (burn's pickle reader, no Python at run time) and gives the
same numbers as from `model.safetensors`.

Reads `crates/tunekit/tests/fixtures/arch/distilbert/seq/model.safetensors` (made by
tools/make_arch_fixtures.py) and writes its state dict with `torch.save` (the ZIP container of
PyTorch ≥ 1.6, as `save_pretrained(safe_serialization=False)` writes it) to
`crates/tunekit/tests/fixtures/arch/distilbert/pytorch_model.bin`.

    python3 tools/make_bin_fixture.py
"""
import torch
from safetensors.torch import load_file

SRC = "crates/tunekit/tests/fixtures/arch/distilbert/seq/model.safetensors"
DST = "crates/tunekit/tests/fixtures/arch/distilbert/pytorch_model.bin"

state = load_file(SRC)
torch.save(state, DST)
print(f"{DST}: {len(state)} tensors")
