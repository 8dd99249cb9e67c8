#!/usr/bin/env python3
"""Reference pipeline for `glass bench data --corpus`: the job of `glass data prepare` on
real-format shards, written the way a Python user would.

Reads the run's `[data]` table from RUN/glass.toml (a `parquet` source and a `jsonl` source of
`.jsonl.zst` shards, one stage with per-source weights) and:

1. reads every shard: Parquet with pyarrow, `.jsonl.zst` with zstandard + json (with
   `--dedup`, datatrove's `ParquetReader` and `JsonlReader` do the reading inside its stages);
2. with `--dedup`, removes duplicate documents with datatrove's own MinHash pipeline
   (`MinhashDedupSignature` → `MinhashDedupBuckets` → `MinhashDedupCluster` →
   `MinhashDedupFilter`, run by `LocalPipelineExecutor` with --threads workers) at Glass's
   parameters: word 5-gram shingles, 14 buckets × 8 hashes. Exact duplicates have equal
   signatures, so this one pipeline removes them too (Glass runs an exact pass first);
3. tokenizes all documents with HF `tokenizers` `encode_batch` (its Rust pool sized by
   --threads), gives each source its share of the stage's rows, walks each source's documents
   in a fresh numpy permutation per epoch, appends EOS and cuts rows of seq_len + 1;
4. shuffles the rows of every step, writes each chunk as `.npy` tokens + segments, sha256s
   every file and writes a manifest.

The output is not byte-identical to Glass's (another RNG, file format and near-duplicate
hash family), but it is the same work on the same input. Prints a JSON line with the counts.

Usage: python bench/dedup_reference.py --run RUN --out DIR [--threads N] [--dedup]
"""

import argparse
import glob
import hashlib
import io
import json
import os
import sys
import time
import tomllib


def shards(run: str, src: dict, suffix: str) -> list:
    out = []
    for p in src["paths"]:
        out += glob.glob(os.path.join(run, p, "**", "*" + suffix), recursive=True)
    return sorted(out)


def read_plain(run: str, sources: list) -> dict:
    """Every source's texts, in file order (pyarrow / zstandard)."""
    import pyarrow.parquet as pq
    import zstandard

    texts = {}
    for src in sources:
        field = src.get("text_field", "text")
        t = []
        if src["kind"] == "parquet":
            for f in shards(run, src, ".parquet"):
                t += pq.read_table(f, columns=[field]).column(field).to_pylist()
        else:
            for f in shards(run, src, ".jsonl.zst"):
                with open(f, "rb") as fh:
                    reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
                    t += [json.loads(line)[field] for line in reader if line.strip()]
        texts[src["name"]] = t
    return texts


