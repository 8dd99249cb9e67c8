//! The demo's preset learns: the default run (`glass init --preset tiny`, what `glass demo`
//! trains), cut to its first two chunks of English, must compress held-out Shakespeare
//! better than `gzip -9` does and pick the true next line of the held-out cloze above
//! chance. The full demo goes further (docs/README figures); this is what fits in test time.

mod common;

use common::{ok, p};
use serde_json::Value;

/// Bits per byte of `gzip -9` (DEFLATE level 9) on `text` compressed whole.
fn gzip_bpb(text: &str) -> f64 {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(text.as_bytes()).unwrap();
    8.0 * g.finish().unwrap().len() as f64 / text.len() as f64
}

fn results(stdout: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn metric(r: &Value, name: &str) -> f64 {
    r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name)
        .unwrap_or_else(|| panic!("no {name} in {r}"))["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn the_demo_preset_learns_in_two_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = &p(&run);
    ok(&["init", r, "--preset", "tiny"]);
    // The default config with its English stage cut to two chunks and no code stage.
    let cfg = run.join("glass.toml");
    let mut t: toml::Table = toml::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let data = t["data"].as_table().unwrap().clone();
    let spc = data["steps_per_chunk"].as_integer().unwrap();
    let rows = data["rows_per_step"].as_integer().unwrap();
    let row_len = data["seq_len"].as_integer().unwrap() + 1;
    let stages = data["stages"].as_array().unwrap();
    assert_eq!(stages[0]["name"].as_str(), Some("text"), "{stages:?}");
    let mut english = stages[0].as_table().unwrap().clone();
    english.insert("tokens".into(), (2 * spc * rows * row_len).into());
    t["data"]
        .as_table_mut()
        .unwrap()
        .insert("stages".into(), toml::Value::Array(vec![english.into()]));
    std::fs::write(&cfg, toml::to_string(&t).unwrap()).unwrap();
    ok(&["data", "prepare", r]);
    ok(&["train", r, "--quiet"]);

    // Held-out Shakespeare (every passage of Macbeth and Twelfth Night) against gzip -9 on
    // each work whole.
    let out = ok(&[
        "eval",
        r,
        "--checkpoints",
        "latest",
        "--tasks",
        "glass_heldout",
        "--json",
        "--log-samples",
        "--quiet",
    ]);
    let res = results(&out);
    let ids: Vec<String> = glass_eval::bundled::generate_heldout()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for work in ["macbeth", "twelfth_night"] {
        let (mut ll, mut bytes) = (0.0f64, 0u64);
        for s in res[0]["samples"].as_array().unwrap() {
            let doc = s["doc"].as_u64().unwrap() as usize;
            if ids[doc].rsplit_once('-').unwrap().0 == work {
                ll += s["loglikelihood"].as_f64().unwrap();
                bytes += s["bytes"].as_u64().unwrap();
            }
        }
        assert!(bytes > 50_000, "{work}: {bytes} bytes");
        let model = -ll / bytes as f64 / std::f64::consts::LN_2;
        let text = glass_data::HELD_OUT_WORKS
            .iter()
            .find(|w| w.contains(work))
            .map(|w| glass_data::embedded_work(w).unwrap())
            .unwrap();
        let gzip = gzip_bpb(text);
        eprintln!("{work}: model {model:.3} bits per byte, gzip -9 {gzip:.3}");
        assert!(
            model < gzip,
            "{work}: model {model:.3} >= gzip -9 {gzip:.3}"
        );
    }

    // The held-out next-line cloze (300 questions, 4 choices), scored by mutual information.
    let out = ok(&[
        "eval",
        r,
        "--checkpoints",
        "latest",
        "--tasks",
        "glass_cloze",
        "--json",
        "--quiet",
    ]);
    let mi = metric(&results(&out)[0], "acc_mutual_info");
    eprintln!("cloze acc_mutual_info {mi:.3}");
    // Chance is 0.25; one standard error over 300 questions is 0.025.
    assert!(mi > 0.30, "cloze acc_mutual_info {mi:.3}");
}
