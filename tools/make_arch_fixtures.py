#!/usr/bin/env python3
"""Tiny random reference models and their transformers outputs, one per encoder family.

tunekit loads every encoder family it supports from a Hugging Face directory and must compute
what `transformers` computes. This script makes, for each family, a tiny randomly initialised
model (weights from a seed, no hub access) with a tokenizer of the family's kind trained on a
small corpus, and records transformers' outputs for padded / unpadded batches and sentence
pairs. The Rust parity tests load the same
directories and compare.

    python3 tools/make_arch_fixtures.py [--only deberta-v2,modernbert] [--corpus assets/data/mr/train.tsv]

Run from the repository root (after `scripts/fetch-assets.sh`: the tokenizers are trained on
the first 2,000 sentences of the MR training split). The output is deterministic for a given
torch / transformers / tokenizers version (seeds everywhere, one thread).

Layout, under `crates/tunekit/tests/fixtures/arch/<name>/` (`<name>` is the `model_type`, plus
`deberta-v2-v2style`, a DeBERTa-v2 config exercising the branches the v3-style one does not):

    seq/      AutoModelForSequenceClassification (num_labels 3, id2label NEG/NEU/POS):
              config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
              special_tokens_map.json (written by the script: transformers 5 no longer does)
    token/    AutoModelForTokenClassification (num_labels 5): the SAME base-model weights as
              seq/ (only the head differs), same tokenizer files
    expected.json

`expected.json`:

    {"model_type": str, "name": str, "generated_by": "tools/make_arch_fixtures.py",
     "torch_version", "transformers_version", "tokenizers_version": str,
     "attn_implementation": str, "seed": int, "tokenizer_kind": "wordpiece"|"bpe"|"unigram",
     "pad_token_id": int, "tolerances": {"cosine_min": 0.9999, "max_abs_diff": 1e-4},
     "notes": [str],                 # family-specific remarks (which code path, ...)
     "cases": [
        {"name": str,                # "batch_single", "batch_pairs", "single_0", "pair_1", ...
         "texts": [str],             # batch of first segments
         "pairs": [str] | null,      # second segments (sentence pairs) or null
         "input_ids":      [batch][seq] int,
         "attention_mask": [batch][seq] int,
         "token_type_ids": [batch][seq] int  (zeros when the tokenizer returns none),
         "token_type_ids_returned": bool,   # whether the tokenizer returned them (and the
                                             # model received them)
         "hidden":       [batch][seq][hidden] float, base model last_hidden_state, the full
                         padded tensor including pad positions,
         "seq_logits":   [batch][3] float, from seq/,
         "token_logits": [batch][seq][5] float, from token/}
     ]}

Cases: a padded batch of 4 single sentences of different lengths (the longest over 20 tokens,
more than ModernBERT's local window of 8 and DeBERTa-v3's 8 exact relative-position buckets), a
padded batch of 3 sentence pairs, then every example of both batches alone (unpadded). Floats
are rounded to 7 significant digits. The script asserts that padded and unpadded runs agree on
real tokens (< 1e-5) and on the sequence logits.

Tolerances the Rust tests use: cosine similarity >= 0.9999 and max |diff| <= 1e-4, for hidden
states and each head's logits. Compare hidden states and token logits on real tokens
(attention_mask == 1); values at pad positions are recorded but are an artefact of each
implementation (e.g. DeBERTa zeroes the embeddings of pad positions and gives their all-masked
attention rows a uniform softmax; BERT-style models let pad queries attend to real keys).

Code paths: everything runs in eval mode, float32, `torch.set_num_threads(1)`, with
`attn_implementation="eager"` (the plain matmul-softmax-matmul path) for every class that
accepts it. ModernBERT in transformers 5.x has no unpadding path any more on CPU (no
`_unpad_modernbert_input`; flash-attn is never selected without CUDA): with "eager" it runs
`eager_attention_forward` on the padded batch with the 4-D masks from
`create_bidirectional_mask` (full layers) and `create_bidirectional_sliding_window_mask`
(local layers: key j visible from query i iff |i - j| <= local_attention // 2 and j is not
padding). DeBERTa-v2 has a single attention implementation (DisentangledSelfAttention).

Weights: `torch.manual_seed(seed)` then `from_config` with initializer_range 0.2 (ten times
HF's 0.02, so that numerical differences are not hidden by near-zero weights); afterwards every
bias and every LayerNorm weight gets seeded noise (N(0, 0.1) added), because HF initialises them
to 0 / 1, which would hide a missing bias or a swapped LayerNorm.
"""
import argparse
import csv
import inspect
import json
import math
import os
import shutil
import sys
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

