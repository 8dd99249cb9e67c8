//! Mutations of real seed files, as proptest strategies.
//!
//! Random bytes almost never get past a JSON or TOML parser, so most edits are
//! structure-aware: a JSON seed has one of its nodes replaced by a hostile value (huge,
//! negative, NaN-like, empty, a path outside the run), a text seed (TOML, YAML) has one
//! of its values replaced by a hostile token; byte edits (flips, inserted and deleted
//! runs, extreme little-endian integers) cover the binary formats and the parsers'
//! syntax errors. Proptest shrinks a failing case to its fewest edits.

use proptest::prelude::*;
use serde_json::Value;

/// How a seed is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw bytes (chunk tokens, segments, docs, safetensors, pickles).
    Bytes,
    /// JSON documents (manifests, headers, states, config.json).
    Json,
    /// Line-oriented text with `key = value` or `key: value` (TOML, YAML).
    Text,
}

/// One edit of a seed; positions are taken modulo the seed's size.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Overwrite one byte.
    Byte(u32, u8),
    /// Overwrite a little-endian integer of `1 << (w % 4)` bytes with an extreme value.
    Int(u32, u8, u8),
    /// Insert bytes.
    Insert(u32, Vec<u8>),
    /// Delete a run of bytes.
    Delete(u32, u16),
    /// Truncate.
    Truncate(u32),
    /// Replace the n-th JSON node (pre-order) with hostile value `v`.
    JsonNode(u32, u8),
    /// Duplicate the n-th JSON node inside its parent array (or drop it from its object).
    JsonDup(u32),
    /// Replace the value of the n-th `key = value` / `key: value` line.
    TextValue(u32, u8),
}

const INTS: [u64; 12] = [
    0,
    1,
    7,
    255,
    65535,
    65536,
    1 << 31,
    1 << 32,
    1 << 53,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

fn hostile_json(i: u8) -> Value {
    match i % 20 {
        0 => 0.into(),
        1 => (-1).into(),
        2 => 1.into(),
        3 => (1u64 << 32).into(),
        4 => (1u64 << 53).into(),
        5 => u64::MAX.into(),
        6 => 1e308.into(),
        7 => (-1e308).into(),
        8 => 0.5.into(),
        9 => "".into(),
        10 => "../outside".into(),
        11 => "/etc/passwd".into(),
        12 => "x".repeat(1000).into(),
        13 => Value::Null,
        14 => true.into(),
        15 => Value::Array(vec![]),
        16 => Value::Object(Default::default()),
        17 => serde_json::json!([0, 0, 0]),
        18 => "NaN".into(),
        _ => i64::MIN.into(),
    }
}

const TOKENS: [&str; 16] = [
    "0",
    "-1",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "18446744073709551615",
    "9223372036854775807",
    "\"\"",
    "[]",
    "{}",
    "\"../x\"",
    "true",
    "1.0",
    "{{ 1/0 }}",
    "\"{% for x in range(99999999) %}{% endfor %}\"",
];

/// Any edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<u32>(), any::<u8>()).prop_map(|(p, b)| Edit::Byte(p, b)),
        1 => (any::<u32>(), any::<u8>(), any::<u8>()).prop_map(|(p, w, v)| Edit::Int(p, w, v)),
        1 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => (any::<u32>(), any::<u16>()).prop_map(|(p, n)| Edit::Delete(p, n)),
        1 => any::<u32>().prop_map(Edit::Truncate),
        4 => (any::<u32>(), any::<u8>()).prop_map(|(n, v)| Edit::JsonNode(n, v)),
        1 => any::<u32>().prop_map(Edit::JsonDup),
        4 => (any::<u32>(), any::<u8>()).prop_map(|(n, v)| Edit::TextValue(n, v)),
    ]
}

/// A seed index and 1 to 5 edits.
pub fn case(n_seeds: usize) -> impl Strategy<Value = (usize, Vec<Edit>)> {
    (0..n_seeds, proptest::collection::vec(edit(), 1..6))
}

/// Applies `edits` to `seed`, structure-aware for `kind` where the edit allows.
pub fn apply(seed: &[u8], kind: Kind, edits: &[Edit]) -> Vec<u8> {
    let mut json = match kind {
        Kind::Json => serde_json::from_slice::<Value>(seed).ok(),
        _ => None,
    };
    let mut bytes = seed.to_vec();
    // Structured edits first, on the parsed value; byte edits on its serialisation.
    if let Some(v) = &mut json {
        for e in edits {
            match e {
                Edit::JsonNode(n, h) => set_node(v, *n as usize, hostile_json(*h)),
                Edit::JsonDup(n) => dup_node(v, *n as usize),
                _ => {}
            }
        }
        bytes = serde_json::to_vec_pretty(v).expect("json");
    }
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Byte(p, b) if !bytes.is_empty() => bytes[*p as usize % len] = *b,
            Edit::Int(p, w, v) if !bytes.is_empty() => {
                let width = 1usize << (w % 4);
                let at = (*p as usize % len) / width * width;
                let le = INTS[*v as usize % INTS.len()].to_le_bytes();
                for (i, b) in le[..width].iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            Edit::Insert(p, b) => {
                let at = *p as usize % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Delete(p, n) if !bytes.is_empty() => {
                let at = *p as usize % len;
                let end = (at + *n as usize % 64 + 1).min(bytes.len());
                bytes.drain(at..end);
            }
            Edit::Truncate(p) => bytes.truncate(*p as usize % len),
            Edit::TextValue(n, t) if kind == Kind::Text => {
                bytes = set_text_value(&bytes, *n as usize, TOKENS[*t as usize % TOKENS.len()]);
            }
            _ => {}
        }
    }
    bytes
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The n-th node in pre-order (modulo the node count).
fn node_mut(v: &mut Value, n: usize) -> &mut Value {
    fn walk<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
        if *n == 0 {
            return Some(v);
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().find_map(|c| walk(c, n)),
            Value::Object(o) => o.values_mut().find_map(|c| walk(c, n)),
            _ => None,
        }
    }
    let mut k = n % count(v);
    walk(v, &mut k).expect("every index below the node count names a node")
}

fn set_node(v: &mut Value, n: usize, to: Value) {
    *node_mut(v, n) = to;
}

/// Duplicates the first element of the n-th array, or removes the first key of the
/// n-th object.
fn dup_node(v: &mut Value, n: usize) {
    match node_mut(v, n) {
        Value::Array(a) if !a.is_empty() => {
            let x = a[0].clone();
            a.push(x);
        }
        Value::Object(o) => {
            if let Some(k) = o.keys().next().cloned() {
                o.remove(&k);
            }
        }
        _ => {}
    }
}

/// Replaces the value of the n-th line that has `=` or `: ` (TOML, YAML).
fn set_text_value(bytes: &[u8], n: usize, token: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    let idx: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" = ") || lines[i].contains(": "))
        .collect();
    if idx.is_empty() {
        return bytes.to_vec();
    }
    let i = idx[n % idx.len()];
    let line = lines[i];
    let cut = line
        .find(" = ")
        .map(|p| p + 3)
        .or_else(|| line.find(": ").map(|p| p + 2))
        .unwrap_or(line.len());
    let new = format!("{}{token}", &line[..cut]);
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    out[i] = new;
    out.join("\n").into_bytes()
}
