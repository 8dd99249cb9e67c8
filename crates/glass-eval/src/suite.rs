//! Standard benchmark suites (the Open LLM Leaderboard v1's, and HumanEval + MBPP): the task names (resolved in the harness's task files
//! bundled with Glass, or the user's own with `--include-path`) and the shot counts the
//! Open LLM Leaderboard (v1) used.

/// A suite: (task / group name, few-shot examples, the metric the leaderboard reports).
pub type Suite = &'static [(&'static str, usize, &'static str)];

/// ARC-Challenge 25-shot, HellaSwag 10-shot, MMLU 5-shot, TruthfulQA MC2 0-shot.
pub const LEADERBOARD: Suite = &[
    ("arc_challenge", 25, "acc_norm"),
    ("hellaswag", 10, "acc_norm"),
    ("mmlu", 5, "acc"),
    ("truthfulqa_mc2", 0, "acc"),
];

/// HumanEval 0-shot (pass@1) and MBPP 3-shot (pass_at_1), as the harness ships them.
pub const CODE: Suite = &[("humaneval", 0, "pass@1"), ("mbpp", 3, "pass_at_1")];

/// The suites by name.
pub fn suite(name: &str) -> Option<Suite> {
    match name {
        "leaderboard" => Some(LEADERBOARD),
        "code" => Some(CODE),
        _ => None,
    }
}
