//! `generate_until` requests as lm-evaluation-harness's HF backend answers them, on the
//! engine's KV-cached decoding: the context encoded without special tokens and
//! left-truncated to `max_length − max_gen_toks` tokens, greedy decoding (the first
//! maximum, as `torch.argmax`), a sequence stopped by its end-of-sequence token, by
//! `max_gen_toks`, or when a stop sequence appears in the text of its last
//! `len(encode(stop)) + 2` tokens (the harness's `MultiTokenEOSCriteria`); the answer is
//! the decoded continuation (special tokens skipped) cut before the first stop sequence,
//! the end-of-sequence text included among them (`handle_stop_sequences`).
//!
//! Documents go in fixed groups of [`crate::score::BATCH_DOCS`]: each decoding step feeds
//! one token of every unfinished sequence of the group through one batched forward
//! (`PackedModel::forward_cached_batch`, weights packed once), groups in
//! parallel. The schedule depends only on the documents, so the tokens do not depend on
//! the thread count.

use glass_engine::{CachedInput, KvCache};
use rayon::prelude::*;

use crate::prompts::Prepared;
use crate::score::{Scorer, BATCH_DOCS};
use crate::EvalError;

/// One document's generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generated {
    /// The continuation after post-processing (cut before the first stop sequence).
    pub completion: String,
    /// Tokens generated (the end-of-sequence token not counted).
    pub tokens: usize,
    /// Context tokens fed (after left truncation).
    pub context_tokens: usize,
}

/// One sequence being decoded.
struct Row<'a> {
    ctx: Vec<u32>,
    out: Vec<u32>,
    /// (stop text, tokens looked back) for every stop sequence.
    stops: Vec<(String, usize)>,
    max_new: usize,
    done: bool,
    doc: &'a Prepared,
}

/// The harness's `postprocess_generated_text`: the text before the first occurrence of
/// each non-empty stop sequence in turn.
pub fn cut_at_stops(text: &str, stops: &[String]) -> String {
    let mut s = text;
    for term in stops.iter().filter(|t| !t.is_empty()) {
        if let Some(i) = s.find(term.as_str()) {
            s = &s[..i];
        }
    }
    s.to_string()
}

