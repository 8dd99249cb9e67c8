//! Incremental decoding with a KV cache, and greedy / seeded temperature + top-p sampling.
//!
//! Decoding reuses the training kernels (norms, RoPE, the per-head attention routine,
//! the head GEMM), so cached logits agree with full-sequence logits to rounding.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{run_trunk, Model, Trunk};
use crate::ops::attention::{self, KeyLayout, SeqKv};
use crate::ops::lm_head::HeadDims;
use crate::packed::PackedModel;
use crate::EngineError;

/// Keys and values of every position decoded so far, per layer: values `[len, KV·hd]`,
/// keys transposed, `[KV·hd, key_cols]` (one row per key dimension, a column per
/// position), so that a decoding step's one-row query product reads them in place
/// ([`KeyLayout::Columns`]) instead of packing them at every step.
///
/// The buffers grow as positions are fed (amortised doubling), so a cache costs memory
/// for the positions it holds, not for `max_seq_len`: scoring a short prompt with a model
/// whose context is long stays small.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    /// Columns (positions) each layer's key buffer has room for.
    key_cols: usize,
    capacity: usize,
    kv_dim: usize,
}

impl KvCache {
    /// An empty cache for `model`; it holds at most `max_seq_len` positions.
    pub fn new(model: &Model) -> Self {
        let c = &model.cfg;
        KvCache {
            k: vec![Vec::new(); c.n_layers],
            v: vec![Vec::new(); c.n_layers],
            len: 0,
            key_cols: 0,
            capacity: c.max_seq_len,
            kv_dim: c.kv_dim(),
        }
    }
    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The most positions the cache may hold (the model's `max_seq_len`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Bytes currently allocated for keys and values.
    pub fn allocated_bytes(&self) -> usize {
        self.k
            .iter()
            .chain(&self.v)
            .map(|b| b.capacity() * std::mem::size_of::<f32>())
            .sum()
    }
    /// Forgets everything (reuse the allocation for a new prompt).
    pub fn clear(&mut self) {
        self.truncate(0);
    }
    /// Forgets every position from `len` on (no-op if the cache is shorter), so several
    /// continuations of one shared prefix can be scored without recomputing or copying it.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        let keep = self.len * self.kv_dim;
        for b in &mut self.v {
            b.truncate(keep);
        }
    }

    /// Holds exactly the first `len` positions of `src` (a cache of the same model): a
    /// prefix that several sequences share is computed once and copied into each one's
    /// cache, and each sequence then feeds only its own rest.
    ///
    /// Panics if `src` holds fewer than `len` positions or is of another shape.
    pub fn copy_prefix_from(&mut self, src: &KvCache, len: usize) {
        assert!(
            len <= src.len && src.kv_dim == self.kv_dim && src.k.len() == self.k.len(),
            "copy_prefix_from: {len} positions of a cache holding {}",
            src.len
        );
        self.clear();
        self.reserve_keys(len);
        let (kvd, from, to) = (self.kv_dim, src.key_cols, self.key_cols);
        for (dst, s) in self.k.iter_mut().zip(&src.k) {
            for c in 0..kvd {
                dst[c * to..c * to + len].copy_from_slice(&s[c * from..c * from + len]);
            }
        }
        for (dst, s) in self.v.iter_mut().zip(&src.v) {
            dst.extend_from_slice(&s[..len * kvd]);
        }
        self.len = len;
    }

    /// Makes room for keys of positions `0..len` (doubling, at most `capacity`), moving
    /// the cached columns into the wider rows.
    fn reserve_keys(&mut self, len: usize) {
        if len <= self.key_cols {
            return;
        }
        let cols = len
            .max(2 * self.key_cols)
            .max(16)
            .min(self.capacity)
            .max(len);
        let (old, kvd, n) = (self.key_cols, self.kv_dim, self.len);
        for layer in &mut self.k {
            let mut wider = vec![0.0f32; kvd * cols];
            for c in 0..kvd {
                wider[c * cols..c * cols + n].copy_from_slice(&layer[c * old..c * old + n]);
            }
            *layer = wider;
        }
        self.key_cols = cols;
    }
}

