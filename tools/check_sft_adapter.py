#!/usr/bin/env python3
"""Reference for a tunekit `causal_lm` LoRA run: transformers loads the base GGUF (dequantised
to f32, `gguf_file=`), PEFT loads tunekit's adapter directory over it, and this prints, as one
JSON object:

- `loss`, `tokens`: the mean next-token cross-entropy over the target tokens of the SFT records
  in --records (prompt/completion records: the chat template's user turn with the generation
  prompt is context, the rest of the rendered conversation is the target, each part tokenised on
  its own — tunekit's `llm::sft` rules), summed over tokens and divided by their count;
- `generations`: greedy completions (`max_new_tokens`, chat template, eos stops) of --prompts.

The test `crates/tunekit-cli/tests/sft.rs` compares them with the run's metrics.json and with
`tunekit generate --adapter`.

Usage: python3 tools/check_sft_adapter.py (--gguf FILE --adapter DIR | --model-dir DIR)
       --records FILE.jsonl [--prompts FILE.jsonl] [--max-new-tokens N]
"""
import argparse
import json
import os

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", help="the base model (alone, or under --adapter)")
    ap.add_argument("--adapter", help="a PEFT adapter directory over --gguf")
    ap.add_argument("--model-dir", help="a transformers directory (a full fine-tune's export)")
    ap.add_argument("--records", required=True)
    ap.add_argument("--prompts")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    a = ap.parse_args()
    if a.model_dir:
        tok = AutoTokenizer.from_pretrained(a.model_dir)
        model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32).eval()
    else:
        d, f = os.path.dirname(a.gguf) or ".", os.path.basename(a.gguf)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        if a.adapter:
            model = PeftModel.from_pretrained(model, a.adapter)
        model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for line in open(a.records, encoding="utf-8"):
            if not line.strip():
                continue
            r = json.loads(line)
            user = [{"role": "user", "content": r["prompt"]}]
            both = user + [{"role": "assistant", "content": r["completion"]}]
            context = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            full = tok.apply_chat_template(both, tokenize=False)
            assert full.startswith(context)
            c = tok(context, add_special_tokens=False)["input_ids"]
            t = tok(full[len(context):], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([c + t])
            logits = model(ids).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            for k in range(len(c), len(c) + len(t)):
                total -= float(logp[k - 1, ids[0, k]])
                tokens += 1
        generations = []
        if a.prompts:
            for line in open(a.prompts, encoding="utf-8"):
                if not line.strip():
                    continue
                p = json.loads(line)["prompt"]
                text = tok.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=a.max_new_tokens,
                    do_sample=False,
                    eos_token_id=tok.eos_token_id,
                    pad_token_id=tok.pad_token_id,
                )
                generations.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    print(json.dumps({"loss": total / max(tokens, 1), "tokens": tokens, "generations": generations}))


if __name__ == "__main__":
    main()
