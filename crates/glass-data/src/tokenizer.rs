//! The run's tokenizer: an HF `tokenizer.json`, loaded or trained as a byte-level BPE, plus
//! the special ids that frame documents (EOS, optional BOS, fill-in-the-middle sentinels).
//!
//! Special-token strings inside document text are encoded as plain text, so a document can
//! never inject an EOS or a FIM sentinel into the stream.

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, ModelWrapper, PreTokenizerWrapper, Tokenizer, TokenizerBuilder};

use crate::bytelevel::{safe_segments, FastByteLevel};
use crate::config::TokenizerConfig;
use crate::error::{DataError, Result};

/// Ids of the tokens Glass inserts between and around documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// End of document.
    pub eos: u32,
    /// Beginning of document, when configured.
    pub bos: Option<u32>,
    /// FIM prefix sentinel, when present in the vocabulary.
    pub fim_prefix: Option<u32>,
    /// FIM middle sentinel.
    pub fim_middle: Option<u32>,
    /// FIM suffix sentinel.
    pub fim_suffix: Option<u32>,
}

/// A loaded tokenizer with its special ids and, for GPT-2-style byte-level BPE, the exact
/// fast encoder.
pub struct GlassTokenizer {
    inner: Tokenizer,
    fast: Option<FastByteLevel>,
    specials: SpecialIds,
    vocab_size: usize,
}

impl std::fmt::Debug for GlassTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlassTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("specials", &self.specials)
            .field("fast", &self.fast.is_some())
            .finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

