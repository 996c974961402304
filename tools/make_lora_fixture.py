#!/usr/bin/env python3
"""PEFT reference for tunekit's LoRA: an adapter made and saved by `peft` on
all-MiniLM-L6-v2 (rank 2, alpha 4, query + value, classifier head), with non-zero B factors so
the adapters matter, and the logits `transformers` + `peft` compute for a few sentences.
tunekit must load this adapter directory and give the same logits
(crates/tunekit-cli/tests/strategies.rs: lora_loads_a_peft_adapter_with_peft_logits).

Run from the repository root after scripts/fetch-assets.sh:
    python3 tools/make_lora_fixture.py
Writes crates/tunekit/tests/fixtures/peft_lora/{adapter_config.json,adapter_model.safetensors,expected.json}.
Versions used: see expected.json.
"""
import json
import pathlib

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
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(0.0, 0.05)
model.eval()
OUT.mkdir(parents=True, exist_ok=True)
model.save_pretrained(OUT)
# Relative to the repository root; the test points it at the fetched base model.
c = json.loads((OUT / "adapter_config.json").read_text())
c["base_model_name_or_path"] = BASE
(OUT / "adapter_config.json").write_text(json.dumps(c, indent=2, sort_keys=True))

tok = AutoTokenizer.from_pretrained(BASE)
enc = tok(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
(OUT / "expected.json").write_text(json.dumps({
    "sentences": SENTENCES,
    "logits": logits.tolist(),
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
}, indent=2))
print("wrote", OUT, logits)
