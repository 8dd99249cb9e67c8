//! `[data.dedup]`: planted exact and near duplicates are removed (and only they), the
//! removed-documents file names each with the document it duplicates, packing never
//! draws a removed document, the result does not depend on the thread count, and bad
//! configs and a source deduplicated away are refused by name.

use std::path::{Path, PathBuf};

use glass_data::dedup::RemovedDoc;
use glass_data::prepare::{prepare, PrepareOptions};
use glass_data::{Manifest, PreparedData};

/// A paragraph of `n` words drawn from a large vocabulary, so that distinct paragraphs
/// share almost no 5-word shingles.
fn paragraph(seed: u64, n: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("w{}", x % 5000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const CONFIG: &str = r#"
[data]
seed = 3
seq_len = 15
rows_per_step = 4
steps_per_chunk = 50

[data.tokenizer]
vocab_size = 300

[[data.sources]]
name = "web"
kind = "jsonl"
paths = ["corpus/web.jsonl"]
text_field = "text"

[[data.sources]]
name = "books"
kind = "text"
paths = ["corpus/books"]

[[data.stages]]
name = "one"
tokens = 12800
weights = { web = 0.5, books = 0.5 }
"#;

const DEDUP: &str = "\n[data.dedup]\n";

/// `web` lines: 1 A, 2 B, 3 A re-cased and re-spaced (exact duplicate of 1), 4 B with
/// three words changed (near duplicate of 2), 5 C (distinct). `books`: one file holding
/// C exactly (a duplicate across sources) and one distinct file D.
fn make_run(dir: &Path, config: &str) -> PathBuf {
    let c = dir.join("corpus");
    std::fs::create_dir_all(c.join("books")).unwrap();
    let a = paragraph(1, 300);
    let b = paragraph(2, 300);
    let mut b_near: Vec<String> = b.split(' ').map(str::to_string).collect();
    for i in [40, 150, 260] {
        b_near[i] = "changed".into();
    }
    let cc = paragraph(3, 300);
    let a_again = a.to_uppercase().replace(' ', "  \n ");
    let mut web = String::new();
    for t in [&a, &b, &a_again, &b_near.join(" "), &cc] {
        web.push_str(&serde_json::json!({ "text": t }).to_string());
        web.push('\n');
    }
    std::fs::write(c.join("web.jsonl"), web).unwrap();
    std::fs::write(c.join("books/c.txt"), &cc).unwrap();
    std::fs::write(c.join("books/d.txt"), paragraph(4, 300)).unwrap();
    std::fs::write(dir.join("glass.toml"), config).unwrap();
    dir.to_path_buf()
}

fn opts(threads: usize) -> PrepareOptions {
    PrepareOptions {
        threads: Some(threads),
        ..Default::default()
    }
}

fn removed(run: &Path) -> Vec<RemovedDoc> {
    std::fs::read_to_string(run.join("data/dedup_removed.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn planted_duplicates_are_removed_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path(), &format!("{CONFIG}{DEDUP}"));
    prepare(&run, &opts(1)).unwrap();
    let r = removed(&run);
    let got: Vec<_> = r
        .iter()
        .map(|d| {
            (
                d.filter.as_str(),
                d.doc.source.as_str(),
                d.doc.doc,
                d.doc.line,
                d.kept.as_ref().unwrap().source.as_str(),
                d.kept.as_ref().unwrap().doc,
                d.kept.as_ref().unwrap().line,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("exact", "web", 2, 3, "web", 0, 1),
            ("near", "web", 3, 4, "web", 1, 2),
            ("exact", "books", 0, 0, "web", 4, 5),
        ]
    );
    assert_eq!(r[0].doc.file, "corpus/web.jsonl");
    assert_eq!(r[2].doc.file, "corpus/books/c.txt");
    assert!(r[0].jaccard.is_none());
    let j = r[1].jaccard.unwrap();
    assert!(j > 0.8 && j < 1.0, "{j}");
    // Byte ranges are those of the records: line 3 starts after lines 1 and 2.
    let web = std::fs::read(run.join("corpus/web.jsonl")).unwrap();
    let line3 = web.split(|&b| b == b'\n').nth(2).unwrap();
    let start = r[0].doc.byte_start as usize;
    assert_eq!(&web[start..start + line3.len()], line3);
    assert!(r[0].doc.byte_len as usize >= line3.len());

    let m = Manifest::load(&run).unwrap();
    let d = m.dedup.as_ref().unwrap();
    assert_eq!(d.seed, 3);
    let web = &d.sources[0];
    assert_eq!(
        (
            web.name.as_str(),
            web.docs_before,
            web.exact.docs,
            web.near.docs,
            web.docs_after
        ),
        ("web", 5, 1, 1, 3)
    );
    assert_eq!(
        web.tokens_before - web.exact.tokens - web.near.tokens,
        web.tokens_after
    );
    let books = &d.sources[1];
    assert_eq!(
        (books.exact.docs, books.near.docs, books.docs_after),
        (1, 0, 1)
    );
    // The removed-documents file is hashed in the manifest and verified with the rest.
    assert!(m.files.iter().any(|f| f.path == "dedup_removed.jsonl"));
    assert!(glass_data::verify(&run).unwrap().mismatches.is_empty());

    // No row holds a removed document; every kept one is drawn.
    let data = PreparedData::open(&run).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for step in 0..data.n_steps() {
        for row in data.batch_segments(step).unwrap() {
            for s in row {
                seen.insert((s.source, s.doc));
            }
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![(0, 0), (0, 1), (0, 4), (1, 1)]
    );
}

#[test]
fn dedup_is_the_same_for_one_and_two_threads_and_off_by_default() {
    let (t1, t2, t3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = make_run(t1.path(), &format!("{CONFIG}{DEDUP}"));
    let b = make_run(t2.path(), &format!("{CONFIG}{DEDUP}"));
    prepare(&a, &opts(1)).unwrap();
    prepare(&b, &opts(2)).unwrap();
    let files = |run: &Path| {
        let mut out = std::collections::BTreeMap::new();
        for e in walk(&run.join("data")) {
            let rel = e.strip_prefix(run).unwrap().to_path_buf();
            out.insert(rel, std::fs::read(&e).unwrap());
        }
        out
    };
    assert_eq!(files(&a), files(&b));
    // A second prepare (everything reused) decides the same.
    let before = std::fs::read(a.join("data/manifest.json")).unwrap();
    prepare(&a, &opts(2)).unwrap();
    assert_eq!(std::fs::read(a.join("data/manifest.json")).unwrap(), before);

    // Without the table nothing is removed and the manifest has no dedup record.
    let c = make_run(t3.path(), CONFIG);
    prepare(&c, &opts(1)).unwrap();
    assert!(Manifest::load(&c).unwrap().dedup.is_none());
    assert!(!c.join("data/dedup_removed.jsonl").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_typo_in_the_dedup_table_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path(), &format!("{CONFIG}{DEDUP}exatc = true\n"));
    let e = prepare(&run, &opts(1)).unwrap_err().to_string();
    assert!(e.contains("exatc"), "{e}");
    let run = make_run(
        tmp.path(),
        &format!("{CONFIG}{DEDUP}sources = [\"nope\"]\n"),
    );
    let e = prepare(&run, &opts(1)).unwrap_err().to_string();
    assert!(e.contains("[data.dedup]") && e.contains("nope"), "{e}");
    let run = make_run(tmp.path(), &format!("{CONFIG}{DEDUP}bands = 0\n"));
    let e = prepare(&run, &opts(1)).unwrap_err().to_string();
    assert!(e.contains("bands"), "{e}");
}

#[test]
fn a_source_deduplicated_away_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path(), &format!("{CONFIG}{DEDUP}"));
    // books/d.txt becomes a copy of web's line 2: every book duplicates a web document.
    let b = paragraph(2, 300);
    std::fs::write(run.join("corpus/books/d.txt"), b).unwrap();
    let e = prepare(&run, &opts(1)).unwrap_err().to_string();
    assert!(
        e.contains("source `books`") && e.contains("removed every one of its 2 documents"),
        "{e}"
    );
    assert!(!run.join("data/manifest.json").exists());
}

/// A branch of `parent` at step 100 (a chunk boundary) whose config is the parent's
/// (`CONFIG` + `dedup`) with the weights changed to 0.7 / 0.3.
fn reweighted_branch(branch: &Path, parent: &Path, dedup: &str) -> PathBuf {
    std::fs::create_dir_all(branch).unwrap();
    let cfg = format!("{CONFIG}{dedup}").replace(
        "weights = { web = 0.5, books = 0.5 }",
        "weights = { web = 0.7, books = 0.3 }",
    );
    std::fs::write(branch.join("glass.toml"), cfg).unwrap();
    glass_data::branch::link(branch, parent, 100).unwrap();
    branch.to_path_buf()
}

#[test]
fn a_reweighted_branch_leaves_out_the_parents_removed_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = make_run(&tmp.path().join("parent"), &format!("{CONFIG}{DEDUP}"));
    prepare(&parent, &opts(1)).unwrap();
    let removed: Vec<(String, u64)> =
        glass_data::dedup::read_removed(&parent, &parent.join("data/dedup_removed.jsonl"))
            .unwrap()
            .docs;
    assert_eq!(
        removed,
        vec![("web".into(), 2), ("web".into(), 3), ("books".into(), 0)]
    );
    // The branch re-weights the sources from step 100 (a chunk boundary) on: those rows
    // are packed anew, from the parent's kept documents only.
    let branch = reweighted_branch(&tmp.path().join("branch"), &parent, DEDUP);
    let data = PreparedData::open(&branch).unwrap();
    let (p, b) = (PreparedData::open(&parent).unwrap(), &data);
    let mut seen = std::collections::BTreeSet::new();
    let mut web_rows = 0;
    for step in 0..b.n_steps() {
        let rows = b.batch_segments(step).unwrap();
        if step < 100 {
            assert_eq!(rows, p.batch_segments(step).unwrap(), "step {step}");
        } else {
            web_rows += rows.iter().filter(|r| r[0].source == 0).count();
        }
        for row in rows {
            for s in row {
                seen.insert((s.source, s.doc));
            }
        }
    }
    assert_eq!(web_rows, 280, "70% of the 400 re-weighted rows");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![(0, 0), (0, 1), (0, 4), (1, 1)]
    );
}

const SUBSTRING: &str = "\n[data.dedup]\nexact = false\nnear = false\nsubstring = 8\n";

/// The stored tokens of every document of the deduplicated sources, in recorded order
/// (sources in config order, documents in store order), read from the stores.
fn recorded_docs(run: &Path) -> Vec<(u32, u64, Vec<u32>)> {
    let data = PreparedData::open(run).unwrap();
    let mut out = Vec::new();
    for (s, name) in ["web", "books"].iter().enumerate() {
        let v = data.source_view(name).unwrap();
        for d in 0..v.n_docs() {
            let mut t = Vec::new();
            v.doc_tokens(d, 0, v.doc_len(d), &mut t);
            out.push((s as u32, d, t));
        }
    }
    out
}

/// The text segments of `step`: `(row in the step, segment, index into docs)`.
fn text_segments(
    data: &PreparedData,
    step: u64,
    docs: &[(u32, u64, Vec<u32>)],
) -> Vec<(usize, glass_data::pack::Segment, usize)> {
    let mut out = Vec::new();
    for (r, row) in data.batch_segments(step).unwrap().into_iter().enumerate() {
        for s in row {
            if s.kind == glass_data::pack::SegmentKind::Text {
                let i = docs
                    .iter()
                    .position(|d| (d.0, d.1) == (s.source, s.doc))
                    .unwrap();
                out.push((r, s, i));
            }
        }
    }
    out
}

/// The brute-force rule: token `t` of a document is cut when a window of `k` tokens
/// covering it occurs at an earlier place of the recorded order.
fn brute_cuts(docs: &[(u32, u64, Vec<u32>)], k: usize) -> Vec<Vec<bool>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, _, d) in docs {
        let mut cut = vec![false; d.len()];
        for p in 0..d.len().saturating_sub(k - 1) {
            if !seen.insert(&d[p..p + k]) {
                cut[p..p + k].iter_mut().for_each(|c| *c = true);
            }
        }
        out.push(cut);
    }
    out
}

#[test]
fn substring_dedup_cuts_exactly_the_repeated_spans_and_packs_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(&tmp.path().join("a"), &format!("{CONFIG}{SUBSTRING}"));
    prepare(&run, &opts(1)).unwrap();
    let docs = recorded_docs(&run);
    let want = brute_cuts(&docs, 8);
    let index = |source: &str, doc: u64| {
        let s = ["web", "books"].iter().position(|n| *n == source).unwrap() as u32;
        docs.iter().position(|d| (d.0, d.1) == (s, doc)).unwrap()
    };
    // The file's spans and emptied documents are the brute force's cut tokens.
    let mut got: Vec<Vec<bool>> = docs.iter().map(|d| vec![false; d.2.len()]).collect();
    let lines = removed(&run);
    assert!(lines.iter().all(|l| l.filter == "substring"));
    for l in &lines {
        let i = index(&l.doc.source, l.doc.doc);
        let [a, b] = l.span.unwrap_or([0, docs[i].2.len() as u32]);
        assert_eq!(l.tokens, (b - a) as u64);
        got[i][a as usize..b as usize]
            .iter_mut()
            .for_each(|c| *c = true);
        // The named first occurrence holds the span's first window, earlier.
        let kept = l.kept.as_ref().unwrap();
        let j = index(&kept.source, kept.doc);
        let at = l.kept_at.unwrap() as usize;
        assert_eq!(docs[i].2[a as usize..a as usize + 8], docs[j].2[at..at + 8]);
        assert!((j, at) < (i, a as usize));
    }
    assert_eq!(got, want);
    // What was planted: web line 4 repeats most of line 2 (three words changed), and
    // books/c.txt is web line 5 whole, so it is emptied and removed.
    let m = Manifest::load(&run).unwrap();
    let d = m.dedup.as_ref().unwrap();
    let (web, books) = (&d.sources[0], &d.sources[1]);
    let (ws, bs) = (web.substring.unwrap(), books.substring.unwrap());
    assert!(ws.spans >= 3 && ws.docs_cut >= 1, "{ws:?}");
    let near_line = &want[index("web", 3)];
    assert!(near_line.iter().filter(|&&c| c).count() * 10 > near_line.len() * 9);
    assert_eq!((bs.docs_emptied, books.docs_after), (1, 1));
    assert_eq!(web.tokens_before - ws.tokens, web.tokens_after);
    assert_eq!(books.tokens_before - bs.tokens, books.tokens_after);
    assert!(glass_data::verify(&run).unwrap().mismatches.is_empty());

    // Every text token packed is the store's token at the segment's offset, and none is
    // a cut one; every token left is packed.
    let data = PreparedData::open(&run).unwrap();
    let mut packed: Vec<Vec<bool>> = docs.iter().map(|d| vec![false; d.2.len()]).collect();
    let mut tokens = Vec::new();
    for step in 0..data.n_steps() {
        tokens.clear();
        data.batch(step, &mut tokens).unwrap();
        for (r, s, i) in text_segments(&data, step, &docs) {
            for t in 0..s.len as usize {
                let at = s.doc_tok as usize + t;
                assert!(
                    !want[i][at],
                    "cut token {at} of document {:?} packed",
                    (s.source, s.doc)
                );
                assert_eq!(
                    tokens[r * data.row_len() + s.pos as usize + t],
                    docs[i].2[at]
                );
                packed[i][at] = true;
            }
        }
    }
    for (i, d) in docs.iter().enumerate() {
        for t in 0..d.2.len() {
            assert_eq!(
                packed[i][t],
                !want[i][t],
                "token {t} of document {:?}",
                (d.0, d.1)
            );
        }
    }

    // The same bits on two threads; and a branch re-packs from the parent's cuts.
    let twin = make_run(&tmp.path().join("b"), &format!("{CONFIG}{SUBSTRING}"));
    prepare(&twin, &opts(2)).unwrap();
    for f in ["data/manifest.json", "data/dedup_removed.jsonl"] {
        assert_eq!(
            std::fs::read(run.join(f)).unwrap(),
            std::fs::read(twin.join(f)).unwrap()
        );
    }
    let branch = reweighted_branch(&tmp.path().join("branch"), &run, SUBSTRING);
    let b = PreparedData::open(&branch).unwrap();
    for step in 100..b.n_steps() {
        for (_, s, i) in text_segments(&b, step, &docs) {
            assert!((0..s.len as usize).all(|t| !want[i][s.doc_tok as usize + t]));
        }
    }
}

#[test]
fn substring_span_length_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = make_run(tmp.path(), &format!("{CONFIG}{DEDUP}substring = 4\n"));
    let e = prepare(&run, &opts(1)).unwrap_err().to_string();
    assert!(e.contains("substring = 4"), "{e}");
}
