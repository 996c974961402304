#!/usr/bin/env python3
"""Run a tunekit-exported ONNX model with ONNX Runtime and print its logits as JSON.

Used by the test `crates/tunekit-cli/tests/export_formats.rs` (pip install onnxruntime;
`scripts/test-deps.sh` installs it). Input: a JSON file with batches, each
{"input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]]} (padded, int);
output on stdout: {"ort_version": ..., "inputs": [...names...], "outputs": [...],
"logits": [batch0_rows, batch1_rows, ...]} (the values of the graph's output, whatever its name:
`logits`, or `sentence_embedding` for an embedding model).

    python3 tools/onnx_logits.py MODEL.onnx INPUTS.json [--no-optimizations]

--no-optimizations runs the graph as written: ONNX Runtime otherwise rewrites int8 QDQ weights
+ MatMul into its own dynamically quantised kernels (different arithmetic from the graph's).
"""
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, inputs = sys.argv[1], sys.argv[2]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if "--no-optimizations" in sys.argv[3:]:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    batches = json.load(open(inputs))
    out = []
    for b in batches:
        feed = {k: np.asarray(b[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        # The graph's one output: `logits`, or `sentence_embedding` for embedding models.
        (logits,) = sess.run([sess.get_outputs()[0].name], feed)
        out.append(logits.astype(float).tolist())
    json.dump({
        "ort_version": ort.__version__,
        "inputs": [i.name for i in sess.get_inputs()],
        "input_shapes": [[str(d) for d in i.shape] for i in sess.get_inputs()],
        "outputs": [o.name for o in sess.get_outputs()],
        "output_shapes": [[str(d) for d in o.shape] for o in sess.get_outputs()],
        "logits": out,
    }, sys.stdout)


if __name__ == "__main__":
    main()
