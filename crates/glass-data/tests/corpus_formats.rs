//! Corpora as they are distributed — gzip and zstd JSONL, Parquet, Arrow / `datasets`
//! folders — read document for document as the reference libraries wrote them (fixtures
//! from tools/fixtures/make_corpus_fixtures.py: Python's gzip, `zstandard`, pyarrow,
//! `datasets`), and their bad input (streams cut short, a decompression bomb, a missing
//! column or shard) refused by name or skipped and counted.

use std::path::{Path, PathBuf};

use glass_data::config::SourceConfig;
use glass_data::sources::{list_units, read_unit, RawDoc, UnitCounts};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus")
}

fn source(toml_body: &str) -> SourceConfig {
    let s: SourceConfig = toml::from_str(&format!("name = \"web\"\n{toml_body}")).unwrap();
    s
}

fn read_all(src: &SourceConfig, dir: &Path) -> Result<(Vec<RawDoc>, Vec<UnitCounts>), String> {
    let units = list_units(src, dir).map_err(|e| e.to_string())?;
    let mut docs = Vec::new();
    let mut counts = Vec::new();
    for u in &units {
        counts.push(
            read_unit(src, u, &mut |d| {
                docs.push(d);
                Ok(())
            })
            .map_err(|e| e.to_string())?,
        );
    }
    Ok((docs, counts))
}

fn expected(file: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    v[file].as_array().unwrap().clone()
}

/// The documents, ids and nested metadata of `file` are exactly what the writer was given,
/// in order, and the unit's hash is of the file's bytes as stored.
/// `numbering`: "lines" (JSONL: lines and byte ranges of the decompressed stream), "rows"
/// (1-based rows of one file) or "shards" (rows numbered per shard file).
fn check(kind: &str, file: &str, numbering: &str) {
    let src = source(&format!(
        "kind = \"{kind}\"\npaths = [\"{file}\"]\ntext_field = \"text\"\nid_field = \"id\"\nmetadata_fields = [\"meta.url\"]\n"
    ));
    let (docs, counts) = read_all(&src, &fixtures()).unwrap();
    let want = expected(file);
    assert_eq!(docs.len(), want.len(), "{file}");
    for (i, (d, w)) in docs.iter().zip(&want).enumerate() {
        assert_eq!(d.text, w["text"].as_str().unwrap(), "{file} doc {i}");
        let meta = d.meta.as_ref().unwrap();
        assert_eq!(meta["id"], w["id"], "{file} doc {i}");
        assert_eq!(meta["meta.url"], w["meta"]["url"], "{file} doc {i}");
        if numbering == "rows" {
            assert_eq!(d.line, i as u64 + 1, "{file}: 1-based row numbers");
        }
    }
    if numbering == "lines" {
        // Lines count in the decompressed stream; byte ranges tile it.
        assert_eq!(docs[0].byte_start, 0);
        for w in docs.windows(2) {
            assert_eq!(w[1].line, w[0].line + 1);
            assert_eq!(w[1].byte_start, w[0].byte_start + w[0].byte_len);
        }
    }
    // The hash is of the files as stored (compressed), so `sha256sum` agrees with it.
    let units = list_units(&src, &fixtures()).unwrap();
    for (u, c) in units.iter().zip(&counts) {
        let glass_data::sources::UnitLocation::File(p) = &u.location else {
            panic!()
        };
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(c.bytes, bytes.len() as u64, "{}", u.path);
        use sha2::Digest;
        assert_eq!(
            c.sha256,
            hex::encode(sha2::Sha256::digest(&bytes)),
            "{}",
            u.path
        );
    }
}

#[test]
fn gzip_jsonl_of_two_members_reads_every_document() {
    check("jsonl", "docs.jsonl.gz", "lines");
}

#[test]
fn zstd_jsonl_reads_every_document() {
    check("jsonl", "docs.jsonl.zst", "lines");
}

#[test]
fn parquet_rows_with_a_nested_column_read_across_row_groups() {
    check("parquet", "docs.parquet", "rows");
}

#[test]
fn a_datasets_folder_reads_its_shards_in_order() {
    check("arrow", "hf", "shards");
    let src = source("kind = \"arrow\"\npaths = [\"hf\"]\ntext_field = \"text\"\n");
    let units = list_units(&src, &fixtures()).unwrap();
    let names: Vec<&str> = units.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "hf/data-00000-of-00002.arrow",
            "hf/data-00001-of-00002.arrow"
        ]
    );
}

#[test]
fn a_directory_of_mixed_files_takes_each_kinds_own_extensions() {
    // A jsonl source over the whole fixture folder takes the .jsonl.gz / .jsonl.zst files
    // (and the bad ones), never the Parquet or Arrow files.
    let src = source("kind = \"jsonl\"\npaths = [\".\"]\ntext_field = \"text\"\n");
    let units = list_units(&src, &fixtures()).unwrap();
    let names: Vec<&str> = units.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "bomb.jsonl.gz",
            "docs.jsonl.gz",
            "docs.jsonl.zst",
            "truncated.jsonl.gz",
            "truncated.jsonl.zst"
        ]
    );
}

#[test]
fn streams_cut_short_are_errors_naming_the_file_and_line() {
    for (file, codec) in [
        ("truncated.jsonl.gz", "gzip"),
        ("truncated.jsonl.zst", "zstd"),
    ] {
        let src = source(&format!(
            "kind = \"jsonl\"\npaths = [\"{file}\"]\ntext_field = \"text\"\n"
        ));
        let e = read_all(&src, &fixtures()).unwrap_err();
        assert!(
            e.contains(file)
                && e.contains(&format!("{codec} stream unreadable"))
                && e.contains("line"),
            "{e}"
        );
        // Skipping malformed records does not hide a broken stream.
        let src = source(&format!(
            "kind = \"jsonl\"\npaths = [\"{file}\"]\ntext_field = \"text\"\nbad_lines = \"skip\"\n"
        ));
        assert!(read_all(&src, &fixtures()).is_err(), "{file}");
    }
}

