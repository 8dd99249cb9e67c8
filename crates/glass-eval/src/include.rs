//! `include:` as the harness resolves it (`lm_eval.utils.load_yaml_config`): the value
//! is a file name or a list of them, relative to the including file's directory
//! (nested includes resolve relative to *their* file); included files are loaded
//! recursively, merged key by key (earlier list entries win over later ones), and the
//! including file's own keys override everything included. The merge is shallow: a
//! key's whole value is replaced.

use std::path::{Path, PathBuf};

use crate::source;
use crate::yaml::{self, Node};
use crate::EvalError;

/// A task or group file with its includes merged.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged mapping (no `include` key left).
    pub root: Node,
    /// The texts of the file and every file it includes, in load order, each headed by
    /// its path: what the task's hash covers.
    pub text: String,
    /// The file and every included file.
    pub files: Vec<PathBuf>,
    /// For each key of `root` whose value came from an included file, that file.
    pub origin: Vec<(String, PathBuf)>,
    /// The texts of the included files (not the including file's own): what no message
    /// may repeat.
    pub included_text: String,
}

/// Words (runs of three or more letters and digits) of `text`, longest first.
fn words(text: &str) -> Vec<&str> {
    let mut w: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .collect();
    w.sort_by_key(|w| std::cmp::Reverse(w.len()));
    w.dedup();
    w
}

/// The parts of task keys, which messages may name even where an included file holds
/// them too.
const KEY_WORDS: &[&str] = &[
    "task",
    "dataset",
    "path",
    "kwargs",
    "name",
    "output",
    "type",
    "training",
    "validation",
    "test",
    "split",
    "fewshot",
    "doc",
    "text",
    "target",
    "choice",
    "description",
    "delimiter",
    "num",
    "config",
    "metric",
    "list",
    "repeats",
    "process",
    "docs",
    "results",
    "generation",
    "filter",
    "unsafe",
    "code",
    "include",
    "data",
    "files",
    "tag",
    "group",
    "metadata",
    "version",
    "aggregation",
    "higher",
    "better",
];

/// `msg` with every word of an included file that the including file does not hold
/// replaced by `…`: messages about included files name them, never repeat them.
pub fn redact(msg: &str, included_text: &str, own_text: &str) -> String {
    let own: std::collections::HashSet<&str> = words(own_text).into_iter().collect();
    let mut out = msg.to_string();
    for w in words(included_text) {
        if own.contains(w) || KEY_WORDS.contains(&w.to_lowercase().as_str()) {
            continue;
        }
        if out.contains(w) {
            out = out.replace(w, "…");
        }
    }
    out
}

/// Every line a node and its children sit on.
fn lines(n: &Node, out: &mut Vec<usize>) {
    out.push(n.line());
    match n {
        Node::Seq(items, _) => items.iter().for_each(|i| lines(i, out)),
        Node::Map(kv, _) => kv.iter().for_each(|(_, v)| lines(v, out)),
        _ => {}
    }
}

impl Merged {
    /// Restates an error about the merged task (`{top}:{line}: …`) for a task with
    /// includes: an error on a line that only an included key's value holds names the
    /// included file, and no message repeats what an included file holds.
    pub fn explain(&self, top: &Path, e: EvalError) -> EvalError {
        if self.included_text.is_empty() {
            return e;
        }
        let EvalError::Task(msg) = e else { return e };
        let own = crate::source::read(top).unwrap_or_default();
        let top_name = top.display().to_string();
        let Some(rest) = msg.strip_prefix(&format!("{top_name}:")) else {
            return EvalError::Task(redact(&msg, &self.included_text, &own));
        };
        let (line, body) = match rest.split_once(": ") {
            Some((l, b)) if l.parse::<usize>().is_ok() => (l.parse::<usize>().unwrap_or(0), b),
            _ => return EvalError::Task(redact(&msg, &self.included_text, &own)),
        };
        let Node::Map(kv, _) = &self.root else {
            return EvalError::Task(redact(&msg, &self.included_text, &own));
        };
        let mut own_lines = Vec::new();
        let mut culprit = None;
        for (k, v) in kv {
            let mut ls = Vec::new();
            lines(v, &mut ls);
            match self.origin.iter().find(|(key, _)| key == k) {
                Some((_, file)) if ls.contains(&line) && culprit.is_none() => {
                    culprit = Some(file.clone())
                }
                Some(_) => {}
                None => own_lines.extend(ls),
            }
        }
        let body = redact(body, &self.included_text, &own);
        match culprit {
            Some(file) if !own_lines.contains(&line) => EvalError::Task(format!(
                "{}:{line}: {body} (included by {top_name})",
                file.display()
            )),
            _ => EvalError::Task(format!("{top_name}:{line}: {body}")),
        }
    }
}

const MAX_DEPTH: usize = 16;

/// Loads `path` and resolves its includes.
pub fn load(path: &Path) -> Result<Merged, EvalError> {
    let mut chain = Vec::new();
    load_inner(path, &mut chain)
}

/// Resolves the includes of an already-parsed mapping (an inline task of a group),
/// relative to `dir`.
pub fn merge_node(node: Node, dir: &Path, source_name: &str) -> Result<Merged, EvalError> {
    let mut chain = Vec::new();
    resolve(
        node,
        dir,
        source_name,
        String::new(),
        Vec::new(),
        &mut chain,
    )
}

