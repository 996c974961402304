#!/usr/bin/env python3
"""Reference sentence embeddings from sentence-transformers, for `tunekit embed` / `/embed`.

`SentenceTransformer(dir).encode(sentences)` follows the model directory's own configuration
(`modules.json`: Transformer -> Pooling -> Normalize; `sentence_bert_config.json`'s
`max_seq_length`; `1_Pooling/config.json`'s pooling mode). tunekit must give the same vectors
by default; this script computes them once and writes a small JSON fixture that
`crates/tunekit-cli/tests/input_embed_resume.rs` compares against (cosine >= 0.9999, unit norm).

The sentences are varied (short, accents, CJK, emoji, URLs, one character) and include one
longer than 128 tokens but shorter than `max_seq_length` (256 for all-MiniLM-L6-v2) and one
longer than 256 tokens, so truncation at the wrong length shows.

When LONG does not exceed the model's `max_seq_length` (all-mpnet-base-v2: 384, LONG is 279
tokens there), one more sentence, LONG twice, is appended so that truncation at
`max_seq_length` still shows; the MiniLM fixture (LONG > 256) is unchanged by this rule.

    pip install torch transformers sentence-transformers
    python3 tools/make_st_embed_fixture.py [--model assets/models/all-MiniLM-L6-v2]
    python3 tools/make_st_embed_fixture.py --model assets/models/all-mpnet-base-v2 \
        --output crates/tunekit/tests/fixtures/st_embed_mpnet.json   # fetch-assets.sh --with-mpnet
"""
import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

# ~190 word pieces: past 128, short of 256.
MEDIUM = (
    "The film opens on a quiet harbour town where a retired lighthouse keeper spends his days "
    "repairing old radios, and for the first half hour almost nothing happens, which some "
    "viewers will find hypnotic and others unbearably slow. Then a storm knocks out the power, "
    "a stranger arrives with a waterlogged suitcase, and the story turns into a tense, "
    "claustrophobic mystery about a shipwreck that the whole town has spent forty years "
    "pretending to forget. The performances are uniformly strong, the photography makes the "
    "grey sea look like a character of its own, and the score uses only a cello and a music "
    "box. My only complaint is the ending, which explains too much."
)
# Well over 256 word pieces.
LONG = " ".join(
    [
        "Chapter one describes the founding of the village by fishermen who arrived in small "
        "boats, built houses from driftwood, and argued for a decade about the name of the "
        "church.",
        "Chapter two follows the first school teacher, who walked twelve miles every Monday "
        "with a satchel of slates and a grammar book older than she was.",
        "Chapter three covers the great flood, the collapse of the bridge, the rebuilding, and "
        "the long quarrel between the mayor and the harbour master about who should pay.",
        "Chapter four is about the railway, the tourists it brought, the hotels that followed, "
        "and the slow decline when the line was closed after the war.",
        "Chapter five, the longest, collects letters, recipes, shipping records, weather "
        "diaries, school reports, football results, and the minutes of a chess club that met "
        "every Thursday for ninety-one years without missing a single week, even during the "
        "blackout, when the members played by candlelight and wrote their moves in pencil.",
        "Chapter six returns to the present: the harbour is a marina now, the school has "
        "become a museum, the chess club meets online, and the last fisherman sells his catch "
        "from a van parked beside the church whose name was never settled.",
        "An appendix lists every mayor, every teacher, every storm with a name, and every boat "
        "lost at sea, with dates, tonnage, and the names of the families who waited on the "
        "quay.",
    ]
)

SENTENCES = [
    "Hello world",
    "The movie was great, I loved every minute of it!",
    "An utterly dull, lifeless and overlong film that never finds its footing.",
    "Café naïve Zürich façade — accents and a dash.",
    "東京は日本の首都です。",
    "What a day 🎉🎉 can't believe it",
    "Visit https://example.com/path?q=1 for details, or mail someone@example.org.",
    "a",
    MEDIUM,
    LONG,
]


def round7(values):
    return [float(f"{v:.7g}") for v in values]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/all-MiniLM-L6-v2")
    ap.add_argument("--output", default="crates/tunekit/tests/fixtures/st_embed_minilm.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = SentenceTransformer(args.model, device="cpu")
    tok = model.tokenizer
    sentences = list(SENTENCES)
    if len(tok(LONG, truncation=False)["input_ids"]) <= model.max_seq_length:
        sentences.append(LONG + " " + LONG)
    # Full token counts (no truncation), so the test can check the long cases are long.
    lengths = [len(tok(s, truncation=False)["input_ids"]) for s in sentences]
    assert 128 < lengths[sentences.index(MEDIUM)] < model.max_seq_length, lengths
    assert lengths[-1] > model.max_seq_length, lengths
    vectors = model.encode(sentences, batch_size=4, convert_to_numpy=True)
    pooling_config = model[1].get_config_dict() if len(model) > 1 else {}
    pooling = [k for k, v in pooling_config.items() if k.startswith("pooling_mode") and v is True]
    fixture = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "generated_by": "tools/make_st_embed_fixture.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "sentence_transformers_version": sentence_transformers.__version__,
        "max_seq_length": model.max_seq_length,
        "pooling": pooling,
        "modules": [type(m).__name__ for m in model],
        "sentences": sentences,
        "token_lengths": lengths,
        "embeddings": [round7(v.tolist()) for v in vectors],
    }
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.output}: {len(sentences)} sentences, token lengths {lengths}")


if __name__ == "__main__":
    main()
