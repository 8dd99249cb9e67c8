//! Rows of Parquet and Arrow IPC files (the hub's format and the `datasets` library's) as
//! JSON objects, streamed one record batch at a time, so memory is bounded by a batch of
//! rows, not by the file. Corpora (`kind = "parquet"` / `"arrow"` sources) and evaluation
//! datasets both read through here: one conversion of a cell to JSON, the one `datasets`
//! hands Python code.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use serde_json::{Map, Value};

use crate::error::{DataError, Result};

/// Rows per record batch read: a few hundred documents of a web corpus at a time.
const BATCH_ROWS: usize = 256;

/// A columnar file format, told by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columnar {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Arrow IPC, file or stream (`.arrow`; `datasets` writes streams).
    Arrow,
}

impl Columnar {
    /// The format of `path` by its extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => Some(Self::Parquet),
            Some("arrow") => Some(Self::Arrow),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Parquet => "Parquet",
            Self::Arrow => "Arrow IPC",
        }
    }
}

/// Calls `row(index, object)` for every row of the `format` file at `path`, in order
/// (0-based index). `columns`: read only these top-level columns (all when `None`); a
/// named column the file lacks is an error listing the columns it has.
///
/// Errors (`DataError::Columnar`) name the file and, where it applies, the row; the
/// Parquet and Arrow decoders panic on some malformed files, and such a panic is this
/// file's error too. An error from `row` is returned as it is.
pub fn for_each_row(
    path: &Path,
    format: Columnar,
    columns: Option<&[String]>,
    row: &mut dyn FnMut(u64, Map<String, Value>) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    glass_io::contain::contained(|| stream(path, format, columns, row)).unwrap_or_else(|why| {
        Err(DataError::Columnar(format!(
            "{name}: malformed {} data ({why})",
            format.name()
        )))
    })
}

fn stream(
    path: &Path,
    format: Columnar,
    columns: Option<&[String]>,
    row: &mut dyn FnMut(u64, Map<String, Value>) -> Result<()>,
) -> Result<()> {
    let name = path.display().to_string();
    let bad = |e: &dyn std::fmt::Display| {
        DataError::Columnar(format!("{name}: unreadable {} data: {e}", format.name()))
    };
    let mut file = glass_io::open::open_regular(path)?.into_file();
    let mut next = 0u64;
    let mut each_batch = |b: RecordBatch| -> Result<()> { for_rows(&b, &name, &mut next, row) };
    match format {
        Columnar::Parquet => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            use parquet::arrow::ProjectionMask;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
            let mut builder = builder.with_batch_size(BATCH_ROWS);
            if let Some(cols) = columns {
                let idx = indices(builder.schema(), cols, &name)?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
                builder = builder.with_projection(mask);
            }
            for b in builder.build().map_err(|e| bad(&e))? {
                each_batch(b.map_err(|e| bad(&e))?)?;
            }
        }
        Columnar::Arrow => {
            let mut magic = [0u8; 6];
            let n = file.read(&mut magic).map_err(|e| bad(&e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| bad(&e))?;
            if n == 6 && &magic == b"ARROW1" {
                let r = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
                    .map_err(|e| bad(&e))?;
                let proj = match columns {
                    Some(cols) => Some(indices(&r.schema(), cols, &name)?),
                    None => None,
                };
                for b in r {
                    each_batch(project(b.map_err(|e| bad(&e))?, proj.as_deref(), &bad)?)?;
                }
            } else {
                let r = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
                    .map_err(|e| bad(&e))?;
                let proj = match columns {
                    Some(cols) => Some(indices(&r.schema(), cols, &name)?),
                    None => None,
                };
                for b in r {
                    each_batch(project(b.map_err(|e| bad(&e))?, proj.as_deref(), &bad)?)?;
                }
            }
        }
    }
    Ok(())
}

/// Indices of the top-level `columns` in `schema`.
fn indices(schema: &Schema, columns: &[String], name: &str) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            schema.index_of(c).map_err(|_| {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                DataError::Columnar(format!(
                    "{name}: no column `{c}` (the file has: {})",
                    have.join(", ")
                ))
            })
        })
        .collect()
}

fn project(
    b: RecordBatch,
    proj: Option<&[usize]>,
    bad: &dyn Fn(&dyn std::fmt::Display) -> DataError,
) -> Result<RecordBatch> {
    match proj {
        Some(p) => b.project(p).map_err(|e| bad(&e)),
        None => Ok(b),
    }
}

fn for_rows(
    b: &RecordBatch,
    name: &str,
    next: &mut u64,
    row: &mut dyn FnMut(u64, Map<String, Value>) -> Result<()>,
) -> Result<()> {
    let schema = b.schema();
    for i in 0..b.num_rows() {
        let mut obj = Map::new();
        for (f, col) in schema.fields().iter().zip(b.columns()) {
            let v = value_at(col.as_ref(), i).map_err(|e| {
                DataError::Columnar(format!("{name}[{}]: column `{}`: {e}", *next, f.name()))
            })?;
            obj.insert(f.name().clone(), v);
        }
        row(*next, obj)?;
        *next += 1;
    }
    Ok(())
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One cell as JSON (what `datasets` hands Python code).
fn value_at(arr: &dyn Array, i: usize) -> std::result::Result<Value, String> {
    if arr.is_null(i) {
        return Ok(Value::Null);
    }
    let list = |v: std::sync::Arc<dyn Array>| -> std::result::Result<Value, String> {
        (0..v.len())
            .map(|j| value_at(v.as_ref(), j))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Value::Array)
    };
    Ok(match arr.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(arr.as_boolean().value(i)),
        DataType::Int8 => Value::from(arr.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Value::from(arr.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Value::from(arr.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Value::from(arr.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::from(arr.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Value::from(arr.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Value::from(arr.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Value::from(arr.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => float(f64::from(arr.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(arr.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::String(arr.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(arr.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(arr.as_string_view().value(i).to_string()),
        DataType::List(_) => list(arr.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => list(arr.as_list::<i64>().value(i))?,
        DataType::FixedSizeList(_, _) => list(arr.as_fixed_size_list().value(i))?,
        DataType::Struct(_) => {
            let s = arr.as_struct();
            let mut m = Map::new();
            for (name, col) in s.column_names().into_iter().zip(s.columns()) {
                m.insert(name.to_string(), value_at(col.as_ref(), i)?);
            }
            Value::Object(m)
        }
        other => return Err(format!("Arrow type {other} is not supported")),
    })
}
