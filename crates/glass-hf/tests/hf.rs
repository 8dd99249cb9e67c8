//! Import/export against folders written by transformers and torch
//! (tools/fixtures/make_hf_fixtures.py): logits parity, round trips, hostile and broken
//! inputs. No Python needed.

use std::path::{Path, PathBuf};

use glass_engine::{Model, ModelConfig};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

struct Reference {
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
    logits: std::collections::BTreeMap<String, Vec<f64>>,
    variants: serde_json::Value,
    tokenizer_checks: serde_json::Value,
    llama_tokenizer_checks: serde_json::Value,
}

fn reference() -> Reference {
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids_t = st.tensor("input_ids").unwrap();
    let (batch, seq) = (ids_t.shape()[0], ids_t.shape()[1]);
    let ids = ids_t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let mut logits = std::collections::BTreeMap::new();
    for (name, v) in st.tensors() {
        if let Some(set) = name.strip_prefix("logits.") {
            let vals = v
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            logits.insert(set.to_string(), vals);
        }
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap();
    Reference {
        ids,
        batch,
        seq,
        logits,
        variants: json["variants"].clone(),
        tokenizer_checks: json["tokenizer_checks"].clone(),
        llama_tokenizer_checks: json["llama_tokenizer_checks"].clone(),
    }
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    num / den
}

fn logits(model: &mut Model, r: &Reference) -> Vec<f32> {
    model.forward_logits(&r.ids, r.batch, r.seq).unwrap()
}

const IMPORTABLE: &[&str] = &[
    "st",
    "st-sharded",
    "bin",
    "bin-sharded",
    "bin-views",
    "bf16",
    "f16-bin",
    "tied",
    "tied-bin",
    "llama-tok",
];

#[test]
fn every_form_matches_transformers_logits() {
    let r = reference();
    let mut base_bits: Option<Vec<u32>> = None;
    for v in IMPORTABLE {
        let (mut model, stats, _, _) = glass_hf::load_folder(&fixtures().join(v)).unwrap();
        let set = r.variants[v].as_str().unwrap();
        let err = rel_err(&logits(&mut model, &r), &r.logits[set]);
        assert!(err <= 1e-4, "{v}: relative error {err:e}");
        assert!(
            err > 0.0,
            "{v}: a float32 engine cannot match float64 exactly"
        );
        assert!(stats.tensors >= 20, "{v}");
        if set == "base" {
            // Every f32 form (safetensors, pickles, shards, strided views) gives the same bits.
            let bits: Vec<u32> = model.params.iter().map(|x| x.to_bits()).collect();
            match &base_bits {
                None => base_bits = Some(bits),
                Some(b) => assert!(*b == bits, "{v}: weights differ from st"),
            }
        }
    }
    // The half-precision references differ from the f32 one: a reader ignoring the dtype
    // (or rounding twice) could not pass both.
    let d = rel_err(
        &r.logits["bf16"]
            .iter()
            .map(|x| *x as f32)
            .collect::<Vec<_>>(),
        &r.logits["base"],
    );
    assert!(d > 1e-3, "{d}");
}

#[test]
fn tokenizer_encodes_like_transformers() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    glass_hf::import(&fixtures().join("st"), &run).unwrap();
    let tok = glass_run::run_tokenizer(&run).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut saw_special = false;
    for c in r.tokenizer_checks.as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let got = tok.encode(text).unwrap();
        // Glass encodes special-token strings inside text as plain text (a document can
        // never inject an EOS): transformers' `split_special_tokens=True`.
        assert_eq!(got, ids(&c["ids_split_special"]), "{c}");
        if text.contains("</s>") {
            saw_special = true;
            assert_ne!(got, ids(&c["ids"]), "{c}");
        } else {
            assert_eq!(got, ids(&c["ids"]), "{c}");
        }
    }
    assert!(saw_special);
    assert_eq!(tok.specials().eos, 1);
    assert_eq!(tok.specials().bos, Some(0));
}

