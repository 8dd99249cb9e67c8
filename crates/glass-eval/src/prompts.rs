//! Turns documents into the exact strings lm-evaluation-harness scores: few-shot
//! contexts (same sampler, same seed sequence, same delimiters) and, per choice, the
//! `(context, target_delimiter + choice)` pair; for rolling tasks, the target text.

use minijinja::Environment;
use serde_json::Value;

use crate::pyrandom::PyRandom;
use crate::task::{Doc, DocField, OutputType, Sampler, TaskData, TaskDef};
use crate::template::{environment, eval_expression, limit_message, render, single_expression};
use crate::EvalError;

/// One evaluated document, ready to score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prepared {
    /// Multiple choice: score `context` + each continuation.
    MultipleChoice {
        /// The full context (description, few-shot examples, question).
        context: String,
        /// The choices as `doc_to_choice` gives them (their lengths normalise acc_norm).
        choices: Vec<String>,
        /// `target_delimiter + choice`, the continuations scored.
        continuations: Vec<String>,
        /// Index of the gold choice. Always `Some`: a target outside the choices is
        /// refused by [`prepare`] (the harness would score it 0).
        gold: Option<usize>,
        /// TruthfulQA MC2 (`process_results_mc2`): `mc2_targets.labels`, 1 for each true
        /// answer; the document's score is the true answers' share of probability mass.
        #[serde(skip_serializing_if = "Option::is_none")]
        mc2_labels: Option<Vec<i64>>,
    },
    /// Rolling log-likelihood of `text`.
    Rolling {
        /// The text.
        text: String,
    },
    /// Greedy generation after `context` (the harness's `generate_until` request).
    Generate {
        /// The full context (description, few-shot examples, question).
        context: String,
        /// Stop sequences (`until`, before the end-of-sequence text is added).
        until: Vec<String>,
        /// Most tokens generated.
        max_gen_toks: usize,
        /// `doc_to_target`: the reference the metric receives (code tasks: the tests).
        reference: String,
        /// What the task's filter puts before the completion (HumanEval: the prompt).
        prediction_prefix: String,
    },
}

/// A rendered `doc_to_*` value.
#[derive(Debug, Clone, PartialEq)]
enum Rendered {
    Str(String),
    Int(i64),
    List(Vec<Value>),
}

struct Renderer<'a> {
    env: Environment<'static>,
    task: &'a TaskDef,
}

