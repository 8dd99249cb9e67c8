#!/usr/bin/env python3
"""Writes the code part of Glass's embedded default corpus: a fixed snapshot of Rust
source files, so the demo's data (and its hash) never changes when Glass's own code does.

Format (read by crates/glass-data/src/embedded.rs): for each file, sorted by path,
    "=== FILE <path> <n_bytes> ===\n" + <the file's exact bytes> + "\n"
The byte count makes the format unambiguous whatever the files contain.

Usage (from the repository root; rerun only to change the corpus on purpose, then update
the pinned hash in crates/glass-data/src/embedded.rs and the note in corpus/README.md):
    python tools/corpus/make_code_snapshot.py crates \
        crates/glass-data/corpus/code/glass-rust-snapshot.txt
"""
import os
import sys


def main():
    root, out = sys.argv[1], sys.argv[2]
    base = os.path.dirname(os.path.abspath(root))
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("target")]
        for n in names:
            if n.endswith(".rs") and not n.startswith("."):
                p = os.path.join(d, n)
                files.append(os.path.relpath(p, base).replace(os.sep, "/"))
    files.sort(key=lambda p: p.encode())
    with open(out + ".tmp", "wb") as f:
        for rel in files:
            data = open(os.path.join(base, rel), "rb").read()
            data.decode("utf-8")  # the corpus is text
            f.write(f"=== FILE {rel} {len(data)} ===\n".encode())
            f.write(data)
            f.write(b"\n")
    os.replace(out + ".tmp", out)
    print(f"{len(files)} files -> {out}")


if __name__ == "__main__":
    main()
