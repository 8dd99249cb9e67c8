#!/usr/bin/env python3
"""Reference pipeline for `glass bench data`: the job of `glass data prepare`, written the way
a Python user would, with the HF `tokenizers` package and numpy.

Reads the run's `[data]` table from RUN/glass.toml (text and code sources, stages with
per-source weights and FIM rates, validation rows) and does what `glass data prepare` does:

1. read every source file (one file = one document) and tokenize all documents with
   `Tokenizer.encode_batch` (the Rust thread pool of `tokenizers`, sized by --threads);
2. per stage, give each source its share of the stage's rows (rounded to whole steps), walk
   each source's documents in a fresh numpy permutation per epoch, apply fill-in-the-middle
   (prefix/suffix/middle with the three sentinels, cut points uniform over the tokens) to the
   configured share of documents, append EOS, and cut the stream into rows of seq_len + 1;
3. shuffle the rows of every step, write each chunk (steps_per_chunk steps) as a `.npy` token
   array plus a `.npy` segment table (row, position, source, document, token offset, length),
   and the validation rows;
4. sha256 every file written and write a manifest naming them.

The output is not byte-identical to Glass's (different RNG, file format), but it is the same
work: same tokenizer, same documents, same row counts. `glass bench data` times a fresh
process of this script against a fresh `glass data prepare` process on the same run.

Usage: python bench/data_pipeline_reference.py --run RUN --out DIR [--threads N]
"""

import argparse
import hashlib
import json
import os
import sys
import time
import tomllib


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="run directory holding glass.toml")
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    # tokenizers sizes its Rust thread pool from this variable, read at first use.
    os.environ["RAYON_RS_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import numpy as np
    from tokenizers import Tokenizer

    t_start = time.perf_counter()
    with open(os.path.join(args.run, "glass.toml"), "rb") as fh:
        data = tomllib.load(fh)["data"]
    seq_len, rows_per_step = data["seq_len"], data["rows_per_step"]
    row_len = seq_len + 1
    steps_per_chunk = data["steps_per_chunk"]
    rng = np.random.default_rng(data["seed"])

    tcfg = data["tokenizer"]
    tok = Tokenizer.from_file(os.path.join(args.run, tcfg["path"]))
    tok.encode_special_tokens = True  # as Glass: special strings inside documents stay text
    eos = tok.token_to_id(tcfg.get("eos", "<|endoftext|>"))
    fim_ids = [tok.token_to_id(s) for s in ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")]
    assert eos is not None, "tokenizer lacks the EOS token"

    # 1. Read and tokenize every source.
    names, docs = [], {}
    for src in data["sources"]:
        exts = tuple("." + e for e in src.get("extensions", [])) or None
        files = []
        for p in src["paths"]:
            for root, _, fs in os.walk(os.path.join(args.run, p)):
                files += [os.path.join(root, f) for f in fs if exts is None or f.endswith(exts)]
        files.sort()
        texts = []
        for f in files:
            with open(f, encoding="utf-8", errors="replace", newline="") as fh:
                texts.append(fh.read())
        encs = tok.encode_batch(texts, add_special_tokens=False)
        docs[src["name"]] = [np.asarray(e.ids, dtype=np.uint32) for e in encs]
        names.append(src["name"])

    def source_rows(name: str, n_rows: int, fim_rate: float, seg_source: int):
        """n_rows rows of one source's document stream, and their segments."""
        ds = docs[name]
        out = np.empty((n_rows, row_len), dtype=np.uint32)
        segs = []
        flat = out.reshape(-1)
        at, need = 0, n_rows * row_len
        while at < need:
            for d in rng.permutation(len(ds)):
                t = ds[d]
                if fim_rate > 0 and rng.random() < fim_rate:
                    a, b = np.sort(rng.integers(0, len(t) + 1, size=2))
                    pieces = [[fim_ids[0]], t[:a], [fim_ids[2]], t[b:], [fim_ids[1]], t[a:b], [eos]]
                else:
                    pieces = [t, [eos]]
                piece = np.concatenate([np.asarray(p, dtype=np.uint32) for p in pieces])
                take = min(len(piece), need - at)
                flat[at:at + take] = piece[:take]
                segs.append((at // row_len, at % row_len, seg_source, d, 0, take))
                at += take
                if at == need:
                    break
        return out, segs

    # 2. Mix: every stage's rows, per source by weight, rounded to whole steps.
    all_rows, all_segs = [], []
    row_base = 0
    for stage in data["stages"]:
        steps = -(-stage["tokens"] // (rows_per_step * row_len))
        n = steps * rows_per_step
        w = stage["weights"]
        total = sum(w.values())
        counts = {k: int(n * v / total) for k, v in w.items()}
        counts[max(w, key=w.get)] += n - sum(counts.values())
        stage_rows = []
        for k, c in counts.items():
            rows, segs = source_rows(k, c, stage.get("fim_rate", {}).get(k, 0.0), names.index(k))
            base = row_base + sum(len(r) for r in stage_rows)
            all_segs += [(r + base, *rest) for r, *rest in segs]
            stage_rows.append(rows)
        rows = np.concatenate(stage_rows)
        all_rows.append(rows)
        row_base += len(rows)
    rows = np.concatenate(all_rows)
    segs = np.asarray(all_segs, dtype=np.int64).reshape(-1, 6)

    # 3. Shuffle rows within each step and write chunks, segments and validation rows.
    n_steps = len(rows) // rows_per_step
    order = np.concatenate([s * rows_per_step + rng.permutation(rows_per_step) for s in range(n_steps)])
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    rows = rows[order]
    segs[:, 0] = where[segs[:, 0]]
    segs = segs[np.argsort(segs[:, 0], kind="stable")]
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    os.makedirs(args.out, exist_ok=True)
    files = []

    def write(name: str, arr) -> None:
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "wb") as fh:
            np.save(fh, arr)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(path + ".tmp", path)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        files.append({"path": name, "sha256": h.hexdigest(), "bytes": os.path.getsize(path)})

    rows_per_chunk = steps_per_chunk * rows_per_step
    bounds = np.searchsorted(segs[:, 0], np.arange(0, len(rows) + rows_per_chunk, rows_per_chunk))
    for c in range(-(-len(rows) // rows_per_chunk)):
        write(f"chunk-{c:05}.tokens.npy", rows[c * rows_per_chunk:(c + 1) * rows_per_chunk].astype(dtype))
        write(f"chunk-{c:05}.segments.npy", segs[bounds[c]:bounds[c + 1]])
    val = data.get("validation")
    if val:
        vrows = [source_rows(s, val["rows"], 0.0, names.index(s))[0] for s in val["sources"]]
        write("validation.tokens.npy", np.concatenate(vrows).astype(dtype))

    # 4. Manifest.
    manifest = {"steps": n_steps, "rows": len(rows), "files": files}
    with open(os.path.join(args.out, "manifest.json.tmp"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(os.path.join(args.out, "manifest.json.tmp"), os.path.join(args.out, "manifest.json"))
    print(json.dumps({
        "steps": n_steps,
        "rows": int(len(rows)),
        "tokens": int(rows.size),
        "files": len(files),
        "seconds_in_process": time.perf_counter() - t_start,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
