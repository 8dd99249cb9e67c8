//! Log-likelihoods as lm-evaluation-harness's HF backend computes them, on the Glass
//! engine: the same tokenisation of (context, continuation) pairs, the same left
//! truncation, the same rolling windows, but each question's context is run through the
//! model once and its KV cache reused for every choice, with documents in parallel.

use glass_data::GlassTokenizer;
use glass_engine::ops::fastmath::{exp_f64, ln_f64};
use glass_engine::{CachedInput, EngineError, KvCache, Model, PackedModel};
use rayon::prelude::*;

use crate::prompts::Prepared;
use crate::EvalError;

/// Scores of one document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Scored {
    /// Per-choice log-likelihoods of the continuations (natural log).
    MultipleChoice {
        /// One per choice.
        loglikelihoods: Vec<f64>,
    },
    /// A generation and, for code tasks, its program's execution.
    Generated {
        /// The continuation (cut before the first stop sequence).
        completion: String,
        /// Tokens generated.
        tokens: usize,
        /// The program executed: filtered prediction + "\n" + reference.
        program: String,
        /// Its execution.
        result: crate::code::CodeResult,
    },
    /// Total log-likelihood of a rolling text.
    Rolling {
        /// Sum over every token.
        loglikelihood: f64,
        /// Tokens scored.
        tokens: usize,
    },
}

/// The model and tokenizer that score requests.
pub struct Scorer<'a> {
    /// Model.
    pub model: &'a Model,
    /// The model with its weights packed once (same bits, no packing per product);
    /// `None` packs per product.
    pub packed: Option<&'a PackedModel<'a>>,
    /// Tokenizer (encodes without special tokens, like the harness's HF causal models).
    pub tokenizer: &'a GlassTokenizer,
    /// Token conditioning an empty context and the first rolling window: BOS if the
    /// tokenizer has one, else EOS (the harness's `prefix_token_id`).
    pub prefix_token: u32,
    /// Longest input (the model's `max_seq_len`, the exported `max_position_embeddings`).
    pub max_length: usize,
}

/// Python's `str.isspace` for one character (`str.rstrip` strips these).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `log_softmax(row)[t]`, accumulated in f64.
fn log_prob(row: &[f32], t: u32) -> f64 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    // Portable exp/ln (no CPU-dependent libm variants), so scores match across machines.
    let s: f64 = row.iter().map(|&x| exp_f64(x as f64 - m)).sum();
    row[t as usize] as f64 - m - ln_f64(s)
}

