//! The one safetensors writer, for training checkpoints and Hugging Face exports alike:
//! streamed through [`crate::AtomicFile`], so a file is hashed as it is written and never
//! read back.

use std::collections::HashMap;
use std::path::Path;

pub use ::safetensors::Dtype;
use serde::Serialize;

use crate::error::Result;

/// One tensor of a safetensors file being written: its raw little-endian bytes.
pub struct TensorBytes<'a> {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The values' bytes.
    pub data: &'a [u8],
}

/// Writes `tensors` as a safetensors file at `path`, byte for byte what
/// `safetensors::serialize_to_file` writes for them, atomically and fsynced, and returns
/// its (sha256, bytes): the file is hashed as it is written (through
/// [`crate::AtomicFile`]), never read back.
///
/// The header is written out here because the crate writes only to a file it opens
/// itself and keeps its header builder private: sorted by descending dtype, then name;
/// `__metadata__` first; the entries are the crate's own `TensorInfo` serialised; padded
/// with spaces to a multiple of 8 bytes. A test checks every byte against the crate.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
) -> Result<(String, u64)> {
    let mut out = crate::AtomicFile::create(path)?;
    emit(tensors, meta, &mut |b| out.write(b))?;
    out.commit()
}

/// The (sha256, bytes) of the file [`write_safetensors`] would write, computed without
/// writing anything (a replay compares hashes; it has nothing to keep).
pub fn hash_safetensors(
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
) -> (String, u64) {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    emit(tensors, meta, &mut |b| {
        h.update(b);
        n += b.len() as u64;
        Ok(())
    })
    .expect("hashing does not fail");
    (hex::encode(h.finalize()), n)
}

/// Hands the bytes of the safetensors file of `tensors` to `sink`, in order.
fn emit(
    tensors: &[TensorBytes<'_>],
    meta: &HashMap<String, String>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        (tensors[b].dtype.cmp(&tensors[a].dtype)).then(tensors[a].name.cmp(&tensors[b].name))
    });
    let mut header = format!("{{\"__metadata__\":{}", to_json(meta));
    let mut offset = 0;
    for &i in &order {
        let t = &tensors[i];
        let info = ::safetensors::tensor::TensorInfo {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data_offsets: (offset, offset + t.data.len()),
        };
        offset += t.data.len();
        header.push_str(&format!(",{}:{}", to_json(&t.name), to_json(&info)));
    }
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    sink(&(header.len() as u64).to_le_bytes())?;
    sink(&header)?;
    for i in order {
        sink(tensors[i].data)?;
    }
    Ok(())
}

/// Compact JSON of plain data (strings, the metadata map, the crate's `TensorInfo`).
fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct Raw<'a>(&'a TensorBytes<'a>);

    impl ::safetensors::View for Raw<'_> {
        fn dtype(&self) -> Dtype {
            self.0.dtype
        }
        fn shape(&self) -> &[usize] {
            &self.0.shape
        }
        fn data(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.0.data)
        }
        fn data_len(&self) -> usize {
            self.0.data.len()
        }
    }

    /// A checkpoint's optimizer file (two prefixes, names out of order, metadata holding
    /// quotes, mixed dtypes) is byte for byte what `safetensors::serialize_to_file`
    /// writes, and the returned hash and length are the file's.
    #[test]
    fn streamed_files_equal_the_crates_own() {
        let values: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.37).sin()).collect();
        let halves: Vec<u8> = (0..600u16).flat_map(|x| x.to_le_bytes()).collect();
        let f32s: &[u8] = bytemuck::cast_slice(&values);
        let tensors = vec![
            TensorBytes {
                name: "exp_avg_sq.layers.0.w".into(),
                dtype: Dtype::F32,
                shape: vec![20, 50],
                data: &f32s[..4000],
            },
            TensorBytes {
                name: "exp_avg.b".into(),
                dtype: Dtype::F32,
                shape: vec![2000],
                data: &f32s[4000..],
            },
            TensorBytes {
                name: "a.half".into(),
                dtype: Dtype::BF16,
                shape: vec![600],
                data: &halves,
            },
        ];
        let meta = HashMap::from([(
            "glass".to_string(),
            "{\"kind\":\"optimizer\",\"adamw_step\":7}".to_string(),
        )]);
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.safetensors");
        let (sha, len) = write_safetensors(&ours, &tensors, &meta).unwrap();
        let theirs = dir.path().join("theirs.safetensors");
        let views: Vec<(String, Raw)> = tensors.iter().map(|t| (t.name.clone(), Raw(t))).collect();
        ::safetensors::serialize_to_file(views, &Some(meta.clone()), &theirs).unwrap();
        let bytes = std::fs::read(&ours).unwrap();
        assert!(bytes == std::fs::read(&theirs).unwrap());
        assert_eq!(hash_safetensors(&tensors, &meta), (sha.clone(), len));
        assert_eq!((sha, len), (crate::sha256_hex(&bytes), bytes.len() as u64));
    }
}
