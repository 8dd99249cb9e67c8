//! Task names as the harness's `TaskManager` knows them: every `*.yaml` under the
//! searched directories is a task (`task: name`), a group (`group: name` with a `task:`
//! list) or contributes to tags (`tag:`); a name resolves to a task, a group (evaluated
//! as its leaf tasks, aggregated with `crate::groups`) or a tag (all its tasks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::groups::{AggMetric, GroupDef, GroupMember};
use crate::include;
use crate::task::TaskDef;
use crate::yaml::Node;
use crate::EvalError;

/// What a set of directories defines.
#[derive(Debug, Default)]
pub struct TaskIndex {
    tasks: BTreeMap<String, PathBuf>,
    groups: BTreeMap<String, PathBuf>,
    tags: BTreeMap<String, Vec<String>>,
}

/// Tasks and groups selected by names.
#[derive(Debug, Default)]
pub struct Selection {
    /// Leaf tasks, each once, in selection order.
    pub tasks: Vec<TaskDef>,
    /// Groups selected (each with its nested groups), for aggregation.
    pub groups: Vec<GroupDef>,
}

impl Selection {
    fn add_task(&mut self, t: TaskDef) {
        if !self.tasks.iter().any(|x| x.name == t.name) {
            self.tasks.push(t);
        }
    }
}