impl Scorer<'_> {
    /// [`Model::forward_cached_tail`], through the packed weights when there are some.
    fn tail(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep: usize,
    ) -> Result<Vec<f32>, EngineError> {
        match self.packed {
            Some(p) => p.forward_cached_tail(tokens, cache, keep),
            None => self.model.forward_cached_tail(tokens, cache, keep),
        }
    }

    /// [`Model::forward_cached_batch`], through the packed weights when there are some.
    pub(crate) fn batch(
        &self,
        items: &mut [CachedInput<'_>],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        match self.packed {
            Some(p) => p.forward_cached_batch(items),
            None => self.model.forward_cached_batch(items),
        }
    }

    fn encode(&self, s: &str) -> Result<Vec<u32>, EvalError> {
        self.tokenizer
            .encode(s)
            .map_err(|e| EvalError::Score(format!("tokenizing failed: {e}")))
    }

    /// The harness's `loglikelihood` tokenisation of one pair: trailing whitespace of
    /// the context moves to the continuation; the continuation's tokens are the tail of
    /// `encode(context + continuation)` after `len(encode(context))`; an empty context
    /// becomes the prefix token.
    pub fn encode_pair(
        &self,
        context: &str,
        continuation: &str,
    ) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
        if context.is_empty() {
            let cont = self.encode(continuation)?;
            return Ok(match cont.first() {
                Some(&f) if f == self.prefix_token => (vec![f], cont[1..].to_vec()),
                _ => (vec![self.prefix_token], cont),
            });
        }
        let trimmed = context.trim_end_matches(py_space);
        let moved = &context[trimmed.len()..];
        let whole = self.encode(&format!("{trimmed}{moved}{continuation}"))?;
        let ctx = self.encode(trimmed)?;
        let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
        Ok((ctx, cont))
    }

    /// Log-likelihood of `cont` after `ctx` in a fresh pass over the (left-truncated)
    /// sequence, exactly the harness's input `(ctx + cont)[-(L+1):][:-1]`.
    fn score_full(&self, ctx: &[u32], cont: &[u32], cache: &mut KvCache) -> Result<f64, EvalError> {
        let l = self.max_length;
        let full: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let start = full.len().saturating_sub(l + 1);
        let inp = &full[start..full.len() - 1];
        cache.clear();
        let logits = self.tail(inp, cache, cont.len()).map_err(engine)?;
        let v = self.model.cfg.vocab_size;
        Ok(cont
            .iter()
            .enumerate()
            .map(|(i, &t)| log_prob(&logits[i * v..(i + 1) * v], t))
            .sum())
    }

    /// Per-choice log-likelihoods for one question, the context computed once.
    pub fn multiple_choice(
        &self,
        context: &str,
        continuations: &[String],
        cache: &mut KvCache,
    ) -> Result<Vec<f64>, EvalError> {
        let pairs = continuations
            .iter()
            .map(|c| self.encode_pair(context, c))
            .collect::<Result<Vec<_>, _>>()?;
        let l = self.max_length;
        for (ctx, cont) in &pairs {
            if ctx.is_empty() || cont.is_empty() {
                return Err(EvalError::Score(format!(
                    "a continuation of {context:?} encodes to no tokens (the harness refuses it too)"
                )));
            }
            if cont.len() > l {
                return Err(EvalError::Score(format!(
                    "a choice of the question {:?} is {} tokens, longer than the model's {l} positions: \
                     the task does not fit this model (use a model with more positions or a task \
                     with shorter choices)",
                    context.chars().take(60).collect::<String>(),
                    cont.len()
                )));
            }
        }
        let v = self.model.cfg.vocab_size;
        let shared = &pairs[0].0;
        let can_share = pairs
            .iter()
            .all(|(ctx, cont)| ctx == shared && ctx.len() + cont.len() <= l + 1);
        if !can_share {
            return pairs
                .iter()
                .map(|(ctx, cont)| self.score_full(ctx, cont, cache))
                .collect();
        }
        cache.clear();
        let last = self.tail(shared, cache, 1).map_err(engine)?;
        let n0 = shared.len();
        let mut out = Vec::with_capacity(pairs.len());
        for (_, cont) in &pairs {
            let mut ll = log_prob(&last, cont[0]);
            if cont.len() > 1 {
                cache.truncate(n0);
                let k = cont.len() - 1;
                let logits = self.tail(&cont[..k], cache, k).map_err(engine)?;
                for (i, &t) in cont[1..].iter().enumerate() {
                    ll += log_prob(&logits[i * v..(i + 1) * v], t);
                }
            }
            out.push(ll);
        }
        Ok(out)
    }

    /// The harness's `loglikelihood_rolling`: disjoint windows of `max_length` tokens,
    /// the first conditioned on the prefix token, each scored in its own pass.
    pub fn rolling(&self, text: &str, cache: &mut KvCache) -> Result<(f64, usize), EvalError> {
        let toks = self.encode(text)?;
        let mut total = 0.0;
        for (ctx, pred) in rolling_windows(&toks, self.prefix_token, self.max_length) {
            total += self.score_full(&ctx, &pred, cache)?;
        }
        Ok((total, toks.len()))
    }

    /// Scores a fixed group of documents: the beginning their contexts share (once), the
    /// rest of every multiple-choice question's context in one batched pass, then choice
    /// `c` of every question in one batched pass after
    /// its question's cached context; rolling windows of all texts in batched passes.
    /// Questions whose inputs need left truncation are scored one by one.
    // Choice `c` of every question is one batched pass; the index addresses
    // per-question lists of different lengths, so a range loop is the clear form.
    #[allow(clippy::needless_range_loop)]
    fn score_chunk(
        &self,
        docs: &[Prepared],
        caches: &mut [KvCache],
    ) -> Result<Vec<Scored>, EvalError> {
        let mut out: Vec<Option<Scored>> = vec![None; docs.len()];
        // (doc slot, shared context, continuations) of the questions batched together.
        let mut batch: Vec<(usize, Vec<u32>, Vec<Vec<u32>>)> = Vec::new();
        // (doc slot, input, predicted tokens) of every rolling window in the group.
        let mut windows: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        let l = self.max_length;
        for (i, d) in docs.iter().enumerate() {
            match d {
                Prepared::Rolling { text } => {
                    let toks = self.encode(text)?;
                    for (ctx, pred) in rolling_windows(&toks, self.prefix_token, l) {
                        let full: Vec<u32> = ctx.iter().chain(&pred).copied().collect();
                        let start = full.len().saturating_sub(l + 1);
                        windows.push((i, full[start..full.len() - 1].to_vec(), pred));
                    }
                    out[i] = Some(Scored::Rolling {
                        loglikelihood: 0.0,
                        tokens: toks.len(),
                    });
                }
                Prepared::Generate { .. } => {
                    return Err(EvalError::Score(
                        "a generate_until request cannot be scored by log-likelihood".into(),
                    ))
                }
                Prepared::MultipleChoice {
                    context,
                    continuations,
                    ..
                } => {
                    let pairs = continuations
                        .iter()
                        .map(|c| self.encode_pair(context, c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let shared = pairs.first().map(|p| p.0.clone()).unwrap_or_default();
                    let can_share = !shared.is_empty()
                        && pairs.iter().all(|(ctx, cont)| {
                            *ctx == shared && !cont.is_empty() && ctx.len() + cont.len() <= l + 1
                        });
                    if can_share {
                        batch.push((i, shared, pairs.into_iter().map(|p| p.1).collect()));
                    } else {
                        let loglikelihoods =
                            self.multiple_choice(context, continuations, &mut caches[i])?;
                        out[i] = Some(Scored::MultipleChoice { loglikelihoods });
                    }
                }
            }
        }
        // Rolling windows, as many at a time as there are caches, each in a fresh cache;
        // each document's windows are summed in order.
        let v = self.model.cfg.vocab_size;
        for group in windows.chunks(caches.len()) {
            let mut items: Vec<CachedInput> = group
                .iter()
                .zip(caches.iter_mut())
                .map(|((_, inp, pred), cache)| {
                    cache.clear();
                    CachedInput {
                        tokens: inp,
                        cache,
                        keep: pred.len(),
                    }
                })
                .collect();
            let logits = self.batch(&mut items).map_err(engine)?;
            for ((i, _, pred), lg) in group.iter().zip(logits) {
                let ll: f64 = pred
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| log_prob(&lg[j * v..(j + 1) * v], t))
                    .sum();
                if let Some(Scored::Rolling { loglikelihood, .. }) = &mut out[*i] {
                    *loglikelihood += ll;
                }
            }
        }
        if !batch.is_empty() {
            let mut lls: Vec<Vec<f64>> = batch.iter().map(|b| vec![0.0; b.2.len()]).collect();
            // The beginning the contexts share (a task's fixed few-shot examples or
            // primer): computed once and copied into every question's cache.
            let shared = shared_prefix_len(batch.iter().map(|b| b.1.as_slice()));
            if shared > 0 {
                let (first, ctx) = (batch[0].0, &batch[0].1);
                caches[first].clear();
                self.batch(&mut [CachedInput {
                    tokens: &ctx[..shared],
                    cache: &mut caches[first],
                    keep: 0,
                }])
                .map_err(engine)?;
                let prefix = std::mem::replace(&mut caches[first], KvCache::new(self.model));
                for (i, _, _) in &batch {
                    caches[*i].copy_prefix_from(&prefix, shared);
                }
            }
            // Contexts (the rest of each after the shared beginning): one pass, last
            // position's logits only.
            let last = {
                let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
                let mut items: Vec<CachedInput> = batch
                    .iter()
                    .map(|(i, ctx, _)| {
                        let cache = slots[*i].take().expect("one question per slot");
                        cache.truncate(shared);
                        CachedInput {
                            tokens: &ctx[shared..],
                            cache,
                            keep: 1,
                        }
                    })
                    .collect();
                self.batch(&mut items).map_err(engine)?
            };
            for (q, (_, _, conts)) in batch.iter().enumerate() {
                for (c, cont) in conts.iter().enumerate() {
                    lls[q][c] = log_prob(&last[q], cont[0]);
                }
            }
            let most = batch.iter().map(|b| b.2.len()).max().unwrap_or(0);
            for c in 0..most {
                let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
                let mut which = Vec::new();
                let mut items: Vec<CachedInput> = Vec::new();
                for (q, (i, ctx, conts)) in batch.iter().enumerate() {
                    let Some(cont) = conts.get(c) else { continue };
                    if cont.len() < 2 {
                        continue;
                    }
                    let cache = slots[*i].take().expect("one question per slot");
                    cache.truncate(ctx.len());
                    let k = cont.len() - 1;
                    items.push(CachedInput {
                        tokens: &cont[..k],
                        cache,
                        keep: k,
                    });
                    which.push(q);
                }
                if items.is_empty() {
                    continue;
                }
                let logits = self.batch(&mut items).map_err(engine)?;
                for (q, lg) in which.into_iter().zip(logits) {
                    let cont = &batch[q].2[c];
                    for (t_i, &t) in cont[1..].iter().enumerate() {
                        lls[q][c] += log_prob(&lg[t_i * v..(t_i + 1) * v], t);
                    }
                }
            }
            for ((i, _, _), loglikelihoods) in batch.iter().zip(lls) {
                out[*i] = Some(Scored::MultipleChoice { loglikelihoods });
            }
        }
        Ok(out
            .into_iter()
            .map(|s| s.expect("every document scored"))
            .collect())
    }

    /// Scores every prepared document. Documents go in fixed groups of [`BATCH_DOCS`]
    /// (each group's rows share the matrix products), groups in parallel; results are in
    /// document order and independent of the thread count. `progress` is called with the
    /// number of documents finished so far.
    pub fn score_all(
        &self,
        docs: &[Prepared],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Scored>, EvalError> {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let groups: Vec<Vec<Scored>> = docs
            .par_chunks(BATCH_DOCS)
            .map_init(
                || {
                    (0..BATCH_DOCS)
                        .map(|_| KvCache::new(self.model))
                        .collect::<Vec<_>>()
                },
                |caches, chunk| {
                    let r = self.score_chunk(chunk, caches);
                    progress(
                        done.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed)
                            + chunk.len(),
                    );
                    r
                },
            )
            .collect::<Result<_, _>>()?;
        Ok(groups.into_iter().flatten().collect())
    }
}

