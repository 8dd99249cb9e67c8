//! A reader of the HDF5 subset that h5py writes for the Cerebras modelzoo's training data
//! (CrystalCoder's `data` datasets of `[N, 3, seq]` int32): superblock version 0 or 1,
//! version-1 object headers, symbol-table groups (v1 B-tree + local heap), fixed-point
//! datatypes, compact / contiguous / chunked (v1 B-tree index, layout message version 3)
//! storage, the deflate and shuffle filters, and scalar integer attributes.
//!
//! Why not a crate: the `hdf5` crates bind libhdf5 (a system library the default build must
//! not need), and the pure-Rust readers on crates.io are young single-maintainer projects
//! that read whole datasets; Glass needs one row of a multi-gigabyte file at a time and a
//! parser that turns every malformed byte into an error naming the file and offset (it is
//! fuzzed: `hdf5_file` in crates/glass-fuzz). Files written with `libver="latest"`
//! (superblock 2/3, layout version 4 chunk indexes) are refused with a message saying so.
//!
//! Every address is checked against the file's length before it is read; B-tree walks are
//! bounded in depth and in nodes, so a cyclic or hostile file ends in an error.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// B-tree levels followed before a file is called cyclic.
const MAX_DEPTH: u32 = 32;
/// Nodes and entries a group listing visits at most.
const MAX_NODES: usize = 1 << 22;
/// Element copies one row read may do (chunks per row × row length): bounds the work a
/// hostile chunk shape can ask for.
const MAX_ROW_WORK: u64 = 1 << 26;
/// Largest row read at once (elements; a CrystalCoder row is 3 × 2048), so a header
/// cannot make a reader allocate or loop without bound.
const MAX_ROW_ELEMENTS: u64 = 1 << 22;
/// Largest chunk decoded (bytes).
const MAX_CHUNK_BYTES: u64 = 1 << 27;

/// An HDF5 file, memory-mapped.
pub struct H5File {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
    base: u64,
    offset_size: usize,
    length_size: usize,
    root: u64,
}

/// Integer element type of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntType {
    /// Bytes per element (1, 2, 4 or 8).
    pub size: usize,
    /// Two's-complement signed.
    pub signed: bool,
}

#[derive(Debug, Clone)]
enum Storage {
    Compact(Vec<u8>),
    Contiguous { address: u64, size: u64 },
    Chunked { btree: u64, chunk: Vec<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Deflate,
    Shuffle,
}

/// A dataset's header: shape, element type and where its bytes are.
#[derive(Debug, Clone)]
pub struct Dataset {
    name: String,
    shape: Vec<u64>,
    dtype: IntType,
    storage: Storage,
    filters: Vec<Filter>,
    header: u64,
}

/// Bounds-checked little-endian reads from the mapped file.
struct Cur<'a> {
    f: &'a H5File,
    pos: u64,
}

