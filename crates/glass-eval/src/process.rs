//! Native versions of the harness's Python hooks (`process_docs: !function utils.x`,
//! `process_results: !function utils.x`) that the standard benchmarks use. A hook is
//! identified by its name *and* the task's `dataset_path` (many task folders have a
//! `utils.process_docs`; only the one written for that dataset is known here); any other
//! `!function` is refused by name. Each is checked byte for byte against the harness's
//! own Python output (`tests/process.rs`, fixtures from `tools/fixtures`).

use serde_json::{Map, Value};

use crate::task::Metric;
use crate::EvalError;

/// A document preprocessing hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocsFn {
    /// `hellaswag/utils.py: process_docs` (with its `preprocess`).
    HellaswagProcessDocs,
}

/// A per-document result hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFn {
    /// `truthfulqa/utils.py: process_results_mc2`: the normalised probability mass of the
    /// true answers.
    TruthfulqaMc2,
}

/// A `filter_list` custom filter (`filter_fn: !function …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterFn {
    /// `humaneval/utils.py: build_predictions`: the program is the document's `prompt`
    /// followed by the generated completion.
    HumanevalBuildPredictions,
}

/// `fewshot_config.samples: !function …`: the few-shot examples as a fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplesFn {
    /// `mbpp/utils.py: list_fewshot_samples`: MBPP tasks 2, 3 and 4 with their code.
    MbppListFewshotSamples,
}

const HUMANEVAL: &str = "openai/openai_humaneval";
const MBPP: &str = "google-research-datasets/mbpp";

/// The native hooks: (where the `!function` stands, function, dataset_path).
pub const NATIVE: &[(&str, &str, &str)] = &[
    ("process_docs", "utils.process_docs", "Rowan/hellaswag"),
    (
        "process_results",
        "utils.process_results_mc2",
        "truthfulqa/truthful_qa",
    ),
    ("metric", "utils.pass_at_k (k: [1])", HUMANEVAL),
    ("metric", "utils.pass_at_1", MBPP),
    ("filter_fn", "utils.build_predictions", HUMANEVAL),
    ("samples", "utils.list_fewshot_samples", MBPP),
];

/// The native code metric for `metric: !function name` in a task over `dataset_path`;
/// `entry` is the `metric_list` entry (HumanEval's `pass_at_k` must have `k: [1]`).
pub fn metric_fn(name: &str, dataset_path: &str, entry: &crate::yaml::Node) -> Option<Metric> {
    match (name, dataset_path) {
        ("utils.pass_at_k", HUMANEVAL | "openai_humaneval") => {
            let k_is_1 = match entry.get("k") {
                Some(crate::yaml::Node::Seq(items, _)) => {
                    items.len() == 1 && items[0].as_str() == Some("1")
                }
                Some(n) => n.as_str() == Some("1"),
                None => false,
            };
            k_is_1.then_some(Metric::PassAtK1)
        }
        ("utils.pass_at_1", MBPP | "mbpp") => Some(Metric::PassAt1),
        _ => None,
    }
}

impl FilterFn {
    /// The native filter for `name` in a task over `dataset_path`.
    pub fn find(name: &str, dataset_path: &str) -> Option<FilterFn> {
        match (name, dataset_path) {
            ("utils.build_predictions", HUMANEVAL | "openai_humaneval") => {
                Some(FilterFn::HumanevalBuildPredictions)
            }
            _ => None,
        }
    }

    /// The text the filter puts before a document's completion.
    pub fn prefix<'a>(self, doc: &'a Value, origin: &str) -> Result<&'a str, EvalError> {
        match self {
            FilterFn::HumanevalBuildPredictions => {
                doc.get("prompt").and_then(Value::as_str).ok_or_else(|| {
                    EvalError::Data(format!(
                        "{origin}: build_predictions needs a string field `prompt`"
                    ))
                })
            }
        }
    }
}

impl SamplesFn {
    /// The native few-shot list for `name` in a task over `dataset_path`.
    pub fn find(name: &str, dataset_path: &str) -> Option<SamplesFn> {
        match (name, dataset_path) {
            ("utils.list_fewshot_samples", MBPP | "mbpp") => {
                Some(SamplesFn::MbppListFewshotSamples)
            }
            _ => None,
        }
    }

    /// The examples, as the Python function returns them.
    pub fn docs(self) -> Vec<Value> {
        match self {
            SamplesFn::MbppListFewshotSamples => {
                serde_json::from_str(MBPP_FEWSHOT).expect("valid JSON")
            }
        }
    }
}

/// `mbpp/utils.py: list_fewshot_samples()` (lm-evaluation-harness 0.4.13) as JSON.
const MBPP_FEWSHOT: &str = r#"[
 {
  "task_id": 2,
  "text": "Write a function to find the similar elements from the given two tuple lists.",
  "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
  "test_list": [
   "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"
  ],
  "is_fewshot": true
 },
 {
  "task_id": 3,
  "text": "Write a python function to identify non-prime numbers.",
  "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
  "test_list": [
   "assert is_not_prime(2) == False",
   "assert is_not_prime(10) == True",
   "assert is_not_prime(35) == True"
  ],
  "is_fewshot": true
 },
 {
  "task_id": 4,
  "text": "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
  "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
  "test_list": [
   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"
  ],
  "is_fewshot": true
 }
]"#;

