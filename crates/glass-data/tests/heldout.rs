//! `[data.heldout]`: every source's held-out documents are the ones with the smallest
//! keys (recomputed here from the documented formula), never packed into a training row,
//! recorded with their provenance, text (a whole-line prefix under the token cap) and
//! tokens in a hashed file; the same for one and two threads; off by default; bad
//! settings refused by name.

use std::path::Path;

use glass_data::heldout::{HeldoutFile, HELDOUT_FILE};
use glass_data::prepare::{prepare, PrepareOptions};
use glass_data::{Manifest, PreparedData};
use sha2::{Digest, Sha256};

mod common;
use common::{data_files, make_run_with, CONFIG};

fn opts(threads: usize) -> PrepareOptions {
    PrepareOptions {
        threads: Some(threads),
        ..Default::default()
    }
}

const HELDOUT: &str = "\n[data.heldout]\ndocs_per_source = 3\nmax_doc_tokens = 40\n";

fn read_heldout(run: &Path) -> HeldoutFile {
    serde_json::from_slice(&std::fs::read(run.join("data").join(HELDOUT_FILE)).unwrap()).unwrap()
}

#[test]
fn heldout_documents_are_chosen_by_key_recorded_and_never_trained_on() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = format!("{CONFIG}{HELDOUT}");
    let run = make_run_with(t1.path(), &cfg);
    let other = make_run_with(t2.path(), &cfg);
    prepare(&run, &opts(1)).unwrap();
    prepare(&other, &opts(2)).unwrap();
    assert_eq!(
        data_files(&run),
        data_files(&other),
        "threads changed the data"
    );

    let h = read_heldout(&run);
    assert_eq!(h.format, "glass-heldout-v1");
    assert_eq!(h.seed, 7);
    let names: Vec<(&str, &str)> = h
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.role.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("prose", "train"),
            ("web", "train"),
            ("code", "train"),
            ("held", "validation")
        ]
    );
    let data = PreparedData::open(&run).unwrap();
    let tok = data.tokenizer().unwrap();
    for s in &h.sources {
        let view = data.source_view(&s.name).unwrap();
        // The documented choice: the smallest first-8-bytes-little-endian of
        // sha256("{seed}\0{source}\0{file}\0{line}\0{byte_start}").
        let mut keyed: Vec<(u64, u64)> = (0..view.n_docs())
            .map(|d| {
                let p = glass_data::dedup::place(&view, d);
                let id = format!("7\0{}\0{}\0{}\0{}", s.name, p.file, p.line, p.byte_start);
                let k = u64::from_le_bytes(Sha256::digest(id)[..8].try_into().unwrap());
                (k, d)
            })
            .collect();
        keyed.sort_unstable();
        let mut want: Vec<u64> = keyed.iter().take(3).map(|k| k.1).collect();
        want.sort_unstable();
        let got: Vec<u64> = s.docs.iter().map(|d| d.place.doc).collect();
        assert_eq!(got, want, "{}", s.name);
        assert_eq!(s.candidates, view.n_docs());
        for d in &s.docs {
            assert_eq!(d.place, glass_data::dedup::place(&view, d.place.doc));
            assert!(d.tokens.len() <= 40 && !d.tokens.is_empty(), "{}", s.name);
            assert_eq!(d.tokens, tok.encode(&d.text).unwrap());
            assert_eq!(d.bytes, d.text.len() as u64);
            assert_eq!(d.doc_tokens, view.doc(d.place.doc).n_tokens as u64);
            // The scored text is the document's beginning, cut at a line end.
            let whole = if s.name == "web" {
                let line = std::fs::read_to_string(run.join(&d.place.file))
                    .unwrap()
                    .lines()
                    .nth(d.place.line as usize - 1)
                    .unwrap()
                    .to_string();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                v["text"].as_str().unwrap().to_string()
            } else {
                std::fs::read_to_string(run.join(&d.place.file)).unwrap()
            };
            assert!(whole.starts_with(&d.text), "{}", d.place.file);
            assert!(
                d.text.len() == whole.len() || d.text.ends_with('\n'),
                "{}: cut inside a line",
                d.place.file
            );
        }
    }
    // Held-out training documents are in no training row; validation documents stay.
    let m = Manifest::load(&run).unwrap();
    let index = |n: &str| m.config.source_index(n).unwrap() as u32;
    let withheld: Vec<(u32, u64)> = h
        .sources
        .iter()
        .filter(|s| s.role == "train")
        .flat_map(|s| s.docs.iter().map(|d| (index(&s.name), d.place.doc)))
        .collect();
    assert_eq!(withheld.len(), 9);
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..data.n_steps() {
        for row in data.batch_segments(step).unwrap() {
            for seg in row {
                seen.insert((seg.source, seg.doc));
            }
        }
    }
    for w in &withheld {
        assert!(!seen.contains(w), "held-out document {w:?} was trained on");
    }
    // Every other prose document is drawn (the stream takes several epochs of it).
    let prose = index("prose");
    let drawn = seen.iter().filter(|(s, _)| *s == prose).count();
    assert_eq!(drawn, 12 - 3);
    // Hashed in the manifest, checked by verify, counted per source.
    let rec = m.heldout.as_ref().unwrap();
    assert_eq!(rec.file, HELDOUT_FILE);
    assert_eq!(rec.sources[0].docs, 3);
    assert!(m.files.iter().any(|f| f.path == HELDOUT_FILE));
    assert!(glass_data::verify(&run).unwrap().mismatches.is_empty());
    assert_eq!(glass_data::heldout::for_run(&run).unwrap(), h);
    // A modified file is refused when read.
    let p = run.join("data").join(HELDOUT_FILE);
    let mut b = std::fs::read(&p).unwrap();
    let at = b.len() - 3;
    b[at] ^= 1;
    std::fs::write(&p, b).unwrap();
    let e = glass_data::heldout::for_run(&run).unwrap_err().to_string();
    assert!(e.contains("heldout.json") && e.contains("modified"), "{e}");
}

