//! End-to-end tests of `prepare`: determinism across runs, threads and shard splits;
//! world-size independence; metadata round-trips; tamper detection; resume.

mod common;

use std::path::Path;

use glass_data::inspect::show;
use glass_data::pack::SegmentKind;
use glass_data::sources::{list_units, read_document};
use glass_data::{prepare, verify, DataConfig, PrepareOptions, PreparedData, Shard};

fn opts() -> PrepareOptions {
    PrepareOptions {
        threads: Some(2),
        ..Default::default()
    }
}

fn prepared(dir: &Path) -> std::path::PathBuf {
    let run = common::make_run(dir);
    let r = prepare(&run, &opts()).unwrap();
    assert!(r.complete);
    run
}

#[test]
fn two_prepares_give_identical_chunks() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, rb) = (prepared(a.path()), prepared(b.path()));
    let (fa, fb) = (common::data_files(&ra), common::data_files(&rb));
    assert!(fa
        .keys()
        .any(|k| k.ends_with(".tokens") && k.starts_with("chunks/")));
    assert_eq!(
        fa, fb,
        "every file under data/ is identical, manifest included"
    );
}

#[test]
fn thread_count_does_not_change_chunks() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ra = common::make_run(a.path());
    let rb = common::make_run(b.path());
    prepare(
        &ra,
        &PrepareOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    prepare(
        &rb,
        &PrepareOptions {
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(common::data_files(&ra), common::data_files(&rb));
}

#[test]
fn shard_jobs_combine_to_the_single_machine_chunks() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let single = prepared(a.path());
    let run = common::make_run(b.path());
    prepare(
        &run,
        &PrepareOptions {
            tokenizer_only: true,
            ..opts()
        },
    )
    .unwrap();
    for i in [2, 0, 1] {
        let r = prepare(
            &run,
            &PrepareOptions {
                shard: Some(Shard { index: i, count: 3 }),
                ..opts()
            },
        )
        .unwrap();
        assert!(!r.complete);
        assert_eq!(r.shards_tokenized, vec![i]);
    }
    let r = prepare(&run, &opts()).unwrap();
    assert_eq!(r.n_shards, 3);
    assert!(
        r.shards_tokenized.is_empty(),
        "combine reuses the shard stores"
    );
    assert_eq!(common::chunk_files(&single), common::chunk_files(&run));
    let m = PreparedData::open(&run).unwrap();
    assert!(m.manifest().sources.iter().all(|s| s.n_shards == 3));
    assert!(verify(&run).unwrap().mismatches.is_empty());
}

#[test]
fn show_is_the_same_batch_for_every_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let run = prepared(dir.path());
    let data = PreparedData::open(&run).unwrap();
    for step in [0, 7, data.n_steps() - 1] {
        let whole = show(&run, step, 0, 1).unwrap();
        assert_eq!(whole.rows.len(), data.rows_per_step());
        for w in [2, 4] {
            let cat: Vec<_> = (0..w)
                .flat_map(|r| show(&run, step, r, w).unwrap().rows)
                .collect();
            assert_eq!(cat, whole.rows, "step {step} world size {w}");
        }
        let mut batch = Vec::new();
        data.batch(step, &mut batch).unwrap();
        let ids: Vec<u32> = whole.rows.iter().flat_map(|r| r.ids.clone()).collect();
        assert_eq!(batch, ids);
        let mut rank = Vec::new();
        data.rows(step, 1, 3, &mut rank).unwrap();
        let (x, y) = data.rank_rows(1, 3).unwrap();
        assert_eq!(rank, batch[x * data.row_len()..y * data.row_len()]);
    }
    assert!(data.rows(data.n_steps(), 0, 1, &mut Vec::new()).is_err());
    assert!(data.rows(0, 2, 2, &mut Vec::new()).is_err());
}

#[test]
fn row_metadata_round_trips_to_the_source_text() {
    let dir = tempfile::tempdir().unwrap();
    let run = prepared(dir.path());
    let data = PreparedData::open(&run).unwrap();
    let cfg = DataConfig::load(&run).unwrap();
    let tok = data.tokenizer().unwrap();
    let views: Vec<_> = cfg
        .sources
        .iter()
        .map(|s| data.source_view(&s.name).ok())
        .collect();
    let units: Vec<_> = cfg
        .sources
        .iter()
        .map(|s| list_units(s, &run).unwrap())
        .collect();
    let sp = data.specials();
    let (mut checked_docs, mut fim_seen) = (std::collections::BTreeSet::new(), 0);
    let mut batch = Vec::new();
    for step in 0..data.n_steps() {
        data.batch(step, &mut batch).unwrap();
        for (r, segs) in data.batch_segments(step).unwrap().iter().enumerate() {
            let row = &batch[r * data.row_len()..(r + 1) * data.row_len()];
            let mut pos = 0;
            for s in segs {
                assert_eq!(s.pos, pos, "segments tile the row");
                pos += s.len;
                let got = &row[s.pos as usize..(s.pos + s.len) as usize];
                let view = views[s.source as usize].as_ref().unwrap();
                match s.kind {
                    SegmentKind::Text => {
                        let mut want = Vec::new();
                        view.doc_tokens(s.doc, s.doc_tok as u32, s.len, &mut want);
                        assert_eq!(got, &want[..]);
                        if checked_docs.insert((s.source, s.doc)) {
                            // The whole document decodes to exactly its source text.
                            let src = &cfg.sources[s.source as usize];
                            let rec = view.doc(s.doc);
                            let text = read_document(
                                src,
                                &units[s.source as usize][rec.unit as usize],
                                rec.line,
                            )
                            .unwrap();
                            let mut all = Vec::new();
                            view.doc_tokens(s.doc, 0, rec.n_tokens, &mut all);
                            assert_eq!(tok.decode(&all).unwrap(), text);
                            let seg_text = tok.decode(got).unwrap();
                            assert!(text.contains(&seg_text) || !seg_text.is_ascii());
                        }
                    }
                    SegmentKind::Eos => assert_eq!(got, [sp.eos]),
                    SegmentKind::FimPrefix => {
                        fim_seen += 1;
                        assert_eq!(got, [sp.fim_prefix.unwrap()]);
                    }
                    SegmentKind::FimMiddle => assert_eq!(got, [sp.fim_middle.unwrap()]),
                    SegmentKind::FimSuffix => assert_eq!(got, [sp.fim_suffix.unwrap()]),
                    SegmentKind::Bos => assert_eq!(Some(got[0]), sp.bos),
                }
            }
            assert_eq!(pos as usize, data.row_len());
        }
    }
    assert!(fim_seen > 0, "stage two applies FIM to code");
    assert!(checked_docs.len() > 20);
}