impl DocsFn {
    /// The native hook for `name` in a task over `dataset_path`.
    pub fn find(name: &str, dataset_path: &str) -> Option<DocsFn> {
        match (name, dataset_path) {
            ("utils.process_docs", "Rowan/hellaswag" | "hellaswag") => {
                Some(DocsFn::HellaswagProcessDocs)
            }
            _ => None,
        }
    }

    /// Applies the hook to one document (the harness's `dataset.map`: the returned
    /// fields are added to, or replace, the document's own).
    pub fn apply(self, doc: &Value, origin: &str) -> Result<Value, EvalError> {
        match self {
            DocsFn::HellaswagProcessDocs => hellaswag_process_doc(doc, origin),
        }
    }
}

impl ResultsFn {
    /// The native hook for `name` in a task over `dataset_path`.
    pub fn find(name: &str, dataset_path: &str) -> Option<ResultsFn> {
        match (name, dataset_path) {
            ("utils.process_results_mc2", "truthfulqa/truthful_qa" | "truthful_qa") => {
                Some(ResultsFn::TruthfulqaMc2)
            }
            _ => None,
        }
    }
}

/// Why a `!function` is refused.
pub fn refusal(key: &str, name: &str, dataset_path: &str) -> String {
    let known: Vec<String> = NATIVE
        .iter()
        .filter(|(k, _, _)| *k == key)
        .map(|(_, f, d)| format!("{f} for {d}"))
        .collect();
    format!(
        "`{key}: !function {name}` (Python code) is not supported for dataset `{dataset_path}`; glass eval implements natively only: {}",
        known.join(", ")
    )
}

fn field<'a>(doc: &'a Value, key: &str, origin: &str) -> Result<&'a Value, EvalError> {
    doc.get(key).ok_or_else(|| {
        EvalError::Data(format!(
            "{origin}: process_docs needs field `{key}`, which the row lacks"
        ))
    })
}

fn string<'a>(doc: &'a Value, key: &str, origin: &str) -> Result<&'a str, EvalError> {
    field(doc, key, origin)?
        .as_str()
        .ok_or_else(|| EvalError::Data(format!("{origin}: field `{key}` must be a string")))
}

/// Python's `str.isspace` (what `str.strip()` removes): Unicode White_Space plus the
/// information separators U+001C..U+001F, which Python also counts.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.capitalize()`: the first character in title case, the rest lower case.
/// Title case differs from upper case only for a few characters (the Latin digraphs and
/// `ß`), handled here; Greek letters with ypogegrammeni, whose title case Rust's
/// standard library cannot give, fall back to upper case.
pub fn py_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out = match first {
        'Ǆ' | 'ǅ' | 'ǆ' => "ǅ".to_string(),
        'Ǉ' | 'ǈ' | 'ǉ' => "ǈ".to_string(),
        'Ǌ' | 'ǋ' | 'ǌ' => "ǋ".to_string(),
        'Ǳ' | 'ǲ' | 'ǳ' => "ǲ".to_string(),
        'ß' => "Ss".to_string(),
        c => c.to_uppercase().collect(),
    };
    out.push_str(&chars.as_str().to_lowercase());
    out
}

