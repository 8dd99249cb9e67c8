//! Bad input gets a clear error or a recorded, counted decision — never a panic and never
//! a silently different dataset.

mod common;

use glass_data::{prepare, DataConfig, DataError, PrepareOptions, PreparedData};

fn run_with(
    config: &str,
    tweak: impl FnOnce(&std::path::Path),
) -> (
    tempfile::TempDir,
    Result<glass_data::PrepareReport, DataError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let run = common::make_run_with(dir.path(), config);
    tweak(&run);
    let r = prepare(
        &run,
        &PrepareOptions {
            threads: Some(2),
            ..Default::default()
        },
    );
    (dir, r)
}

fn err_text(r: Result<glass_data::PrepareReport, DataError>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn malformed_jsonl_names_file_and_line_or_is_skipped_and_counted() {
    let corrupt = |run: &std::path::Path| {
        let p = run.join("corpus/web/part0.jsonl");
        let mut lines: Vec<String> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines[2] = "{\"id\": \"x\", \"text\": ".into();
        lines[5] = "{\"id\": \"y\"}".into();
        lines.insert(7, String::new());
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    };
    let (_d, r) = run_with(common::CONFIG, corrupt);
    let e = err_text(r);
    assert!(
        e.contains("corpus/web/part0.jsonl:3") && e.contains("malformed JSON"),
        "{e}"
    );

    let cfg = common::CONFIG.replace(
        "id_field = \"id\"",
        "id_field = \"id\"\nbad_lines = \"skip\"",
    );
    let (d, r) = run_with(&cfg, corrupt);
    r.unwrap();
    let m = PreparedData::open(d.path()).unwrap();
    let web = m
        .manifest()
        .sources
        .iter()
        .find(|s| s.name == "web")
        .unwrap();
    assert_eq!((web.bad_lines, web.blank_lines, web.docs), (2, 1, 58));
}

#[test]
fn invalid_utf8_is_an_error_or_skipped_and_counted() {
    let corrupt = |run: &std::path::Path| {
        std::fs::write(run.join("corpus/prose/work03.txt"), b"ok \xff\xfe bad").unwrap();
        let p = run.join("corpus/web/part1.jsonl");
        let mut b = std::fs::read(&p).unwrap();
        b.extend_from_slice(b"{\"id\": \"z\", \"text\": \"\xc3\x28\"}\n");
        std::fs::write(&p, b).unwrap();
    };
    let (_d, r) = run_with(common::CONFIG, corrupt);
    let e = err_text(r);
    assert!(
        e.contains("work03.txt") && e.contains("invalid UTF-8"),
        "{e}"
    );

    let cfg = common::CONFIG
        .replace(
            "paths = [\"corpus/prose\"]",
            "paths = [\"corpus/prose\"]\ninvalid_utf8 = \"skip\"",
        )
        .replace(
            "id_field = \"id\"",
            "id_field = \"id\"\ninvalid_utf8 = \"skip\"",
        );
    let (d, r) = run_with(&cfg, corrupt);
    r.unwrap();
    let m = PreparedData::open(d.path()).unwrap();
    let prose = m
        .manifest()
        .sources
        .iter()
        .find(|s| s.name == "prose")
        .unwrap();
    assert_eq!((prose.invalid_utf8, prose.docs), (1, 11));
    let web = m
        .manifest()
        .sources
        .iter()
        .find(|s| s.name == "web")
        .unwrap();
    assert_eq!((web.invalid_utf8, web.docs), (1, 60));
}

#[test]
fn missing_and_empty_sources_are_errors() {
    let (_d, r) = run_with(
        &common::CONFIG.replace("corpus/held.txt", "corpus/nope.txt"),
        |_| {},
    );
    assert!(err_text(r).contains("does not exist"));
    let (_d, r) = run_with(
        &common::CONFIG.replace("corpus/web/*.jsonl", "corpus/web/*.json"),
        |_| {},
    );
    assert!(err_text(r).contains("matched no files"));
    let (_d, r) = run_with(common::CONFIG, |run| {
        for e in std::fs::read_dir(run.join("corpus/code/src"))
            .unwrap()
            .flatten()
        {
            std::fs::write(e.path(), "").unwrap();
        }
    });
    let e = err_text(r);
    assert!(e.contains("`code`") && e.contains("no documents"), "{e}");
}

#[test]
fn config_errors_name_the_problem() {
    let bad = |from: &str, to: &str| {
        DataConfig::from_run_toml(&common::CONFIG.replace(from, to))
            .unwrap_err()
            .to_string()
    };
    let e = bad("seed = 7", "seed = 7\nseeed = 8");
    assert!(e.contains("seeed"), "{e}");
    let e = bad("text_field = \"text\"", "text_field = \"text\"\npathz = []");
    assert!(e.contains("pathz"), "{e}");
    let e = bad("prose = 0.5, web = 0.3", "prose = 0.6, web = 0.3");
    assert!(e.contains("sum to"), "{e}");
    let e = bad(
        "weights = { prose = 1.0 }",
        "weights = { prose = 1.0, poetry = 0.0 }",
    );
    assert!(e.contains("poetry"), "{e}");
    let e = bad("vocab_size = 400", "vocab_size = 70000\n[data.x]");
    assert!(e.contains('x'), "{e}");
    let e = DataConfig::from_run_toml(
        &common::CONFIG
            .replace("vocab_size = 400", "vocab_size = 70000")
            .replace("seq_len = 31", "seq_len = 31\ntoken_dtype = \"u16\""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("u16"), "{e}");
    let e = bad("sources = [\"held\"]", "sources = [\"prose\"]");
    assert!(e.contains("held out"), "{e}");
    let e = bad("fim_rate = { code = 0.5 }", "fim_rate = { code = 1.5 }");
    assert!(e.contains("fim_rate"), "{e}");
    assert!(DataConfig::from_run_toml("[model]\nx = 1\n")
        .unwrap_err()
        .to_string()
        .contains("[data]"));
    assert!(DataConfig::from_run_toml("not toml [").is_err());
}

/// A word-level tokenizer.json whose EOS id does not fit u16.
const BIG_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"[UNK]":0,"the":1,"<|endoftext|>":70000},"unk_token":"[UNK]"}}"#;

