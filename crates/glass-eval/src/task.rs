//! Task definitions in lm-evaluation-harness YAML: the subset for multiple-choice and
//! rolling-log-likelihood (perplexity) tasks over local JSON / JSON Lines data.
//! Everything outside the subset is refused with the key's name and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::yaml::{self, Node};
use crate::EvalError;

/// What a task asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// Score every choice's log-likelihood after the context; acc / acc_norm.
    MultipleChoice,
    /// Log-likelihood of the whole target text in model-length windows; perplexities.
    LoglikelihoodRolling,
    /// Greedy generation after the context until a stop sequence; code tasks run the
    /// generated program against the reference tests (pass@1).
    GenerateUntil,
}

/// A metric Glass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Highest log-likelihood choice is the gold one.
    Acc,
    /// Highest log-likelihood per character of the choice is the gold one.
    AccNorm,
    /// exp(-Σ ll / Σ words).
    WordPerplexity,
    /// exp(-Σ ll / Σ bytes).
    BytePerplexity,
    /// -Σ ll / Σ bytes / ln 2.
    BitsPerByte,
    /// `acc` of the pointwise mutual information: each choice's log-likelihood after the
    /// context minus its log-likelihood after an empty context (the harness scores
    /// `("", target_delimiter + choice)` for it), so a choice that is likely anywhere
    /// gains nothing from being likely here.
    AccMutualInfo,
    /// HumanEval's `utils.pass_at_k` with `k: [1]` (HF `code_eval`): the share of
    /// documents whose program passes its tests; the harness names it `pass@1`.
    PassAtK1,
    /// MBPP's `utils.pass_at_1`: the same measure under the name `pass_at_1`.
    PassAt1,
}

impl Metric {
    /// The harness's name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::AccMutualInfo => "acc_mutual_info",
            Metric::WordPerplexity => "word_perplexity",
            Metric::BytePerplexity => "byte_perplexity",
            Metric::BitsPerByte => "bits_per_byte",
            Metric::PassAtK1 => "pass@1",
            Metric::PassAt1 => "pass_at_1",
        }
    }
    fn parse(s: &str) -> Option<Metric> {
        Some(match s {
            "acc" => Metric::Acc,
            "acc_norm" => Metric::AccNorm,
            "acc_mutual_info" => Metric::AccMutualInfo,
            "word_perplexity" => Metric::WordPerplexity,
            "byte_perplexity" => Metric::BytePerplexity,
            "bits_per_byte" => Metric::BitsPerByte,
            _ => return None,
        })
    }
}

/// A `doc_to_*` field: a field name, a Jinja template, an integer or (choices) a list.
#[derive(Debug, Clone, PartialEq)]
pub enum DocField {
    /// Text: a field of the document if one has this name, else a template.
    Text(String),
    /// A constant integer.
    Int(i64),
    /// A constant list (doc_to_choice).
    List(Vec<String>),
}

/// How few-shot examples are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// `random.Random(seed).sample`, sequentially per document (harness "default").
    Default,
    /// The first n documents of the few-shot split (harness "first_n").
    FirstN,
}