/// One sequence of a [`Model::forward_cached_batch`] call.
pub struct CachedInput<'a> {
    /// Tokens fed after the cached positions.
    pub tokens: &'a [u32],
    /// The sequence's cache; grows by `tokens.len()`.
    pub cache: &'a mut KvCache,
    /// Logits wanted for this many final positions.
    pub keep: usize,
}

impl Model {
    /// Feeds `tokens` after the cached positions and returns their logits
    /// `[tokens.len(), vocab]`; the cache grows by `tokens.len()`.
    pub fn forward_cached(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_cached_tail(tokens, cache, tokens.len())
    }

    /// Like [`Model::forward_cached`], but returns logits only for the last `keep` fed
    /// positions (`[keep, vocab]`): scoring needs the prediction after a context, not
    /// the context's own, and the output head is a large share of a small model's work.
    pub fn forward_cached_tail(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_cached_tail_with(tokens, cache, keep, None)
    }

    fn forward_cached_tail_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep: usize,
        packed: Option<&crate::packed::PackedWeights>,
    ) -> Result<Vec<f32>, EngineError> {
        let mut items = [CachedInput {
            tokens,
            cache,
            keep,
        }];
        Ok(self
            .forward_cached_batch_with(&mut items, packed)?
            .pop()
            .unwrap_or_default())
    }

    /// Feeds several independent sequences at once, each after its own cache, and returns
    /// each one's logits for its last `keep` positions. Every layer except attention is
    /// row-wise, so the rows of all sequences go through each matrix product together
    /// (large products instead of many small ones); attention runs per sequence against
    /// its own cache. A sequence's result depends only on the batch it is in, never on
    /// the thread count.
    pub fn forward_cached_batch(
        &self,
        items: &mut [CachedInput<'_>],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.forward_cached_batch_with(items, None)
    }

    /// [`Model::forward_cached_batch`] with the linear weights packed beforehand when
    /// `packed` is given ([`PackedModel`]); the same bits either way.
    pub(crate) fn forward_cached_batch_with(
        &self,
        items: &mut [CachedInput<'_>],
        packed: Option<&crate::packed::PackedWeights>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let cfg = &self.cfg;
        for it in items.iter() {
            let n = it.tokens.len();
            if it.keep > n {
                return Err(EngineError::Input(format!(
                    "asked for logits of {} positions but fed {n}",
                    it.keep
                )));
            }
            if it.cache.len + n > it.cache.capacity {
                return Err(EngineError::Input(format!(
                    "{} positions exceed max_seq_len {}",
                    it.cache.len + n,
                    it.cache.capacity
                )));
            }
            if let Some(&t) = it.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
                return Err(EngineError::Input(format!(
                    "token {t} is outside the vocabulary (size {})",
                    cfg.vocab_size
                )));
            }
        }
        // Row offsets of each sequence in the stacked batch.
        let mut offs = Vec::with_capacity(items.len() + 1);
        offs.push(0usize);
        for it in items.iter() {
            offs.push(offs.last().copied().unwrap_or(0) + it.tokens.len());
        }
        let n = *offs.last().unwrap_or(&0);
        if n == 0 {
            return Ok(items.iter().map(|_| Vec::new()).collect());
        }
        let pos0: Vec<usize> = items.iter().map(|it| it.cache.len).collect();
        // Position of every stacked row.
        let mut pos = Vec::with_capacity(n);
        for (i, it) in items.iter().enumerate() {
            pos.extend((0..it.tokens.len()).map(|r| pos0[i] + r));
        }
        let (cfg, p, lay, rope) = self.trunk_parts();
        let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim());
        let (w, kvd, ad) = ((nh + 2 * nkv) * hd, nkv * hd, nh * hd);
        let scale = cfg.attention_scale();
        for (it, &len) in items.iter_mut().zip(&pos0) {
            it.cache.reserve_keys(len + it.tokens.len());
        }
        let mut tr = Trunk::for_inference();
        tr.resize(cfg, n);
        let mut at = 0;
        for it in items.iter() {
            tr.tokens_mut()[at..at + it.tokens.len()].copy_from_slice(it.tokens);
            at += it.tokens.len();
        }
        // Attention of block `l`: append each sequence's new keys and values to its
        // cache, then attend to the whole cache.
        let mut attend =
            |l: usize, qkv: &[f32], att: &mut [f32], lse: &mut [f32], hm: &mut [f32]| {
                for (i, it) in items.iter_mut().enumerate() {
                    let cols = it.cache.key_cols;
                    let (kc, vc) = (&mut it.cache.k[l], &mut it.cache.v[l]);
                    vc.truncate(pos0[i] * kvd);
                    let new_rows = qkv[offs[i] * w..offs[i + 1] * w].chunks_exact(w);
                    for (t, row) in (pos0[i]..).zip(new_rows) {
                        for (c, &x) in row[ad..ad + kvd].iter().enumerate() {
                            kc[c * cols + t] = x;
                        }
                        vc.extend_from_slice(&row[ad + kvd..]);
                    }
                }
                let seqs: Vec<SeqKv<'_>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| SeqKv {
                        rows: it.tokens.len(),
                        pos0: pos0[i],
                        k: &it.cache.k[l],
                        keys: KeyLayout::Columns(it.cache.key_cols),
                        v: &it.cache.v[l],
                        ld: kvd,
                    })
                    .collect();
                attention::forward_seqs(nh, nkv, hd, scale, qkv, &seqs, att, lse, hm);
            };
        run_trunk(
            cfg,
            p,
            lay,
            rope,
            &mut tr,
            &|r| pos[r],
            &mut attend,
            packed,
            None,
        );
        for it in items.iter_mut() {
            it.cache.len += it.tokens.len();
        }
        let d = cfg.d_model;
        let ln = tr.final_norm();
        // The head only for the kept rows of every sequence, in one product.
        let mut kept = Vec::new();
        for (i, it) in items.iter().enumerate() {
            kept.extend_from_slice(&ln[(offs[i + 1] - it.keep) * d..offs[i + 1] * d]);
        }
        let total: usize = items.iter().map(|it| it.keep).sum();
        let v = cfg.vocab_size;
        let mut logits = vec![0.0f32; total * v];
        p.head_logits(
            lay.head,
            HeadDims::new(cfg),
            &kept,
            packed.map(|pw| &pw.head),
            total,
            &mut logits,
        );
        let mut out = Vec::with_capacity(items.len());
        let mut at = 0;
        for it in items.iter() {
            out.push(logits[at * v..(at + it.keep) * v].to_vec());
            at += it.keep;
        }
        Ok(out)
    }

    /// Generates up to `max_new` tokens after `prompt`, calling `on_token` as each one is
    /// chosen (streaming); stops early when `on_token` returns false, or when the context
    /// is full.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::Input("empty prompt".into()));
        }
        // Every step multiplies one row by every weight: pack the weights once.
        let packed = self.packed();
        let mut cache = [KvCache::new(self)];
        if max_new == 0 {
            packed.forward_cached_tail(prompt, &mut cache[0], 1)?;
            return Ok(Vec::new());
        }
        let mut out = decode(&packed, &[prompt], &mut cache, |_, logits, so_far| {
            let t = sampler.sample(logits);
            Ok::<_, EngineError>(if !on_token(t) || so_far.len() + 1 >= max_new {
                DecodeStep::Last(t)
            } else {
                DecodeStep::Next(t)
            })
        })?;
        Ok(out.pop().unwrap_or_default())
    }
}