fn names_of(n: Option<&Node>) -> Vec<String> {
    match n {
        Some(Node::Scalar { value, .. }) if !value.is_empty() => vec![value.clone()],
        Some(Node::Seq(items, _)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl TaskIndex {
    /// Indexes every `*.yaml` under `dirs` (earlier directories win a name clash; files
    /// that fail to load are skipped, as the harness skips them, and reported only if
    /// a name they might define is asked for).
    pub fn build(dirs: &[PathBuf]) -> Result<TaskIndex, EvalError> {
        let mut ix = TaskIndex::default();
        for d in dirs {
            for f in crate::source::yaml_files(d)? {
                let Ok(m) = include::load(&f) else {
                    continue;
                };
                let task = m.root.get("task");
                let group = m.root.get("group").and_then(Node::as_str);
                match (group, task) {
                    (Some(g), Some(Node::Seq(..))) => {
                        ix.groups.entry(g.to_string()).or_insert(f.clone());
                    }
                    (_, Some(Node::Scalar { value, .. })) => {
                        if ix.tasks.contains_key(value) {
                            continue;
                        }
                        ix.tasks.insert(value.clone(), f.clone());
                        let mut tags = names_of(m.root.get("tag"));
                        tags.extend(names_of(m.root.get("group")));
                        for t in tags {
                            ix.tags.entry(t).or_default().push(value.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        for v in ix.tags.values_mut() {
            v.sort();
            v.dedup();
        }
        Ok(ix)
    }

    /// True if `name` is a task, group or tag here.
    pub fn knows(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
            || self.groups.contains_key(name)
            || self.tags.contains_key(name)
    }

    /// Adds what `name` selects to `sel`.
    pub fn select(&self, name: &str, sel: &mut Selection) -> Result<(), EvalError> {
        if let Some(p) = self.groups.get(name) {
            let g = self.group(p, &mut Vec::new(), sel)?;
            sel.groups.push(g);
            return Ok(());
        }
        if let Some(p) = self.tasks.get(name) {
            sel.add_task(TaskDef::from_file(p, None)?);
            return Ok(());
        }
        if let Some(ts) = self.tags.get(name) {
            for t in ts {
                sel.add_task(TaskDef::from_file(&self.tasks[t], None)?);
            }
            return Ok(());
        }
        Err(EvalError::Invalid(format!(
            "unknown task, group or tag `{name}`"
        )))
    }

    /// Loads the group file `path`, adding its leaf tasks to `sel`.
    pub fn group_file(&self, path: &Path, sel: &mut Selection) -> Result<(), EvalError> {
        let g = self.group(path, &mut Vec::new(), sel)?;
        sel.groups.push(g);
        Ok(())
    }

    fn group(
        &self,
        path: &Path,
        stack: &mut Vec<String>,
        sel: &mut Selection,
    ) -> Result<GroupDef, EvalError> {
        let m = include::load(path)?;
        let src = path.display().to_string();
        let e = |line: usize, msg: String| EvalError::Task(format!("{src}:{line}: {msg}"));
        let root = &m.root;
        let name = root
            .get("group")
            .and_then(Node::as_str)
            .ok_or_else(|| e(1, "a group needs `group: name`".into()))?
            .to_string();
        if stack.contains(&name) || stack.len() > 16 {
            return Err(e(
                1,
                format!("group `{name}` contains itself ({})", stack.join(" → ")),
            ));
        }
        stack.push(name.clone());
        let Some(Node::Seq(items, _)) = root.get("task") else {
            return Err(e(1, "a group needs a `task:` list".into()));
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut members = Vec::new();
        for it in items {
            match it {
                Node::Scalar { value, line, .. } => {
                    if let Some(gp) = self.groups.get(value) {
                        members.push(GroupMember::Group(self.group(gp, stack, sel)?));
                    } else if let Some(tp) = self.tasks.get(value) {
                        sel.add_task(TaskDef::from_file(tp, None)?);
                        members.push(GroupMember::Task(value.clone()));
                    } else if let Some(ts) = self.tags.get(value) {
                        for t in ts {
                            sel.add_task(TaskDef::from_file(&self.tasks[t], None)?);
                            members.push(GroupMember::Task(t.clone()));
                        }
                    } else {
                        return Err(e(
                            *line,
                            format!("`{value}` is no task, group or tag in the searched task directories (add its folder with --include-path)"),
                        ));
                    }
                }
                Node::Map(kv, line) => {
                    // An inline task, or overrides of an indexed task.
                    let base = it.get("task").and_then(Node::as_str);
                    let (merged_root, text, base_dir) = match base.and_then(|b| self.tasks.get(b)) {
                        Some(tp) => {
                            let bm = include::load(tp)?;
                            let Node::Map(mut bkv, bl) = bm.root else {
                                unreachable!("include::load returns mappings")
                            };
                            for (k, v) in kv {
                                match bkv.iter_mut().find(|(bk, _)| bk == k) {
                                    Some(slot) => slot.1 = v.clone(),
                                    None => bkv.push((k.clone(), v.clone())),
                                }
                            }
                            (
                                Node::Map(bkv, bl),
                                format!("{}\n# overridden in {src}:{line}\n", bm.text),
                                tp.parent().unwrap_or(Path::new(".")).to_path_buf(),
                            )
                        }
                        None => {
                            let mm = include::merge_node(it.clone(), dir, &src)?;
                            (
                                mm.root,
                                format!("# inline in {src}:{line}\n{}", mm.text),
                                dir.to_path_buf(),
                            )
                        }
                    };
                    let t = TaskDef::from_node(
                        &merged_root,
                        &text,
                        &format!("{src}:{line}"),
                        &base_dir,
                        None,
                    )?;
                    members.push(GroupMember::Task(t.name.clone()));
                    sel.add_task(t);
                }
                other => {
                    return Err(e(
                        other.line(),
                        "group `task:` entries must be names or mappings".into(),
                    ))
                }
            }
        }
        let mut aggregate = Vec::new();
        if let Some(n) = root.get("aggregate_metric_list") {
            let list: Vec<&Node> = match n {
                Node::Seq(items, _) => items.iter().collect(),
                other => vec![other],
            };
            for a in list {
                let metric = a
                    .get("metric")
                    .and_then(Node::as_str)
                    .ok_or_else(|| {
                        e(
                            a.line(),
                            "aggregate_metric_list entries need `metric:`".into(),
                        )
                    })?
                    .to_string();
                if let Some(ag) = a.get("aggregation") {
                    if ag.as_str() != Some("mean") {
                        return Err(e(ag.line(), "only `aggregation: mean` is supported (the harness's only group aggregation)".into()));
                    }
                }
                if let Some(fl) = a.get("filter_list") {
                    let ok = match fl {
                        Node::Scalar { value, .. } => value == "none",
                        Node::Seq(items, _) => items.iter().all(|i| i.as_str() == Some("none")),
                        _ => false,
                    };
                    if !ok {
                        return Err(e(
                            fl.line(),
                            "filter_list other than `none` is not supported".into(),
                        ));
                    }
                }
                // The harness's AggMetricConfig default: weight_by_size true.
                let weight_by_size = match a.get("weight_by_size") {
                    None => true,
                    Some(w) => match w.to_json() {
                        serde_json::Value::Bool(b) => b,
                        _ => {
                            return Err(e(
                                w.line(),
                                "`weight_by_size` must be true or false".into(),
                            ))
                        }
                    },
                };
                aggregate.push(AggMetric {
                    metric,
                    weight_by_size,
                });
            }
        }
        for (k, v) in match root {
            Node::Map(kv, _) => kv.as_slice(),
            _ => &[],
        } {
            if !matches!(
                k.as_str(),
                "group" | "group_alias" | "task" | "aggregate_metric_list" | "metadata" | "tag"
            ) {
                return Err(e(v.line(), format!("group key `{k}` is not supported")));
            }
        }
        stack.pop();
        Ok(GroupDef {
            name,
            alias: root
                .get("group_alias")
                .and_then(Node::as_str)
                .map(str::to_string),
            source: src,
            members,
            aggregate,
        })
    }
}

/// True if the file at `path` is a group definition (`group:` with a `task:` list).
pub fn is_group_file(path: &Path) -> Result<bool, EvalError> {
    let m = include::load(path)?;
    Ok(m.root.get("group").is_some() && matches!(m.root.get("task"), Some(Node::Seq(..))))
}