impl Scorer<'_> {
    /// The stop sequences of a request with the end-of-sequence text appended (unless
    /// already there), as `handle_stop_sequences` does.
    pub fn stop_sequences(&self, until: &[String]) -> Result<Vec<String>, EvalError> {
        let eos = self
            .tokenizer
            .decode(&[self.tokenizer.specials().eos])
            .map_err(|e| EvalError::Score(format!("decoding the end-of-sequence token: {e}")))?;
        let mut out = until.to_vec();
        if !out.contains(&eos) {
            out.push(eos);
        }
        Ok(out)
    }

    /// The context tokens of a generation request: no special tokens added, the last
    /// `max_length − max_gen_toks` kept.
    pub fn generation_context(
        &self,
        context: &str,
        max_gen_toks: usize,
    ) -> Result<Vec<u32>, EvalError> {
        if max_gen_toks >= self.max_length {
            return Err(EvalError::Score(format!(
                "max_gen_toks {max_gen_toks} must be less than the model's {} positions (the harness refuses this too): use a model with a longer context",
                self.max_length
            )));
        }
        let toks = self
            .tokenizer
            .encode(context)
            .map_err(|e| EvalError::Score(format!("tokenizing failed: {e}")))?;
        if toks.is_empty() {
            return Err(EvalError::Score(
                "a generation context encodes to no tokens".into(),
            ));
        }
        let keep = self.max_length - max_gen_toks;
        Ok(toks[toks.len().saturating_sub(keep)..].to_vec())
    }

    fn row<'a>(&self, doc: &'a Prepared) -> Result<Row<'a>, EvalError> {
        let Prepared::Generate {
            context,
            until,
            max_gen_toks,
            ..
        } = doc
        else {
            return Err(EvalError::Score(
                "generation was asked for a document that is not a generate_until request".into(),
            ));
        };
        let stops = self
            .stop_sequences(until)?
            .into_iter()
            .map(|s| {
                let n = self
                    .tokenizer
                    .encode(&s)
                    .map_err(|e| EvalError::Score(format!("tokenizing failed: {e}")))?
                    .len();
                Ok((s, n + 2))
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        Ok(Row {
            ctx: self.generation_context(context, *max_gen_toks)?,
            out: Vec::new(),
            stops,
            max_new: *max_gen_toks,
            done: false,
            doc,
        })
    }

    /// Takes the greedy token for a row and decides whether the row is finished.
    fn advance(&self, row: &mut Row<'_>, logits: &[f32]) -> Result<(), EvalError> {
        let t = glass_engine::argmax_token(logits);
        if t == self.tokenizer.specials().eos {
            row.done = true;
            return Ok(());
        }
        row.out.push(t);
        if row.out.len() >= row.max_new {
            row.done = true;
            return Ok(());
        }
        for (stop, look) in &row.stops {
            let tail = &row.out[row.out.len().saturating_sub(*look)..];
            let text = self
                .tokenizer
                .decode(tail)
                .map_err(|e| EvalError::Score(format!("decoding failed: {e}")))?;
            if text.contains(stop.as_str()) {
                row.done = true;
                break;
            }
        }
        Ok(())
    }

    /// Decodes one group: the contexts in one batched pass, then one batched step per
    /// token over the rows still running.
    fn generate_group(
        &self,
        docs: &[Prepared],
        caches: &mut [KvCache],
    ) -> Result<Vec<Generated>, EvalError> {
        let mut rows = docs
            .iter()
            .map(|d| self.row(d))
            .collect::<Result<Vec<_>, _>>()?;
        let engine = |e: glass_engine::EngineError| EvalError::Score(e.to_string());
        let first = {
            let mut items: Vec<CachedInput> = rows
                .iter()
                .zip(caches.iter_mut())
                .map(|(r, cache)| {
                    cache.clear();
                    CachedInput {
                        tokens: &r.ctx,
                        cache,
                        keep: 1,
                    }
                })
                .collect();
            self.batch(&mut items).map_err(engine)?
        };
        for (r, lg) in rows.iter_mut().zip(&first) {
            self.advance(r, lg)?;
        }
        loop {
            let mut which = Vec::new();
            let mut next = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                if !r.done {
                    which.push(i);
                    next.push([*r.out.last().expect("a running row has a token")]);
                }
            }
            if which.is_empty() {
                break;
            }
            let logits = {
                let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
                let mut items: Vec<CachedInput> = which
                    .iter()
                    .zip(&next)
                    .map(|(&i, t)| CachedInput {
                        tokens: t,
                        cache: slots[i].take().expect("one row per cache"),
                        keep: 1,
                    })
                    .collect();
                self.batch(&mut items).map_err(engine)?
            };
            for (&i, lg) in which.iter().zip(&logits) {
                self.advance(&mut rows[i], lg)?;
            }
        }
        rows.iter()
            .map(|r| {
                let Prepared::Generate { until, .. } = r.doc else {
                    unreachable!("checked in row()")
                };
                let text = self
                    .tokenizer
                    .hf()
                    .decode(&r.out, true)
                    .map_err(|e| EvalError::Score(format!("decoding failed: {e}")))?;
                Ok(Generated {
                    completion: cut_at_stops(&text, &self.stop_sequences(until)?),
                    tokens: r.out.len(),
                    context_tokens: r.ctx.len(),
                })
            })
            .collect()
    }

    /// Answers every `generate_until` request, in document order. `progress` is called
    /// with the number of documents finished so far.
    pub fn generate_all(
        &self,
        docs: &[Prepared],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Generated>, EvalError> {
        // Every step multiplies a few rows by every weight: pack the weights once.
        let own;
        let scorer = match self.packed {
            Some(_) => self,
            None => {
                own = self.model.packed();
                &Scorer {
                    packed: Some(&own),
                    ..*self
                }
            }
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        let groups: Vec<Vec<Generated>> = docs
            .par_chunks(BATCH_DOCS)
            .map_init(
                || {
                    (0..BATCH_DOCS)
                        .map(|_| KvCache::new(self.model))
                        .collect::<Vec<_>>()
                },
                |caches, chunk| {
                    let r = scorer.generate_group(chunk, caches)?;
                    let n = done.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                    progress(n + chunk.len());
                    Ok(r)
                },
            )
            .collect::<Result<_, EvalError>>()?;
        Ok(groups.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_cut_like_the_harness() {
        let stops = vec!["\ndef".to_string(), "\nif".to_string(), String::new()];
        assert_eq!(
            cut_at_stops("    return x\nif y:\ndef f", &stops),
            "    return x"
        );
        assert_eq!(cut_at_stops("abc", &stops), "abc");
        assert_eq!(cut_at_stops("a[DONE]b[DONE]", &["[DONE]".into()]), "a");
    }
}