OUT_ROOT = "crates/tunekit/tests/fixtures/arch"
SEED = 1234
VOCAB_TARGET = 500
SEQ_LABELS = {0: "NEG", 1: "NEU", 2: "POS"}
TOKEN_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}

SINGLES = [
    "A gorgeous, witty, seductive movie.",
    "Dull.",
    "The film is strictly routine, but the two leads make it worth a look on a rainy Sunday.",
    "Not bad at all -- 3 stars, and a café scene I loved!",
]
PAIRS = [
    ("The plot is thin.", "Nobody will care about the story."),
    ("An intelligent, moving drama about family and loss.", "It is sad."),
    ("Funny?", "Yes, the jokes land more often than they miss, and the cast is charming."),
]

# Families in order of work. Each entry: model_type, output name, tokenizer kind, config kwargs.
COMMON = dict(initializer_range=0.2)
BERTISH = dict(
    hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=37, **COMMON
)


def family_specs():
    """(name, model_type, tokenizer kind, config kwargs without vocab/special ids, notes)."""
    return [
        (
            "deberta-v2", "deberta-v2", "unigram-deberta",
            dict(
                BERTISH, max_position_embeddings=64, relative_attention=True,
                pos_att_type=["p2c", "c2p"], position_buckets=16, max_relative_positions=64,
                share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                type_vocab_size=0, layer_norm_eps=1e-7, pooler_hidden_size=32,
                pooler_hidden_act="gelu", pooler_dropout=0,
            ),
            [
                "DeBERTa-v3-style config: relative_attention, position_buckets 16 (log buckets "
                "beyond |i-j| >= 8), max_relative_positions 64, share_att_key (positions go "
                "through query_proj/key_proj), norm_rel_ebd layer_norm (encoder.LayerNorm on "
                "rel_embeddings), no absolute positions, no token types (type_vocab_size 0).",
                "Single attention implementation (DisentangledSelfAttention); attn_implementation "
                "is not consulted.",
            ],
        ),
        (
            "deberta-v2-v2style", "deberta-v2", "unigram-deberta",
            dict(
                BERTISH, max_position_embeddings=64, relative_attention=True,
                pos_att_type="c2p|p2c", position_buckets=-1, max_relative_positions=-1,
                share_att_key=False, norm_rel_ebd="none", position_biased_input=True,
                type_vocab_size=2, layer_norm_eps=1e-7, conv_kernel_size=3, conv_act="gelu",
                pooler_hidden_size=32, pooler_hidden_act="gelu", pooler_dropout=0,
            ),
            [
                "DeBERTa config exercising the branches the v3-style fixture does not: no "
                "position buckets (att_span = max_relative_positions = max_position_embeddings "
                "= 64, rel_embeddings has 128 rows), separate pos_key_proj / pos_query_proj "
                "(share_att_key false), no rel-embedding LayerNorm, absolute position embeddings "
                "added to the input (position_biased_input), 2 token types, and the ConvLayer "
                "(conv_kernel_size 3, conv_act gelu) applied after layer 0 as in "
                "deberta-v2-xlarge / -xxlarge.",
            ],
        ),
        (
            "modernbert", "modernbert", "bpe-modernbert",
            dict(
                hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=37,
                global_attn_every_n_layers=2, local_attention=8, max_position_embeddings=64,
                classifier_pooling="mean", **COMMON,
            ),
            [
                "layer_types [full_attention, sliding_attention, full_attention] "
                "(global_attn_every_n_layers 2); local_attention 8: in sliding layers query i "
                "sees key j iff |i-j| <= 4. RoPE theta 160000 (full) / 10000 (sliding), head_dim "
                "8. classifier_pooling 'mean' (masked mean over real tokens, as ModernBERT-base's "
                "config has it), head = dense(no bias) -> GELU -> LayerNorm(no bias) -> "
                "classifier (with bias).",
                "transformers 5.x ModernBERT has no unpadding path; with attn_implementation "
                "'eager' the padded batch runs eager_attention_forward with 4-D additive masks.",
            ],
        ),
        (
            "roberta", "roberta", "bpe-roberta",
            dict(BERTISH, max_position_embeddings=66, type_vocab_size=1),
            ["position ids = cumsum(input_ids != pad) * (input_ids != pad) + pad_token_id (=1)."],
        ),
        (
            "xlm-roberta", "xlm-roberta", "unigram-xlmr",
            dict(BERTISH, max_position_embeddings=66, type_vocab_size=1),
            ["Same architecture as RoBERTa; SentencePiece-style Unigram tokenizer."],
        ),
        (
            "distilbert", "distilbert", "wordpiece-distilbert",
            dict(
                dim=32, n_heads=4, n_layers=2, hidden_dim=37, max_position_embeddings=64,
                sinusoidal_pos_embds=False, **COMMON,
            ),
            ["No token types; the tokenizer returns none (model_input_names)."],
        ),
        (
            "electra", "electra", "wordpiece-electra",
            dict(BERTISH, embedding_size=24, max_position_embeddings=64, type_vocab_size=2),
            ["embedding_size 24 != hidden_size 32: embeddings_project (Linear 24 -> 32) after "
             "the embedding LayerNorm (which has size 24)."],
        ),
        (
            "mpnet", "mpnet", "wordpiece-mpnet",
            dict(BERTISH, max_position_embeddings=66),
            ["position ids as RoBERTa (offset pad_token_id + 1 = 2); relative attention bias "
             "(32 buckets, max_distance 128) shared by all layers."],
        ),
    ]