/// Documents scored together in one group (fixed, so results never depend on threads).
pub const BATCH_DOCS: usize = 16;

/// Shared beginnings shorter than this many tokens are fed with each context.
pub const SHARED_PREFIX_MIN: usize = 16;

/// How many leading tokens the contexts of a group share and compute once: their common
/// prefix, short of the shortest context (each must feed at least its last token, whose
/// logits score the first continuation token); 0 for fewer than two contexts or a prefix
/// under [`SHARED_PREFIX_MIN`]. A cached prefix gives every later position the values a
/// single pass over the whole context would, so scores keep their bits.
pub fn shared_prefix_len<'a>(contexts: impl IntoIterator<Item = &'a [u32]>) -> usize {
    let mut it = contexts.into_iter();
    let Some(first) = it.next() else { return 0 };
    let (mut n, mut shortest, mut count) = (first.len(), first.len(), 1);
    for c in it {
        n = n.min(first.iter().zip(c).take_while(|(a, b)| a == b).count());
        shortest = shortest.min(c.len());
        count += 1;
    }
    let n = n.min(shortest.saturating_sub(1));
    if count < 2 || n < SHARED_PREFIX_MIN {
        0
    } else {
        n
    }
}

fn engine(e: glass_engine::EngineError) -> EvalError {
    EvalError::Score(e.to_string())
}

