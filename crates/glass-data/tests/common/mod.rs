//! Shared helpers: a small synthetic run (prose, JSONL, code, held-out text) and file
//! comparisons.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = r#"
[model]
dim = 8

[data]
seed = 7
seq_len = 31
rows_per_step = 8
steps_per_chunk = 3

[data.tokenizer]
vocab_size = 400

[[data.sources]]
name = "prose"
kind = "text"
paths = ["corpus/prose"]

[[data.sources]]
name = "web"
kind = "jsonl"
paths = ["corpus/web/*.jsonl"]
text_field = "text"
id_field = "id"

[[data.sources]]
name = "code"
kind = "code"
paths = ["corpus/code"]
extensions = ["rs"]

[[data.sources]]
name = "held"
kind = "text"
paths = ["corpus/held.txt"]

[[data.stages]]
name = "one"
tokens = 5000
weights = { prose = 1.0 }

[[data.stages]]
name = "two"
tokens = 8000
weights = { prose = 0.5, web = 0.3, code = 0.2 }
fim_rate = { code = 0.5 }

[data.validation]
sources = ["held"]
rows = 4
"#;

const WORDS: &[&str] = &[
    "the", "king", "queen", "said", "and", "to", "of", "a", "in", "that", "is", "my", "lord",
    "it's", "we'll", "thou", "art", "thee", "night", "day", "sword", "crown", "love", "death", "O",
    "Hamlet", "1603", "42",
];

/// Deterministic pseudo-random text.
pub fn text(seed: u64, words: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::new();
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = WORDS[(x % WORDS.len() as u64) as usize];
        if i > 0 {
            out.push_str(match x >> 60 {
                0 => ",\n",
                1 => ".\n\n",
                2 => "  ",
                3 => "! ",
                _ => " ",
            });
        }
        out.push_str(w);
    }
    out.push('\n');
    out
}

/// Writes the synthetic corpus and config into a fresh run directory.
pub fn make_run(dir: &Path) -> PathBuf {
    make_run_with(dir, CONFIG)
}

/// Like [`make_run`] with a custom config.
pub fn make_run_with(dir: &Path, config: &str) -> PathBuf {
    let run = dir.to_path_buf();
    let c = run.join("corpus");
    std::fs::create_dir_all(c.join("prose")).unwrap();
    std::fs::create_dir_all(c.join("web")).unwrap();
    std::fs::create_dir_all(c.join("code/src")).unwrap();
    for i in 0..12 {
        std::fs::write(
            c.join(format!("prose/work{i:02}.txt")),
            text(i, 150 + 40 * i as usize),
        )
        .unwrap();
    }
    for f in 0..2 {
        let mut s = String::new();
        for l in 0..30u64 {
            let t = format!(
                "{} café naïve — “quoted” 🦀 {}",
                text(100 + f * 50 + l, 12 + l as usize),
                l
            );
            s.push_str(&serde_json::json!({ "id": format!("w{f}-{l}"), "text": t }).to_string());
            s.push('\n');
        }
        std::fs::write(c.join(format!("web/part{f}.jsonl")), s).unwrap();
    }
    for i in 0..5 {
        let body = format!(
            "/// Doc {i}.\nfn f{i}(x: u32) -> u32 {{\n    // {}\n    x * {i} + 1\n}}\n",
            text(200 + i, 30)
        );
        std::fs::write(c.join(format!("code/src/m{i}.rs")), body).unwrap();
    }
    std::fs::write(c.join("code/README.md"), "not code").unwrap();
    std::fs::write(c.join("held.txt"), text(999, 600)).unwrap();
    std::fs::write(run.join("glass.toml"), config).unwrap();
    run
}

/// Every file under `run/data` (relative path → bytes), temp files excluded.
pub fn data_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(&run.join("data"), &run.join("data"), &mut out);
    out
}

/// The chunk files (tokens, segments, headers) and validation files of a run.
pub fn chunk_files(run: &Path) -> BTreeMap<String, Vec<u8>> {
    data_files(run)
        .into_iter()
        .filter(|(k, _)| k.starts_with("chunks/") || k.starts_with("validation"))
        .collect()
}
