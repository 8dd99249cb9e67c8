//! PyTorch checkpoints (`pytorch_model*.bin`): a zip archive holding `data.pkl` (the
//! state dict as a pickle, read by [`crate::pickle`]) and one raw little-endian entry per
//! storage, `data/<key>`. torch writes entries uncompressed, so every storage is read in
//! place from the memory-mapped file: no copy, and peak memory stays near one shard.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use crate::error::{file_err, tensor_err, Result};
use crate::pickle::{self, Value};
use crate::weights::{SrcDtype, SrcTensor};

/// The tensors of one `.bin` file, in the pickle's order, borrowing `map`.
pub fn read<'a>(map: &'a [u8], path: &Path) -> Result<Vec<SrcTensor<'a>>> {
    let bad = |msg: String| file_err(path, msg);
    let mut zip = zip::ZipArchive::new(Cursor::new(map)).map_err(|e| {
        bad(format!(
            "not a PyTorch zip checkpoint ({e}); the file is truncated or corrupt (a pre-1.6 legacy torch.save must be re-saved with a current torch)"
        ))
    })?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| bad("no data.pkl in the archive; not a torch.save checkpoint".into()))?
        .clone();
    let prefix = pkl.strip_suffix("data.pkl").expect("suffix").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| bad(format!("byteorder: {e}")))?;
        if s.trim() != "little" {
            return Err(bad(format!(
                "byte order `{}` is not supported (little-endian only)",
                s.trim()
            )));
        }
    }
    let mut program = Vec::new();
    zip.by_name(&pkl)
        .and_then(|mut f| f.read_to_end(&mut program).map_err(Into::into))
        .map_err(|e| bad(format!("{pkl}: {e}")))?;
    let root = pickle::load(&program).map_err(|e| bad(format!("{pkl}: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(bad(format!(
            "{pkl}: the pickle is not a state dict (name -> tensor)"
        )));
    };
    let mut storages: BTreeMap<String, &'a [u8]> = BTreeMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(bad(format!("{pkl}: a state-dict key is not a string")));
        };
        let Value::Tensor(t) = v else {
            return Err(tensor_err(path, name, "is not a tensor"));
        };
        let bytes = match storages.get(&t.key) {
            Some(b) => *b,
            None => {
                let entry = format!("{prefix}data/{}", t.key);
                let f = zip.by_name(&entry).map_err(|e| {
                    tensor_err(
                        path,
                        &name,
                        format!(
                            "storage `{entry}` is missing ({e}); the file is truncated or corrupt"
                        ),
                    )
                })?;
                if f.compression() != zip::CompressionMethod::Stored {
                    return Err(tensor_err(
                        path,
                        &name,
                        format!(
                            "storage `{entry}` is compressed; torch writes storages uncompressed"
                        ),
                    ));
                }
                let start = f.data_start().ok_or_else(|| {
                    tensor_err(path, &name, format!("storage `{entry}` has no data offset"))
                })? as usize;
                let len = f.size() as usize;
                let b = start
                    .checked_add(len)
                    .and_then(|end| map.get(start..end))
                    .ok_or_else(|| {
                        tensor_err(path, &name, format!("storage `{entry}` runs past the end of the file; the file is truncated"))
                    })?;
                storages.insert(t.key.clone(), b);
                b
            }
        };
        let dtype = match t.dtype {
            pickle::StorageDtype::F32 => SrcDtype::F32,
            pickle::StorageDtype::F16 => SrcDtype::F16,
            pickle::StorageDtype::BF16 => SrcDtype::BF16,
            pickle::StorageDtype::F64 => SrcDtype::F64,
        };
        let need = t.storage_numel as usize * dtype.size();
        if bytes.len() < need {
            return Err(tensor_err(
                path,
                &name,
                format!(
                    "storage holds {} bytes, the pickle declares {need}; the file is truncated or corrupt",
                    bytes.len()
                ),
            ));
        }
        let numel: usize = t.shape.iter().product();
        if numel > 0 {
            let last = t.offset as usize
                + t.shape
                    .iter()
                    .zip(&t.stride)
                    .map(|(s, st)| (s - 1) * st)
                    .sum::<usize>();
            if last >= t.storage_numel as usize {
                return Err(tensor_err(
                    path,
                    &name,
                    "its view reaches past the end of its storage",
                ));
            }
        }
        out.push(SrcTensor {
            name,
            dtype,
            shape: t.shape,
            stride: t.stride,
            offset: t.offset as usize,
            bytes,
        });
    }
    Ok(out)
}