def read_corpus(path, n=2000):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    texts = [r["text"] for r in rows[:n]]
    if len(texts) < n:
        sys.exit(f"{path}: expected at least {n} rows, got {len(texts)}")
    # Make sure every character of the test sentences is in the alphabet.
    return texts + SINGLES + [x for p in PAIRS for x in p]


# --- tokenizers --------------------------------------------------------------------------------


def frequent_pieces(words, n_words, n_affix):
    """Deterministic subword candidates from a word Counter: every character, the n_words most
    frequent words, and the n_affix most frequent 2-4 character word starts and word ends
    (ties broken by the string). Returns (chars, words, prefixes, suffixes)."""
    chars = sorted({c for w in words for c in w})
    top = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))][:n_words]
    chosen = set(top)
    pre, suf = Counter(), Counter()
    for w, n in words.items():
        if w in chosen:
            continue
        for k in range(2, min(4, len(w) - 1) + 1):
            pre[w[:k]] += n
            suf[w[-k:]] += n
    best = lambda c: [x for x, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))][:n_affix]  # noqa: E731
    return chars, top, best(pre), best(suf)


def train_wordpiece(corpus, specials):
    """A WordPiece vocab (BERT uncased normalisation), specials first.

    Built here rather than with tokenizers' WordPieceTrainer, whose token set and ids vary
    between runs (ties broken in hash order): characters and ##characters, frequent words,
    frequent word starts and ##word ends. Greedy longest-match then splits rarer words into
    several pieces, as a real WordPiece vocab does."""
    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in corpus for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars, top, prefixes, suffixes = frequent_pieces(words, 300, 80)
    rest = chars + ["##" + c for c in chars] + top + prefixes + ["##" + x for x in suffixes]
    out = list(specials)
    for t in rest:
        if t not in out:
            out.append(t)
    return {t: i for i, t in enumerate(out)}