#[test]
fn without_the_table_nothing_is_held_out_and_validation_sources_get_the_default() {
    let t = tempfile::tempdir().unwrap();
    let run = make_run_with(t.path(), CONFIG);
    prepare(&run, &opts(2)).unwrap();
    assert!(!run.join("data").join(HELDOUT_FILE).exists());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("data/manifest.json")).unwrap()).unwrap();
    assert!(m.get("heldout").is_none());
    assert!(m["config"].get("heldout").is_none());
    // Analysis-time choice for the validation source (one document, cut to 1024 tokens).
    let h = glass_data::heldout::for_run(&run).unwrap();
    assert_eq!(h.sources.len(), 1);
    assert_eq!(
        (h.sources[0].name.as_str(), h.sources[0].role.as_str()),
        ("held", "validation")
    );
    let d = &h.sources[0].docs[0];
    assert!(d.tokens.len() <= 1024);
    assert!(std::fs::read_to_string(run.join("corpus/held.txt"))
        .unwrap()
        .starts_with(&d.text));
}

#[test]
fn bad_heldout_settings_are_refused_by_name() {
    for (extra, needle) in [
        (
            "\n[data.heldout]\ndocs_per_source = 12\n",
            "would hold out all of its 12 documents",
        ),
        ("\n[data.heldout]\ndocs_per_source = 0\n", "docs_per_source"),
        (
            "\n[data.heldout]\ndocs_per_source = 1\nmax_doc_tokens = 0\n",
            "max_doc_tokens",
        ),
        (
            "\n[data.heldout]\ndocs_per_source = 1\nseed = 2\n",
            "unknown field `seed`",
        ),
        (
            "\n[data.heldout]\ndocs_per_source = 1\nsources = [\"held\"]\n",
            "`held`, which no stage trains on",
        ),
        (
            "\n[data.heldout]\ndocs_per_source = 1\nsources = [\"nope\"]\n",
            "unknown source `nope`",
        ),
    ] {
        let t = tempfile::tempdir().unwrap();
        let run = make_run_with(t.path(), &format!("{CONFIG}{extra}"));
        let e = prepare(&run, &opts(1)).unwrap_err().to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
}

#[test]
fn heldout_sources_limit_withholding_to_the_listed_training_sources() {
    let t = tempfile::tempdir().unwrap();
    let cfg = format!("{CONFIG}\n[data.heldout]\ndocs_per_source = 12\nsources = [\"web\"]\n");
    let run = make_run_with(t.path(), &cfg);
    prepare(&run, &opts(2)).unwrap();
    let h = read_heldout(&run);
    let names: Vec<(&str, usize)> = h
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.docs.len()))
        .collect();
    // prose (12 documents) would be refused with 12 per source; it is not listed.
    assert_eq!(names, [("web", 12), ("held", 1)]);
}
