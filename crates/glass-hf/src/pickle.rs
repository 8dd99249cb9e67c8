//! A minimal, safe reader for the pickle inside a PyTorch checkpoint (`data.pkl`).
//!
//! Hand-written because no maintained Rust crate reads torch's zip checkpoints safely
//! without libtorch: `serde-pickle` has no persistent-id (storage) support, `candle`'s
//! reader comes with the whole candle tensor library, and `repugnant-pickle` is
//! unmaintained. This is a tiny stack machine, not a Python emulator: it knows the
//! opcodes `torch.save` emits (protocols 2–4) and resolves exactly four kinds of global
//! — `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter` and the `torch.*Storage` types — to built-in
//! behaviour. Any other global (e.g. `os.system`, `builtins.eval`) and any opcode that
//! builds arbitrary objects (`INST`, `OBJ`, `NEWOBJ`, `BUILD` with state, …) is refused
//! with an error naming it. Nothing in a checkpoint can make this reader run code.

use std::collections::HashMap;

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// `torch.FloatStorage`.
    F32,
    /// `torch.HalfStorage`.
    F16,
    /// `torch.BFloat16Storage`.
    BF16,
    /// `torch.DoubleStorage`.
    F64,
    /// A non-float storage (`BoolStorage`, `ByteStorage`, `CharStorage`, `ShortStorage`,
    /// `IntStorage`, `LongStorage`): only buffers use them (causal masks, position ids);
    /// their bytes per element.
    Other(usize),
}

impl StorageDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 => 2,
            StorageDtype::F64 => 8,
            StorageDtype::Other(n) => n,
        }
    }
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Storage key: the archive entry `data/<key>`.
    pub key: String,
    /// Element type.
    pub dtype: StorageDtype,
    /// Elements in the storage.
    pub storage_numel: u64,
    /// First element of the view.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// A value on the pickle stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict (insertion order kept; `OrderedDict` too).
    Dict(Vec<(Value, Value)>),
    /// One of the allowed callables.
    Global(Global),
    /// A storage reference from a persistent id.
    Storage {
        /// Archive key.
        key: String,
        /// Element type.
        dtype: StorageDtype,
        /// Elements.
        numel: u64,
    },
    /// A rebuilt tensor.
    Tensor(TensorRef),
}

/// The only callables a checkpoint may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`.
    RebuildParameter,
    /// A `torch.*Storage` type (only used inside persistent ids).
    Storage(StorageDtype),
}

fn resolve(module: &str, name: &str) -> Result<Global, String> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", "FloatStorage") => Global::Storage(StorageDtype::F32),
        ("torch", "HalfStorage") => Global::Storage(StorageDtype::F16),
        ("torch", "BFloat16Storage") => Global::Storage(StorageDtype::BF16),
        ("torch", "DoubleStorage") => Global::Storage(StorageDtype::F64),
        ("torch", "BoolStorage") | ("torch", "ByteStorage") | ("torch", "CharStorage") => {
            Global::Storage(StorageDtype::Other(1))
        }
        ("torch", "ShortStorage") => Global::Storage(StorageDtype::Other(2)),
        ("torch", "IntStorage") => Global::Storage(StorageDtype::Other(4)),
        ("torch", "LongStorage") => Global::Storage(StorageDtype::Other(8)),
        _ => {
            return Err(format!(
                "refused: the pickle calls `{module}.{name}`; only torch tensor-rebuild functions and storage types are allowed (loading a checkpoint must never run code)"
            ))
        }
    })
}

enum Item {
    V(Value),
    Mark,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, (Value, usize)>,
    /// Values copied out of the memo so far, bounded so that a hostile pickle cannot
    /// expand exponentially by fetching ever larger memoised containers.
    copied: usize,
}

/// Number of values in `v`, containers included.
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Tuple(xs) | Value::List(xs) => xs.iter().map(nodes).sum(),
        Value::Dict(kv) => kv.iter().map(|(k, v)| nodes(k) + nodes(v)).sum(),
        _ => 0,
    }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| format!("non-UTF-8 name at byte {}", self.pos))?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        let at = self.pos;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("invalid UTF-8 at byte {at}"))
    }
    fn push(&mut self, v: Value) {
        self.stack.push(Item::V(v));
    }
    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => Err(format!("unexpected MARK at byte {}", self.pos)),
            None => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Item::V(v)) => Ok(v),
            _ => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::V(v)) => out.push(v),
                Some(Item::Mark) => break,
                None => return Err(format!("MARK missing at byte {}", self.pos)),
            }
        }
        out.reverse();
        Ok(out)
    }
    fn memo_put(&mut self, k: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        let n = nodes(&v);
        self.memo.insert(k, (v, n));
        Ok(())
    }
    fn memo_get(&mut self, k: u32) -> Result<(), String> {
        let (v, n) = self
            .memo
            .get(&k)
            .ok_or_else(|| format!("memo key {k} missing at byte {}", self.pos))?;
        self.copied += n;
        if self.copied > 16 * self.data.len() + (1 << 20) {
            return Err(format!(
                "refused: the pickle expands far beyond its size (memo fetch at byte {})",
                self.pos
            ));
        }
        let v = v.clone();
        self.push(v);
        Ok(())
    }
}