def train_bytelevel_bpe(corpus, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)  # deterministic (checked: byte-identical reruns)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(corpus):
    """Pieces with scores (SentencePiece-style: NFKC, Metaspace), without special tokens.

    Built here rather than with tokenizers' UnigramTrainer, whose EM scores vary between runs
    in the 4th decimal (float sums in hash order): candidate pieces are every character, "▁",
    "▁" + frequent words, "▁" + frequent word starts and frequent word ends; scores start as
    log substring frequencies, then two rounds of "segment the corpus with Viterbi,
    score = log(usage count / total)" (integer counts, so deterministic).
    """
    norm = normalizers.NFKC()
    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    split = [w for t in corpus for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))]
    words = Counter(w[1:] if w.startswith("▁") else w for w in split)
    words.pop("", None)
    chars, top, prefixes, suffixes = frequent_pieces(words, 300, 80)
    pieces = []
    for t in ["▁"] + chars + ["▁" + w for w in top] + ["▁" + x for x in prefixes] + suffixes:
        if t not in pieces:
            pieces.append(t)
    text = "\n".join(split)
    counts = {p: text.count(p) + 1 for p in pieces}
    for _ in range(3):
        total = sum(counts.values())
        scores = {p: round(math.log(counts[p] / total), 6) for p in pieces}
        vocab = [("<unk>", 0.0)] + sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        seg = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
        seg.normalizer = norm
        seg.pre_tokenizer = pre
        counts = {p: 1 for p in pieces}
        for enc in seg.encode_batch(corpus):
            for t in enc.tokens:
                if t in counts:
                    counts[t] += 1
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def make_tokenizer(kind, corpus):
    if kind == "wordpiece-distilbert":
        vocab = train_wordpiece(corpus, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        return transformers.DistilBertTokenizer(vocab=vocab, do_lower_case=True)
    if kind == "wordpiece-electra":
        vocab = train_wordpiece(corpus, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        return transformers.ElectraTokenizer(vocab=vocab, do_lower_case=True)
    if kind == "wordpiece-mpnet":
        # MPNet's vocab starts <s> <pad> </s> <unk>; its unk_token is [UNK]; <mask> last.
        vocab = train_wordpiece(corpus, ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"])
        vocab["<mask>"] = len(vocab)
        return transformers.MPNetTokenizer(vocab=vocab, do_lower_case=True)
    if kind == "bpe-roberta":
        vocab, merges = train_bytelevel_bpe(corpus, ["<s>", "<pad>", "</s>", "<unk>"])
        vocab["<mask>"] = len(vocab)
        return transformers.RobertaTokenizer(vocab=vocab, merges=merges)
    if kind == "bpe-modernbert":
        # ModernBERT (OLMo tokenizer): byte-level BPE with the special tokens at the END of the
        # vocab ([UNK] [CLS] [SEP] [PAD] [MASK]), so pad_token_id is not 0 or 1.
        vocab, merges = train_bytelevel_bpe(corpus, [])
        for t in ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]:
            vocab[t] = len(vocab)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
            pad_token="[PAD]", mask_token="[MASK]",
            model_input_names=["input_ids", "attention_mask"],
        )
    if kind == "unigram-xlmr":
        pieces = train_unigram(corpus)
        vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces
        vocab.append(("<mask>", 0.0))
        return transformers.XLMRobertaTokenizer(vocab=vocab)
    if kind == "unigram-deberta":
        pieces = train_unigram(corpus)
        vocab = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0)] + pieces
        vocab.append(("[MASK]", 0.0))
        return transformers.DebertaV2Tokenizer(vocab=vocab, do_lower_case=False)
    raise ValueError(kind)