fn bits(m: &Model) -> Vec<u32> {
    m.params.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn import_export_reimport_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["st", "tied", "bin-sharded"] {
        let run = dir.path().join(format!("run-{v}"));
        let rep = glass_hf::import(&fixtures().join(v), &run).unwrap();
        let report = glass_run::verify_run(&run).unwrap();
        assert!(report.ok(), "{v}: {:?}", report.problems);
        assert_eq!(
            report.checkpoint_files, 4,
            "model, optimizer, state, import.json"
        );
        let (orig, _) = glass_run::load_model(&run, Some(0)).unwrap();
        for shard in ["5GB", "30KB"] {
            let out = dir.path().join(format!("out-{v}-{shard}"));
            let opts = glass_hf::ExportOptions {
                max_shard_bytes: glass_hf::parse_size(shard).unwrap(),
                ..Default::default()
            };
            let e = glass_hf::export(&run, &out, &opts).unwrap();
            assert!(e.folds.is_empty());
            assert_eq!(
                out.join("model.safetensors.index.json").exists(),
                shard == "30KB",
                "{v} {shard}"
            );
            let (back, _, _, _) = glass_hf::load_folder(&out).unwrap();
            assert_eq!(bits(&back), bits(&orig), "{v} {shard}");
            assert_eq!(back.cfg, orig.cfg);
            // The re-imported run's checkpoint 0 is byte-identical to the first import's.
            let run2 = dir.path().join(format!("run2-{v}-{shard}"));
            glass_hf::import(&out, &run2).unwrap();
            let sha = |r: &Path| {
                glass_run::RunManifest::require(r).unwrap().checkpoints[0].files[0]
                    .sha256
                    .clone()
            };
            assert_eq!(sha(&run2), sha(&run), "{v} {shard}");
            // The card and the record list every file's hash.
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join("glass-export.json")).unwrap())
                    .unwrap();
            for f in rec["files"].as_array().unwrap() {
                let p = out.join(f["path"].as_str().unwrap());
                let (sha, _) = glass_io::atomic::sha256_file(&p).unwrap();
                assert_eq!(sha, f["sha256"].as_str().unwrap());
            }
            let card = std::fs::read_to_string(out.join("README.md")).unwrap();
            assert!(
                card.contains(&rep.checkpoint_sha256),
                "card names the checkpoint"
            );
        }
    }
}

#[test]
fn bf16_export_rounds_each_weight_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    glass_hf::import(&fixtures().join("st"), &run).unwrap();
    let out = dir.path().join("out");
    let opts = glass_hf::ExportOptions {
        dtype: Some(glass_hf::ExportDtype::BF16),
        ..Default::default()
    };
    glass_hf::export(&run, &out, &opts).unwrap();
    let (orig, _) = glass_run::load_model(&run, Some(0)).unwrap();
    let (back, stats, _, _) = glass_hf::load_folder(&out).unwrap();
    assert_eq!(stats.dtypes, vec!["bf16".to_string()]);
    for (a, b) in orig.params.iter().zip(&back.params) {
        assert_eq!(half::bf16::from_f32(*a).to_f32().to_bits(), b.to_bits());
    }
}

/// A run with muP knobs (untied and tied), created through the run layer directly.
fn mup_run(dir: &Path, name: &str, tied: bool) -> (PathBuf, Model) {
    let base = dir.join(format!("{name}-base"));
    glass_hf::import(&fixtures().join("st"), &base).unwrap();
    let text = std::fs::read_to_string(base.join("glass.toml")).unwrap();
    let text = text
        .replace(
            "tie_embeddings = false\n",
            &format!(
                "tie_embeddings = {tied}\n\n[model.mup]\nembedding_multiplier = {}\noutput_logit_multiplier = 0.37\nattention_scale = \"inv_d\"\n",
                if tied { 1.0 } else { 2.5 }
            ),
        );
    let cfg = glass_run::RunConfig::parse(&text, Path::new("glass.toml")).unwrap();
    let model = Model::new(&cfg.model, 3).unwrap();
    let run = dir.join(name);
    glass_run::create_imported_run(
        &run,
        &glass_run::ImportedRun {
            config_text: &text,
            model: &model,
            tokenizer_json: &std::fs::read(base.join("tokenizer.json")).unwrap(),
            record_json: b"{}\n",
            source_dir: "test",
        },
    )
    .unwrap();
    (run, model)
}