/// `get_rolling_token_windows(tokens, prefix, max_len, context_len=1)` followed by
/// `make_disjoint_window`, as (context, predicted) token lists.
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_len: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    let mut out = Vec::new();
    if tokens.is_empty() {
        return out;
    }
    let pred_len = max_len; // max_seq_len - context_len + 1 with context_len = 1
    let first = max_len.min(tokens.len());
    let mut a = vec![prefix];
    a.extend_from_slice(&tokens[..first - 1]);
    out.push((a, tokens[..first].to_vec()));
    let mut predicted = first;
    while predicted < tokens.len() {
        let wl = (tokens.len() - predicted).min(pred_len);
        let end = predicted + wl;
        out.push((
            tokens[end - max_len - 1..end - 1].to_vec(),
            tokens[end - wl..end].to_vec(),
        ));
        predicted += wl;
    }
    out.into_iter()
        .map(|(a, b)| {
            let keep = a.len() - (b.len() - 1);
            (a[..keep].to_vec(), b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows as the harness makes them for 7 tokens, max length 3.
    #[test]
    fn rolling_windows_match_the_harness() {
        let w = rolling_windows(&[1, 2, 3, 4, 5, 6, 7], 0, 3);
        // Python: list(map(make_disjoint_window, get_rolling_token_windows(
        //   [1,2,3,4,5,6,7], prefix_token=0, max_seq_len=3, context_len=1)))
        assert_eq!(
            w,
            vec![
                (vec![0], vec![1, 2, 3]),
                (vec![3], vec![4, 5, 6]),
                (vec![4, 5, 6], vec![7]),
            ]
        );
        assert!(rolling_windows(&[], 0, 3).is_empty());
    }
}
