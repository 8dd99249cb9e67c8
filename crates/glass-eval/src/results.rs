//! Per-document outcomes and their aggregation into the harness's metrics. Accuracy
//! stderr is the harness's `mean_stderr` (sample standard deviation / √n). The
//! corpus-level perplexities are ratios of sums, for which the harness reports a random
//! bootstrap; Glass stores no stderr for them (NULL) rather than a random number.

use glass_engine::ops::fastmath::exp_f64;
use serde::{Deserialize, Serialize};

use crate::prompts::Prepared;
use crate::score::Scored;
use crate::task::Metric;

/// One document's outcome, as written with `--log-samples` (read back when a stored
/// result is rewritten).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Index in the evaluated split.
    pub doc: usize,
    /// Per-choice log-likelihoods (multiple choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglikelihoods: Option<Vec<f64>>,
    /// Gold choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<usize>,
    /// Highest log-likelihood choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred: Option<usize>,
    /// Highest log-likelihood per character.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_norm: Option<usize>,
    /// Per-choice log-likelihoods after an empty context (`acc_mutual_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglikelihoods_unconditional: Option<Vec<f64>>,
    /// Highest log-likelihood gain from the context (`acc_mutual_info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pred_mutual_info: Option<usize>,
    /// The document's `acc` from a `process_results` hook (TruthfulQA MC2: the true
    /// answers' share of probability mass) instead of `pred == gold`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Rolling log-likelihood.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglikelihood: Option<f64>,
    /// Words (`len(re.split(r"\s+", text))`), bytes and tokens of a rolling text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<usize>,
    /// UTF-8 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
    /// Tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Generation tasks: the continuation as the metric receives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    /// Code tasks: the program executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Code tasks: `passed`, `failed: <exception>` or `timed out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Code tasks: whether the program passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
}

/// One metric's value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricValue {
    /// Harness name.
    pub metric: String,
    /// Value.
    pub value: f64,
    /// Standard error (accuracies only).
    pub stderr: Option<f64>,
    /// Documents.
    pub n: usize,
}

/// `len(re.split(r"\s+", text))`: one more than the number of whitespace runs.
pub fn count_words(text: &str) -> usize {
    let mut runs = 0;
    let mut in_space = false;
    for c in text.chars() {
        let sp = c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
        if sp && !in_space {
            runs += 1;
        }
        in_space = sp;
    }
    runs + 1
}

/// Per-document outcomes.
pub fn samples(prepared: &[Prepared], scored: &[Scored]) -> Vec<Sample> {
    prepared
        .iter()
        .zip(scored)
        .enumerate()
        .map(|(doc, (p, s))| match (p, s) {
            (
                Prepared::MultipleChoice {
                    choices,
                    gold,
                    mc2_labels,
                    ..
                },
                Scored::MultipleChoice { loglikelihoods },
            ) => {
                let norm: Vec<f64> = loglikelihoods
                    .iter()
                    .zip(choices)
                    .map(|(ll, c)| ll / c.chars().count() as f64)
                    .collect();
                Sample {
                    doc,
                    loglikelihoods: Some(loglikelihoods.clone()),
                    gold: *gold,
                    pred: Some(glass_engine::argmax(loglikelihoods)),
                    pred_norm: Some(glass_engine::argmax(&norm)),
                    loglikelihoods_unconditional: None,
                    pred_mutual_info: None,
                    score: mc2_labels
                        .as_ref()
                        .map(|l| crate::process::truthfulqa_mc2(loglikelihoods, l)),
                    loglikelihood: None,
                    words: None,
                    bytes: None,
                    tokens: None,
                    completion: None,
                    program: None,
                    result: None,
                    passed: None,
                }
            }
            (
                Prepared::Rolling { text },
                Scored::Rolling {
                    loglikelihood,
                    tokens,
                },
            ) => Sample {
                doc,
                loglikelihoods: None,
                gold: None,
                pred: None,
                pred_norm: None,
                loglikelihoods_unconditional: None,
                pred_mutual_info: None,
                score: None,
                loglikelihood: Some(*loglikelihood),
                words: Some(count_words(text)),
                bytes: Some(text.len()),
                tokens: Some(*tokens),
                completion: None,
                program: None,
                result: None,
                passed: None,
            },
            (
                Prepared::Generate { .. },
                Scored::Generated {
                    completion,
                    tokens,
                    program,
                    result,
                },
            ) => Sample {
                doc,
                loglikelihoods: None,
                gold: None,
                pred: None,
                pred_norm: None,
                loglikelihoods_unconditional: None,
                pred_mutual_info: None,
                score: None,
                loglikelihood: None,
                words: None,
                bytes: None,
                tokens: Some(*tokens),
                completion: Some(completion.clone()),
                program: Some(program.clone()),
                result: Some(result.result.clone()),
                passed: Some(result.passed),
            },
            _ => unreachable!("scores follow their requests"),
        })
        .collect()
}

