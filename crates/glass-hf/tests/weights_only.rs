//! `glass import hf --weights-only`: checkpoints in the source dtype, no optimizer state,
//! models that compute the bits of the f32 import, refusals to train, and the bad inputs
//! (mixed dtypes, a dtype the config contradicts, a missing shard, inf/NaN) named by file
//! and tensor. No Python needed: the sharded and broken folders are written here from
//! the transformers-made fixtures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use glass_io::safetensors::{write_safetensors, Dtype, TensorBytes};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

const WO: glass_hf::ImportOptions = glass_hf::ImportOptions { weights_only: true };

/// One tensor read back: (dtype, shape, bytes).
type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// Copies the small files of fixture `from` into a new folder `dst` and writes `tensors`
/// there as `shards` safetensors shards (round-robin by name) with an index.
fn sharded_folder(from: &str, dst: &Path, tensors: &Tensors, shards: usize) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures().join(from).join(f), dst.join(f)).unwrap();
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut map = serde_json::Map::new();
    for s in 0..shards {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let part: Vec<TensorBytes> = tensors
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, (n, (d, shape, b)))| {
                map.insert(n.clone(), serde_json::json!(name));
                TensorBytes {
                    name: n.clone(),
                    dtype: *d,
                    shape: shape.clone(),
                    data: b,
                }
            })
            .collect();
        write_safetensors(&dst.join(&name), &part, &meta).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dst.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn bf16_tensors() -> Tensors {
    read_tensors(&fixtures().join("bf16/model.safetensors"))
}

/// The checkpoint's weights file of a run.
fn model_file(run: &Path, k: u32) -> PathBuf {
    let m = glass_run::RunManifest::require(run).unwrap();
    let f = m
        .checkpoint(k)
        .unwrap()
        .files
        .iter()
        .find(|f| f.path.ends_with("model.safetensors"))
        .unwrap()
        .clone();
    run.join(f.path)
}

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Logits and greedy continuations of a run's latest checkpoint (as `glass eval` and
/// `glass generate` load it).
fn outputs(run: &Path) -> (Vec<u32>, Vec<u32>, usize) {
    let (mut model, _) = glass_run::load_model(run, None).unwrap();
    let v = model.cfg.vocab_size;
    let x = ids(2 * 12, v);
    let logits = model.forward_logits(&x, 2, 12).unwrap();
    let mut s = glass_engine::Sampler::new(glass_engine::SamplingConfig {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    });
    let gen = model.generate(&x[..5], 6, &mut s, |_| true).unwrap();
    (
        logits.iter().map(|l| l.to_bits()).collect(),
        gen,
        model.weight_bytes(),
    )
}

