//! Readers of the files the later fuzz targets replace: the trace index, releases, LLM360
//! rows, evaluation datasets, the tokenizer, the optimizer state and the metrics database.
//! Each runs every public entry point that parses the file; results are ignored.

use std::path::Path;

use crate::{copy_dir, workspace, Scratch};

/// Every reader of the trace index: open, counts, locations, span tracing.
pub fn read_index(run: &Path) {
    let Ok(index) = glass_analysis::Index::open(run) else {
        return;
    };
    let Ok(tok) = glass_run::run_tokenizer(run) else {
        return;
    };
    for text in ["the", "ROMEO.\nO, she doth", "and the king"] {
        let Ok(ids) = tok.encode(text) else { continue };
        if ids.is_empty() {
            continue;
        }
        let _ = index.count(&ids);
        let _ = index.count_validation(&ids);
        let _ = index.count_before(&ids, 2);
        let _ = index.occurrences(&ids);
        let _ = index.longest_matches(&ids);
        let opts = glass_analysis::trace::TraceOptions {
            min_tokens: 1,
            max_occurrences: 3,
            rank: glass_analysis::trace::Rank::Unigram,
            checkpoint: Some((1, 2)),
        };
        let _ = glass_analysis::trace::trace(run, &index, &tok, text, &ids, &opts);
    }
}

/// Replaces `RUN/index/rel`, re-seals the index manifest's hash of it (as a forger
/// would), and runs every index reader.
pub fn index_file(s: &Scratch, rel: &str, bytes: &[u8]) {
    let p = s.run.join("index").join(rel);
    std::fs::write(&p, bytes).expect("write");
    if rel != "manifest.json" {
        crate::reseal::index(&s.run.join("index"));
    }
    read_index(&s.run);
    s.restore("index");
}

/// The committed release of the seed run.
const RELEASE: &str = "crates/glass-fuzz/corpus/release";

/// A scratch copy of the seed release with `rel` replaced (its manifest entry re-sealed
/// unless `rel` is the manifest), then verified and imported into a new run.
pub fn release_file(rel: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("release");
    copy_dir(&workspace().join(RELEASE), &out);
    std::fs::write(out.join(rel), bytes).expect("write");
    if rel != "manifest.json" {
        crate::reseal::release(&out);
    }
    let _ = glass_release::verify_release(&out);
    let run = dir.path().join("imported");
    if glass_release::import_release(&out, &run, &mut |_| {}).is_ok() {
        let _ = glass_run::verify_run(&run);
        crate::read_data(&run);
    }
}

/// The LLM360-layout fixture of the CLI's tests.
const LLM360: &str = "crates/glass-cli/tests/fixtures/llm360-mini";

/// A copy of the LLM360 fixture with `data/train_000.jsonl` replaced, imported.
pub fn llm360_rows(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = workspace().join(LLM360);
    let data = dir.path().join("data");
    copy_dir(&src.join("data"), &data);
    std::fs::write(data.join("train_000.jsonl"), bytes).expect("write");
    let run = dir.path().join("run");
    let sel = glass_run::Selection::All;
    if glass_release::import_llm360(
        &data,
        &src.join("checkpoints"),
        None,
        4,
        &sel,
        &run,
        &mut |_| {},
    )
    .is_ok()
    {
        crate::read_data(&run);
    }
}

/// The Pythia and OLMo layouts of the CLI's tests.
const SUITES: &str = "crates/glass-cli/tests/fixtures/suites";

/// A copy of the suite fixture `suite` (`pythia` or `olmo`) with `rel` replaced,
/// imported (every record checked, nothing hashed), then every step shown and verified.
pub fn suite_file(suite: &str, rel: &str, bytes: &[u8]) {
    use glass_data::external;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    copy_dir(&workspace().join(SUITES).join(suite), &src);
    std::fs::write(src.join(rel), bytes).expect("write");
    let run = dir.path().join("run");
    let common = external::ImportCommon {
        tokenizer: None,
        hash: false,
        validate: true,
    };
    let imported = if suite == "pythia" {
        external::import_pythia(
            &external::PythiaImport {
                data: src.clone(),
                index: None,
                rows_per_step: 4,
                seq_len: 7,
                common,
            },
            &run,
            &mut |_| {},
        )
    } else {
        external::import_olmo(
            &external::OlmoImport {
                config: src.join("config.yaml"),
                data: src.join("data"),
                global_indices: None,
                common,
            },
            &run,
            &mut |_| {},
        )
    };
    if let Ok(r) = imported {
        for step in 0..r.n_steps.min(8) {
            let _ = glass_data::inspect::show(&run, step, 0, 1);
        }
        let _ = glass_data::inspect::show(&run, r.n_steps, 0, 1);
        let _ = external::verify(&run, &mut |_| {});
    }
    // The readers on their own, without the import's checks before them.
    if suite == "pythia" {
        if let Ok(ds) = glass_data::megatron::MegatronDataset::open(
            &src.join("document.idx"),
            &[
                src.join("document-00000-of-00001.bin"),
                src.join("document-00001-of-00001.bin"),
            ],
        ) {
            for step in 0..6 {
                let _ = ds.step_rows(step, 4, 8);
                let _ = ds.step_rows(step, 2, 16);
            }
        }
    } else if let Ok(a) = glass_data::npy::IndexArray::open(&src.join("data/global_indices.npy")) {
        for i in 0..a.len().min(64) {
            let _ = a.get(i);
        }
    }
}