fn set_items(target: &mut Value, items: Vec<Value>, at: usize) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err(format!("SETITEM(S) on a non-dict at byte {at}"));
    };
    if !items.len().is_multiple_of(2) {
        return Err(format!("odd SETITEMS at byte {at}"));
    }
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.push((k, v));
    }
    Ok(())
}

fn ints(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err(format!("tensor {what} holds a non-integer")),
            })
            .collect(),
        _ => Err(format!("tensor {what} is not a tuple")),
    }
}

fn call(f: Global, args: Vec<Value>) -> Result<Value, String> {
    match f {
        Global::OrderedDict if args.is_empty() => Ok(Value::Dict(vec![])),
        Global::RebuildTensorV2 if args.len() >= 4 => {
            let Value::Storage { key, dtype, numel } = &args[0] else {
                return Err("_rebuild_tensor_v2: first argument is not a storage".into());
            };
            let Value::Int(offset) = args[1] else {
                return Err("_rebuild_tensor_v2: storage offset is not an integer".into());
            };
            let shape = ints(&args[2], "shape")?;
            let stride = ints(&args[3], "stride")?;
            if shape.len() != stride.len() || offset < 0 {
                return Err("_rebuild_tensor_v2: inconsistent shape, stride or offset".into());
            }
            // Backward hooks (args[5]) must be empty: a hook is code.
            if let Some(h) = args.get(5) {
                if !matches!(h, Value::Dict(d) if d.is_empty()) && *h != Value::None {
                    return Err("refused: tensor carries backward hooks".into());
                }
            }
            Ok(Value::Tensor(TensorRef {
                key: key.clone(),
                dtype: *dtype,
                storage_numel: *numel,
                offset: offset as u64,
                shape,
                stride,
            }))
        }
        Global::RebuildParameter if !args.is_empty() => match &args[0] {
            Value::Tensor(_) => Ok(args[0].clone()),
            _ => Err("_rebuild_parameter: argument is not a tensor".into()),
        },
        other => Err(format!(
            "unsupported call of {other:?} with {} arguments",
            args.len()
        )),
    }
}

