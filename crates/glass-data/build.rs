//! Embeds the default corpus into the library, so the default run needs no downloads and
//! works from any directory: the English works (`corpus/**/*.txt`) and the code snapshot
//! (`corpus/code/`, a fixed committed file, so editing Glass's sources never changes the
//! demo's data).
//!
//! The list is sorted by path, so the generated table (and every dataset built from it)
//! is the same on every machine that builds the same tree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with("target") || name == "code" {
            continue;
        }
        if path.is_dir() {
            collect(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn table(name: &str, root: &Path, prefix: &str, files: &[PathBuf], code: &mut String) {
    writeln!(code, "pub(crate) static {name}: &[(&str, &str)] = &[").unwrap();
    for f in files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        writeln!(
            code,
            "    ({:?}, include_str!({:?})),",
            format!("{prefix}{rel}"),
            f.display().to_string()
        )
        .unwrap();
    }
    writeln!(code, "];").unwrap();
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let corpus = manifest.join("corpus");
    println!("cargo:rerun-if-changed={}", corpus.display());

    let mut text = Vec::new();
    collect(&corpus, "txt", &mut text);
    let key =
        |p: &PathBuf, root: &Path| p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    text.sort_by_key(|p| key(p, &corpus));

    let mut code = String::new();
    table("CORPUS", &corpus, "", &text, &mut code);
    for (name, file) in [
        ("CORPUS_README", corpus.join("README.md")),
        (
            "CODE_SNAPSHOT",
            corpus.join("code").join("glass-rust-snapshot.txt"),
        ),
    ] {
        writeln!(
            code,
            "pub(crate) static {name}: &str = include_str!({:?});",
            file.display().to_string()
        )
        .unwrap();
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