/// The special-token strings a config asks for, in the order they get ids when training.
fn special_strings(cfg: &TokenizerConfig) -> Vec<String> {
    let mut v = vec![cfg.eos.clone()];
    v.extend(cfg.bos.clone());
    v.extend([
        cfg.fim.prefix.clone(),
        cfg.fim.middle.clone(),
        cfg.fim.suffix.clone(),
    ]);
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

/// Trains a byte-level BPE of `cfg.vocab_size` ids on `texts` and returns its
/// `tokenizer.json` bytes. All 256 bytes are in the base alphabet, so any text encodes
/// losslessly; special tokens take the first ids.
pub fn train_bpe(
    cfg: &TokenizerConfig,
    texts: impl Iterator<Item = String> + Send,
) -> Result<Vec<u8>> {
    let vocab = cfg
        .vocab_size
        .ok_or_else(|| tk_err("training needs vocab_size"))?;
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab)
        .min_frequency(cfg.min_frequency)
        .show_progress(false)
        .special_tokens(
            special_strings(cfg)
                .into_iter()
                .map(|s| AddedToken::from(s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        ByteLevel,
        PostProcessorWrapper,
        ByteLevelDecoder,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
    .with_post_processor(None)
    .with_decoder(Some(ByteLevelDecoder::default()))
    .build()
    .map_err(tk_err)?;
    tok.train(&mut trainer, texts).map_err(tk_err)?;
    Ok(tok.to_string(false).map_err(tk_err)?.into_bytes())
}

/// Parses `tokenizer.json` bytes with the `tokenizers` crate. Its deserializers panic on
/// some malformed files (an `unwrap` inside, e.g. on a decoder entry of the wrong shape)
/// instead of returning an error; a file from a download must give an error, so the
/// panic is caught here and reported as one. Every `tokenizer.json` Glass reads goes
/// through this function.
pub fn parse_tokenizer_json(bytes: &[u8]) -> Result<Tokenizer> {
    match glass_io::contain::contained(|| Tokenizer::from_bytes(bytes)) {
        Ok(r) => r.map_err(tk_err),
        Err(why) => Err(tk_err(format!("not a valid tokenizer.json ({why})"))),
    }
}

/// Adds the FIM sentinels a loaded tokenizer lacks (as special tokens) and returns the new
/// `tokenizer.json` bytes and the strings added, so the run records the change.
pub fn add_missing_specials(json: &[u8], wanted: &[String]) -> Result<(Vec<u8>, Vec<String>)> {
    let mut tok = parse_tokenizer_json(json)?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|s| tok.token_to_id(s).is_none())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok((json.to_vec(), missing));
    }
    tok.add_special_tokens(
        missing
            .iter()
            .map(|s| AddedToken::from(s.clone(), true))
            .collect::<Vec<_>>(),
    )
    .map_err(tk_err)?;
    Ok((tok.to_string(false).map_err(tk_err)?.into_bytes(), missing))
}

impl GlassTokenizer {
    /// Loads `tokenizer.json` bytes and resolves the special ids `cfg` names; a missing EOS
    /// (or BOS when `add_bos`) is an error.
    pub fn from_json(bytes: &[u8], cfg: &TokenizerConfig) -> Result<Self> {
        let mut inner = parse_tokenizer_json(bytes)?;
        inner.set_encode_special_tokens(true);
        let id = |s: &str| inner.token_to_id(s);
        let eos = id(&cfg.eos)
            .ok_or_else(|| tk_err(format!("EOS token `{}` is not in the vocabulary", cfg.eos)))?;
        let bos = match &cfg.bos {
            Some(b) => Some(
                id(b).ok_or_else(|| tk_err(format!("BOS token `{b}` is not in the vocabulary")))?,
            ),
            None => None,
        };
        let specials = SpecialIds {
            eos,
            bos,
            fim_prefix: id(&cfg.fim.prefix),
            fim_middle: id(&cfg.fim.middle),
            fim_suffix: id(&cfg.fim.suffix),
        };
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |m| *m as usize + 1);
        let fast = Self::fast_path_applies(&inner).then(FastByteLevel::new);
        Ok(Self {
            inner,
            fast,
            specials,
            vocab_size,
        })
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: &std::path::Path, cfg: &TokenizerConfig) -> Result<Self> {
        let bytes = glass_io::open::open_regular(path)
            .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))
            .map_err(|e| tk_err(e.to_string()))?;
        // Parse errors name the file: a run can hold several tokenizer.json files.
        Self::from_json(&bytes, cfg).map_err(|e| match e {
            DataError::Tokenizer(m) => tk_err(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The fast encoder is exact only for a plain GPT-2 byte-level BPE: no normalizer, the
    /// byte-level regex split without prefix space, no dropout, no non-special added tokens.
    fn fast_path_applies(t: &Tokenizer) -> bool {
        let bpe_ok =
            matches!(t.get_model(), ModelWrapper::BPE(b) if b.dropout.is_none_or(|d| d == 0.0));
        let pre_ok = matches!(t.get_pre_tokenizer(), Some(PreTokenizerWrapper::ByteLevel(b)) if !b.add_prefix_space && b.use_regex);
        let added_ok = t.get_added_tokens_decoder().values().all(|a| a.special);
        bpe_ok && pre_ok && added_ok && t.get_normalizer().is_none()
    }

    /// Turns the fast encoder off (benchmarks and equality tests compare both paths).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = (on && Self::fast_path_applies(&self.inner)).then(FastByteLevel::new);
    }

    /// Whether the fast encoder is in use.
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Appends the ids of `text` (no special tokens added) to `out`.
    /// Text longer than [`crate::sources::MAX_DOCUMENT_BYTES`] is refused: the
    /// tokenizer's working memory is many times the text.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        if text.len() > crate::sources::MAX_DOCUMENT_BYTES {
            return Err(DataError::Tokenizer(format!(
                "a text of {} bytes is more than the {} MiB Glass tokenizes at once; split it",
                text.len(),
                crate::sources::MAX_DOCUMENT_BYTES >> 20
            )));
        }
        match (&self.fast, self.inner.get_model()) {
            (Some(fast), ModelWrapper::BPE(bpe)) => {
                for seg in safe_segments(text) {
                    if seg.is_ascii() {
                        fast.encode_ascii(bpe, seg.as_bytes(), out)
                            .map_err(tk_err)?;
                    } else {
                        self.encode_hf(seg, out)?;
                    }
                }
                Ok(())
            }
            _ => self.encode_hf(text, out),
        }
    }

    fn encode_hf(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self.inner.encode_fast(text, false).map_err(tk_err)?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// The ids of `text`, no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out)?;
        Ok(out)
    }

    /// Text of `ids`, special tokens included (byte-level BPE round-trips exactly).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// One more than the largest id: the size of the embedding table a model needs.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The special ids.
    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    /// The underlying HF tokenizer.
    pub fn hf(&self) -> &Tokenizer {
        &self.inner
    }
}
