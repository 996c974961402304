#!/usr/bin/env python3
"""References for tunekit's decoder (GGUF, llama) tests, computed with transformers + gguf.

transformers loads `assets/models/SmolLM2-135M-Instruct.Q4_1.gguf` with `gguf_file=` and
dequantises every tensor to f32 (undoing llama.cpp's q/k row permutation); tunekit must compute
the same. Writes `crates/tunekit/tests/fixtures/llm/smollm2.json`:

- `tokenizer`: `[{"text", "ids"}]` — `AutoTokenizer(gguf_file=)` ids of varied texts (CJK, emoji,
  runs of spaces, digits, newlines, special tokens), no special tokens added;
- `chat`: `[{"messages", "text", "ids"}]` — `apply_chat_template(add_generation_prompt=True)`;
- `logits`: `[{"ids", "positions": [{"top": [[id, logit]...20], "stride": S, "every": [...]}]}]`
  — next-token logits (f32) of raw prompts at every position: the top 20, and every S-th vocab
  entry (ids 0, S, 2S, ...), so the fixture stays small;
- `generate`: `[{"messages", "prompt_ids", "new_ids"}]` — greedy `generate` (do_sample=False),
  `max_new_tokens` new ids of chat prompts (stopped early at eos).

    pip install torch transformers gguf
    python3 tools/make_llm_fixtures.py [--gguf assets/models/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "東京は日本の首都です。北京欢迎你！",
    "What a day 🎉🎉 can't believe it 👩‍👩‍👧",
    "  leading spaces,   runs   of    spaces and trailing   ",
    "digits 1234567890 3.14159 1,000,000 and 42nd",
    "line one\nline two\n\n\tindented\r\nwindows",
    "<|im_start|>user\nhi<|im_end|>\n",
    "Café naïve Zürich façade — accents, «quotes» and a dash.",
    "def f(x):\n    return x ** 2  # square\n",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three colours."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a fact about the Moon."},
    ],
]

LOGIT_PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
]

STRIDE = 61
TOP = 20


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", default="assets/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    p.add_argument("--output", default="crates/tunekit/tests/fixtures/llm/smollm2.json")
    p.add_argument("--max-new-tokens", type=int, default=24)
    a = p.parse_args()
    d, f = os.path.dirname(a.gguf), os.path.basename(a.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    torch.manual_seed(0)
    out = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": f,
        "tokenizer": [
            {"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TEXTS
        ],
        "chat": [],
        "logits": [],
        "generate": [],
    }
    for msgs in CONVERSATIONS:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out["chat"].append({"messages": msgs, "text": text, "ids": ids})
    with torch.no_grad():
        for prompt in LOGIT_PROMPTS:
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].float()
            positions = []
            for row in logits:
                vals, idx = torch.topk(row, TOP)
                positions.append(
                    {
                        "top": [[int(i), float(v)] for i, v in zip(idx, vals)],
                        "stride": STRIDE,
                        "every": [float(v) for v in row[::STRIDE]],
                    }
                )
            out["logits"].append({"text": prompt, "ids": ids, "positions": positions})
        for c in out["chat"]:
            ids = torch.tensor([c["ids"]])
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=a.max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            new = gen[0, ids.shape[1]:].tolist()
            out["generate"].append(
                {
                    "messages": c["messages"],
                    "prompt_ids": c["ids"],
                    "new_ids": new,
                    "new_text": tok.decode(new, skip_special_tokens=True),
                }
            )
    os.makedirs(os.path.dirname(a.output), exist_ok=True)
    with open(a.output, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False)
        fh.write("\n")
    print(f"wrote {a.output}")
    for g in out["generate"]:
        print(repr(g["new_text"]))


if __name__ == "__main__":
    main()