/// The requests `acc_mutual_info` adds: every multiple-choice document's continuations
/// after an empty context (the harness's `("", target_delimiter + choice)`).
pub fn unconditional(prepared: &[Prepared]) -> Vec<Prepared> {
    prepared
        .iter()
        .map(|p| match p {
            Prepared::MultipleChoice {
                choices,
                continuations,
                gold,
                ..
            } => Prepared::MultipleChoice {
                context: String::new(),
                choices: choices.clone(),
                continuations: continuations.clone(),
                gold: *gold,
                mc2_labels: None,
            },
            other => other.clone(),
        })
        .collect()
}

/// Adds the unconditional log-likelihoods ([`unconditional`], scored) to the samples and
/// the choice that gains most from the context.
pub fn add_mutual_info(samples: &mut [Sample], unconditional: &[Scored]) {
    for (s, u) in samples.iter_mut().zip(unconditional) {
        if let (Some(lls), Scored::MultipleChoice { loglikelihoods }) = (&s.loglikelihoods, u) {
            let gain: Vec<f64> = lls.iter().zip(loglikelihoods).map(|(c, u)| c - u).collect();
            s.pred_mutual_info = Some(glass_engine::argmax(&gain));
            s.loglikelihoods_unconditional = Some(loglikelihoods.clone());
        }
    }
}

fn mean_and_stderr(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, None);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt() / n.sqrt()))
}

