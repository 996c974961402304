#!/usr/bin/env python3
"""PEFT reference for tunekit's LoRA: an adapter made and saved by `peft` on
all-MiniLM-L6-v2 (rank 2, alpha 4, query + value, classifier head), and the logits
`transformers` + `peft` compute with it for a few sentences. tunekit must load the adapter
directory and give the same logits (crates/tunekit/tests/lora_peft.rs).

No weights are committed: every saved tensor (lora_A, lora_B, classifier) is set to a value
given by `value(k, i)` below — tensor k in the sorted list of saved names, flat index i —
which the Rust test computes identically. What is committed is PEFT's own output that a
formula cannot stand in for: `adapter_config.json`, the saved tensor names and shapes (as
PEFT's `save_pretrained` wrote them; the script checks the saved file holds the formula's
values), and the logits.

Run from the repository root after scripts/fetch-assets.sh:
    python3 tools/make_lora_fixture.py
Writes crates/tunekit/tests/fixtures/peft_lora/{adapter_config.json,expected.json}.
Versions used: see expected.json.
"""
import json
import pathlib
import tempfile

from safetensors.torch import load_file

import peft
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

BASE = "assets/models/all-MiniLM-L6-v2"
OUT = pathlib.Path("crates/tunekit/tests/fixtures/peft_lora")
SENTENCES = [
    "a gripping, beautifully acted film",
    "dull, lifeless and far too long",
    "it is what it is",
    "the best thing about it is the soundtrack, which is not saying much",
]

torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=2)
cfg = peft.LoraConfig(
    task_type=peft.TaskType.SEQ_CLS, r=2, lora_alpha=4, lora_dropout=0.0,
    target_modules=["query", "value"],
)
model = peft.get_peft_model(model, cfg)


def value(k: int, i: int) -> float:
    """Weight i of saved tensor k: a small exact rational (f32-exact in both languages)."""
    return ((i + 7 * k) % 97 - 48) / 960.0


def saved_name(param_name: str) -> str:
    """The name `save_pretrained` gives a trainable parameter."""
    return param_name.replace(".default", "").replace(".modules_to_save", "")


trainable = {saved_name(n): p for n, p in model.named_parameters() if p.requires_grad}
names = sorted(trainable)
with torch.no_grad():
    for k, n in enumerate(names):
        p = trainable[n]
        flat = torch.tensor([value(k, i) for i in range(p.numel())], dtype=torch.float32)
        p.copy_(flat.reshape(p.shape))
model.eval()
OUT.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(tmp)
    saved = load_file(f"{tmp}/adapter_model.safetensors")
    assert sorted(saved) == names, (sorted(saved), names)
    for k, n in enumerate(names):
        want = torch.tensor([value(k, i) for i in range(saved[n].numel())], dtype=torch.float32)
        assert torch.equal(saved[n].flatten(), want), n
    (OUT / "adapter_config.json").write_text((pathlib.Path(tmp) / "adapter_config.json").read_text())
# Relative to the repository root; the test points it at the fetched base model.
c = json.loads((OUT / "adapter_config.json").read_text())
c["base_model_name_or_path"] = BASE
(OUT / "adapter_config.json").write_text(json.dumps(c, indent=2, sort_keys=True))

tok = AutoTokenizer.from_pretrained(BASE)
enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
(OUT / "expected.json").write_text(json.dumps({
    "tensors": [[n, list(saved[n].shape)] for n in names],
    "sentences": SENTENCES,
    "logits": logits.tolist(),
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
}, indent=2))
print("wrote", OUT, logits)