/// A parsed task definition.
#[derive(Debug, Clone)]
pub struct TaskDef {
    /// Task name (`task:`).
    pub name: String,
    /// Where it came from (file path or `bundled:<name>`), for messages.
    pub source: String,
    /// The YAML text.
    pub yaml: String,
    /// Output type.
    pub output_type: OutputType,
    /// Splits as named in the YAML.
    pub training_split: Option<String>,
    /// Validation split.
    pub validation_split: Option<String>,
    /// Test split.
    pub test_split: Option<String>,
    /// Few-shot split.
    pub fewshot_split: Option<String>,
    /// Data files per split (resolved paths) or embedded contents.
    pub data_files: BTreeMap<String, Vec<DataFile>>,
    /// `doc_to_text`.
    pub doc_to_text: Option<DocField>,
    /// `doc_to_target`.
    pub doc_to_target: Option<DocField>,
    /// `doc_to_choice`.
    pub doc_to_choice: Option<DocField>,
    /// `description` (template or field), prefixed to every context.
    pub description: Option<String>,
    /// Between question and answer (default " ").
    pub target_delimiter: String,
    /// After each few-shot example (default "\n\n").
    pub fewshot_delimiter: String,
    /// `fewshot_config.target_delimiter` (default: `target_delimiter`).
    pub fewshot_target_delimiter: String,
    /// `fewshot_config.fewshot_delimiter` (default: `fewshot_delimiter`).
    pub fewshot_fewshot_delimiter: String,
    /// Few-shot sampler.
    pub sampler: Sampler,
    /// Number of few-shot examples.
    pub num_fewshot: usize,
    /// Metrics, in the YAML's order.
    pub metrics: Vec<Metric>,
    /// `dataset_path` when it names a hub dataset (not `json`): located at load time
    /// under `data_dirs` or the `datasets` cache (`crate::datasets`).
    pub dataset_path: Option<String>,
    /// `dataset_name` (the hub dataset's configuration).
    pub dataset_name: Option<String>,
    /// Directories searched for hub datasets (`--data-dir`), before the `datasets` cache.
    pub data_dirs: Vec<PathBuf>,
    /// The `datasets` cache directory (`None`: from the environment, see
    /// `crate::datasets::hf_cache_dir`).
    pub datasets_cache: Option<PathBuf>,
    /// `process_docs: !function …` with a native implementation.
    pub process_docs: Option<crate::process::DocsFn>,
    /// `process_results: !function …` with a native implementation.
    pub process_results: Option<crate::process::ResultsFn>,
    /// `generation_kwargs` of a `generate_until` task.
    pub generation: Option<Generation>,
    /// The `filter_list` pipeline's native filter (`None`: the harness's default,
    /// take the first response).
    pub filter: Option<crate::process::FilterFn>,
    /// `fewshot_config.samples: !function …`: few-shot examples from a fixed list.
    pub fewshot_samples: Option<crate::process::SamplesFn>,
}

/// `generation_kwargs` with greedy decoding (the only decoding Glass does for tasks).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// Stop sequences (`until`), before the tokenizer's end-of-sequence text is added.
    pub until: Vec<String>,
    /// Most tokens generated (`max_gen_toks`; the harness's HF default is 256).
    pub max_gen_toks: usize,
}

/// The harness's default `max_gen_toks` (`HFLM(max_gen_toks=256)`).
pub const DEFAULT_MAX_GEN_TOKS: usize = 256;

/// One data file of a split: a path on disk or embedded bytes.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path (for messages) as resolved.
    pub path: PathBuf,
    /// Embedded contents (bundled tasks); `None` reads `path`.
    pub embedded: Option<&'static str>,
}

/// One document with where it came from.
#[derive(Debug, Clone)]
pub struct Doc {
    /// The row.
    pub value: Value,
    /// `file:line` (JSON Lines) or `file[index]` (JSON array), for messages.
    pub origin: String,
}

/// The documents of a task, loaded.
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Documents per split.
    pub splits: BTreeMap<String, Vec<Doc>>,
    /// sha256 of the YAML text.
    pub yaml_sha256: String,
    /// sha256 of every data file, per split, in order.
    pub file_sha256: BTreeMap<String, Vec<String>>,
    /// sha256 over the YAML and every data file: a changed definition is a new task.
    pub task_sha256: String,
}

fn err(task: &str, line: usize, msg: impl std::fmt::Display) -> EvalError {
    EvalError::Task(format!("{task}:{line}: {msg}"))
}

/// Refuses `!function` anywhere but as the value of `process_docs` / `process_results`,
/// a metric, a custom filter or the few-shot samples (where `crate::process` judges the
/// name).
fn check_functions(node: &Node, source: &str, key: &str) -> Result<(), EvalError> {
    match node {
        Node::Function { name, line } => {
            if matches!(
                key,
                "process_docs"
                    | "process_results"
                    | "metric_list[].metric"
                    | "filter_list[].filter[].filter_fn"
                    | "fewshot_config.samples"
            ) {
                Ok(())
            } else {
                Err(err(
                    source,
                    *line,
                    format!("`{key}: !function {name}` (Python code) is not supported by glass eval; only the functions in docs/eval.md are implemented"),
                ))
            }
        }
        Node::Seq(items, _) => items
            .iter()
            .try_for_each(|i| check_functions(i, source, &format!("{key}[]"))),
        Node::Map(kv, _) => kv
            .iter()
            .try_for_each(|(k, v)| check_functions(v, source, &format!("{key}.{k}"))),
        Node::Scalar { .. } => Ok(()),
    }
}