/// Runs the pickle program `data` and returns the object it builds. Storages come from
/// persistent ids `('storage', torch.XStorage, key, location, numel)`.
pub fn load(data: &[u8]) -> Result<Value, String> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    };
    loop {
        let at = m.pos;
        let op = m.u8()?;
        match op {
            0x80 => {
                let proto = m.u8()?;
                if proto > 5 {
                    return Err(format!("pickle protocol {proto} is not supported"));
                }
            }
            0x95 => {
                m.take(8)?; // FRAME: a length hint only.
            }
            b'.' => return m.pop(), // STOP
            b'}' => m.push(Value::Dict(vec![])),
            b']' => m.push(Value::List(vec![])),
            b')' => m.push(Value::Tuple(vec![])),
            b'(' => m.stack.push(Item::Mark),
            b'0' => {
                m.stack.pop();
            }
            b'N' => m.push(Value::None),
            0x88 => m.push(Value::Bool(true)),
            0x89 => m.push(Value::Bool(false)),
            b'K' => {
                let v = m.u8()?;
                m.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = m.u16()?;
                m.push(Value::Int(v as i64))
            }
            b'J' => {
                let v = m.u32()? as i32;
                m.push(Value::Int(v as i64))
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = m.u8()? as usize;
                let b = m.take(n)?;
                if n > 8 {
                    return Err(format!("integer too large at byte {at}"));
                }
                let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) {
                    [0xffu8; 8]
                } else {
                    [0u8; 8]
                };
                buf[..n].copy_from_slice(b);
                m.push(Value::Int(i64::from_le_bytes(buf)))
            }
            b'G' => {
                let v = f64::from_be_bytes(m.take(8)?.try_into().expect("8"));
                m.push(Value::Float(v))
            }
            b'X' => {
                let n = m.u32()? as usize;
                let s = m.utf8(n)?;
                m.push(Value::Str(s))
            }
            0x8c => {
                let n = m.u8()? as usize;
                let s = m.utf8(n)?;
                m.push(Value::Str(s))
            }
            b'q' => {
                let k = m.u8()? as u32;
                m.memo_put(k)?
            }
            b'r' => {
                let k = m.u32()?;
                m.memo_put(k)?
            }
            0x94 => {
                let k = m.memo.len() as u32;
                m.memo_put(k)?
            }
            b'h' => {
                let k = m.u8()? as u32;
                m.memo_get(k)?
            }
            b'j' => {
                let k = m.u32()?;
                m.memo_get(k)?
            }
            b't' => {
                let items = m.pop_mark()?;
                m.push(Value::Tuple(items))
            }
            0x85 => {
                let a = m.pop()?;
                m.push(Value::Tuple(vec![a]))
            }
            0x86 => {
                let b = m.pop()?;
                let a = m.pop()?;
                m.push(Value::Tuple(vec![a, b]))
            }
            0x87 => {
                let c = m.pop()?;
                let b = m.pop()?;
                let a = m.pop()?;
                m.push(Value::Tuple(vec![a, b, c]))
            }
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Value::List(items))
            }
            b'a' => {
                let v = m.pop()?;
                match m.top()? {
                    Value::List(l) => l.push(v),
                    _ => return Err(format!("APPEND on a non-list at byte {at}")),
                }
            }
            b'e' => {
                let items = m.pop_mark()?;
                match m.top()? {
                    Value::List(l) => l.extend(items),
                    _ => return Err(format!("APPENDS on a non-list at byte {at}")),
                }
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                set_items(m.top()?, vec![k, v], at)?
            }
            b'u' => {
                let items = m.pop_mark()?;
                set_items(m.top()?, items, at)?
            }
            b'c' => {
                let module = m.line()?;
                let name = m.line()?;
                let g = resolve(&module, &name)?;
                m.push(Value::Global(g))
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        let g = resolve(&module, &name)?;
                        m.push(Value::Global(g))
                    }
                    _ => return Err(format!("STACK_GLOBAL without strings at byte {at}")),
                }
            }
            b'Q' => {
                let pid = m.pop()?;
                let Value::Tuple(t) = pid else {
                    return Err(format!("persistent id is not a tuple at byte {at}"));
                };
                match t.as_slice() {
                    [Value::Str(kind), Value::Global(Global::Storage(dtype)), Value::Str(key), _location, Value::Int(numel)]
                        if kind == "storage" && *numel >= 0 =>
                    {
                        m.push(Value::Storage {
                            key: key.clone(),
                            dtype: *dtype,
                            numel: *numel as u64,
                        })
                    }
                    _ => {
                        return Err(format!(
                            "unsupported persistent id at byte {at} (only float tensor storages are allowed)"
                        ))
                    }
                }
            }
            b'R' => {
                let args = m.pop()?;
                let f = m.pop()?;
                let (Value::Global(g), Value::Tuple(args)) = (f, args) else {
                    return Err(format!("REDUCE of a non-callable at byte {at}"));
                };
                let v = call(g, args).map_err(|e| format!("{e} (byte {at})"))?;
                m.push(v)
            }
            b'b' => {
                // BUILD: only an empty state (what torch writes for plain tensors) is allowed.
                let state = m.pop()?;
                let empty = match &state {
                    Value::None => true,
                    Value::Dict(d) => d.is_empty(),
                    Value::Tuple(t) => t.iter().all(|x| {
                        matches!(x, Value::None) || matches!(x, Value::Dict(d) if d.is_empty())
                    }),
                    _ => false,
                };
                if !empty {
                    return Err(format!("refused: BUILD with object state at byte {at}"));
                }
                m.top()?;
            }
            b'i' | b'o' | 0x81 | 0x92 => {
                return Err(format!(
                    "refused: opcode 0x{op:02x} at byte {at} constructs arbitrary objects"
                ))
            }
            _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_and_eval() {
        // GLOBAL posix.system, ('true',), REDUCE, STOP
        let evil = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.";
        let e = load(evil).unwrap_err();
        assert!(e.contains("posix.system"), "{e}");
        let evil = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.";
        let e = load(evil).unwrap_err();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn reads_a_rebuilt_tensor() {
        // {'w': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 0, (2, 3), (3, 1), False, OrderedDict())}
        let p = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRu.";
        let v = load(p).unwrap();
        let Value::Dict(d) = v else { panic!() };
        assert_eq!(d[0].0, Value::Str("w".into()));
        let Value::Tensor(t) = &d[0].1 else { panic!() };
        assert_eq!(
            (t.shape.clone(), t.stride.clone()),
            (vec![2, 3], vec![3, 1])
        );
        assert_eq!(t.dtype, StorageDtype::F32);
    }

    #[test]
    fn exponential_expansion_is_refused() {
        // l = []; then 64 times: l = (l, l) via BINGET — 2^64 values if copied naively.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..64u8 {
            p.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1, b'0']);
        }
        p.extend_from_slice(b"h\x40.");
        let e = load(&p).unwrap_err();
        assert!(e.contains("expands"), "{e}");
    }

    #[test]
    fn truncated_is_an_error() {
        assert!(load(b"\x80\x02}(X\x05\x00\x00")
            .unwrap_err()
            .contains("truncated"));
    }
}