/// Aggregates per-document outcomes into the task's metrics.
pub fn aggregate(metrics: &[Metric], samples: &[Sample]) -> Vec<MetricValue> {
    let n = samples.len();
    metrics
        .iter()
        .map(|&m| {
            let (value, stderr) = match m {
                Metric::Acc | Metric::AccNorm => {
                    let xs: Vec<f64> = samples
                        .iter()
                        .map(|s| {
                            if let (Metric::Acc, Some(score)) = (m, s.score) {
                                return score;
                            }
                            let p = if m == Metric::Acc {
                                s.pred
                            } else {
                                s.pred_norm
                            };
                            f64::from(u8::from(p.is_some() && p == s.gold))
                        })
                        .collect();
                    mean_and_stderr(&xs)
                }
                Metric::AccMutualInfo => {
                    let xs: Vec<f64> = samples
                        .iter()
                        .map(|s| {
                            let p = s.pred_mutual_info;
                            f64::from(u8::from(p.is_some() && p == s.gold))
                        })
                        .collect();
                    mean_and_stderr(&xs)
                }
                Metric::PassAtK1 | Metric::PassAt1 => {
                    let xs: Vec<f64> = samples
                        .iter()
                        .map(|s| f64::from(u8::from(s.passed == Some(true))))
                        .collect();
                    mean_and_stderr(&xs)
                }
                _ => {
                    let ll: f64 = samples.iter().filter_map(|s| s.loglikelihood).sum();
                    let words: usize = samples.iter().filter_map(|s| s.words).sum();
                    let bytes: usize = samples.iter().filter_map(|s| s.bytes).sum();
                    let v = match m {
                        Metric::WordPerplexity => exp_f64(-ll / words as f64),
                        Metric::BytePerplexity => exp_f64(-ll / bytes as f64),
                        _ => -ll / bytes as f64 / std::f64::consts::LN_2,
                    };
                    (v, None)
                }
            };
            MetricValue {
                metric: m.name().to_string(),
                value,
                stderr,
                n,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_python_re() {
        // len(re.split(r"\s+", s)) for each s
        assert_eq!(count_words("a b"), 2);
        assert_eq!(count_words(" a"), 2);
        assert_eq!(count_words("a  b\n"), 3);
        assert_eq!(count_words(""), 1);
    }

    /// acc and acc_norm disagree when a long choice has the best total but not the best
    /// per-character log-likelihood: lls [-4, -6], lengths 2 and 10 chars → acc picks
    /// choice 0 (-4 > -6), acc_norm picks choice 1 (-0.6 > -2).
    #[test]
    fn acc_and_acc_norm_differ_on_crafted_scores() {
        let prepared = vec![
            Prepared::MultipleChoice {
                context: "Q".into(),
                choices: vec!["ab".into(), "abcdefghij".into()],
                continuations: vec![" ab".into(), " abcdefghij".into()],
                gold: Some(1),
                mc2_labels: None,
            },
            Prepared::MultipleChoice {
                context: "Q".into(),
                choices: vec!["ab".into(), "abcdefghij".into()],
                continuations: vec![" ab".into(), " abcdefghij".into()],
                gold: Some(0),
                mc2_labels: None,
            },
        ];
        let scored = vec![
            Scored::MultipleChoice {
                loglikelihoods: vec![-4.0, -6.0],
            },
            Scored::MultipleChoice {
                loglikelihoods: vec![-4.0, -6.0],
            },
        ];
        let s = samples(&prepared, &scored);
        assert_eq!((s[0].pred, s[0].pred_norm), (Some(0), Some(1)));
        let m = aggregate(&[Metric::Acc, Metric::AccNorm], &s);
        assert_eq!(m[0].value, 0.5);
        assert_eq!(m[1].value, 0.5);
        // one right, one wrong: sample std 0.7071…, / √2 = 0.5
        assert!((m[0].stderr.unwrap() - 0.5).abs() < 1e-12);
        // Only the first document: acc 0, acc_norm 1.
        let m = aggregate(&[Metric::Acc, Metric::AccNorm], &s[..1]);
        assert_eq!((m[0].value, m[1].value), (0.0, 1.0));
        assert_eq!(m[0].stderr, None);
    }

    /// acc_mutual_info ranks choices by what the context adds: conditional [-4, -6] and
    /// unconditional [-1, -6] give gains [-3, 0], so choice 1 wins where acc picks 0;
    /// the unconditional requests keep the choices and the delimiter, with no context.
    #[test]
    fn mutual_info_ranks_by_the_contexts_gain() {
        let prepared = vec![Prepared::MultipleChoice {
            context: "Q".into(),
            choices: vec!["ab".into(), "cd".into()],
            continuations: vec!["\nab".into(), "\ncd".into()],
            gold: Some(1),
            mc2_labels: None,
        }];
        let aux = unconditional(&prepared);
        let Prepared::MultipleChoice {
            context,
            continuations,
            ..
        } = &aux[0]
        else {
            panic!("multiple choice");
        };
        assert_eq!((context.as_str(), continuations[0].as_str()), ("", "\nab"));
        let mut s = samples(
            &prepared,
            &[Scored::MultipleChoice {
                loglikelihoods: vec![-4.0, -6.0],
            }],
        );
        add_mutual_info(
            &mut s,
            &[Scored::MultipleChoice {
                loglikelihoods: vec![-1.0, -6.0],
            }],
        );
        assert_eq!((s[0].pred, s[0].pred_mutual_info), (Some(0), Some(1)));
        let m = aggregate(&[Metric::Acc, Metric::AccMutualInfo], &s);
        assert_eq!((m[0].value, m[1].value), (0.0, 1.0));
    }
}
