#!/usr/bin/env python3
"""Write the messy-data fixtures of the data-preparation tests, byte-exact.

Run from the repository root: python3 tools/make_data_fixtures.py
Needs pandas + pyarrow for the Parquet files (written by a real, independent Parquet writer,
not by tunekit itself). The text fixtures are written as raw bytes so BOM, CRLF, quoted
newlines, control characters and Windows-1252 bytes are exactly as documented.
"""
import pathlib

import pandas as pd

OUT = pathlib.Path("crates/tunekit/tests/fixtures/data")

# messy.csv: UTF-8 BOM, CRLF line ends, a blank line, a quoted newline, HTML, PII,
# duplicates, an annotation conflict, empty text, empty label, control characters, and a
# row that leaks into messy_test.csv.
rows = [
    "id,review,sentiment",
    '1,"<p>Great <b>film</b> &amp; cast</p>",pos',
    '2,"Great film & cast",pos',
    '3,"  A   dull,\r\nslow movie  ",neg',
    '4,"a dull, slow movie",neg',
    "",
    '5,"Mixed feelings",pos',
    '6,"mixed feelings",neg',
    '7,"Mixed  feelings",pos',
    '8,"Email me at jane@example.com or call +1 (555) 123-4567",pos',
    '9,"Visit https://spam.example.org now",neg',
    '10,"",pos',
    '11,"no label here",',
    '12,"Bell\x07 char and zero\u200bwidth",neg',
    '13,"Seen in test too",pos',
]
(OUT / "messy.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
(OUT / "messy_test.csv").write_bytes(
    b'id,review,sentiment\n1,"seen in TEST too",pos\n2,"another test row",neg\n'
)

# cp1252.tsv: curly quotes and the euro sign as Windows-1252 bytes, é as Latin-1.
(OUT / "cp1252.tsv").write_bytes(
    b"text\tlabel\n\x93Quoted\x94 costs \x80 5\tpos\ncaf\xe9 au lait\tneg\n"
)

# Parquet, written by pyarrow: a string text column, an int64 label column with a null, an
# unused float column; one file Snappy-compressed (pandas' default), one Zstandard.
frame = pd.DataFrame(
    {
        "score": [0.9, 0.1, 0.5, 0.7],
        "text": ["good movie", "bad movie", "meh", "fine"],
        "label": pd.array([1, 0, None, 1], dtype="Int64"),
    }
)
frame.to_parquet(OUT / "small.parquet", engine="pyarrow", compression="snappy", index=False)
frame.to_parquet(OUT / "small_zstd.parquet", engine="pyarrow", compression="zstd", index=False)
print("fixtures written to", OUT)