impl H5File {
    /// Maps `path` and reads its superblock.
    pub fn open(path: &Path) -> Result<Self> {
        let opened = glass_io::open::open_regular(path)?;
        let map = opened.map()?;
        let mut f = Self {
            path: path.to_path_buf(),
            map,
            base: 0,
            offset_size: 8,
            length_size: 8,
            root: 0,
        };
        // The superblock is at 0 or, after a user block, at 512, 1024, 2048, ...
        let mut at = 0u64;
        loop {
            if at + 8 > f.len() {
                return Err(f.err(None, "no HDF5 signature (not an HDF5 file)"));
            }
            if f.bytes(at, 8)? == SIGNATURE {
                break;
            }
            at = if at == 0 { 512 } else { at * 2 };
        }
        let version = f.bytes(at + 8, 1)?[0];
        if version > 1 {
            return Err(f.err(
                Some(at + 8),
                format!(
                    "superblock version {version}: files written with libver=\"latest\" are not read; \
                     rewrite with h5py's default (libver=\"earliest\"), e.g. h5py.File(OUT, \"w\") and copy the dataset"
                ),
            ));
        }
        let b = f.bytes(at + 13, 2)?;
        let (o, l) = (b[0] as usize, b[1] as usize);
        if !matches!(o, 2 | 4 | 8) || !matches!(l, 2 | 4 | 8) {
            return Err(f.err(
                Some(at + 13),
                format!("size of offsets {o} / lengths {l}: expected 2, 4 or 8"),
            ));
        }
        f.offset_size = o;
        f.length_size = l;
        let mut c = Cur {
            f: &f,
            pos: at + 24 + if version == 1 { 4 } else { 0 },
        };
        let base = c.addr()?;
        let _free = c.addr()?;
        let _eof = c.addr()?;
        let _driver = c.addr()?;
        // Root group symbol table entry: link name offset, object header address.
        let _name = c.addr()?;
        let root = c.addr()?;
        f.base = base;
        f.root = root;
        Ok(f)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    fn err(&self, offset: Option<u64>, msg: impl Into<String>) -> DataError {
        DataError::layout(&self.path, offset, msg)
    }

    /// `n` bytes at absolute offset `at`.
    fn bytes(&self, at: u64, n: u64) -> Result<&[u8]> {
        let end = at.checked_add(n).filter(|&e| e <= self.len());
        match (end, &self.map) {
            (Some(end), Some(m)) => Ok(&m[at as usize..end as usize]),
            _ => Err(self.err(
                Some(at),
                format!(
                    "{n} bytes at offset {at} are past the end of the file ({} bytes): truncated or corrupt",
                    self.len()
                ),
            )),
        }
    }

    /// An address as stored (relative to the base address) made absolute; `None` for
    /// the undefined address.
    fn abs(&self, a: u64) -> Option<u64> {
        let undef = if self.offset_size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.offset_size)) - 1
        };
        (a != undef).then(|| a.wrapping_add(self.base))
    }

    /// The object header address of `name` in the root group.
    fn lookup(&self, name: &str) -> Result<Option<u64>> {
        let msgs = self.messages(self.root)?;
        let Some((_, at, _)) = msgs.iter().find(|m| m.0 == 0x11) else {
            return Err(self.err(
                Some(self.root),
                "the root group has no symbol table (a group written with libver=\"latest\" is not read)",
            ));
        };
        let mut c = Cur { f: self, pos: *at };
        let btree = c.addr()?;
        let heap = c.addr()?;
        let heap_data = self.local_heap(heap)?;
        let mut found = None;
        let mut visited = 0usize;
        self.group_walk(btree, MAX_DEPTH, &mut visited, &mut |name_off, header| {
            if self.heap_name(heap_data, name_off)? == name.as_bytes() {
                found = Some(header);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// (data segment address, size) of a local heap.
    fn local_heap(&self, at: u64) -> Result<(u64, u64)> {
        let at = self
            .abs(at)
            .ok_or_else(|| self.err(None, "the root group's local heap address is undefined"))?;
        if self.bytes(at, 4)? != b"HEAP" {
            return Err(self.err(Some(at), "expected a local heap (HEAP)"));
        }
        let mut c = Cur {
            f: self,
            pos: at + 8,
        };
        let size = c.len_field()?;
        let _free = c.len_field()?;
        let data = c.addr()?;
        let data = self
            .abs(data)
            .ok_or_else(|| self.err(Some(at), "local heap data address is undefined"))?;
        self.bytes(data, size)?;
        Ok((data, size))
    }

    fn heap_name(&self, heap: (u64, u64), off: u64) -> Result<&[u8]> {
        if off >= heap.1 {
            return Err(self.err(
                Some(heap.0),
                format!(
                    "link name offset {off} is past the local heap ({} bytes)",
                    heap.1
                ),
            ));
        }
        let s = self.bytes(heap.0 + off, heap.1 - off)?;
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err(Some(heap.0 + off), "link name is not NUL-terminated"))?;
        Ok(&s[..end])
    }

    /// Visits every (link name heap offset, object header address) of a group B-tree.
    fn group_walk(
        &self,
        node: u64,
        depth: u32,
        visited: &mut usize,
        visit: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let node = self
            .abs(node)
            .ok_or_else(|| self.err(None, "group B-tree address is undefined"))?;
        *visited += 1;
        if depth == 0 || *visited > MAX_NODES {
            return Err(self.err(Some(node), "group B-tree is too deep or cyclic"));
        }
        if self.bytes(node, 4)? != b"TREE" {
            return Err(self.err(Some(node), "expected a B-tree node (TREE)"));
        }
        let h = self.bytes(node + 4, 4)?;
        let (kind, level, used) = (h[0], h[1], u16::from_le_bytes([h[2], h[3]]) as u64);
        if kind != 0 {
            return Err(self.err(Some(node), "expected a group B-tree node (type 0)"));
        }
        let (o, l) = (self.offset_size as u64, self.length_size as u64);
        let first = node + 8 + 2 * o;
        for i in 0..used {
            let child_at = first + l + i * (l + o);
            let child = Cur {
                f: self,
                pos: child_at,
            }
            .addr()?;
            if level > 0 {
                self.group_walk(child, depth - 1, visited, visit)?;
                continue;
            }
            let snod = self.abs(child).ok_or_else(|| {
                self.err(Some(child_at), "symbol table node address is undefined")
            })?;
            if self.bytes(snod, 4)? != b"SNOD" {
                return Err(self.err(Some(snod), "expected a symbol table node (SNOD)"));
            }
            let n = u16::from_le_bytes(self.bytes(snod + 6, 2)?.try_into().expect("2 bytes"));
            let entry = 2 * o + 24;
            *visited += n as usize;
            if *visited > MAX_NODES {
                return Err(self.err(Some(snod), "group has too many entries"));
            }
            for k in 0..n as u64 {
                let mut c = Cur {
                    f: self,
                    pos: snod + 8 + k * entry,
                };
                let name = c.addr()?;
                let header = c.addr()?;
                visit(name, header)?;
            }
        }
        Ok(())
    }

    /// Every message of a version-1 object header, following continuations:
    /// (type, absolute data offset, data size).
    fn messages(&self, header: u64) -> Result<Vec<(u16, u64, u64)>> {
        let header = self
            .abs(header)
            .ok_or_else(|| self.err(None, "object header address is undefined"))?;
        let h = self.bytes(header, 16)?;
        if h[0] != 1 {
            return Err(self.err(
                Some(header),
                format!(
                    "object header version {}: only version 1 (h5py's default libver) is read",
                    h[0]
                ),
            ));
        }
        let total = u16::from_le_bytes([h[2], h[3]]) as usize;
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as u64;
        let mut blocks = vec![(header + 16, size)];
        let mut out = Vec::new();
        let mut bi = 0;
        while bi < blocks.len() {
            if blocks.len() > 4096 {
                return Err(self.err(Some(header), "too many header continuation blocks"));
            }
            let (start, len) = blocks[bi];
            bi += 1;
            self.bytes(start, len)?;
            let mut at = start;
            while at + 8 <= start + len && out.len() < total.max(1) * 2 + 64 {
                let m = self.bytes(at, 8)?;
                let ty = u16::from_le_bytes([m[0], m[1]]);
                let sz = u16::from_le_bytes([m[2], m[3]]) as u64;
                let data = at + 8;
                if data + sz > start + len {
                    return Err(self.err(
                        Some(at),
                        format!("header message of {sz} bytes runs past its header block"),
                    ));
                }
                if ty == 0x10 {
                    let mut c = Cur { f: self, pos: data };
                    let a = c.addr()?;
                    let n = c.len_field()?;
                    let a = self
                        .abs(a)
                        .ok_or_else(|| self.err(Some(data), "continuation address is undefined"))?;
                    blocks.push((a, n));
                } else {
                    out.push((ty, data, sz));
                }
                at = data + sz;
            }
        }
        Ok(out)
    }

    /// The dataset `name` of the root group.
    pub fn dataset(&self, name: &str) -> Result<Dataset> {
        let header = self.lookup(name)?.ok_or_else(|| {
            self.err(
                None,
                format!(
                    "no dataset `{name}` in the root group (the modelzoo writes one named `data`)"
                ),
            )
        })?;
        let msgs = self.messages(header)?;
        let find = |ty: u16, what: &str| {
            msgs.iter().find(|m| m.0 == ty).copied().ok_or_else(|| {
                self.err(
                    None,
                    format!("`{name}` has no {what} message: not a dataset"),
                )
            })
        };
        let shape = self.dataspace(find(0x01, "dataspace")?)?;
        let dtype = self.datatype(find(0x03, "datatype")?)?;
        let storage = self.layout(find(0x08, "data layout")?)?;
        let filters = match msgs.iter().find(|m| m.0 == 0x0B) {
            Some(m) => self.filters(*m)?,
            None => Vec::new(),
        };
        let ds = Dataset {
            name: name.to_string(),
            shape,
            dtype,
            storage,
            filters,
            header,
        };
        self.check(&ds)?;
        Ok(ds)
    }

    fn check(&self, ds: &Dataset) -> Result<()> {
        let at = Some(ds.header);
        let elems = ds
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| self.err(at, "dataset shape overflows"))?;
        let bytes = elems
            .checked_mul(ds.dtype.size as u64)
            .ok_or_else(|| self.err(at, "dataset size overflows"))?;
        match &ds.storage {
            Storage::Compact(b) if (b.len() as u64) < bytes => Err(self.err(
                at,
                format!(
                    "compact data holds {} bytes, the shape needs {bytes}",
                    b.len()
                ),
            )),
            Storage::Contiguous { address, size } => {
                if *size < bytes {
                    return Err(self.err(
                        at,
                        format!("contiguous data holds {size} bytes, the shape needs {bytes}"),
                    ));
                }
                if bytes > 0 {
                    let a = self.abs(*address).ok_or_else(|| {
                        self.err(
                            at,
                            format!("`{}` has no data written (address undefined)", ds.name),
                        )
                    })?;
                    self.bytes(a, bytes)?;
                }
                Ok(())
            }
            Storage::Chunked { chunk, .. } => {
                if chunk.len() != ds.shape.len() + 1 {
                    return Err(self.err(
                        at,
                        format!(
                            "chunk rank {} does not match the dataspace rank {}",
                            chunk.len().saturating_sub(1),
                            ds.shape.len()
                        ),
                    ));
                }
                if chunk[..ds.shape.len()].contains(&0) {
                    return Err(self.err(at, "a chunk dimension is 0"));
                }
                if chunk[ds.shape.len()] != ds.dtype.size as u64 {
                    return Err(self.err(
                        at,
                        format!(
                            "chunk element size {} differs from the datatype's {}",
                            chunk[ds.shape.len()],
                            ds.dtype.size
                        ),
                    ));
                }
                chunk[..ds.shape.len()]
                    .iter()
                    .try_fold(ds.dtype.size as u64, |a, &d| a.checked_mul(d))
                    .filter(|&n| n <= MAX_CHUNK_BYTES)
                    .ok_or_else(|| self.err(at, "a chunk is larger than 128 MiB"))?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn dataspace(&self, (_, at, sz): (u16, u64, u64)) -> Result<Vec<u64>> {
        let b = self.bytes(at, sz.min(8))?;
        if b.len() < 4 {
            return Err(self.err(Some(at), "dataspace message is too short"));
        }
        let (version, rank, flags) = (b[0], b[1] as u64, b[2]);
        let dims_at = match version {
            1 => at + 8,
            2 => {
                if b[3] == 2 {
                    return Ok(Vec::new()); // null dataspace
                }
                at + 4
            }
            v => {
                return Err(self.err(Some(at), format!("dataspace message version {v}")));
            }
        };
        let need = rank * self.length_size as u64 * if flags & 1 != 0 { 2 } else { 1 };
        if dims_at + need > at + sz {
            return Err(self.err(Some(at), "dataspace dimensions run past the message"));
        }
        let mut c = Cur {
            f: self,
            pos: dims_at,
        };
        (0..rank).map(|_| c.len_field()).collect()
    }

    fn datatype(&self, (_, at, sz): (u16, u64, u64)) -> Result<IntType> {
        if sz < 8 {
            return Err(self.err(Some(at), "datatype message is too short"));
        }
        let b = self.bytes(at, 8)?;
        let class = b[0] & 0x0f;
        let size = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        if class != 0 {
            return Err(self.err(
                Some(at),
                format!("datatype class {class}: only integers (class 0) hold token ids"),
            ));
        }
        if b[1] & 1 != 0 {
            return Err(self.err(Some(at), "big-endian integers are not read"));
        }
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(self.err(Some(at), format!("integer of {size} bytes")));
        }
        Ok(IntType {
            size,
            signed: b[1] & 0x08 != 0,
        })
    }

    fn layout(&self, (_, at, sz): (u16, u64, u64)) -> Result<Storage> {
        let b = self.bytes(at, sz.min(2))?;
        if b.len() < 2 {
            return Err(self.err(Some(at), "data layout message is too short"));
        }
        if b[0] != 3 {
            return Err(self.err(
                Some(at),
                format!(
                    "data layout version {}: only version 3 (h5py's default libver) is read",
                    b[0]
                ),
            ));
        }
        let mut c = Cur {
            f: self,
            pos: at + 2,
        };
        let end = at + sz;
        match b[1] {
            0 => {
                let n = u16::from_le_bytes(self.bytes(at + 2, 2)?.try_into().expect("2")) as u64;
                if at + 4 + n > end {
                    return Err(self.err(Some(at), "compact data runs past the message"));
                }
                Ok(Storage::Compact(self.bytes(at + 4, n)?.to_vec()))
            }
            1 => {
                let address = c.addr()?;
                let size = c.len_field()?;
                Ok(Storage::Contiguous { address, size })
            }
            2 => {
                let rank = self.bytes(at + 2, 1)?[0] as u64;
                if rank < 2 || at + 3 + self.offset_size as u64 + 4 * rank > end {
                    return Err(self.err(Some(at), format!("chunked layout of rank {rank}")));
                }
                c.pos = at + 3;
                let btree = c.addr()?;
                let chunk = (0..rank)
                    .map(|_| c.u32().map(u64::from))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Storage::Chunked { btree, chunk })
            }
            k => Err(self.err(Some(at), format!("data layout class {k}"))),
        }
    }

    fn filters(&self, (_, at, sz): (u16, u64, u64)) -> Result<Vec<Filter>> {
        let b = self.bytes(at, sz.min(2))?;
        if b.len() < 2 {
            return Err(self.err(Some(at), "filter pipeline message is too short"));
        }
        let (version, n) = (b[0], b[1]);
        let end = at + sz;
        let mut c = Cur {
            f: self,
            pos: at + if version == 1 { 8 } else { 2 },
        };
        let mut out = Vec::new();
        for _ in 0..n {
            let id = c.u16()?;
            let name_len = if version == 1 || id >= 256 {
                c.u16()?
            } else {
                0
            };
            let flags = c.u16()?;
            let nvals = c.u16()? as u64;
            let name_len = if version == 1 {
                (name_len as u64).div_ceil(8) * 8
            } else {
                name_len as u64
            };
            let vals = 4 * nvals + if version == 1 && nvals % 2 == 1 { 4 } else { 0 };
            c.pos += name_len + vals;
            if c.pos > end {
                return Err(self.err(Some(at), "filter description runs past the message"));
            }
            match id {
                1 => out.push(Filter::Deflate),
                2 => out.push(Filter::Shuffle),
                _ if flags & 1 != 0 => {} // optional filter that may have been skipped
                _ => {
                    return Err(self.err(
                        Some(at),
                        format!(
                            "filter {id} is not read (deflate and shuffle are; the modelzoo writes gzip)"
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A scalar integer attribute of the root group, if present (`n_examples`).
    pub fn root_attr_int(&self, name: &str) -> Result<Option<i64>> {
        for (ty, at, sz) in self.messages(self.root)? {
            if ty != 0x0C {
                continue;
            }
            let b = self.bytes(at, sz.min(8))?;
            if b.len() < 8 {
                return Err(self.err(Some(at), "attribute message is too short"));
            }
            let version = b[0];
            let nlen = u16::from_le_bytes([b[2], b[3]]) as u64;
            let tlen = u16::from_le_bytes([b[4], b[5]]) as u64;
            let slen = u16::from_le_bytes([b[6], b[7]]) as u64;
            let pad = |n: u64| if version == 1 { n.div_ceil(8) * 8 } else { n };
            let name_at = at + if version == 3 { 9 } else { 8 };
            if version == 0 || version > 3 {
                return Err(self.err(Some(at), format!("attribute message version {version}")));
            }
            let total = (name_at - at) + pad(nlen) + pad(tlen) + pad(slen);
            if total > sz || nlen == 0 {
                return Err(self.err(Some(at), "attribute runs past its message"));
            }
            let n = self.bytes(name_at, nlen)?;
            if &n[..n.len() - 1] != name.as_bytes() {
                continue;
            }
            let t_at = name_at + pad(nlen);
            let s_at = t_at + pad(tlen);
            let d_at = s_at + pad(slen);
            let ty = self.datatype((0, t_at, tlen))?;
            let dims = self.dataspace((0, s_at, slen))?;
            if !dims.is_empty() || d_at + ty.size as u64 > at + sz {
                return Err(self.err(Some(at), format!("attribute `{name}` is not a scalar")));
            }
            return Ok(Some(decode(self.bytes(d_at, ty.size as u64)?, ty)));
        }
        Ok(None)
    }

    /// The address, stored size and filter mask of the chunk starting at `offset`.
    fn find_chunk(&self, btree: u64, offset: &[u64]) -> Result<Option<(u64, u64, u32)>> {
        let mut node = btree;
        for _ in 0..MAX_DEPTH {
            let at = self.abs(node).ok_or_else(|| {
                self.err(None, "chunk B-tree address is undefined (no data written)")
            })?;
            if self.bytes(at, 4)? != b"TREE" {
                return Err(self.err(Some(at), "expected a B-tree node (TREE)"));
            }
            let h = self.bytes(at + 4, 4)?;
            let (kind, level, used) = (h[0], h[1], u16::from_le_bytes([h[2], h[3]]) as u64);
            if kind != 1 {
                return Err(self.err(Some(at), "expected a chunk B-tree node (type 1)"));
            }
            let o = self.offset_size as u64;
            let key_len = 8 + 8 * offset.len() as u64;
            let first = at + 8 + 2 * o;
            let key = |i: u64| -> Result<(u32, u32, Vec<u64>)> {
                let mut c = Cur {
                    f: self,
                    pos: first + i * (key_len + o),
                };
                let size = c.u32()?;
                let mask = c.u32()?;
                let offs = (0..offset.len())
                    .map(|_| c.u64())
                    .collect::<Result<Vec<_>>>()?;
                Ok((size, mask, offs))
            };
            let child = |i: u64| -> Result<u64> {
                Cur {
                    f: self,
                    pos: first + i * (key_len + o) + key_len,
                }
                .addr()
            };
            if used == 0 {
                return Ok(None);
            }
            // The last child whose first key is at or before `offset`.
            let mut pick = None;
            for i in 0..used {
                let (size, mask, k) = key(i)?;
                if k.as_slice() <= offset {
                    pick = Some((i, size, mask, k));
                } else {
                    break;
                }
            }
            let Some((i, size, mask, k)) = pick else {
                return Ok(None);
            };
            if level == 0 {
                return Ok((k.as_slice() == offset).then_some((child(i)?, size as u64, mask)));
            }
            node = child(i)?;
        }
        Err(self.err(None, "chunk B-tree is too deep or cyclic"))
    }

    /// Elements `[row, row + 1)` along the first dimension (every element of that row),
    /// widened to i64.
    pub fn read_row(&self, ds: &Dataset, row: u64) -> Result<Vec<i64>> {
        let Some((&n, rest)) = ds.shape.split_first() else {
            return Err(self.err(Some(ds.header), format!("`{}` is a scalar", ds.name)));
        };
        if row >= n {
            return Err(self.err(
                Some(ds.header),
                format!("row {row} is past the {n} rows of `{}`", ds.name),
            ));
        }
        let per_row: u64 = rest.iter().product();
        if per_row > MAX_ROW_ELEMENTS {
            return Err(self.err(Some(ds.header), "a row is too large"));
        }
        let es = ds.dtype.size as u64;
        match &ds.storage {
            Storage::Compact(b) => {
                let s = (row * per_row * es) as usize;
                Ok(decode_all(&b[s..s + (per_row * es) as usize], ds.dtype))
            }
            Storage::Contiguous { address, .. } => {
                let a = self
                    .abs(*address)
                    .ok_or_else(|| self.err(Some(ds.header), "no data written"))?;
                Ok(decode_all(
                    self.bytes(a + row * per_row * es, per_row * es)?,
                    ds.dtype,
                ))
            }
            Storage::Chunked { btree, chunk } => {
                let rank = ds.shape.len();
                let cdims = &chunk[..rank];
                let chunk_elems: u64 = cdims.iter().product();
                let mut out = vec![0i64; per_row as usize];
                // Every chunk whose first-dimension range holds `row`, in row-major order.
                let counts: Vec<u64> = (1..rank).map(|d| ds.shape[d].div_ceil(cdims[d])).collect();
                let total: u64 = counts.iter().product();
                if total.saturating_mul(per_row) > MAX_ROW_WORK {
                    return Err(self.err(Some(ds.header), "too many chunks per row"));
                }
                for ci in 0..total {
                    let mut off = vec![0u64; rank + 1];
                    off[0] = row / cdims[0] * cdims[0];
                    let mut r = ci;
                    for d in (1..rank).rev() {
                        off[d] = (r % counts[d - 1]) * cdims[d];
                        r /= counts[d - 1];
                    }
                    let (addr, size, mask) = self.find_chunk(*btree, &off)?.ok_or_else(|| {
                        self.err(
                            Some(ds.header),
                            format!("the chunk holding row {row} of `{}` is not stored", ds.name),
                        )
                    })?;
                    let a = self
                        .abs(addr)
                        .ok_or_else(|| self.err(None, "chunk address is undefined"))?;
                    let raw = self.bytes(a, size)?;
                    let want = chunk_elems * es;
                    let data = self.unfilter(ds, raw, mask, want, a)?;
                    // Copy this chunk's part of the row.
                    let within = row - off[0];
                    for (e, slot) in out.iter_mut().enumerate() {
                        // Element e of the row: its coordinates in dims 1..rank.
                        let mut rem = e as u64;
                        let mut coords = vec![0u64; rank];
                        for d in (1..rank).rev() {
                            coords[d] = rem % ds.shape[d];
                            rem /= ds.shape[d];
                        }
                        if (1..rank).any(|d| coords[d] < off[d] || coords[d] >= off[d] + cdims[d]) {
                            continue;
                        }
                        let mut idx = within;
                        for d in 1..rank {
                            idx = idx * cdims[d] + (coords[d] - off[d]);
                        }
                        let s = (idx * es) as usize;
                        *slot = decode(&data[s..s + es as usize], ds.dtype);
                    }
                }
                Ok(out)
            }
        }
    }

    fn unfilter(&self, ds: &Dataset, raw: &[u8], mask: u32, want: u64, at: u64) -> Result<Vec<u8>> {
        let mut data = raw.to_vec();
        for (i, f) in ds.filters.iter().enumerate().rev() {
            if i < 32 && mask & (1 << i) != 0 {
                continue;
            }
            data = match f {
                Filter::Deflate => {
                    let mut out = Vec::new();
                    flate2::read::ZlibDecoder::new(data.as_slice())
                        .take(want + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| self.err(Some(at), format!("deflate: {e}")))?;
                    out
                }
                Filter::Shuffle => {
                    let es = ds.dtype.size;
                    let n = data.len() / es;
                    let mut out = data.clone();
                    for b in 0..es {
                        for j in 0..n {
                            out[j * es + b] = data[b * n + j];
                        }
                    }
                    out
                }
            };
        }
        if data.len() as u64 != want {
            return Err(self.err(
                Some(at),
                format!(
                    "chunk holds {} bytes once decoded, expected {want}",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }
}

impl Dataset {
    /// The dataspace's dimensions.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> IntType {
        self.dtype
    }
}

fn decode(b: &[u8], t: IntType) -> i64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    let v = u64::from_le_bytes(w);
    if t.signed && t.size < 8 {
        let shift = 64 - 8 * t.size as u32;
        ((v << shift) as i64) >> shift
    } else {
        v as i64
    }
}

fn decode_all(b: &[u8], t: IntType) -> Vec<i64> {
    b.chunks_exact(t.size).map(|c| decode(c, t)).collect()
}

impl Cur<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let b = self.f.bytes(self.pos, n as u64)?;
        self.pos += n as u64;
        Ok(b)
    }
    fn uint(&mut self, n: usize) -> Result<u64> {
        let mut w = [0u8; 8];
        w[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(w))
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(self.uint(2)? as u16)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(self.uint(4)? as u32)
    }
    fn u64(&mut self) -> Result<u64> {
        self.uint(8)
    }
    fn addr(&mut self) -> Result<u64> {
        self.uint(self.f.offset_size)
    }
    fn len_field(&mut self) -> Result<u64> {
        self.uint(self.f.length_size)
    }
}