#[test]
fn sharded_bf16_folder_imports_as_bf16_and_computes_the_f32_imports_bits() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bf16-sharded");
    sharded_folder("bf16", &src, &bf16_tensors(), 3);
    let (wo, full) = (dir.path().join("wo"), dir.path().join("full"));
    let r = glass_hf::import_with(&src, &wo, &WO).unwrap();
    assert!(r.weights_only);
    assert_eq!(r.checkpoint_dtype, "bf16");
    glass_hf::import(&src, &full).unwrap();

    // bf16 on disk, the source's bytes under the same names; no optimizer file.
    let stored = read_tensors(&model_file(&wo, 0));
    let source = bf16_tensors();
    for (name, (d, shape, bytes)) in &stored {
        assert_eq!(*d, Dtype::BF16, "{name}");
        let (_, s_shape, s_bytes) = &source[name];
        assert_eq!((shape, bytes), (s_shape, s_bytes), "{name}");
    }
    let m = glass_run::RunManifest::require(&wo).unwrap();
    assert!(m.weights_only);
    assert!(m.checkpoints[0]
        .files
        .iter()
        .all(|f| !f.path.ends_with("optimizer.safetensors")));
    let (wo_len, full_len) = (
        std::fs::metadata(model_file(&wo, 0)).unwrap().len() as f64,
        std::fs::metadata(model_file(&full, 0)).unwrap().len() as f64,
    );
    assert!(
        (wo_len / full_len - 0.5).abs() < 0.05,
        "{wo_len} vs {full_len}"
    );

    // The bf16 model (weights left in the mapped file) gives the f32 import's bits.
    let (a_logits, a_gen, a_bytes) = outputs(&wo);
    let (b_logits, b_gen, b_bytes) = outputs(&full);
    assert!(a_logits == b_logits, "logits differ");
    assert_eq!(a_gen, b_gen);
    assert_eq!(2 * a_bytes, b_bytes);
    let (model, _) = glass_run::load_model(&wo, None).unwrap();
    assert!(model.half_weights().is_some() && model.params.is_empty());

    // Verify re-hashes; info shows dtype and bytes.
    assert!(glass_run::verify_run(&wo).unwrap().ok());
    let info = glass_run::info(&wo).unwrap();
    assert!(info.weights_only);
    assert_eq!(info.checkpoints[0].weights_dtype.as_deref(), Some("bf16"));
    assert_eq!(info.checkpoints[0].weights_bytes, Some(wo_len as u64));
    let info = glass_run::info(&full).unwrap();
    assert_eq!(info.checkpoints[0].weights_dtype.as_deref(), Some("f32"));

    // A damaged byte is caught by the load's hash check.
    let copy = dir.path().join("damaged");
    glass_hf::import_with(&src, &copy, &WO).unwrap();
    let f = model_file(&copy, 0);
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&f, b).unwrap();
    let e = glass_run::load_model(&copy, None).unwrap_err().to_string();
    assert!(e.contains("sha256"), "{e}");

    // Training, replay and branching refuse, naming the flag.
    for e in [
        glass_run::train(&wo, &glass_run::TrainOptions::default())
            .unwrap_err()
            .to_string(),
        glass_run::replay(&wo, 0).unwrap_err().to_string(),
        glass_run::init_branch(&dir.path().join("branch"), &wo, Some(0))
            .unwrap_err()
            .to_string(),
    ] {
        assert!(
            e.contains("--weights-only") && e.contains("without --weights-only"),
            "{e}"
        );
    }
    assert!(!dir.path().join("branch").exists());

    // Export writes the bf16 tensors unchanged (no widening); --dtype f32 widens exactly.
    let out = dir.path().join("export");
    glass_hf::export(&wo, &out, &glass_hf::ExportOptions::default()).unwrap();
    let exported = read_tensors(&out.join("model.safetensors"));
    for (name, t) in &exported {
        assert_eq!(t, &source[name], "{name}");
    }
    let out32 = dir.path().join("export32");
    let opts = glass_hf::ExportOptions {
        dtype: Some(glass_hf::ExportDtype::F32),
        ..Default::default()
    };
    glass_hf::export(&wo, &out32, &opts).unwrap();
    let out_full = dir.path().join("export-full");
    glass_hf::export(&full, &out_full, &glass_hf::ExportOptions::default()).unwrap();
    assert_eq!(
        read_tensors(&out32.join("model.safetensors")),
        read_tensors(&out_full.join("model.safetensors"))
    );
}

#[test]
fn bin_folders_import_weights_only_in_their_dtype() {
    let dir = tempfile::tempdir().unwrap();
    // Sharded f32 .bin: the same weights file, byte for byte, as the f32 import writes.
    let (wo, full) = (dir.path().join("wo"), dir.path().join("full"));
    glass_hf::import_with(&fixtures().join("bin-sharded"), &wo, &WO).unwrap();
    glass_hf::import(&fixtures().join("bin-sharded"), &full).unwrap();
    assert_eq!(
        std::fs::read(model_file(&wo, 0)).unwrap(),
        std::fs::read(model_file(&full, 0)).unwrap()
    );
    assert!(outputs(&wo) == outputs(&full));
    // f16 .bin, and .bin views (strided, sharing storage) gathered bytewise.
    for v in ["f16-bin", "bin-views"] {
        let (wo, full) = (dir.path().join(format!("{v}-wo")), dir.path().join(v));
        let r = glass_hf::import_with(&fixtures().join(v), &wo, &WO).unwrap();
        glass_hf::import(&fixtures().join(v), &full).unwrap();
        assert_eq!(
            r.checkpoint_dtype,
            if v == "f16-bin" { "f16" } else { "f32" }
        );
        let ((a_logits, a_gen, a_bytes), (b_logits, b_gen, b_bytes)) =
            (outputs(&wo), outputs(&full));
        assert!(a_logits == b_logits, "{v}: logits differ");
        assert_eq!(a_gen, b_gen, "{v}");
        // f16 weights stay f16 in memory: half the f32 model's bytes.
        let half = if v == "f16-bin" { 2 } else { 1 };
        assert_eq!(half * a_bytes, b_bytes, "{v}");
        assert!(glass_run::verify_run(&wo).unwrap().ok());
    }
}

