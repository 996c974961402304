#!/usr/bin/env python3
"""Python reference server for `tunekit serve` load benchmarks: FastAPI + transformers pipeline.

Same route and request/response shape as tunekit's TEI-compatible `/predict`
(`{"inputs": "text" | [...]}` → `[{label, score}, ...]`), one request at a time through a
`text-classification` pipeline (no dynamic batching), 2 torch threads.

    python3 tools/serve_torch.py --model runs/mr-sentiment/model --port 8081
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from transformers import pipeline  # noqa: E402


class Request(BaseModel):
    inputs: str | list[str]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = pipeline("text-classification", model=args.model, device="cpu", top_k=None,
                   truncation=True, max_length=128)
    app = FastAPI()

    @app.post("/predict")
    def predict(req: Request):
        texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
        with torch.inference_mode():
            out = clf(texts)
        return out[0] if isinstance(req.inputs, str) else out

    @app.get("/health")
    def health():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
