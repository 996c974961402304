#!/usr/bin/env python3
"""The pandas reference for `tunekit data prepare` (docs/benchmarks.md): the same steps on
the same files, written the way a Python user would (pandas + re + unicodedata + html + the
HF `tokenizers` fast tokenizer), so the timing and memory comparison is like for like.

Steps: read CSV; NFC; strip control/format characters; collapse whitespace; strip HTML and
decode entities; replace e-mails, URLs, IPv4 and phone numbers; exact de-duplication on the
NFKC + case-folded key with conflicting labels dropped; drop train rows that occur in the test
file; stratified 10 % validation split; token lengths with the model's tokenizer; write JSONL.

Usage: python3 tools/prep_pandas.py TRAIN.csv TEST.csv MODEL_DIR OUT_DIR
"""
import html
import re
import sys
import unicodedata

import pandas as pd
from tokenizers import Tokenizer

train_path, test_path, model_dir, out_dir = sys.argv[1:5]

TAG = re.compile(r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>|<![^<>]*>")
EMAIL = re.compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b")
URL = re.compile(r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
PHONE = re.compile(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}\b")


def is_control(c):
    cat = unicodedata.category(c)
    return (cat == "Cc" and not c.isspace()) or cat == "Cf"


def clean(t: str) -> str:
    t = html.unescape(TAG.sub(" ", t))
    t = unicodedata.normalize("NFC", t)
    t = "".join(c for c in t if not is_control(c))
    t = " ".join(t.split())
    t = EMAIL.sub("[EMAIL]", t)
    t = URL.sub("[URL]", t)
    t = IPV4.sub("[IP]", t)
    t = PHONE.sub("[PHONE]", t)
    return t


def key(t: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", t).lower().split())


train = pd.read_csv(train_path, keep_default_na=False, dtype=str)
test = pd.read_csv(test_path, keep_default_na=False, dtype=str)
def prepare(df):
    df = df.assign(text=df["text"].map(clean))
    df = df[df["text"] != ""]
    return df.assign(key=df["text"].map(key))


train, test = prepare(train), prepare(test)

labels_per_key = train.groupby("key")["label"].nunique()
conflicts = labels_per_key[labels_per_key > 1].index
n_conflict = train["key"].isin(conflicts).sum()
train = train[~train["key"].isin(conflicts)]
n_before = len(train)
train = train.drop_duplicates("key")
n_dup = n_before - len(train)
leak = train["key"].isin(set(test["key"]))
n_leak = int(leak.sum())
train = train[~leak]
val = train.groupby("label", group_keys=False).sample(frac=0.1, random_state=42)
train = train.drop(val.index)

tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tok.no_truncation()
tok.no_padding()
for name, df in (("train", train), ("validation", val), ("test", test)):
    lengths = [len(e.ids) for e in tok.encode_batch(df["text"].tolist())]
    s = pd.Series(lengths)
    print(f"{name}: {len(df)} rows, tokens mean {s.mean():.1f} p95 {s.quantile(0.95):.0f} max {s.max()}")
    df[["text", "label"]].to_json(f"{out_dir}/{name}.jsonl", orient="records", lines=True, force_ascii=False)
print(f"conflict rows dropped {n_conflict}, duplicates dropped {n_dup}, leakage dropped {n_leak}")