impl Renderer<'_> {
    fn fail(&self, doc: &Doc, what: &str, msg: impl std::fmt::Display) -> EvalError {
        EvalError::Data(format!(
            "{}: row {}: {what}: {msg}",
            self.task.name, doc.origin
        ))
    }

    fn raw(&self, field: &DocField, doc: &Doc, what: &str) -> Result<Rendered, EvalError> {
        match field {
            DocField::Int(i) => Ok(Rendered::Int(*i)),
            DocField::List(l) => Ok(Rendered::List(
                l.iter().map(|s| Value::String(s.clone())).collect(),
            )),
            DocField::Text(t) => {
                if let Some(v) = doc.value.get(t.as_str()) {
                    return match v {
                        Value::String(s) => Ok(Rendered::Str(s.clone())),
                        Value::Number(n) if n.is_i64() => {
                            Ok(Rendered::Int(n.as_i64().unwrap_or(0)))
                        }
                        Value::Array(a) => Ok(Rendered::List(a.clone())),
                        other => {
                            Err(self.fail(doc, what, format!("field `{t}` is {other}, not text")))
                        }
                    };
                }
                let s = render(&self.env, t, &doc.value)
                    .map_err(|e| self.fail(doc, what, template_error(&e)))?;
                Ok(Rendered::Str(s))
            }
        }
    }

    fn text(&self, doc: &Doc) -> Result<String, EvalError> {
        let field = self
            .task
            .doc_to_text
            .as_ref()
            .ok_or_else(|| self.fail(doc, "doc_to_text", "the task has no doc_to_text"))?;
        match self.raw(field, doc, "doc_to_text")? {
            Rendered::Str(s) if !(is_py_digit(&s) && self.task.doc_to_choice.is_some()) => Ok(s),
            _ => Err(self.fail(
                doc,
                "doc_to_text",
                "gives an integer: multiple-input tasks (one context per choice, e.g. winogrande) are not supported",
            )),
        }
    }

    /// `doc_to_target`: an index into the choices or a string.
    fn target(&self, doc: &Doc) -> Result<Rendered, EvalError> {
        let field = self
            .task
            .doc_to_target
            .as_ref()
            .ok_or_else(|| self.fail(doc, "doc_to_target", "the task has no doc_to_target"))?;
        let r = self.raw(field, doc, "doc_to_target")?;
        match r {
            Rendered::Str(s) if matches!(field, DocField::Text(t) if doc.value.get(t.as_str()).is_none()) =>
            {
                if is_py_digit(&s) && self.task.doc_to_choice.is_some() {
                    return s.parse().map(Rendered::Int).map_err(|_| {
                        self.fail(doc, "doc_to_target", format!("`{s}` is not an index"))
                    });
                }
                if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') {
                    return Err(self.fail(
                        doc,
                        "doc_to_target",
                        "multiple targets (a list) are not supported",
                    ));
                }
                Ok(Rendered::Str(s))
            }
            Rendered::List(_) => Err(self.fail(
                doc,
                "doc_to_target",
                "multiple targets (a list) are not supported",
            )),
            other => Ok(other),
        }
    }

    fn choices(&self, doc: &Doc) -> Result<Vec<String>, EvalError> {
        let field = self
            .task
            .doc_to_choice
            .as_ref()
            .ok_or_else(|| self.fail(doc, "doc_to_choice", "the task has no doc_to_choice"))?;
        let list = match field {
            DocField::Text(t) if doc.value.get(t.as_str()).is_none() => {
                if let Some(expr) = single_expression(t) {
                    let v = eval_expression(&self.env, expr, &doc.value)
                        .map_err(|e| self.fail(doc, "doc_to_choice", template_error(&e)))?;
                    let json =
                        serde_json::to_value(&v).map_err(|e| self.fail(doc, "doc_to_choice", e))?;
                    match json {
                        Value::Array(a) => a,
                        other => {
                            return Err(self.fail(
                                doc,
                                "doc_to_choice",
                                format!("gives {other}, not a list"),
                            ))
                        }
                    }
                } else {
                    let s = render(&self.env, t, &doc.value)
                        .map_err(|e| self.fail(doc, "doc_to_choice", template_error(&e)))?;
                    match serde_json::from_str::<Value>(&s) {
                        Ok(Value::Array(a)) => a,
                        _ => {
                            return Err(self.fail(
                                doc,
                                "doc_to_choice",
                                format!("renders `{s}`, not a list; write it as one expression, e.g. \"{{{{choices.text}}}}\""),
                            ))
                        }
                    }
                }
            }
            other => match self.raw(other, doc, "doc_to_choice")? {
                Rendered::List(l) => l,
                _ => return Err(self.fail(doc, "doc_to_choice", "is not a list")),
            },
        };
        list.into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(self.fail(
                    doc,
                    "doc_to_choice",
                    format!("choice {other} is not a string"),
                )),
            })
            .collect()
    }

    fn description(&self, doc: &Doc) -> Result<String, EvalError> {
        match &self.task.description {
            None => Ok(String::new()),
            Some(d) => match self.raw(&DocField::Text(d.clone()), doc, "description")? {
                Rendered::Str(s) => Ok(s),
                _ => Err(self.fail(doc, "description", "is not text")),
            },
        }
    }

    /// One few-shot example as the harness writes it: question, target delimiter,
    /// answer, few-shot delimiter (the answer part only when the answer is non-empty).
    fn shot(&self, doc: &Doc) -> Result<String, EvalError> {
        let q = self.text(doc)?;
        let a = self.target(doc)?;
        let answer = match &a {
            Rendered::Int(i) => {
                let c = self.choices(doc)?;
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| c.get(i).cloned())
                    .ok_or_else(|| {
                        self.fail(
                            doc,
                            "doc_to_target",
                            format!("index {i} is outside the {} choices", c.len()),
                        )
                    })?
            }
            Rendered::Str(s) => s.clone(),
            Rendered::List(_) => unreachable!("rejected by target()"),
        };
        if answer.is_empty() {
            return Ok(q);
        }
        Ok(format!(
            "{q}{}{answer}{}",
            self.task.fewshot_target_delimiter, self.task.fewshot_fewshot_delimiter
        ))
    }
}