fn load_inner(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Merged, EvalError> {
    if chain.iter().any(|p| p == path) || chain.len() > MAX_DEPTH {
        let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        return Err(EvalError::Task(format!(
            "{}: include cycle or nesting deeper than {MAX_DEPTH} ({} → {})",
            path.display(),
            names.join(" → "),
            path.display()
        )));
    }
    let text = source::read(path)?;
    let name = path.display().to_string();
    // An included file may be anything (a misplaced `include:` of a credentials file):
    // messages about it name it and never repeat it.
    let included = !chain.is_empty();
    let root = yaml::parse(&text).map_err(|e| {
        let message = if included {
            redact(&e.message, &text, "")
        } else {
            e.message
        };
        EvalError::Task(format!("{name}:{}: {message}", e.line))
    })?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    chain.push(path.to_path_buf());
    let r = resolve(
        root,
        &dir,
        &name,
        format!("# {name}\n{text}"),
        vec![path.to_path_buf()],
        chain,
    );
    chain.pop();
    r
}

fn resolve(
    root: Node,
    dir: &Path,
    name: &str,
    mut text: String,
    mut files: Vec<PathBuf>,
    chain: &mut Vec<PathBuf>,
) -> Result<Merged, EvalError> {
    let first_line = root.line();
    let Node::Map(entries, line) = root else {
        return Err(EvalError::Task(format!(
            "{name}:{first_line}: a task file must be a mapping of keys"
        )));
    };
    let Some(pos) = entries.iter().position(|(k, _)| k == "include") else {
        return Ok(Merged {
            root: Node::Map(entries, line),
            text,
            files,
            origin: Vec::new(),
            included_text: String::new(),
        });
    };
    let mut entries = entries;
    let (_, inc) = entries.remove(pos);
    let names: Vec<(String, usize)> = match &inc {
        Node::Scalar { value, line, .. } => vec![(value.clone(), *line)],
        Node::Seq(items, _) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(|s| (s.to_string(), i.line()))
                    .ok_or_else(|| {
                        EvalError::Task(format!(
                            "{name}:{}: `include` entries must be file names",
                            i.line()
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(EvalError::Task(format!(
                "{name}:{}: `include` must be a file name or a list of them",
                other.line()
            )))
        }
    };
    // As the harness: the list reversed, each update()d over the last, so the first
    // listed include has the final word among includes.
    let mut merged: Vec<(String, Node)> = Vec::new();
    let mut origin: Vec<(String, PathBuf)> = Vec::new();
    let mut included_text = String::new();
    for (inc_name, inc_line) in names.iter().rev() {
        let p = Path::new(inc_name);
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        if !source::exists(&path) {
            return Err(EvalError::Task(format!(
                "{name}:{inc_line}: included file `{inc_name}` not found (looked for {})",
                path.display()
            )));
        }
        let sub = load_inner(&path, chain)?;
        text.push_str(&sub.text);
        included_text.push_str(&sub.text);
        included_text.push('\n');
        files.extend(sub.files);
        let Node::Map(kv, _) = sub.root else {
            unreachable!("load_inner returns mappings")
        };
        for (k, _) in &kv {
            let from = sub
                .origin
                .iter()
                .find(|(key, _)| key == k)
                .map_or_else(|| path.clone(), |(_, f)| f.clone());
            origin.retain(|(key, _)| key != k);
            origin.push((k.clone(), from));
        }
        update(&mut merged, kv);
    }
    for (k, _) in &entries {
        origin.retain(|(key, _)| key != k);
    }
    update(&mut merged, entries);
    Ok(Merged {
        root: Node::Map(merged, line),
        text,
        files,
        origin,
        included_text,
    })
}

/// Python's `dict.update`: existing keys keep their position and take the new value.
fn update(into: &mut Vec<(String, Node)>, from: Vec<(String, Node)>) {
    for (k, v) in from {
        match into.iter_mut().find(|(kk, _)| *kk == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_relative_includes_merge_with_the_including_file_winning() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub/base")).unwrap();
        std::fs::write(d.path().join("sub/base/root.yaml"), "a: 1\nb: 1\nc: 1\n").unwrap();
        std::fs::write(
            d.path().join("sub/mid.yaml"),
            "include: base/root.yaml\nb: 2\n",
        )
        .unwrap();
        std::fs::write(d.path().join("other.yaml"), "c: 4\nd: 4\n").unwrap();
        std::fs::write(
            d.path().join("top.yaml"),
            "include: [sub/mid.yaml, other.yaml]\nc: 3\n",
        )
        .unwrap();
        let m = load(&d.path().join("top.yaml")).unwrap();
        assert_eq!(
            m.root.to_json(),
            serde_json::json!({"a": 1, "b": 2, "c": 3, "d": 4})
        );
        assert_eq!(m.files.len(), 4);
        // First listed include wins over later ones.
        std::fs::write(
            d.path().join("top.yaml"),
            "include: [other.yaml, sub/mid.yaml]\n",
        )
        .unwrap();
        let m = load(&d.path().join("top.yaml")).unwrap();
        assert_eq!(m.root.get("c").unwrap().as_str(), Some("4"));
    }

    #[test]
    fn cycles_and_missing_includes_are_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), "include: b.yaml\n").unwrap();
        std::fs::write(d.path().join("b.yaml"), "include: a.yaml\n").unwrap();
        let e = load(&d.path().join("a.yaml")).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        std::fs::write(d.path().join("a.yaml"), "x: 1\ninclude: nope.yaml\n").unwrap();
        let e = load(&d.path().join("a.yaml")).unwrap_err().to_string();
        assert!(e.contains("a.yaml:2") && e.contains("nope.yaml"), "{e}");
    }
}
