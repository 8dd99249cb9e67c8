//! Tasks built from the held-out works of the embedded corpus (never in the default
//! training mix), so the demo and the tests evaluate real tasks with no downloads.
//! Each is committed as harness-compatible YAML + JSON Lines under `crates/glass-eval/tasks`
//! (so lm-evaluation-harness can run them with `--include_path`) and compiled into the
//! binary. [`generate_cloze`] and [`generate_heldout`] rebuild the JSON Lines from the
//! corpus; a test proves the committed files are exactly their output.

use std::path::PathBuf;

use serde::Serialize;

use crate::task::{DataFile, TaskDef};
use crate::EvalError;

/// The bundled tasks: (name, YAML, data file name, data).
pub const BUNDLED: &[(&str, &str, &str, &str)] = &[
    (
        "glass_cloze",
        include_str!("../tasks/glass_cloze.yaml"),
        "glass_cloze.jsonl",
        include_str!("../tasks/glass_cloze.jsonl"),
    ),
    (
        "glass_heldout",
        include_str!("../tasks/glass_heldout.yaml"),
        "glass_heldout.jsonl",
        include_str!("../tasks/glass_heldout.jsonl"),
    ),
    (
        "glass_code_heldout",
        include_str!("../tasks/glass_code_heldout.yaml"),
        "glass_code_heldout.jsonl",
        include_str!("../tasks/glass_code_heldout.jsonl"),
    ),
];

/// A bundled task by name, its data embedded.
pub fn bundled(name: &str) -> Option<Result<TaskDef, EvalError>> {
    let (n, yaml, file, data) = BUNDLED.iter().find(|b| b.0 == name)?;
    Some(
        TaskDef::parse(
            yaml,
            &format!("bundled:{n}"),
            std::path::Path::new("."),
            None,
        )
        .map(|mut t| {
            for files in t.data_files.values_mut() {
                for f in files.iter_mut() {
                    if f.path == PathBuf::from(".").join(file) {
                        *f = DataFile {
                            path: PathBuf::from(format!("bundled:{file}")),
                            embedded: Some(data),
                        };
                    }
                }
            }
            t
        }),
    )
}

/// splitmix64: a fixed, documented mixing function for the generators' choices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn held_out() -> Vec<(&'static str, &'static str)> {
    glass_data::HELD_OUT_WORKS
        .iter()
        .map(|w| {
            let text = glass_data::embedded_work(w).expect("held-out work is embedded");
            let short = w.rsplit('/').next().unwrap_or(w).trim_end_matches(".txt");
            (short, text)
        })
        .collect()
}

/// A line that can be a cloze answer or distractor: verse or prose, not a speaker name,
/// stage direction or heading.
fn is_content(line: &str) -> bool {
    let t = line.trim();
    t.len() >= 24
        && t.len() <= 90
        && !t.starts_with('[')
        && t.chars().any(|c| c.is_lowercase())
        && !t.starts_with("SCENE")
        && !t.starts_with("ACT")
        && !t.contains("  ")
        && !t.contains('_')
        && !t.chars().any(|c| c.is_ascii_digit())
}

#[derive(Serialize)]
struct ClozeRow {
    id: String,
    context: String,
    choices: Vec<String>,
    label: usize,
}

/// Items per held-out work in the cloze task.
pub const CLOZE_PER_WORK: usize = 100;