/// `re.sub("\\[.*?\\]", "", text)`: remove each shortest `[...]` that does not span a
/// newline (`.` does not match `\n`), scanning left to right.
fn remove_brackets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let close = after.find(']');
        let newline = after.find('\n');
        match close {
            Some(c) if newline.is_none_or(|n| n > c) => {
                out.push_str(&rest[..open]);
                rest = &after[c + 1..];
            }
            _ => {
                // No match at this `[`: keep it and go on after it.
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// HellaSwag's `preprocess(text)`.
pub fn hellaswag_preprocess(text: &str) -> String {
    let t = text.trim_matches(py_isspace);
    let t = t.replace(" [title]", ". ");
    let t = remove_brackets(&t);
    t.replace("  ", " ")
}

fn hellaswag_process_doc(doc: &Value, origin: &str) -> Result<Value, EvalError> {
    let ctx = format!(
        "{} {}",
        string(doc, "ctx_a", origin)?,
        py_capitalize(string(doc, "ctx_b", origin)?)
    );
    let query = hellaswag_preprocess(&format!(
        "{}: {ctx}",
        string(doc, "activity_label", origin)?
    ));
    let endings = field(doc, "endings", origin)?
        .as_array()
        .ok_or_else(|| EvalError::Data(format!("{origin}: field `endings` must be a list")))?;
    let choices = endings
        .iter()
        .map(|e| {
            e.as_str()
                .map(|s| Value::String(hellaswag_preprocess(s)))
                .ok_or_else(|| EvalError::Data(format!("{origin}: `endings` must be strings")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // int(doc["label"]): a label string of digits (optionally signed / spaced, as int()).
    let label = field(doc, "label", origin)?;
    let gold = match label {
        Value::Number(n) if n.is_i64() => n.as_i64(),
        Value::String(s) => s.trim_matches(py_isspace).parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| EvalError::Data(format!("{origin}: `label` {label} is not an integer")))?;
    let mut out: Map<String, Value> = doc.as_object().cloned().unwrap_or_default();
    out.insert("query".into(), Value::String(query));
    out.insert("choices".into(), Value::Array(choices));
    out.insert("gold".into(), Value::from(gold));
    Ok(Value::Object(out))
}

/// TruthfulQA MC2 for one document: `exp` of each choice's log-likelihood, normalised
/// to sum 1, summed over the choices labelled 1 in `mc2_targets.labels` (numpy's f64
/// arithmetic and summation order). `exp` is the numerics contract's
/// (`glass_engine::ops::fastmath::exp_f64`, musl's algorithm), not the platform's, so the
/// published score has the same bits on every CPU; numpy's `exp` may differ from either
/// by 1 ulp.
pub fn truthfulqa_mc2(loglikelihoods: &[f64], labels: &[i64]) -> f64 {
    use glass_engine::ops::fastmath::exp_f64;
    let probs: Vec<f64> = loglikelihoods.iter().map(|&l| exp_f64(l)).collect();
    let total = pairwise_sum(&probs);
    let norm: Vec<f64> = probs.iter().map(|p| p / total).collect();
    let chosen: Vec<f64> = norm
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l == 1)
        .map(|(p, _)| *p)
        .collect();
    pairwise_sum(&chosen)
}

/// numpy's `np.sum` over a 1-d float64 array: sequential below 8 elements, otherwise
/// 8 interleaved accumulators (pairwise above 128 elements), which is what makes it
/// differ from a left-to-right sum in the last bits.
pub fn pairwise_sum(xs: &[f64]) -> f64 {
    if xs.len() < 8 {
        return xs.iter().fold(0.0, |a, &b| a + b);
    }
    if xs.len() <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&xs[..8]);
        let mut i = 8;
        while i + 8 <= xs.len() {
            for (acc, x) in r.iter_mut().zip(&xs[i..i + 8]) {
                *acc += x;
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &xs[i..] {
            res += x;
        }
        return res;
    }
    let mut n2 = xs.len() / 2;
    n2 -= n2 % 8;
    pairwise_sum(&xs[..n2]) + pairwise_sum(&xs[n2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_are_removed_as_python_re_does() {
        assert_eq!(remove_brackets("a [b] c [d"), "a  c [d");
        assert_eq!(remove_brackets("[x\n] [y]z"), "[x\n] z");
        assert_eq!(remove_brackets("[[a]]"), "]");
        assert_eq!(
            hellaswag_preprocess("  Home [title] How to  [step] x  "),
            "Home. How to  x"
        );
    }

    #[test]
    fn capitalize_lowers_the_rest_like_python() {
        assert_eq!(py_capitalize("hELLO World"), "Hello world");
        assert_eq!(py_capitalize("ǆem"), "ǅem");
        assert_eq!(py_capitalize(""), "");
    }

    #[test]
    fn mc2_is_the_true_share_of_probability_mass() {
        let ll = [(0.5f64).ln(), (0.25f64).ln(), (0.25f64).ln()];
        assert!((truthfulqa_mc2(&ll, &[1, 0, 0]) - 0.5).abs() < 1e-15);
        assert!((truthfulqa_mc2(&ll, &[1, 1, 0]) - 0.75).abs() < 1e-15);
    }

    /// MC2 uses the contract's `exp`, bit for bit, also on log-likelihoods where the
    /// platform's `exp` (glibc's, chosen by CPU) gives other last bits.
    #[test]
    fn mc2_uses_the_contract_exp() {
        use glass_engine::ops::fastmath::exp_f64;
        let lls: Vec<f64> = (1..4000).map(|i| -(i as f64) * 0.013_7).collect();
        let differ = lls.iter().filter(|l| l.exp() != exp_f64(**l)).count();
        eprintln!(
            "{differ} of {} inputs where the platform exp differs",
            lls.len()
        );
        for w in lls.chunks(4) {
            let probs: Vec<f64> = w.iter().map(|&l| exp_f64(l)).collect();
            let total = pairwise_sum(&probs);
            let want = pairwise_sum(&[probs[0] / total, probs[1] / total]);
            let got = truthfulqa_mc2(w, &[1, 1, 0, 0][..w.len()]);
            assert_eq!(got.to_bits(), want.to_bits(), "{w:?}");
        }
    }

    #[test]
    fn numpy_sum_order() {
        let xs: Vec<f64> = (0..300).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let s = pairwise_sum(&xs);
        let naive: f64 = xs.iter().sum();
        assert!((s - naive).abs() < 1e-12);
    }
}
