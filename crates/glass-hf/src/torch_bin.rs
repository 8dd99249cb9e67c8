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
        if let pickle::StorageDtype::Other(_) = t.dtype {
            // Integer and boolean tensors are buffers (CrystalCoder's and GPT-NeoX's
            // causal masks, position ids), never weights: passed over unread. A model
            // that needed one reports it missing, by name.
            continue;
        }
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
            pickle::StorageDtype::Other(_) => unreachable!("passed over above"),
        };
        // Checked arithmetic: shapes and strides come from the file and may be hostile.
        let need = (t.storage_numel as usize).checked_mul(dtype.size());
        if need.is_none_or(|n| bytes.len() < n) {
            return Err(tensor_err(
                path,
                &name,
                format!(
                    "storage holds {} bytes, the pickle declares {} elements; the file is truncated or corrupt",
                    bytes.len(),
                    t.storage_numel
                ),
            ));
        }
        let numel = t.shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset as usize, |a, (&s, &st)| {
                a.checked_add(s.saturating_sub(1).checked_mul(st)?)
            });
        match (numel, last) {
            (Some(0), _) => {}
            (Some(_), Some(last)) if last < t.storage_numel as usize => {}
            _ => {
                return Err(tensor_err(
                    path,
                    &name,
                    "its view reaches past the end of its storage",
                ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A torch-style zip: `archive/data.pkl` = {'w': (2, 3) view with `stride0`} over a
    /// 6-element float storage holding `storage_bytes` bytes.
    fn archive(stride0: u8, storage_bytes: usize) -> Vec<u8> {
        let pkl = [
            &b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K"[..],
            &[stride0],
            &b"K\x01\x86\x89ccollections\nOrderedDict\n)RtRu."[..],
        ]
        .concat();
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", o).unwrap();
        z.write_all(&pkl).unwrap();
        z.start_file("archive/data/0", o).unwrap();
        let vals: Vec<u8> = (0..6u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .take(storage_bytes)
            .collect();
        z.write_all(&vals).unwrap();
        z.finish().unwrap().into_inner()
    }

    #[test]
    fn strided_views_read_and_bad_views_are_refused() {
        let p = Path::new("x.bin");
        let ok = archive(3, 24);
        let t = read(&ok, p).unwrap();
        let mut v = [0f32; 6];
        t[0].convert_into(&mut v);
        assert_eq!(v, [0., 1., 2., 3., 4., 5.]);
        let e = read(&archive(200, 24), p).unwrap_err().to_string();
        assert!(e.contains("past the end") && e.contains("`w`"), "{e}");
        let e = read(&archive(3, 8), p).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("x.bin"), "{e}");
    }
}