#[test]
fn mup_scales_are_folded_exactly() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let (run, mut model) = mup_run(dir.path(), &format!("mup-{tied}"), tied);
        let out = dir.path().join(format!("mup-out-{tied}"));
        let e = glass_hf::export(&run, &out, &Default::default()).unwrap();
        assert_eq!(e.folds.len(), if tied { 2 } else { 3 }, "{:?}", e.folds);
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.contains("folded into q_proj.weight"), "{card}");
        // The exported folder, read as plain LLaMA, computes the muP model's function.
        let (mut back, _, _, _) = glass_hf::load_folder(&out).unwrap();
        assert_eq!(back.cfg.mup, Default::default());
        let want: Vec<f64> = logits(&mut model, &r).iter().map(|x| *x as f64).collect();
        let err = rel_err(&logits(&mut back, &r), &want);
        assert!(err < 1e-5, "tied {tied}: {err:e}");
    }
}

#[test]
fn inexpressible_architectures_are_refused() {
    let ids = glass_hf::hf_config::SpecialTokenIds::default();
    // LayerNorm without CrystalCoder's biases: neither LLaMA nor CrystalCoder.
    let layernorm = ModelConfig {
        norm: glass_engine::NormKind::LayerNorm,
        ..ModelConfig::preset("tiny").unwrap()
    };
    let e = glass_hf::hf_config::to_hf(&layernorm, ids, "float32")
        .unwrap_err()
        .to_string();
    assert!(e.contains("layernorm"), "{e}");
    let partial = ModelConfig {
        rotary_fraction: 0.5,
        ..ModelConfig::preset("tiny").unwrap()
    };
    let e = glass_hf::hf_config::to_hf(&partial, ids, "float32")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotary_fraction"), "{e}");
    let mut tied = ModelConfig::preset("tiny").unwrap();
    tied.tie_embeddings = true;
    tied.mup.embedding_multiplier = 2.0;
    let e = glass_hf::hf_config::to_hf(&tied, ids, "float32")
        .unwrap_err()
        .to_string();
    assert!(e.contains("embedding_multiplier"), "{e}");
    // Export through the run layer refuses before writing anything.
    let dir = tempfile::tempdir().unwrap();
    let (run, _) = mup_run(dir.path(), "ok", false);
    let text = std::fs::read_to_string(run.join("glass.toml"))
        .unwrap()
        .replace("rotary_fraction = 1.0", "rotary_fraction = 0.5");
    std::fs::write(run.join("glass.toml"), text).unwrap();
    let out = dir.path().join("never");
    let e = glass_hf::export(&run, &out, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotary"), "{e}");
    assert!(!out.exists());
    assert_no_temp(dir.path());
}

/// Copies a fixture folder into `dir` for corruption.
fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn assert_no_temp(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with('.'), "leftover temporary {n}");
    }
}

/// Imports `src` expecting failure; checks nothing was created and returns the message.
fn import_err(src: &Path, dir: &Path) -> String {
    let run = dir.join("new-run");
    let e = glass_hf::import(src, &run).unwrap_err().to_string();
    assert!(!run.exists(), "a failed import left {}", run.display());
    assert_no_temp(dir);
    e
}

#[test]
fn hostile_pickle_is_refused_and_runs_nothing() {
    let marker = Path::new("/tmp/glass-hf-pwned");
    let _ = std::fs::remove_file(marker);
    let dir = tempfile::tempdir().unwrap();
    let e = import_err(&fixtures().join("evil-bin"), dir.path());
    assert!(
        e.contains("posix.system") && e.contains("pytorch_model.bin"),
        "{e}"
    );
    assert!(!marker.exists(), "the pickle's payload ran");
    // builtins.eval through STACK_GLOBAL (protocol 4), in a real zip archive.
    let src = copy_fixture("bin", dir.path());
    let evil: &[u8] = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x0b__import__('os')\x85R.";
    let f = std::fs::File::create(src.join("pytorch_model.bin")).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", o).unwrap();
    std::io::Write::write_all(&mut z, evil).unwrap();
    z.finish().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let e = import_err(&src, &out);
    assert!(e.contains("builtins.eval"), "{e}");
}