#[test]
fn stats_record_stages_epochs_and_shares() {
    let dir = tempfile::tempdir().unwrap();
    let run = prepared(dir.path());
    let (m, rows) = glass_data::inspect::stats(&run).unwrap();
    assert_eq!(m.stages.len(), 2);
    assert_eq!(m.stages[0].n_steps, 5000u64.div_ceil(8 * 32));
    let two: Vec<_> = rows.iter().filter(|r| r.stage == "two").collect();
    assert_eq!(two.len(), 3);
    let share: f64 = two.iter().map(|r| r.share).sum();
    assert!((share - 1.0).abs() < 1e-9);
    let prose = two.iter().find(|r| r.source == "prose").unwrap();
    assert!((prose.share - 0.5).abs() < 0.01);
    assert!(
        rows.iter().any(|r| r.epochs > 1.0),
        "a small source repeats and its epochs are counted"
    );
    let code = two.iter().find(|r| r.source == "code").unwrap();
    assert!(code.fim_docs > 0);
    let data = PreparedData::open(&run).unwrap();
    let mut v = Vec::new();
    assert_eq!(data.validation(&mut v).unwrap(), 4);
    assert_eq!(v.len(), 4 * data.row_len());
    assert_eq!(data.stage_of(0), "one");
    let web = m.sources.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.docs, 60);
    assert_eq!(web.units.len(), 2);
    let code_src = m.sources.iter().find(|s| s.name == "code").unwrap();
    assert_eq!(code_src.units.len(), 5, "README.md is not a .rs file");
}

#[test]
fn verify_reports_any_tampered_byte_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = prepared(dir.path());
    assert!(verify(&run).unwrap().mismatches.is_empty());
    let files = common::data_files(&run);
    let targets: Vec<&String> = files
        .keys()
        .filter(|k| *k != "manifest.json" && !k.ends_with(".key"))
        .collect();
    assert!(targets.len() > 10);
    for (i, name) in targets.iter().enumerate() {
        let p = run.join("data").join(name);
        let mut bytes = std::fs::read(&p).unwrap();
        let at = (i * 7919) % bytes.len();
        bytes[at] ^= 0x01;
        std::fs::write(&p, &bytes).unwrap();
        let r = verify(&run).unwrap();
        assert_eq!(r.mismatches.len(), 1, "{name}");
        assert_eq!(r.mismatches[0].path, format!("data/{name}"));
        bytes[at] ^= 0x01;
        std::fs::write(&p, &bytes).unwrap();
    }
    assert!(verify(&run).unwrap().mismatches.is_empty());
    std::fs::remove_file(run.join("data/chunks/chunk-00001.segments")).unwrap();
    assert_eq!(verify(&run).unwrap().mismatches[0].problem, "missing");
}

#[test]
fn interrupted_prepare_resumes_to_the_same_data() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = common::data_files(&prepared(a.path()));
    let run = prepared(b.path());
    // Simulate a crash: manifest gone, one chunk half-written, a stale temp file, a store unfinished.
    std::fs::remove_file(run.join("data/manifest.json")).unwrap();
    std::fs::remove_file(run.join("data/chunks/chunk-00002.json")).unwrap();
    std::fs::write(run.join("data/chunks/chunk-00002.tokens"), b"garbage").unwrap();
    std::fs::remove_file(run.join("data/tokens/web/00000-of-00001.json")).unwrap();
    assert!(PreparedData::open(&run).is_err(), "no manifest, no data");
    let r = prepare(&run, &opts()).unwrap();
    assert_eq!(r.chunks_written, 1);
    assert!(r.chunks_reused > 10);
    assert_eq!(r.shards_tokenized, vec![0]);
    assert_eq!(common::data_files(&run), reference);
}

#[test]
fn changing_the_config_rebuilds_and_verify_notices_edits() {
    let dir = tempfile::tempdir().unwrap();
    let run = prepared(dir.path());
    let cfg = common::CONFIG.replace("seed = 7", "seed = 8");
    std::fs::write(run.join("glass.toml"), &cfg).unwrap();
    let r = verify(&run).unwrap();
    assert_eq!(r.mismatches.len(), 1);
    assert_eq!(r.mismatches[0].path, "glass.toml");
    let r = prepare(&run, &opts()).unwrap();
    assert!(
        r.shards_tokenized.is_empty(),
        "the seed does not change tokenization"
    );
    assert!(r.chunks_written > 0);
    assert!(verify(&run).unwrap().mismatches.is_empty());
}