/// What a [`decode`] caller decides for a row after seeing its logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeStep {
    /// Emit this token and go on.
    Next(u32),
    /// Emit this token and stop the row.
    Last(u32),
    /// Stop the row without emitting anything (an end-of-sequence token, say).
    Stop,
}

/// The one batched decoding loop of Glass (generation, generation tasks, memorization):
/// every row's prompt is fed after its cache in one batched forward, then each step feeds
/// the last token of every row still running, together. After each forward, `next` is
/// called with the row's index, its logits for the next position and the tokens it has
/// emitted so far, and says what the row does ([`DecodeStep`]). A row also stops when its
/// cache is full. Returns each row's emitted tokens.
///
/// The schedule depends only on the prompts and on `next`'s answers, never on the thread
/// count, so neither do the tokens. Caches are cleared first; `caches.len()` must equal
/// `prompts.len()`.
pub fn decode<E: From<EngineError>>(
    packed: &PackedModel<'_>,
    prompts: &[&[u32]],
    caches: &mut [KvCache],
    mut next: impl FnMut(usize, &[f32], &[u32]) -> Result<DecodeStep, E>,
) -> Result<Vec<Vec<u32>>, E> {
    if caches.len() != prompts.len() {
        return Err(EngineError::Input(format!(
            "decode: {} prompts but {} caches",
            prompts.len(),
            caches.len()
        ))
        .into());
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(EngineError::Input("empty prompt".into()).into());
    }
    let n = prompts.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut running = vec![true; n];
    let first = {
        let mut items: Vec<CachedInput<'_>> = prompts
            .iter()
            .zip(caches.iter_mut())
            .map(|(p, cache)| {
                cache.clear();
                CachedInput {
                    tokens: p,
                    cache,
                    keep: 1,
                }
            })
            .collect();
        packed.forward_cached_batch(&mut items)?
    };
    let mut step = |i: usize, logits: &[f32], out: &mut [Vec<u32>], running: &mut [bool]| {
        match next(i, logits, &out[i])? {
            DecodeStep::Next(t) => out[i].push(t),
            DecodeStep::Last(t) => {
                out[i].push(t);
                running[i] = false;
            }
            DecodeStep::Stop => running[i] = false,
        }
        Ok::<_, E>(())
    };
    for (i, l) in first.iter().enumerate() {
        step(i, l, &mut out, &mut running)?;
    }
    loop {
        for (i, cache) in caches.iter().enumerate() {
            if running[i] && cache.len() >= cache.capacity() {
                running[i] = false;
            }
        }
        let which: Vec<usize> = (0..n).filter(|&i| running[i]).collect();
        if which.is_empty() {
            return Ok(out);
        }
        let feed: Vec<[u32; 1]> = which
            .iter()
            .map(|&i| [*out[i].last().expect("a running row has emitted a token")])
            .collect();
        let logits = {
            let mut slots: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
            let mut items: Vec<CachedInput<'_>> = which
                .iter()
                .zip(&feed)
                .map(|(&i, t)| CachedInput {
                    tokens: t,
                    cache: slots[i].take().expect("one row per cache"),
                    keep: 1,
                })
                .collect();
            packed.forward_cached_batch(&mut items)?
        };
        for (&i, l) in which.iter().zip(&logits) {
            step(i, l, &mut out, &mut running)?;
        }
    }
}

