//! Embeds the default corpus and the project's own Rust sources into the library, so the
//! default run needs no downloads and works from any directory.
//!
//! Both lists are sorted by path, so the generated table (and every dataset built from it)
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
        if name.starts_with('.') || name.starts_with("target") {
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
    let crates = manifest.join("..").canonicalize().unwrap();
    println!("cargo:rerun-if-changed={}", corpus.display());
    println!("cargo:rerun-if-changed={}", crates.display());

    let mut text = Vec::new();
    collect(&corpus, "txt", &mut text);
    let key =
        |p: &PathBuf, root: &Path| p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    text.sort_by_key(|p| key(p, &corpus));

    let mut rust = Vec::new();
    let in_workspace = crates.join("../Cargo.toml").exists();
    let code_root = if in_workspace {
        crates.clone()
    } else {
        manifest.join("src")
    };
    collect(&code_root, "rs", &mut rust);
    rust.sort_by_key(|p| key(p, &code_root));

    let mut code = String::new();
    table("CORPUS", &corpus, "", &text, &mut code);
    let prefix = if in_workspace {
        "crates/"
    } else {
        "crates/glass-data/src/"
    };
    table("CODE", &code_root, prefix, &rust, &mut code);
    writeln!(
        code,
        "pub(crate) static CORPUS_README: &str = include_str!({:?});",
        corpus.join("README.md").display().to_string()
    )
    .unwrap();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