fn template_error(e: &minijinja::Error) -> String {
    if let Some(m) = limit_message(e) {
        return m;
    }
    let mut s = e.to_string();
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        s.push_str(" (a field the template uses is missing from this row)");
    }
    s
}

/// Python's `str.isdigit` where the harness then calls `ast.literal_eval` on the text:
/// only ASCII digits parse as an index (other Unicode digits make the harness fail).
fn is_py_digit(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// Builds the requests for the first `limit` evaluation documents, drawing few-shot
/// examples with `random.Random(seed)` exactly as the harness's default sampler does.
pub fn prepare(
    task: &TaskDef,
    data: &TaskData,
    limit: Option<usize>,
    seed: u64,
) -> Result<Vec<Prepared>, EvalError> {
    let r = Renderer {
        env: environment(),
        task,
    };
    let eval_split = task.eval_split()?;
    let docs = &data.splits[eval_split];
    let n = limit.map_or(docs.len(), |l| l.min(docs.len()));
    let mut out = Vec::with_capacity(n);
    if task.output_type == OutputType::LoglikelihoodRolling {
        for doc in &docs[..n] {
            match r.target(doc)? {
                Rendered::Str(text) => out.push(Prepared::Rolling { text }),
                _ => {
                    return Err(r.fail(
                        doc,
                        "doc_to_target",
                        "must be text for loglikelihood_rolling",
                    ))
                }
            }
        }
        return Ok(out);
    }
    let k = task.num_fewshot;
    let listed: Vec<Doc> = match (k > 0, task.fewshot_split.is_none(), task.fewshot_samples) {
        (true, true, Some(f)) => f
            .docs()
            .into_iter()
            .enumerate()
            .map(|(i, value)| Doc {
                value,
                origin: format!("fewshot_config.samples[{i}]"),
            })
            .collect(),
        _ => Vec::new(),
    };
    let pool: &[Doc] = match (k > 0, task.fewshot_source_split()) {
        (false, _) => &[],
        (true, _) if !listed.is_empty() => &listed,
        (true, Some(s)) => &data.splits[s],
        (true, None) => {
            return Err(EvalError::Task(format!(
                "{}: num_fewshot > 0 but the task has no split to draw examples from",
                task.source
            )))
        }
    };
    // The harness passes the evaluated document for exclusion only when the few-shot
    // split *is* the test split (`fewshot_cfg.split == config.test_split`).
    let exclude_self = task.fewshot_split == task.test_split;
    let mut rng = PyRandom::new(seed);
    let too_few = |want: usize| {
        EvalError::Task(format!(
            "{}: {want} few-shot examples requested but the few-shot split has {}",
            task.source,
            pool.len()
        ))
    };
    for doc in &docs[..n] {
        let mut ctx = r.description(doc)?;
        if k > 0 {
            let shots: Vec<&Doc> = match task.sampler {
                Sampler::FirstN => {
                    let p: Vec<&Doc> = pool
                        .iter()
                        .filter(|d| !exclude_self || d.value != doc.value)
                        .collect();
                    if p.len() < k {
                        return Err(too_few(k));
                    }
                    p[..k].to_vec()
                }
                Sampler::Default => {
                    if exclude_self {
                        let idx = rng
                            .sample(pool.len(), k + 1)
                            .ok_or_else(|| too_few(k + 1))?;
                        let mut res: Vec<&Doc> = idx
                            .into_iter()
                            .map(|i| &pool[i])
                            .filter(|d| d.value != doc.value)
                            .take(k)
                            .collect();
                        if res.len() < k {
                            let p: Vec<&Doc> =
                                pool.iter().filter(|d| d.value != doc.value).collect();
                            let idx = rng.sample(p.len(), k).ok_or_else(|| too_few(k))?;
                            res = idx.into_iter().map(|i| p[i]).collect();
                        }
                        res
                    } else {
                        let idx = rng.sample(pool.len(), k).ok_or_else(|| too_few(k))?;
                        idx.into_iter().map(|i| &pool[i]).collect()
                    }
                }
            };
            for s in shots {
                ctx.push_str(&r.shot(s)?);
            }
        }
        ctx.push_str(&r.text(doc)?);
        // Every render is bounded; the context they make up (description, shots,
        // question) is bounded the same way, before anything is tokenized.
        if ctx.len() > crate::template::MAX_RENDER_BYTES {
            return Err(r.fail(
                doc,
                "context",
                format!(
                    "description, few-shot examples and question make {} bytes, more than the {} MiB Glass tokenizes at once",
                    ctx.len(),
                    crate::template::MAX_RENDER_BYTES >> 20
                ),
            ));
        }
        if let Some(g) = &task.generation {
            let reference = match r.target(doc)? {
                Rendered::Str(s) => s,
                Rendered::Int(i) => i.to_string(),
                Rendered::List(_) => unreachable!("rejected by target()"),
            };
            let prediction_prefix = match task.filter {
                Some(f) => f.prefix(&doc.value, &doc.origin)?.to_string(),
                None => String::new(),
            };
            out.push(Prepared::Generate {
                context: ctx,
                until: g.until.clone(),
                max_gen_toks: g.max_gen_toks,
                reference,
                prediction_prefix,
            });
            continue;
        }
        let choices = r.choices(doc)?;
        if choices.is_empty() {
            return Err(r.fail(doc, "doc_to_choice", "gives no choices"));
        }
        // A target that names no choice would score the document 0 whatever the model
        // did (the harness warns and goes on): refused, so a published score measures
        // the model.
        let gold = match r.target(doc)? {
            Rendered::Int(i) => usize::try_from(i)
                .ok()
                .filter(|&i| i < choices.len())
                .ok_or_else(|| {
                    r.fail(
                        doc,
                        "doc_to_target",
                        format!(
                            "index {i} is outside the {} choices; fix the row or the task's doc_to_target",
                            choices.len()
                        ),
                    )
                })?,
            Rendered::Str(s) => choices.iter().position(|c| *c == s).ok_or_else(|| {
                let shown: String = s.chars().take(80).collect();
                r.fail(
                    doc,
                    "doc_to_target",
                    format!(
                        "`{shown}` is not one of the {} choices; fix the row or the task's doc_to_target",
                        choices.len()
                    ),
                )
            })?,
            Rendered::List(_) => unreachable!("rejected by target()"),
        };
        let gold = Some(gold);
        let continuations = choices
            .iter()
            .map(|c| format!("{}{c}", task.target_delimiter))
            .collect();
        let mc2_labels = match task.process_results {
            Some(crate::process::ResultsFn::TruthfulqaMc2) => {
                let labels = doc
                    .value
                    .pointer("/mc2_targets/labels")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>())
                    .ok_or_else(|| {
                        r.fail(
                            doc,
                            "process_results",
                            "needs `mc2_targets.labels`, a list of integers",
                        )
                    })?;
                if labels.len() != choices.len() {
                    return Err(r.fail(
                        doc,
                        "process_results",
                        format!(
                            "`mc2_targets.labels` has {} entries for {} choices",
                            labels.len(),
                            choices.len()
                        ),
                    ));
                }
                // Each label marks a true (1) or false (0) answer; without one of each the
                // score is 0 or 1 whatever the model does.
                let valid = labels.iter().all(|&l| l == 0 || l == 1)
                    && labels.contains(&0)
                    && labels.contains(&1);
                if !valid {
                    return Err(r.fail(
                        doc,
                        "process_results",
                        format!(
                            "`mc2_targets.labels` is {labels:?}: each label must be 1 (a true answer) or 0 (a false one), with at least one of each; fix the row"
                        ),
                    ));
                }
                Some(labels)
            }
            None => None,
        };
        out.push(Prepared::MultipleChoice {
            context: ctx,
            choices,
            continuations,
            gold,
            mc2_labels,
        });
    }
    Ok(out)
}
