//! The HDF5 reader on files h5py wrote (`tools/fixtures/make_crystalcoder_fixtures.py`):
//! every row of every file, in each storage h5py produces (gzip row chunks, contiguous,
//! shuffle + gzip multi-row chunks, partial edge chunks splitting a row, a user block,
//! uint16, compact), equals what h5py read back; `libver="latest"` is refused by name.

use std::path::{Path, PathBuf};

use glass_data::hdf5::H5File;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../glass-cli/tests/fixtures/suites/crystalcoder")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

/// Every row of `path`'s `data`, flattened, against h5py's `[n][3][seq]`.
fn check_file(path: &Path, want: &Value) {
    let f = H5File::open(path).unwrap();
    let ds = f.dataset("data").unwrap();
    let want = want.as_array().unwrap();
    assert_eq!(ds.shape()[0], want.len() as u64, "{}", path.display());
    assert_eq!(
        f.root_attr_int("n_examples").unwrap(),
        Some(want.len() as i64)
    );
    for (r, row) in want.iter().enumerate() {
        let flat: Vec<i64> = row
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
            .collect();
        assert_eq!(
            f.read_row(&ds, r as u64).unwrap(),
            flat,
            "{} row {r}",
            path.display()
        );
    }
    let e = f.read_row(&ds, want.len() as u64).unwrap_err().to_string();
    assert!(e.contains("past the") && e.contains(".h5"), "{e}");
}

#[test]
fn every_row_of_every_file_is_what_h5py_read() {
    let exp = expected();
    let files = exp["files"].as_object().unwrap();
    assert_eq!(files.len(), 5);
    for (rel, want) in files {
        check_file(&fixtures().join("data").join(rel), want);
    }
    let variants = exp["variants"].as_object().unwrap();
    assert_eq!(variants.len(), 4);
    for (name, want) in variants {
        check_file(&fixtures().join("variants").join(name), want);
    }
    let u = H5File::open(&fixtures().join("variants/uint16.h5")).unwrap();
    let d = u.dataset("data").unwrap();
    assert_eq!((d.dtype().size, d.dtype().signed), (2, false));
}

#[test]
fn files_h5py_writes_with_libver_latest_are_refused_by_name() {
    let p = fixtures().join("variants/latest.h5");
    let e = H5File::open(&p)
        .and_then(|f| f.dataset("data"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("latest.h5") && e.contains("libver"), "{e}");
}

/// Every single-byte change of files in each storage kind is read or refused, never a
/// panic (the fuzz target `hdf5_file` mutates further).
#[test]
fn every_byte_changed_is_an_answer_or_an_error() {
    let d = tempfile::tempdir().unwrap();
    for rel in [
        "data/stage1/data-00000.h5",
        "data/stage1/data-00002.h5",
        "data/stage2/examples_0_0.h5",
        "variants/edge_chunks.h5",
        "variants/compact.h5",
    ] {
        let good = std::fs::read(fixtures().join(rel)).unwrap();
        let p = d.path().join("f.h5");
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            std::fs::write(&p, &b).unwrap();
            if let Ok(f) = H5File::open(&p) {
                let _ = f.root_attr_int("n_examples");
                if let Ok(ds) = f.dataset("data") {
                    let n = ds.shape().first().copied().unwrap_or(0);
                    for r in 0..n.min(8) {
                        let _ = f.read_row(&ds, r);
                    }
                }
            }
        }
    }
}