def special_ids(model_type, tok):
    """Config keys for the special ids, as the family's real configs have them."""
    ids = {"pad_token_id": tok.pad_token_id}
    if model_type in ("roberta", "xlm-roberta", "mpnet"):
        ids.update(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    if model_type == "modernbert":
        ids.update(
            bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
            cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
        )
    return ids


# --- models --------------------------------------------------------------------------------------


def perturb_biases_and_norms(model, seed):
    """Add N(0, 0.1) noise to every bias and LayerNorm weight (HF initialises them to 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            is_norm = "norm" in name.lower() and name.endswith("weight")
            if name.endswith("bias") or is_norm:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def build_models(model_type, config_kwargs, tok, seed):
    vocab_size = len(tok) + 3  # deliberately larger than the tokenizer (as real checkpoints are)
    kwargs = dict(config_kwargs, vocab_size=vocab_size, **special_ids(model_type, tok))
    kwargs["attn_implementation"] = "eager"
    seq_cfg = AutoConfig.for_model(
        model_type, num_labels=3, id2label=SEQ_LABELS,
        label2id={v: k for k, v in SEQ_LABELS.items()}, **kwargs,
    )
    tok_cfg = AutoConfig.for_model(
        model_type, num_labels=5, id2label=TOKEN_LABELS,
        label2id={v: k for k, v in TOKEN_LABELS.items()}, **kwargs,
    )
    torch.manual_seed(seed)
    seq = AutoModelForSequenceClassification.from_config(seq_cfg, attn_implementation="eager")
    perturb_biases_and_norms(seq, seed + 1)
    torch.manual_seed(seed + 2)
    token = AutoModelForTokenClassification.from_config(tok_cfg, attn_implementation="eager")
    perturb_biases_and_norms(token, seed + 3)
    # Same base model; only the head differs.
    missing = token.base_model.load_state_dict(seq.base_model.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    return seq.eval(), token.eval()


def accepted_inputs(model, enc):
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in params}


def run_case(tok, seq, token, base, texts, pairs):
    if pairs is None:
        enc = tok(texts, padding=True, return_tensors="pt")
    else:
        enc = tok(texts, pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = base(**accepted_inputs(base, enc)).last_hidden_state
        seq_logits = seq(**accepted_inputs(seq, enc)).logits
        token_logits = token(**accepted_inputs(token, enc)).logits
    return enc, hidden, seq_logits, token_logits


def round7(x):
    if isinstance(x, list):
        return [round7(v) for v in x]
    return float(f"{x:.7g}")


def case_json(name, texts, pairs, enc, hidden, seq_logits, token_logits):
    returned = "token_type_ids" in enc
    tti = enc["token_type_ids"] if returned else torch.zeros_like(enc["input_ids"])
    return {
        "name": name,
        "texts": texts,
        "pairs": pairs,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "token_type_ids": tti.tolist(),
        "token_type_ids_returned": returned,
        "hidden": round7(hidden.tolist()),
        "seq_logits": round7(seq_logits.tolist()),
        "token_logits": round7(token_logits.tolist()),
    }


def check_against_single(batch_out, i, single_out, what):
    enc_b, hid_b, seq_b, tok_b = batch_out
    enc_s, hid_s, seq_s, tok_s = single_out
    n = int(enc_s["attention_mask"].sum())
    real = enc_b["attention_mask"][i].bool()
    assert int(real.sum()) == n, f"{what}: token count differs padded vs alone"
    assert torch.equal(enc_b["input_ids"][i][real], enc_s["input_ids"][0]), f"{what}: ids differ"
    d_hidden = (hid_b[i][real] - hid_s[0]).abs().max().item()
    d_tok = (tok_b[i][real] - tok_s[0]).abs().max().item()
    d_seq = (seq_b[i] - seq_s[0]).abs().max().item()
    assert max(d_hidden, d_tok, d_seq) < 1e-5, (
        f"{what}: padded batch differs from alone: hidden {d_hidden}, token {d_tok}, seq {d_seq}"
    )
    return max(d_hidden, d_tok, d_seq)


def make_family(name, model_type, kind, config_kwargs, notes, corpus, out_root):
    out = os.path.join(out_root, name)
    tok = make_tokenizer(kind, corpus)
    seq, token = build_models(model_type, config_kwargs, tok, SEED)
    base = seq.base_model
    assert type(base).__name__.endswith("Model"), type(base)
    assert seq.config._attn_implementation == "eager" or model_type == "deberta-v2", (
        seq.config._attn_implementation
    )

    cases = []
    batch = run_case(tok, seq, token, base, SINGLES, None)
    pair_a, pair_b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    pbatch = run_case(tok, seq, token, base, pair_a, pair_b)
    longest = int(batch[0]["attention_mask"].sum(1).max())
    assert longest >= 20, f"{name}: longest single has {longest} tokens, need >= 20"
    assert batch[0]["input_ids"].shape[1] <= 60 and pbatch[0]["input_ids"].shape[1] <= 60
    assert int((batch[0]["attention_mask"] == 0).sum()) > 0, "batch not padded"
    cases.append(case_json("batch_single", SINGLES, None, *batch))
    cases.append(case_json("batch_pairs", pair_a, pair_b, *pbatch))
    worst = 0.0
    for i, s in enumerate(SINGLES):
        one = run_case(tok, seq, token, base, [s], None)
        worst = max(worst, check_against_single(batch, i, one, f"{name} single {i}"))
        cases.append(case_json(f"single_{i}", [s], None, *one))
    for i, (a, b) in enumerate(PAIRS):
        one = run_case(tok, seq, token, base, [a], [b])
        worst = max(worst, check_against_single(pbatch, i, one, f"{name} pair {i}"))
        cases.append(case_json(f"pair_{i}", [a], [b], *one))

    if os.path.isdir(out):
        shutil.rmtree(out)
    for sub, model in (("seq", seq), ("token", token)):
        d = os.path.join(out, sub)
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        # transformers 5 folds the special tokens into tokenizer_config.json and no longer
        # writes special_tokens_map.json; write it as transformers 4.x did, for older readers.
        with open(os.path.join(d, "special_tokens_map.json"), "w", encoding="utf-8") as f:
            json.dump(tok.special_tokens_map, f, indent=2, sort_keys=True)
            f.write("\n")
        # Loaded back through the Auto classes, the directory reproduces the numbers.
        re_model = (
            AutoModelForSequenceClassification if sub == "seq" else AutoModelForTokenClassification
        ).from_pretrained(d, attn_implementation="eager").eval()
        re_tok = AutoTokenizer.from_pretrained(d)
        enc2 = re_tok(pair_a, pair_b, padding=True, return_tensors="pt")
        assert torch.equal(enc2["input_ids"], pbatch[0]["input_ids"]), f"{d}: tokenizer round trip"
        with torch.no_grad():
            got = re_model(**accepted_inputs(re_model, enc2)).logits
        want = pbatch[2] if sub == "seq" else pbatch[3]
        assert (got - want).abs().max().item() < 1e-6, f"{d}: reload differs"

    fixture = {
        "model_type": model_type,
        "name": name,
        "generated_by": "tools/make_arch_fixtures.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "attn_implementation": seq.config._attn_implementation,
        "seed": SEED,
        "tokenizer_kind": kind.split("-")[0],
        "tokenizer_class": type(tok).__name__,
        "vocab_size_tokenizer": len(tok),
        "pad_token_id": tok.pad_token_id,
        "tolerances": {"cosine_min": 0.9999, "max_abs_diff": 1e-4},
        "padded_vs_alone_max_abs_diff": worst,
        "notes": notes,
        "cases": cases,
    }
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False)
        f.write("\n")
    size = sum(
        os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(out) for fn in fns
    )
    lens = [int(x) for x in batch[0]["attention_mask"].sum(1)]
    print(
        f"{name}: {type(seq).__name__}, tokenizer {type(tok).__name__} ({len(tok)} tokens), "
        f"single lengths {lens}, pair width {pbatch[0]['input_ids'].shape[1]}, "
        f"padded-vs-alone {worst:.2e}, {size / 1024:.0f} KiB"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="assets/data/mr/train.tsv")
    ap.add_argument("--output", default=OUT_ROOT)
    ap.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    corpus = read_corpus(args.corpus)
    only = {x for x in args.only.split(",") if x}
    specs = family_specs()
    unknown = only - {s[0] for s in specs}
    if unknown:
        sys.exit(f"unknown fixture names: {sorted(unknown)}")
    for name, model_type, kind, cfg, notes in specs:
        if only and name not in only:
            continue
        make_family(name, model_type, kind, cfg, notes, corpus, args.output)


if __name__ == "__main__":
    main()