#[test]
fn broken_folders_name_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let work = |name: &str| {
        let d = dir.path().join(format!("case-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // Truncated safetensors shard.
    let d = work("trunc-st");
    let src = copy_fixture("st-sharded", &d);
    let shard = src.join("model-00002-of-00004.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = work("trunc-st-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("model-00002-of-00004.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // Truncated PyTorch pickle.
    let d = work("trunc-bin");
    let src = copy_fixture("bin", &d);
    let p = src.join("pytorch_model.bin");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 200)
        .unwrap();
    let out = work("trunc-bin-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("pytorch_model.bin") && e.contains("truncated"),
        "{e}"
    );
    // Missing index entry.
    let d = work("index");
    let src = copy_fixture("st-sharded", &d);
    let ip = src.join("model.safetensors.index.json");
    let mut idx: serde_json::Value = serde_json::from_slice(&std::fs::read(&ip).unwrap()).unwrap();
    idx["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.layers.1.mlp.up_proj.weight");
    std::fs::write(&ip, serde_json::to_vec(&idx).unwrap()).unwrap();
    let out = work("index-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("model.safetensors.index.json")
            && e.contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    // Shape mismatch between config.json and the weights.
    let d = work("shape");
    let src = copy_fixture("bin-sharded", &d);
    let cp = src.join("config.json");
    let text = std::fs::read_to_string(&cp)
        .unwrap()
        .replace("\"intermediate_size\": 48", "\"intermediate_size\": 40");
    std::fs::write(&cp, text).unwrap();
    let out = work("shape-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("pytorch_model-0000") && e.contains("mlp.") && e.contains("[48, 32]"),
        "{e}"
    );
    // Unknown architecture.
    let d = work("arch");
    let src = copy_fixture("st", &d);
    let cp = src.join("config.json");
    let text = std::fs::read_to_string(&cp)
        .unwrap()
        .replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(&cp, text).unwrap();
    let out = work("arch-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("config.json") && e.contains("GPT2LMHeadModel"),
        "{e}"
    );
    // An extra tensor the architecture does not have (e.g. a bias).
    let d = work("extra");
    let src = copy_fixture("st", &d);
    let p = src.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    let bias = vec![0u8; 32 * 4];
    views.push((
        "model.layers.0.self_attn.q_proj.bias".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![32], &bias).unwrap(),
    ));
    let out_bytes = safetensors::serialize(views, &None).unwrap();
    std::fs::write(&p, out_bytes).unwrap();
    let out = work("extra-out");
    let e = import_err(&src, &out);
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.bias") && e.contains("model.safetensors"),
        "{e}"
    );
    // Importing over an existing run is refused and leaves it untouched.
    let run = dir.path().join("existing");
    glass_hf::import(&fixtures().join("st"), &run).unwrap();
    let before = std::fs::read(run.join("manifest.json")).unwrap();
    let e = glass_hf::import(&fixtures().join("bin"), &run)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already"), "{e}");
    assert_eq!(std::fs::read(run.join("manifest.json")).unwrap(), before);
}

#[test]
fn llama_style_tokenizer_imports_with_bos() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let rep = glass_hf::import(&fixtures().join("llama-tok"), &run).unwrap();
    assert!(
        rep.vocab_note.as_deref().unwrap().contains("204"),
        "{rep:?}"
    );
    let data = glass_data::DataConfig::load(&run).unwrap();
    assert_eq!(data.tokenizer.bos.as_deref(), Some("<s>"));
    assert!(
        data.tokenizer.add_bos,
        "LlamaTokenizerFast with add_bos_token"
    );
    let tok = glass_run::run_tokenizer(&run).unwrap();
    assert_eq!((tok.specials().bos, tok.specials().eos), (Some(1), 2));
    for c in r.llama_tokenizer_checks.as_array().unwrap() {
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(c["text"].as_str().unwrap()).unwrap();
        assert_eq!(got, want, "{c}");
        // The BOS that transformers' post-processor adds is what add_bos frames documents with.
        assert_eq!(c["ids_with_bos"][0].as_u64(), Some(1));
    }
}