/// A CrystalCoder HDF5 file (the modelzoo's `data` of `[n, 3, seq]`) as the second file of
/// a stage beside a good one: imported (every header checked), every step shown and
/// verified; then the HDF5 reader on its own, reading every row.
pub fn hdf5_file(bytes: &[u8]) {
    use glass_data::external;
    let dir = tempfile::tempdir().expect("tempdir");
    let stage = dir.path().join("data/stage1");
    std::fs::create_dir_all(&stage).expect("mkdir");
    let good = workspace()
        .join(SUITES)
        .join("crystalcoder/data/stage1/data-00001.h5");
    std::fs::copy(good, stage.join("data-00000.h5")).expect("copy");
    let f = stage.join("data-00001.h5");
    std::fs::write(&f, bytes).expect("write");
    let run = dir.path().join("run");
    let imported = external::import_crystalcoder(
        &external::CrystalCoderImport {
            data: dir.path().join("data"),
            stages: Vec::new(),
            rows_per_step: 2,
            seq_len: None,
            common: external::ImportCommon {
                tokenizer: None,
                hash: false,
                validate: true,
            },
        },
        &run,
        &mut |_| {},
    );
    if let Ok(r) = imported {
        for step in 0..r.n_steps.min(16) {
            let _ = glass_data::inspect::show(&run, step, 0, 1);
        }
        let _ = external::verify(&run, &mut |_| {});
    }
    if let Ok(h) = glass_data::hdf5::H5File::open(&f) {
        let _ = h.root_attr_int("n_examples");
        for name in ["data", "input_ids"] {
            if let Ok(ds) = h.dataset(name) {
                let n = ds.shape().first().copied().unwrap_or(0);
                for row in 0..n.min(64) {
                    let _ = h.read_row(&ds, row);
                }
                let _ = h.read_row(&ds, n);
            }
        }
    }
}

/// An evaluation dataset file in each format the harness's hub layout uses, written into
/// the scratch directory (the Parquet and Arrow readers stream from the file).
pub fn eval_rows(s: &Scratch, name: &str, bytes: &[u8]) {
    let p = s.run.join(name);
    std::fs::write(&p, bytes).expect("write");
    let _ = glass_eval::datasets::read_rows(&p, bytes);
}

/// A corpus file as a `[[data.sources]]` entry of `kind` reads it (compressed JSONL,
/// Parquet, Arrow), every document streamed.
pub fn corpus_file(s: &Scratch, kind: &str, name: &str, bytes: &[u8]) {
    std::fs::write(s.run.join(name), bytes).expect("write");
    let src: glass_data::config::SourceConfig = serde_json::from_value(serde_json::json!({
        "name": "web", "kind": kind, "paths": [name], "text_field": "text",
        "id_field": "id", "metadata_fields": ["meta.url"],
    }))
    .expect("source");
    if let Ok(units) = glass_data::sources::list_units(&src, &s.run) {
        for u in &units {
            let _ = glass_data::sources::read_unit(&src, u, &mut |_| Ok(()));
        }
    }
}

/// `RUN/data/tokenizer.json` replaced (hashes re-sealed): every data reader, and the
/// tokenizer on text and ids.
pub fn tokenizer(s: &Scratch, bytes: &[u8]) {
    std::fs::write(s.run.join("data/tokenizer.json"), bytes).expect("write");
    crate::reseal::data(&s.run.join("data"));
    crate::read_data(&s.run);
    if let Ok(tok) = glass_run::run_tokenizer(&s.run) {
        if let Ok(ids) = tok.encode("To be, or not to be: that is the question.\n\tfn main() {}") {
            let _ = tok.decode(&ids);
        }
        let _ = tok.decode(&[0, 1, 2, 299, 300, 5000, u32::MAX]);
    }
    let _ = glass_run::load_model(&s.run, None);
    s.restore("data");
}

/// A checkpoint's optimizer state replaced (hashes re-sealed): every checkpoint reader,
/// and a replay of the interval that starts from it (the one reader of the moments).
pub fn optimizer(s: &Scratch, bytes: &[u8]) {
    let rel = "checkpoints/ckpt-0001-step-00000002/optimizer.safetensors";
    std::fs::write(s.run.join(rel), bytes).expect("write");
    crate::reseal::run(&s.run);
    crate::read_run(&s.run);
    let _ = glass_run::replay(&s.run, 2);
    s.restore("manifest.json");
    s.restore("checkpoints");
}

/// `RUN/metrics.sqlite` replaced: every reader of the database (the metrics commands,
/// memorization, diff, the release's metrics).
pub fn metrics(s: &Scratch, bytes: &[u8]) {
    let p = s.run.join(glass_run::metrics::METRICS_FILE);
    std::fs::write(&p, bytes).expect("write");
    if let Ok(m) = glass_run::Metrics::open_read_only(&s.run) {
        let _ = m.steps();
        let _ = m.checkpoints();
        let _ = m.events();
        let _ = m.evals();
        let _ = m.memorization(None);
        let _ = m.memorization_means();
        for c in glass_run::metrics::StepColumn::ALL {
            let _ = m.step_series(c, 0, u64::MAX);
        }
        let _ = m.step_extent();
        let _ = m.tokens_at(3);
    }
    let _ = glass_analysis::memorization::stored(&s.run);
    let _ = glass_release::metrics::collect(&s.run);
    let _ = glass_run::diff(&s.run, &s.run);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
}
