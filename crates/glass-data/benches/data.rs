//! `cargo bench -p glass-data`: tokenize-and-pack throughput on the embedded corpus,
//! against the HF `tokenizers` Python package when `GLASS_BENCH_PYTHON` (default
//! `/root/venv/bin/python`, if present) has it installed.

use std::path::PathBuf;

use glass_data::BenchDataArgs;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("GLASS_BENCH_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from("/root/venv/bin/python");
            p.exists().then_some(p)
        });
    let args = BenchDataArgs {
        tokenizer: None,
        out: root.join("target/bench-data"),
        iters: 5,
        python,
        script: root.join("bench/hf_tokenizers_reference.py"),
        threads: None,
        json: false,
    };
    glass_data::cli::bench_data(&args)
}