#[test]
fn a_hundred_megabyte_line_is_refused_or_skipped_without_being_held() {
    let src = source("kind = \"jsonl\"\npaths = [\"bomb.jsonl.gz\"]\ntext_field = \"text\"\n");
    let e = read_all(&src, &fixtures()).unwrap_err();
    assert!(
        e.contains("bomb.jsonl.gz:1") && e.contains("a line over") && e.contains("bad_lines"),
        "{e}"
    );
    let src = source(
        "kind = \"jsonl\"\npaths = [\"bomb.jsonl.gz\"]\ntext_field = \"text\"\nbad_lines = \"skip\"\n",
    );
    let (docs, counts) = read_all(&src, &fixtures()).unwrap();
    assert!(docs.is_empty());
    assert_eq!(counts[0].bad_lines, 1);
}

#[test]
fn a_missing_column_and_a_missing_shard_are_named() {
    let src = source("kind = \"parquet\"\npaths = [\"docs.parquet\"]\ntext_field = \"content\"\n");
    let e = read_all(&src, &fixtures()).unwrap_err();
    assert!(
        e.contains("docs.parquet") && e.contains("no column `content`") && e.contains("text"),
        "{e}"
    );
    // A text column that is not a string: each row is a malformed record.
    let src = source("kind = \"parquet\"\npaths = [\"docs.parquet\"]\ntext_field = \"unused\"\n");
    let e = read_all(&src, &fixtures()).unwrap_err();
    assert!(
        e.contains("docs.parquet row 1") && e.contains("not a string"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for f in [
        "state.json",
        "dataset_info.json",
        "data-00000-of-00002.arrow",
    ] {
        std::fs::copy(fixtures().join("hf").join(f), hf.join(f)).unwrap();
    }
    let src = source("kind = \"arrow\"\npaths = [\"hf\"]\ntext_field = \"text\"\n");
    let e = read_all(&src, dir.path()).unwrap_err();
    assert!(
        e.contains("state.json")
            && e.contains("data-00001-of-00002.arrow")
            && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn a_corrupt_parquet_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixtures().join("docs.parquet")).unwrap();
    // Scribble over the middle (pages and their headers), keep the footer intact.
    let n = bytes.len();
    for b in &mut bytes[200..n / 2] {
        *b = 0x5a;
    }
    std::fs::write(dir.path().join("bad.parquet"), &bytes).unwrap();
    std::fs::write(dir.path().join("cut.parquet"), &bytes[..n / 3]).unwrap();
    for f in ["bad.parquet", "cut.parquet"] {
        let src = source(&format!(
            "kind = \"parquet\"\npaths = [\"{f}\"]\ntext_field = \"text\"\n"
        ));
        let e = read_all(&src, dir.path()).unwrap_err();
        assert!(e.contains(f), "{e}");
    }
}

#[test]
fn prepare_takes_parquet_zstd_and_datasets_sources_with_their_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let corpus = run.join("corpus");
    std::fs::create_dir_all(corpus.join("hf")).unwrap();
    for f in ["docs.parquet", "docs.jsonl.zst"] {
        std::fs::copy(fixtures().join(f), corpus.join(f)).unwrap();
    }
    for f in std::fs::read_dir(fixtures().join("hf")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, corpus.join("hf").join(f.file_name().unwrap())).unwrap();
    }
    let config = r#"
[data]
seed = 3
seq_len = 15
rows_per_step = 2
steps_per_chunk = 2

[data.tokenizer]
vocab_size = 300

[[data.sources]]
name = "pq"
kind = "parquet"
paths = ["corpus/docs.parquet"]
text_field = "text"
id_field = "id"
metadata_fields = ["meta.url"]

[[data.sources]]
name = "zst"
kind = "jsonl"
paths = ["corpus/docs.jsonl.zst"]
text_field = "text"

[[data.sources]]
name = "hf"
kind = "arrow"
paths = ["corpus/hf"]
text_field = "text"

[[data.stages]]
name = "one"
tokens = 400
weights = { pq = 0.4, zst = 0.3, hf = 0.3 }
"#;
    std::fs::write(run.join("glass.toml"), config).unwrap();
    glass_data::prepare(
        run,
        &glass_data::PrepareOptions {
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let data = glass_data::PreparedData::open(run).unwrap();
    let pq = data.source_view("pq").unwrap();
    let want = expected("docs.parquet");
    let mut seen = 0;
    for doc in 0..want.len() as u64 {
        let (path, row) = pq.doc_id(doc).unwrap();
        assert_eq!(path, "corpus/docs.parquet");
        let meta = pq.doc_meta(doc).unwrap();
        // Documents keep their row number, id and nested metadata through tokenization.
        let w = &want[row as usize - 1];
        assert_eq!(meta["id"], w["id"]);
        assert_eq!(meta["meta.url"], w["meta"]["url"]);
        seen += 1;
    }
    assert_eq!(seen, 8);
    let hf = data.source_view("hf").unwrap();
    assert_eq!(
        hf.doc_id(0).unwrap(),
        ("corpus/hf/data-00000-of-00002.arrow".to_string(), 1)
    );
    // The data manifest hashes each input as stored.
    let m = std::fs::read_to_string(run.join("data/manifest.json")).unwrap();
    use sha2::Digest;
    let zst = hex::encode(sha2::Sha256::digest(
        std::fs::read(fixtures().join("docs.jsonl.zst")).unwrap(),
    ));
    assert!(m.contains(&zst), "manifest lacks the zstd file's hash");
}
