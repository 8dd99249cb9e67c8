//! Where task files are read from: the disk, or the harness's task files compiled into
//! Glass (`bundled:/lm_eval/...`, see [`crate::bundled_files`]). Both look the same to
//! the include resolver and the task index, so the bundled suites run through exactly
//! the code a user's own copy of the harness's YAML does.

use std::path::{Component, Path, PathBuf};

use crate::bundled_files::FILES;
use crate::EvalError;

/// The first path component of bundled files.
pub const BUNDLED_ROOT: &str = "bundled:";

/// The bundled directory of the harness's task files.
pub fn bundled_lm_eval_dir() -> PathBuf {
    Path::new(BUNDLED_ROOT).join("lm_eval")
}

/// The path under `tasks/` of a bundled path (`None`: a path on disk).
fn bundled_rel(path: &Path) -> Option<String> {
    let mut comps = path.components();
    match comps.next() {
        Some(Component::Normal(c)) if c.to_str() == Some(BUNDLED_ROOT) => {}
        _ => return None,
    }
    // Lexical normalisation: includes may say `../x.yaml`.
    let mut parts: Vec<String> = Vec::new();
    for c in comps {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    Some(parts.join("/"))
}

/// True for a path inside the bundled files.
pub fn is_bundled(path: &Path) -> bool {
    bundled_rel(path).is_some()
}

/// Reads a task file as text.
pub fn read(path: &Path) -> Result<String, EvalError> {
    match bundled_rel(path) {
        Some(rel) => FILES
            .iter()
            .find(|(p, _)| *p == rel)
            .map(|(_, t)| t.to_string())
            .ok_or_else(|| EvalError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such bundled task file",
                ),
            }),
        // A regular file only: a FIFO or device named as a task is refused, not read.
        None => glass_io::open::open_regular(path)
            .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))
            .map_err(EvalError::from)
            .and_then(|b| {
                String::from_utf8(b)
                    .map_err(|_| EvalError::Invalid(format!("{}: not UTF-8", path.display())))
            }),
    }
}

/// True if the file exists.
pub fn exists(path: &Path) -> bool {
    match bundled_rel(path) {
        Some(rel) => FILES.iter().any(|(p, _)| *p == rel),
        None => path.is_file(),
    }
}

/// Every `*.yaml` file under `dir`, recursively, sorted (the harness indexes `.yaml`
/// files only; `_default_template_yaml` and the like are reached by `include`).
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    if let Some(rel) = bundled_rel(dir) {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let mut out: Vec<PathBuf> = FILES
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix) && p.ends_with(".yaml"))
            .map(|(p, _)| Path::new(BUNDLED_ROOT).join(p))
            .collect();
        out.sort();
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| EvalError::Io {
            path: d.clone(),
            source: e,
        })?;
        for ent in rd {
            let ent = ent.map_err(|e| EvalError::Io {
                path: d.clone(),
                source: e,
            })?;
            let p = ent.path();
            let name = ent.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_list_names_every_file_under_tasks_lm_eval() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("lm_eval")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&root).unwrap().to_string_lossy();
                    on_disk.push(rel.replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let listed: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(listed, on_disk, "regenerate src/bundled_files.rs");
    }

    #[test]
    fn bundled_paths_resolve_parent_components() {
        let p = bundled_lm_eval_dir().join("mmlu/default/../default/_mmlu.yaml");
        assert!(exists(&p));
        assert!(read(&p).unwrap().contains("group: mmlu"));
        let ys = yaml_files(&bundled_lm_eval_dir().join("arc")).unwrap();
        assert_eq!(ys.len(), 2);
    }
}