/// Keys that only matter to features Glass does not evaluate (decontamination, bookkeeping).
/// `should_decontaminate` / `doc_to_decontamination_query` only feed the harness's
/// optional overlap check against training data (`--check_decontamination`), which does
/// not change any score.
const IGNORED_KEYS: &[&str] = &[
    "tag",
    "metadata",
    "should_decontaminate",
    "doc_to_decontamination_query",
    "task_alias",
];

/// Keys of the harness Glass refuses, with why.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "group",
        "a group file: pass it (or its name) to --tasks to evaluate its tasks",
    ),
    ("use_prompt", "promptsource prompts"),
    ("doc_to_image", "multimodal inputs"),
    ("doc_to_audio", "multimodal inputs"),
    ("custom_dataset", "custom dataset loaders"),
    ("gen_prefix", "generation prefixes"),
    ("class", "Python task classes"),
];

/// `generation_kwargs`: `until` (a string or a list), `max_gen_toks`, and greedy decoding
/// (`do_sample: false`, `temperature: 0`); absent, the harness's default (until the
/// few-shot delimiter).
fn parse_generation(
    node: Option<&Node>,
    source: &str,
    fewshot_delimiter: &str,
) -> Result<Generation, EvalError> {
    let mut g = Generation {
        until: vec![fewshot_delimiter.to_string()],
        max_gen_toks: DEFAULT_MAX_GEN_TOKS,
    };
    let Some(node) = node else {
        return Ok(g);
    };
    let Node::Map(kv, _) = node else {
        return Err(err(
            source,
            node.line(),
            "`generation_kwargs` must be a mapping",
        ));
    };
    for (k, v) in kv {
        match k.as_str() {
            "until" => {
                g.until = match v {
                    Node::Scalar { value, .. } => vec![value.clone()],
                    Node::Seq(items, _) => items
                        .iter()
                        .map(|i| {
                            i.as_str().map(str::to_string).ok_or_else(|| {
                                err(source, i.line(), "`until` items must be strings")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(err(source, v.line(), "`until` must be a string or a list")),
                }
            }
            "max_gen_toks" | "max_new_tokens" => {
                g.max_gen_toks = v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| err(source, v.line(), format!("`{k}` must be a positive integer")))?
            }
            "do_sample" if matches!(v.as_str(), Some("false" | "False")) => {}
            "temperature" if v.as_str().and_then(|s| s.parse::<f64>().ok()) == Some(0.0) => {}
            _ => {
                return Err(err(
                    source,
                    v.line(),
                    format!("generation_kwargs.{k} is not supported (glass eval decodes greedily: until, max_gen_toks, do_sample: false, temperature: 0)"),
                ))
            }
        }
    }
    Ok(g)
}

/// `filter_list`: one pipeline whose steps are `take_first` or a native `custom` filter.
fn parse_filter(
    node: &Node,
    source: &str,
    dataset_path: &str,
) -> Result<Option<crate::process::FilterFn>, EvalError> {
    let Node::Seq(pipelines, _) = node else {
        return Err(err(source, node.line(), "`filter_list` must be a list"));
    };
    if pipelines.len() != 1 {
        return Err(err(
            source,
            node.line(),
            "only one `filter_list` pipeline is supported",
        ));
    }
    let steps = match pipelines[0].get("filter") {
        Some(Node::Seq(steps, _)) => steps,
        _ => {
            return Err(err(
                source,
                pipelines[0].line(),
                "a filter pipeline needs a `filter:` list",
            ))
        }
    };
    let mut out = None;
    for step in steps {
        match (
            step.get("function").and_then(Node::as_str),
            step.get("filter_fn"),
        ) {
            (Some("take_first"), None) => {}
            (Some("custom"), Some(Node::Function { name, line })) if out.is_none() => {
                out = Some(
                    crate::process::FilterFn::find(name, dataset_path).ok_or_else(|| {
                        err(source, *line, crate::process::refusal("filter_fn", name, dataset_path))
                    })?,
                );
            }
            _ => {
                return Err(err(
                    source,
                    step.line(),
                    "filter steps other than `take_first` and the custom filters in docs/eval.md are not supported",
                ))
            }
        }
    }
    Ok(out)
}

/// A `metric_list` entry's options: `aggregation` must be the harness's for the metric;
/// `higher_is_better` is accepted; `k` (code metrics) was judged with the metric.
fn check_metric_options(
    entry: &Node,
    source: &str,
    metric: Metric,
    want: &str,
) -> Result<(), EvalError> {
    let Node::Map(kv, _) = entry else {
        return Ok(());
    };
    for (k, v) in kv {
        match k.as_str() {
            "metric" | "higher_is_better" => {}
            "k" if matches!(metric, Metric::PassAtK1) => {}
            "aggregation" => {
                if v.as_str() != Some(want) {
                    return Err(err(
                        source,
                        v.line(),
                        format!("aggregation for `{}` must be `{want}`", metric.name()),
                    ));
                }
            }
            _ => {
                return Err(err(
                    source,
                    v.line(),
                    format!("metric_list option `{k}` is not supported"),
                ))
            }
        }
    }
    Ok(())
}

impl TaskDef {
    /// Parses a task file. `base_dir` resolves relative data file paths;
    /// `data_files_override` (`split → paths`, from `--data-files`) replaces
    /// `dataset_kwargs.data_files` and makes any `dataset_path` local JSON.
    pub fn parse(
        yaml_text: &str,
        source: &str,
        base_dir: &Path,
        data_files_override: Option<&BTreeMap<String, Vec<PathBuf>>>,
    ) -> Result<TaskDef, EvalError> {
        let root = yaml::parse(yaml_text).map_err(|e| err(source, e.line, e.message))?;
        TaskDef::from_node(&root, yaml_text, source, base_dir, data_files_override)
    }

    /// Builds a task from a parsed (include-merged) mapping; `yaml_text` is what the
    /// task's hash covers.
    pub fn from_node(
        root: &Node,
        yaml_text: &str,
        source: &str,
        base_dir: &Path,
        data_files_override: Option<&BTreeMap<String, Vec<PathBuf>>>,
    ) -> Result<TaskDef, EvalError> {
        let Node::Map(entries, _) = root else {
            return Err(err(
                source,
                root.line(),
                "a task file must be a mapping of keys",
            ));
        };
        let text = |key: &str| -> Result<Option<String>, EvalError> {
            match root.get(key) {
                None => Ok(None),
                Some(n) if n.is_null() => Ok(None),
                Some(Node::Scalar { value, .. }) => Ok(Some(value.clone())),
                Some(n) => Err(err(source, n.line(), format!("`{key}` must be a string"))),
            }
        };
        for (k, v) in entries {
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(u, _)| u == k) {
                return Err(err(
                    source,
                    v.line(),
                    format!("`{k}` ({why}) is not supported by glass eval"),
                ));
            }
            let known = [
                "task",
                "dataset_path",
                "dataset_kwargs",
                "output_type",
                "training_split",
                "validation_split",
                "test_split",
                "fewshot_split",
                "doc_to_text",
                "doc_to_target",
                "doc_to_choice",
                "description",
                "target_delimiter",
                "fewshot_delimiter",
                "num_fewshot",
                "fewshot_config",
                "metric_list",
                "repeats",
                "dataset_name",
                "process_docs",
                "process_results",
                "generation_kwargs",
                "filter_list",
                "unsafe_code",
            ];
            if !known.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()) {
                return Err(err(
                    source,
                    v.line(),
                    format!("unknown or unsupported key `{k}`"),
                ));
            }
        }
        let dataset_path_value = root.get("dataset_path").and_then(Node::as_str);
        let mut process_docs = None;
        let mut process_results = None;
        for (k, v) in entries {
            check_functions(v, source, k)?;
            if let Node::Function { name, line } = v {
                let ds = dataset_path_value.unwrap_or_default();
                match k.as_str() {
                    "process_docs" => {
                        process_docs =
                            Some(crate::process::DocsFn::find(name, ds).ok_or_else(|| {
                                err(source, *line, crate::process::refusal(k, name, ds))
                            })?)
                    }
                    "process_results" => {
                        process_results =
                            Some(crate::process::ResultsFn::find(name, ds).ok_or_else(|| {
                                err(source, *line, crate::process::refusal(k, name, ds))
                            })?)
                    }
                    _ => unreachable!("check_functions refuses functions elsewhere"),
                }
            } else if matches!(k.as_str(), "process_docs" | "process_results") && !v.is_null() {
                return Err(err(
                    source,
                    v.line(),
                    format!("`{k}` must be `!function module.name`"),
                ));
            }
        }
        let name =
            text("task")?.ok_or_else(|| err(source, 1, "missing `task:` (the task's name)"))?;
        // The name becomes a file name under RUN/evals/.
        let name_ok = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            let line = root.get("task").map_or(1, Node::line);
            return Err(err(
                source,
                line,
                format!("task name `{name}` must be letters, digits, `_`, `-` or `.`"),
            ));
        }
        let output_type = match root.get("output_type") {
            None => return Err(err(source, 1, "missing `output_type`")),
            Some(n) => match n.as_str() {
                Some("multiple_choice") => OutputType::MultipleChoice,
                Some("loglikelihood_rolling") => OutputType::LoglikelihoodRolling,
                Some("generate_until") => OutputType::GenerateUntil,
                Some(o) => {
                    return Err(err(
                        source,
                        n.line(),
                        format!("output_type `{o}` is not supported (use multiple_choice, loglikelihood_rolling or generate_until)"),
                    ))
                }
                None => return Err(err(source, n.line(), "`output_type` must be a string")),
            },
        };
        if let Some(n) = root.get("repeats") {
            if n.as_str() != Some("1") {
                return Err(err(
                    source,
                    n.line(),
                    "`repeats` other than 1 is not supported",
                ));
            }
        }
        // Data: local JSON files named in the YAML or on the command line, else a hub
        // dataset located at load time.
        let mut data_files = BTreeMap::new();
        let mut dataset_path = None;
        if let Some(ov) = data_files_override {
            for (split, paths) in ov {
                data_files.insert(
                    split.clone(),
                    paths
                        .iter()
                        .map(|p| DataFile {
                            path: p.clone(),
                            embedded: None,
                        })
                        .collect(),
                );
            }
        } else {
            let dp = root.get("dataset_path");
            match dp.and_then(Node::as_str) {
                Some("json") => {}
                Some(other) => dataset_path = Some(other.to_string()),
                None => return Err(err(source, 1, "missing `dataset_path`")),
            }
        }
        if data_files_override.is_none() && dataset_path.is_none() {
            let kw = root.get("dataset_kwargs").ok_or_else(|| {
                err(
                    source,
                    1,
                    "missing `dataset_kwargs.data_files` (the local JSON files)",
                )
            })?;
            if let Node::Map(kv, _) = kw {
                for (k, v) in kv {
                    if k != "data_files" && k != "trust_remote_code" {
                        return Err(err(
                            source,
                            v.line(),
                            format!("dataset_kwargs.{k} is not supported"),
                        ));
                    }
                }
            }
            let df = kw.get("data_files").ok_or_else(|| {
                err(
                    source,
                    kw.line(),
                    "missing `data_files` under dataset_kwargs",
                )
            })?;
            let paths = |n: &Node| -> Result<Vec<DataFile>, EvalError> {
                let list: Vec<&Node> = match n {
                    Node::Seq(items, _) => items.iter().collect(),
                    other => vec![other],
                };
                list.into_iter()
                    .map(|p| {
                        let s = p.as_str().ok_or_else(|| {
                            err(source, p.line(), "data file paths must be strings")
                        })?;
                        Ok(DataFile {
                            path: base_dir.join(s),
                            embedded: None,
                        })
                    })
                    .collect()
            };
            match df {
                Node::Map(kv, _) => {
                    for (split, v) in kv {
                        data_files.insert(split.clone(), paths(v)?);
                    }
                }
                other => {
                    // Like `datasets`: files without split names form the "train" split.
                    data_files.insert("train".to_string(), paths(other)?);
                }
            }
        }
        let doc_field = |key: &str| -> Result<Option<DocField>, EvalError> {
            Ok(match root.get(key) {
                None => None,
                Some(n) if n.is_null() => None,
                Some(Node::Scalar { value, quoted, .. }) => {
                    if !quoted {
                        if let Ok(i) = value.parse::<i64>() {
                            return Ok(Some(DocField::Int(i)));
                        }
                    }
                    Some(DocField::Text(value.clone()))
                }
                Some(Node::Seq(items, _)) => Some(DocField::List(
                    items
                        .iter()
                        .map(|i| {
                            i.as_str().map(str::to_string).ok_or_else(|| {
                                err(source, i.line(), format!("`{key}` items must be strings"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                )),
                Some(n) => {
                    return Err(err(
                        source,
                        n.line(),
                        format!("`{key}` must be a string, integer or list"),
                    ))
                }
            })
        };
        let doc_to_text = doc_field("doc_to_text")?;
        let doc_to_target = doc_field("doc_to_target")?;
        let doc_to_choice = doc_field("doc_to_choice")?;
        if output_type == OutputType::MultipleChoice {
            if doc_to_choice.is_none() {
                return Err(err(source, 1, "multiple_choice needs `doc_to_choice`"));
            }
            if doc_to_text.is_none() {
                return Err(err(source, 1, "multiple_choice needs `doc_to_text`"));
            }
        }
        if doc_to_target.is_none() {
            return Err(err(source, 1, "missing `doc_to_target`"));
        }
        let target_delimiter = text("target_delimiter")?.unwrap_or_else(|| " ".into());
        let fewshot_delimiter = text("fewshot_delimiter")?.unwrap_or_else(|| "\n\n".into());
        let mut sampler = Sampler::Default;
        let mut fs_target = target_delimiter.clone();
        let mut fs_fewshot = fewshot_delimiter.clone();
        let mut fewshot_split = text("fewshot_split")?;
        let mut fewshot_samples = None;
        let ds_name = dataset_path_value.unwrap_or_default();
        if let Some(fc) = root.get("fewshot_config") {
            let Node::Map(kv, _) = fc else {
                return Err(err(source, fc.line(), "`fewshot_config` must be a mapping"));
            };
            for (k, v) in kv {
                let s = v.as_str().map(str::to_string);
                match (k.as_str(), s) {
                    ("sampler", Some(s)) if s == "default" => sampler = Sampler::Default,
                    ("sampler", Some(s)) if s == "first_n" => sampler = Sampler::FirstN,
                    ("target_delimiter", Some(s)) => fs_target = s,
                    ("fewshot_delimiter", Some(s)) => fs_fewshot = s,
                    ("split", Some(s)) => fewshot_split = Some(s),
                    ("samples", None) if matches!(v, Node::Function { .. }) => {
                        let Node::Function { name: f, line } = v else {
                            unreachable!()
                        };
                        fewshot_samples =
                            Some(crate::process::SamplesFn::find(f, ds_name).ok_or_else(|| {
                                err(source, *line, crate::process::refusal("samples", f, ds_name))
                            })?);
                    }
                    _ => {
                        return Err(err(
                            source,
                            v.line(),
                            format!("fewshot_config.{k} is not supported (supported: sampler default|first_n, split, samples (the functions in docs/eval.md), target_delimiter, fewshot_delimiter)"),
                        ))
                    }
                }
            }
        }
        let num_fewshot = match root.get("num_fewshot") {
            None => 0,
            Some(n) if n.is_null() => 0,
            Some(n) => n.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                err(
                    source,
                    n.line(),
                    "`num_fewshot` must be a non-negative integer",
                )
            })?,
        };
        let metrics = match root.get("metric_list") {
            None => match output_type {
                OutputType::MultipleChoice => vec![Metric::Acc, Metric::AccNorm],
                OutputType::LoglikelihoodRolling => vec![
                    Metric::WordPerplexity,
                    Metric::BytePerplexity,
                    Metric::BitsPerByte,
                ],
                OutputType::GenerateUntil => {
                    return Err(err(
                        source,
                        1,
                        "generate_until needs a `metric_list` (glass eval computes the code metrics in docs/eval.md)",
                    ))
                }
            },
            Some(Node::Seq(items, _)) => {
                let mut out = Vec::new();
                for it in items {
                    let m = it.get("metric").ok_or_else(|| {
                        err(source, it.line(), "each metric_list entry needs `metric:`")
                    })?;
                    if let Node::Function { name: f, line } = m {
                        let metric = crate::process::metric_fn(f, ds_name, it).ok_or_else(|| {
                            err(source, *line, crate::process::refusal("metric", f, ds_name))
                        })?;
                        if output_type != OutputType::GenerateUntil {
                            return Err(err(
                                source,
                                *line,
                                format!("metric `!function {f}` applies to generate_until tasks"),
                            ));
                        }
                        check_metric_options(it, source, metric, "mean")?;
                        out.push(metric);
                        continue;
                    }
                    let name = m.as_str().unwrap_or_default();
                    let metric = Metric::parse(name).ok_or_else(|| {
                        err(source, m.line(), format!("metric `{name}` is not supported (acc, acc_norm, acc_mutual_info, word_perplexity, byte_perplexity, bits_per_byte)"))
                    })?;
                    let fits = matches!(
                        (output_type, metric),
                        (
                            OutputType::MultipleChoice,
                            Metric::Acc | Metric::AccNorm | Metric::AccMutualInfo
                        ) | (
                                OutputType::LoglikelihoodRolling,
                                Metric::WordPerplexity
                                    | Metric::BytePerplexity
                                    | Metric::BitsPerByte
                            )
                    );
                    if !fits {
                        return Err(err(
                            source,
                            m.line(),
                            format!("metric `{name}` does not apply to this output_type"),
                        ));
                    }
                    let want = match metric {
                        Metric::WordPerplexity | Metric::BytePerplexity => "weighted_perplexity",
                        Metric::BitsPerByte => "bits_per_byte",
                        _ => "mean",
                    };
                    check_metric_options(it, source, metric, want)?;
                    out.push(metric);
                }
                out
            }
            Some(n) => return Err(err(source, n.line(), "`metric_list` must be a list")),
        };
        let generation = match (output_type, root.get("generation_kwargs")) {
            (OutputType::GenerateUntil, g) => Some(parse_generation(
                g.filter(|n| !n.is_null()),
                source,
                &fewshot_delimiter,
            )?),
            (_, Some(g)) if !g.is_null() => {
                return Err(err(
                    source,
                    g.line(),
                    "`generation_kwargs` applies to generate_until tasks",
                ))
            }
            _ => None,
        };
        let filter = match root.get("filter_list") {
            Some(f) if !f.is_null() => {
                if output_type != OutputType::GenerateUntil {
                    return Err(err(
                        source,
                        f.line(),
                        "`filter_list` applies to generate_until tasks",
                    ));
                }
                parse_filter(f, source, ds_name)?
            }
            _ => None,
        };
        if output_type == OutputType::GenerateUntil && doc_to_text.is_none() {
            return Err(err(source, 1, "generate_until needs `doc_to_text`"));
        }
        Ok(TaskDef {
            name,
            source: source.to_string(),
            yaml: yaml_text.to_string(),
            output_type,
            training_split: text("training_split")?,
            validation_split: text("validation_split")?,
            test_split: text("test_split")?,
            fewshot_split,
            data_files,
            doc_to_text,
            doc_to_target,
            doc_to_choice,
            description: text("description")?,
            target_delimiter,
            fewshot_delimiter,
            fewshot_target_delimiter: fs_target,
            fewshot_fewshot_delimiter: fs_fewshot,
            sampler,
            num_fewshot,
            metrics,
            dataset_path,
            dataset_name: text("dataset_name")?,
            data_dirs: Vec::new(),
            datasets_cache: None,
            process_docs,
            process_results,
            generation,
            filter,
            fewshot_samples,
        })
    }

    /// Reads a task file from disk (data paths relative to its directory).
    pub fn from_file(
        path: &Path,
        data_files_override: Option<&BTreeMap<String, Vec<PathBuf>>>,
    ) -> Result<TaskDef, EvalError> {
        let merged = crate::include::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        TaskDef::from_node(
            &merged.root,
            &merged.text,
            &path.display().to_string(),
            base,
            data_files_override,
        )
    }

    /// The split evaluated: `test_split`, else `validation_split`.
    pub fn eval_split(&self) -> Result<&str, EvalError> {
        self.test_split
            .as_deref()
            .or(self.validation_split.as_deref())
            .ok_or_else(|| err(&self.source, 1, "needs `test_split` or `validation_split`"))
    }

    /// The split few-shot examples come from: `fewshot_split`, else training, else
    /// validation, else test (the harness's order).
    pub fn fewshot_source_split(&self) -> Option<&str> {
        self.fewshot_split
            .as_deref()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .or(self.test_split.as_deref())
    }

    /// Loads the splits this task uses, hashing the YAML and every data file.
    pub fn load(&self) -> Result<TaskData, EvalError> {
        let mut needed = vec![self.eval_split()?.to_string()];
        let listed = self.fewshot_split.is_none() && self.fewshot_samples.is_some();
        if self.num_fewshot > 0 && !listed {
            if let Some(s) = self.fewshot_source_split() {
                needed.push(s.to_string());
            }
        }
        let mut splits = BTreeMap::new();
        let mut file_sha256 = BTreeMap::new();
        for split in needed {
            if splits.contains_key(&split) {
                continue;
            }
            let located;
            let files: &[DataFile] = match (self.data_files.get(&split), &self.dataset_path) {
                (Some(f), _) => f,
                (None, Some(dp)) => {
                    located = crate::datasets::locate(
                        &self.name,
                        dp,
                        self.dataset_name.as_deref(),
                        &split,
                        &self.data_dirs,
                        self.datasets_cache
                            .clone()
                            .or_else(crate::datasets::hf_cache_dir),
                    )?
                    .into_iter()
                    .map(|path| DataFile {
                        path,
                        embedded: None,
                    })
                    .collect::<Vec<_>>();
                    &located
                }
                (None, None) => {
                    let have: Vec<&String> = self.data_files.keys().collect();
                    return Err(err(&self.source, 1, format!("split `{split}` has no data files (data_files has {have:?}); pass --data-files {split}=FILE")));
                }
            };
            let mut docs = Vec::new();
            let mut hashes = Vec::new();
            for f in files {
                let owned;
                let bytes: &[u8] = match f.embedded {
                    Some(t) => t.as_bytes(),
                    None => {
                        owned = std::fs::read(&f.path).map_err(|e| EvalError::Io {
                            path: f.path.clone(),
                            source: e,
                        })?;
                        &owned
                    }
                };
                hashes.push(hex::encode(Sha256::digest(bytes)));
                docs.extend(crate::datasets::read_rows(&f.path, bytes)?);
            }
            if let Some(pd) = self.process_docs {
                for d in &mut docs {
                    d.value = pd.apply(&d.value, &d.origin)?;
                }
            }
            if docs.is_empty() {
                return Err(err(
                    &self.source,
                    1,
                    format!("split `{split}` has no documents"),
                ));
            }
            splits.insert(split.clone(), docs);
            file_sha256.insert(split, hashes);
        }
        let yaml_sha256 = hex::encode(Sha256::digest(self.yaml.as_bytes()));
        let mut h = Sha256::new();
        h.update(b"glass-eval task v1\n");
        h.update(yaml_sha256.as_bytes());
        for (split, hs) in &file_sha256 {
            h.update(format!("\n{split}:").as_bytes());
            for x in hs {
                h.update(x.as_bytes());
                h.update(b",");
            }
        }
        Ok(TaskData {
            splits,
            yaml_sha256,
            file_sha256,
            task_sha256: hex::encode(h.finalize()),
        })
    }
}

/// A data file's bytes as text, or an error naming the line of the first invalid UTF-8.
/// Rows of a JSON Lines file, or of a JSON file holding an array of objects.
pub fn parse_rows(text: &str, path: &str) -> Result<Vec<Doc>, EvalError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| EvalError::Data(format!("{path}: invalid JSON: {e}")))?;
        let Value::Array(rows) = v else {
            unreachable!()
        };
        return rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if !r.is_object() {
                    return Err(EvalError::Data(format!(
                        "{path}[{i}]: a row must be a JSON object"
                    )));
                }
                Ok(Doc {
                    value: r,
                    origin: format!("{path}[{i}]"),
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{path}:{}", i + 1);
        let v: Value = serde_json::from_str(line)
            .map_err(|e| EvalError::Data(format!("{origin}: invalid JSON: {e}")))?;
        if !v.is_object() {
            return Err(EvalError::Data(format!(
                "{origin}: a row must be a JSON object"
            )));
        }
        out.push(Doc { value: v, origin });
    }
    Ok(out)
}