/// Imports `src` weights-only into a fresh directory and returns the error, after
/// checking that nothing was left behind.
fn refused(src: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let e = glass_hf::import_with(src, &run, &WO)
        .unwrap_err()
        .to_string();
    assert!(!run.exists(), "a refused import left {}", run.display());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{e}");
    e
}

fn set_config_dtype(folder: &Path, dtype: Option<&str>) {
    let p = folder.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("torch_dtype");
    o.remove("dtype");
    if let Some(d) = dtype {
        o.insert("torch_dtype".into(), serde_json::json!(d));
    }
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn bad_inputs_are_refused_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let widen = |b: &[u8]| -> Vec<u8> {
        b.chunks_exact(2)
            .flat_map(|c| ((u16::from_le_bytes([c[0], c[1]]) as u32) << 16).to_le_bytes())
            .collect()
    };
    let victim = "model.layers.1.mlp.up_proj.weight";

    // One tensor f32 in an otherwise bf16 folder whose config names no dtype: mixed.
    let mut t = bf16_tensors();
    let e = t.get_mut(victim).unwrap();
    *e = (Dtype::F32, e.1.clone(), widen(&e.2));
    let mixed = dir.path().join("mixed");
    sharded_folder("bf16", &mixed, &t, 3);
    set_config_dtype(&mixed, None);
    let e = refused(&mixed);
    assert!(e.contains(victim) && e.contains("one dtype"), "{e}");
    assert!(e.contains(".safetensors"), "{e}");
    // The f32 import converts mixed dtypes (exact), as before.
    glass_hf::import(&mixed, &dir.path().join("mixed-f32")).unwrap();

    // The same folder with config.json saying bfloat16: the tensor contradicts it.
    set_config_dtype(&mixed, Some("bfloat16"));
    let e = refused(&mixed);
    assert!(
        e.contains(victim) && e.contains("config.json") && e.contains("bfloat16"),
        "{e}"
    );

    // A bf16 folder whose config says float32: every tensor contradicts it.
    let wrong = dir.path().join("wrong-config");
    sharded_folder("bf16", &wrong, &bf16_tensors(), 2);
    set_config_dtype(&wrong, Some("float32"));
    let e = refused(&wrong);
    assert!(e.contains("is bf16") && e.contains("float32"), "{e}");

    // An index naming a shard that is not there.
    let missing = dir.path().join("missing");
    sharded_folder("bf16", &missing, &bf16_tensors(), 3);
    std::fs::remove_file(missing.join("model-00002-of-00003.safetensors")).unwrap();
    let e = refused(&missing);
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("model-00002-of-00003"),
        "{e}"
    );

    // bf16 infinity, f16 NaN.
    for (dtype, bad, name) in [
        (Dtype::BF16, 0x7f80u16, "inf-bf16"),
        (Dtype::F16, 0x7e00u16, "nan-f16"),
    ] {
        let mut t = bf16_tensors();
        if dtype == Dtype::F16 {
            for (_, (d, _, b)) in t.iter_mut() {
                *d = Dtype::F16;
                let vals: Vec<u8> = b
                    .chunks_exact(2)
                    .flat_map(|c| {
                        let x = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                        half::f16::from_f32(x).to_bits().to_le_bytes()
                    })
                    .collect();
                *b = vals;
            }
        }
        let b = &mut t.get_mut(victim).unwrap().2;
        b[10..12].copy_from_slice(&bad.to_le_bytes());
        let folder = dir.path().join(name);
        sharded_folder("bf16", &folder, &t, 2);
        set_config_dtype(&folder, None);
        let e = refused(&folder);
        assert!(
            e.contains(victim) && e.contains("NaN or infinite") && e.contains(".safetensors"),
            "{name}: {e}"
        );
    }
}