#[test]
fn loaded_tokenizer_too_large_for_the_dtype_is_an_error_and_fim_sentinels_are_added() {
    let cfg = common::CONFIG.replace("vocab_size = 400", "path = \"tok.json\"");
    let with_tok =
        |run: &std::path::Path| std::fs::write(run.join("tok.json"), BIG_TOKENIZER).unwrap();
    let (_d, r) = run_with(
        &cfg.replace("seq_len = 31", "seq_len = 31\ntoken_dtype = \"u16\""),
        with_tok,
    );
    let e = err_text(r);
    assert!(e.contains("70001") && e.contains("u16"), "{e}");

    let (d, r) = run_with(&cfg, with_tok);
    r.unwrap();
    let m = PreparedData::open(d.path()).unwrap();
    let t = &m.manifest().tokenizer;
    assert_eq!(t.dtype, glass_data::dtype::TokenDtype::U32);
    assert_eq!(
        t.added_tokens,
        ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
    );
    assert!(t.specials.fim_prefix.is_some());
    assert!(glass_data::verify(d.path()).unwrap().mismatches.is_empty());
}

/// A document longer than 16 MiB (`MAX_DOCUMENT_BYTES`) is never tokenized: the HF
/// tokenizer would need about 50 times its size. It is an error naming the file and line,
/// or with `bad_lines = "skip"` skipped and counted; a line too long to read is never held
/// in memory; a whole-file document over the limit names its file.
#[test]
fn documents_over_the_limit_are_refused_by_line_or_skipped_and_counted() {
    // The documented limits (docs/data-format.md), written out so the test pins them.
    const MAX_DOCUMENT_BYTES: usize = 16 << 20;
    const MAX_JSONL_LINE_BYTES: usize = 64 << 20;
    let big_line = |bytes: usize| {
        // Non-ASCII text, the kind the HF tokenizer handles (not the ASCII fast path).
        let text = "é".repeat(bytes / 2 + 1);
        serde_json::json!({ "id": "big", "text": text }).to_string()
    };
    let with_line = |line: String| {
        move |run: &std::path::Path| {
            let p = run.join("corpus/web/part0.jsonl");
            let mut lines: Vec<String> = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            lines[3] = line;
            std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        }
    };
    let (_d, r) = run_with(common::CONFIG, with_line(big_line(MAX_DOCUMENT_BYTES)));
    let e = err_text(r);
    assert!(
        e.contains("corpus/web/part0.jsonl:4") && e.contains("16 MiB") && e.contains("bad_lines"),
        "{e}"
    );
    // A line past the read limit: refused the same way, without being parsed.
    let (_d, r) = run_with(
        common::CONFIG,
        with_line("x".repeat(MAX_JSONL_LINE_BYTES + 10)),
    );
    let e = err_text(r);
    assert!(
        e.contains("corpus/web/part0.jsonl:4") && e.contains("a line of"),
        "{e}"
    );

    let cfg = common::CONFIG.replace(
        "id_field = \"id\"",
        "id_field = \"id\"\nbad_lines = \"skip\"",
    );
    let (d, r) = run_with(&cfg, with_line(big_line(MAX_DOCUMENT_BYTES)));
    r.unwrap();
    let m = PreparedData::open(d.path()).unwrap();
    let web = m
        .manifest()
        .sources
        .iter()
        .find(|s| s.name == "web")
        .unwrap();
    assert_eq!((web.bad_lines, web.docs), (1, 59));

    // Whole-file documents: the file is named.
    let (_d, r) = run_with(common::CONFIG, |run| {
        let p = run.join("corpus/prose/work05.txt");
        std::fs::write(p, "word ".repeat(MAX_DOCUMENT_BYTES / 5 + 1)).unwrap();
    });
    let e = err_text(r);
    assert!(e.contains("work05.txt") && e.contains("16 MiB"), "{e}");

    // Cut into pieces (`piece_bytes`), a file may be longer, but no piece may: one
    // without a line end past the limit names the file and the piece's line.
    let cfg = common::CONFIG.replace(
        "paths = [\"corpus/prose\"]",
        "paths = [\"corpus/prose\"]\npiece_bytes = 4096",
    );
    let (_d, r) = run_with(&cfg, |run| {
        let p = run.join("corpus/prose/work05.txt");
        // 1000 short lines (the first piece ends with line 820), then no line end.
        let text = "line\n".repeat(1000) + &"x".repeat(MAX_DOCUMENT_BYTES + 1);
        std::fs::write(p, text).unwrap();
    });
    let e = err_text(r);
    assert!(
        e.contains("work05.txt") && e.contains("piece from line 821") && e.contains("16 MiB"),
        "{e}"
    );
}

/// The tokenizer itself refuses text past the limit, whoever hands it over (prompts,
/// evaluation contexts): a clear error, not ~50× the text in working memory.
#[test]
fn the_tokenizer_refuses_text_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::make_run(dir.path());
    prepare(&run, &PrepareOptions::default()).unwrap();
    let tok = PreparedData::open(&run).unwrap().tokenizer().unwrap();
    let text = "é".repeat((16 << 20) / 2 + 1);
    let e = tok.encode(&text).unwrap_err().to_string();
    assert!(e.contains("16 MiB"), "{e}");
    assert!(!tok.encode("é".repeat(1000).as_str()).unwrap().is_empty());
}