impl PackedModel<'_> {
    /// [`Model::forward_cached`] with the packed weights (same bits).
    pub fn forward_cached(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_cached_tail(tokens, cache, tokens.len())
    }

    /// [`Model::forward_cached_tail`] with the packed weights (same bits).
    pub fn forward_cached_tail(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.model()
            .forward_cached_tail_with(tokens, cache, keep, self.weights())
    }

    /// [`Model::forward_cached_batch`] with the packed weights (same bits).
    pub fn forward_cached_batch(
        &self,
        items: &mut [CachedInput<'_>],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.model()
            .forward_cached_batch_with(items, self.weights())
    }
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// `0` means greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass kept (`1` keeps everything).
    pub top_p: f32,
    /// Seed of the sampling stream.
    pub seed: u64,
}

/// A seeded sampler: the same config and logits always give the same tokens.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Starts the stream for `cfg.seed`.
    pub fn new(cfg: SamplingConfig) -> Self {
        Sampler {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        }
    }

    /// Picks one token id from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 {
            return crate::argmax::argmax_token(logits);
        }
        let t = self.cfg.temperature;
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                (
                    i as u32,
                    crate::ops::fastmath::exp_f64(((z - m) / t) as f64),
                )
            })
            .collect();
        // Stable order: by probability, then by id, so ties never depend on sort internals.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut kept = 0;
        let mut mass = 0.0;
        for (_, p) in &probs {
            mass += p / total;
            kept += 1;
            if mass >= self.cfg.top_p as f64 {
                break;
            }
        }
        let probs = &probs[..kept];
        let kept_total: f64 = probs.iter().map(|p| p.1).sum();
        let mut u = self.rng.gen::<f64>() * kept_total;
        for (id, p) in probs {
            if u < *p {
                return *id;
            }
            u -= p;
        }
        probs[kept - 1].0
    }
}