def read_deduped(run: str, sources: list, work: str, threads: int) -> dict:
    """datatrove's MinHash deduplication over all sources together; the kept texts."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    def readers():
        out = []
        for src in sources:
            field = src.get("text_field", "text")
            folder = os.path.join(run, src["paths"][0])

            def adapter(self, data, path, id_in_file, name=src["name"], field=field):
                return {"text": data[field], "id": f"{path}/{id_in_file}", "metadata": {"source": name}}

            if src["kind"] == "parquet":
                out.append(ParquetReader(folder, glob_pattern="*.parquet", adapter=adapter))
            else:
                out.append(JsonlReader(folder, glob_pattern="*.jsonl.zst", compression="zstd", adapter=adapter))
        return out

    n_files = max(len(shards(run, s, ".parquet" if s["kind"] == "parquet" else ".jsonl.zst")) for s in sources)
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    common = dict(workers=threads, skip_completed=False)
    logs = {k: os.path.join(work, "logs", k) for k in ("sig", "buckets", "cluster", "filter")}
    sigs, buckets, remove = (os.path.join(work, d) for d in ("sigs", "buckets", "remove_ids"))
    signature = MinhashDedupSignature(output_folder=sigs, config=cfg)
    # datatrove's xxhash64 passes str, which xxhash >= 4 refuses: encode first, as
    # xxhash 3 did inside.
    import xxhash

    signature._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))
    LocalPipelineExecutor(
        pipeline=[*readers(), signature],
        tasks=n_files,
        logging_dir=logs["sig"],
        **common,
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=cfg)],
        tasks=cfg.num_buckets,
        logging_dir=logs["buckets"],
        **common,
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=buckets, output_folder=remove, config=cfg)],
        tasks=1,
        logging_dir=logs["cluster"],
        **{**common, "workers": 1},
    ).run()
    kept = os.path.join(work, "kept")
    LocalPipelineExecutor(
        pipeline=[
            *readers(),
            MinhashDedupFilter(input_folder=remove),
            JsonlWriter(kept, compression=None, output_filename="${rank}.jsonl"),
        ],
        tasks=n_files,
        logging_dir=logs["filter"],
        **common,
    ).run()
    texts = {s["name"]: [] for s in sources}
    for f in sorted(glob.glob(os.path.join(kept, "*.jsonl"))):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                texts[d["metadata"]["source"]].append(d["text"])
    return texts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="run directory holding glass.toml")
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--dedup", action="store_true", help="datatrove MinHash deduplication first")
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
    os.makedirs(args.out, exist_ok=True)

    # 1-2. Read (and deduplicate).
    sources = data["sources"]
    if args.dedup:
        texts = read_deduped(args.run, sources, os.path.join(args.out, "dedup"), args.threads)
    else:
        texts = read_plain(args.run, sources)
    names = [s["name"] for s in sources]

    # 3. Tokenize.
    tcfg = data["tokenizer"]
    tok = Tokenizer.from_file(os.path.join(args.run, tcfg["path"]))
    tok.encode_special_tokens = True  # as Glass: special strings inside documents stay text
    eos = tok.token_to_id(tcfg.get("eos", "<|endoftext|>"))
    docs = {}
    for name in names:
        encs = tok.encode_batch(texts[name], add_special_tokens=False)
        docs[name] = [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def source_rows(name: str, n_rows: int, seg_source: int):
        ds = docs[name]
        if not ds:
            sys.exit(f"source {name} has no documents left")
        out = np.empty((n_rows, row_len), dtype=np.uint32)
        flat = out.reshape(-1)
        segs = []
        at, need = 0, n_rows * row_len
        while at < need:
            for d in rng.permutation(len(ds)):
                piece = np.concatenate([ds[d], np.asarray([eos], dtype=np.uint32)])
                take = min(len(piece), need - at)
                flat[at:at + take] = piece[:take]
                segs.append((at // row_len, at % row_len, seg_source, d, 0, take))
                at += take
                if at == need:
                    break
        return out, segs

    all_rows, all_segs, row_base = [], [], 0
    for stage in data["stages"]:
        steps = -(-stage["tokens"] // (rows_per_step * row_len))
        n = steps * rows_per_step
        w = stage["weights"]
        total = sum(w.values())
        counts = {k: int(n * v / total) for k, v in w.items()}
        counts[max(w, key=w.get)] += n - sum(counts.values())
        stage_rows = []
        for k, c in counts.items():
            rows, segs = source_rows(k, c, names.index(k))
            base = row_base + sum(len(r) for r in stage_rows)
            all_segs += [(r + base, *rest) for r, *rest in segs]
            stage_rows.append(rows)
        rows = np.concatenate(stage_rows)
        all_rows.append(rows)
        row_base += len(rows)
    rows = np.concatenate(all_rows)
    segs = np.asarray(all_segs, dtype=np.int64).reshape(-1, 6)

    # 4. Shuffle rows within each step; write chunks and segments, hashed; manifest.
    n_steps = len(rows) // rows_per_step
    order = np.concatenate([s * rows_per_step + rng.permutation(rows_per_step) for s in range(n_steps)])
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    rows = rows[order]
    segs[:, 0] = where[segs[:, 0]]
    segs = segs[np.argsort(segs[:, 0], kind="stable")]
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
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
    with open(os.path.join(args.out, "manifest.json.tmp"), "w") as fh:
        json.dump({"steps": n_steps, "rows": len(rows), "files": files}, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(os.path.join(args.out, "manifest.json.tmp"), os.path.join(args.out, "manifest.json"))
    print(json.dumps({
        "docs_kept": sum(len(t) for t in texts.values()),
        "steps": n_steps,
        "tokens": int(rows.size),
        "seconds_in_process": time.perf_counter() - t_start,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