/// The next-line cloze: three lines of a held-out work, then its true next line among
/// four, the three distractors drawn from the other held-out works. Items alternate
/// between works so any prefix (`--limit`) is balanced.
pub fn generate_cloze() -> String {
    let works = held_out();
    let lines: Vec<Vec<&str>> = works
        .iter()
        .map(|(_, t)| t.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .collect();
    let content: Vec<Vec<&str>> = lines
        .iter()
        .map(|ls| ls.iter().copied().filter(|l| is_content(l)).collect())
        .collect();
    let mut per_work: Vec<Vec<ClozeRow>> = Vec::new();
    for (w, ls) in lines.iter().enumerate() {
        // Candidate answer positions, spread evenly over the work.
        // (Skipping each file's front matter: title, persons, contents.)
        let cands: Vec<usize> = (ls.len() / 20..ls.len())
            .filter(|&i| is_content(ls[i]) && ls[i - 3..i].iter().all(|l| !l.starts_with('[')))
            .collect();
        let mut rows = Vec::new();
        for j in 0..CLOZE_PER_WORK {
            let i = cands[j * cands.len() / CLOZE_PER_WORK];
            let seed = mix(((w as u64) << 32) | j as u64);
            let label = (seed % 4) as usize;
            let mut distractors = Vec::new();
            let mut k = 0u64;
            while distractors.len() < 3 {
                let h = mix(seed ^ (k + 1).wrapping_mul(0x1000_0000_01B3));
                k += 1;
                let ow = (w + 1 + (h % (works.len() as u64 - 1)) as usize) % works.len();
                let pool = &content[ow];
                let cand = pool[((h >> 8) % pool.len() as u64) as usize].to_string();
                if cand != ls[i] && !distractors.contains(&cand) {
                    distractors.push(cand);
                }
            }
            let mut choices = distractors;
            choices.insert(label, ls[i].to_string());
            rows.push(ClozeRow {
                id: format!("{}-{j:03}", works[w].0),
                context: ls[i - 3..i].join("\n"),
                choices,
                label,
            });
        }
        per_work.push(rows);
    }
    let mut out = String::new();
    for j in 0..CLOZE_PER_WORK {
        for rows in &per_work {
            out.push_str(&serde_json::to_string(&rows[j]).expect("serializable"));
            out.push('\n');
        }
    }
    out
}

#[derive(Serialize)]
struct TextRow {
    id: String,
    text: String,
}

/// Target size of a held-out passage in bytes (whole lines).
pub const PASSAGE_BYTES: usize = 2000;

/// Held-out perplexity: each held-out work cut into passages of about
/// [`PASSAGE_BYTES`] at line boundaries, passages alternating between works.
pub fn generate_heldout() -> String {
    passages(&held_out())
}

/// Held-out code perplexity: the code files kept out of the default training data
/// ([`glass_data::HELD_OUT_CODE`]) cut the same way, so the curriculum's code stage is
/// measured on code the model never saw.
pub fn generate_code_heldout() -> String {
    let files: Vec<(&str, &str)> = glass_data::HELD_OUT_CODE
        .iter()
        .map(|p| {
            let text = glass_data::embedded_code()
                .iter()
                .find(|(q, _)| q == p)
                .map(|(_, t)| *t)
                .expect("held-out code file is embedded");
            let short = p.rsplit('/').next().unwrap_or(p).trim_end_matches(".rs");
            (short, text)
        })
        .collect();
    passages(&files)
}

/// `(name, text)` works cut into passages of about [`PASSAGE_BYTES`] at line
/// boundaries, as JSON Lines `{id, text}`, passages alternating between works.
fn passages(works: &[(&str, &str)]) -> String {
    let mut per_work = Vec::new();
    for (name, text) in works.iter() {
        let mut rows = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            cur.push_str(line);
            cur.push('\n');
            if cur.len() >= PASSAGE_BYTES {
                let t = cur.trim().to_string();
                if !t.is_empty() {
                    rows.push(TextRow {
                        id: format!("{name}-{:03}", rows.len()),
                        text: t,
                    });
                }
                cur.clear();
            }
        }
        let t = cur.trim().to_string();
        if !t.is_empty() {
            rows.push(TextRow {
                id: format!("{name}-{:03}", rows.len()),
                text: t,
            });
        }
        per_work.push(rows);
    }
    let most = per_work.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = String::new();
    for j in 0..most {
        for rows in &per_work {
            if let Some(r) = rows.get(j) {
                out.push_str(&serde_json::to_string(r).expect("serializable"));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, generated: String, committed: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tasks")
            .join(file);
        if std::env::var_os("GLASS_REGENERATE_TASKS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        assert!(
            generated == committed,
            "{} is not what the generator produces; rerun with GLASS_REGENERATE_TASKS=1",
            path.display()
        );
    }

    #[test]
    fn committed_task_data_is_the_generators_output() {
        check("glass_cloze.jsonl", generate_cloze(), BUNDLED[0].3);
        check("glass_heldout.jsonl", generate_heldout(), BUNDLED[1].3);
        check(
            "glass_code_heldout.jsonl",
            generate_code_heldout(),
            BUNDLED[2].3,
        );
    }

    #[test]
    fn bundled_tasks_parse_and_load() {
        for (name, ..) in BUNDLED {
            let t = bundled(name).unwrap().unwrap();
            let d = t.load().unwrap();
            assert!(d.splits[t.eval_split().unwrap()].len() >= 20, "{name}");
        }
        let t = bundled("glass_cloze").unwrap().unwrap();
        let d = t.load().unwrap();
        let docs = &d.splits["test"];
        assert_eq!(docs.len(), 3 * CLOZE_PER_WORK);
        for doc in docs {
            let c = doc.value["choices"].as_array().unwrap();
            assert_eq!(c.len(), 4);
        }
    }
}
