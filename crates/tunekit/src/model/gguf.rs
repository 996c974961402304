//! GGUF reader: llama.cpp's single-file model format (header, metadata, tensor infos, data).
//!
//! Layout (little-endian, <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>):
//! magic `GGUF`, `u32` version (2 or 3), `u64` tensor count, `u64` metadata count; the metadata
//! key/value pairs (key: `u64` length + UTF-8 bytes; `u32` value type; value); the tensor infos
//! (name, `u32` dims, `u64` sizes fastest-varying first, `u32` ggml type, `u64` offset into the
//! data section); padding to `general.alignment` (32 by default); the tensor data.
//!
//! Every read is bounds-checked: a truncated or corrupt file is a [`GgufError`] naming the file
//! and what was being read, never a panic. Tensors are dequantised to f32 exactly as the `gguf`
//! Python package (and so transformers' `gguf_file=` loading) does: for the block types the
//! scale `d` (and minimum `m`) are f16 widened to f32, and `x = d·q` (`Q8_0`), `d·(q − 8)`
//! (`Q4_0`), `d·q + m` (`Q4_1`) in f32. Other types are refused by name ([`GgmlType`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors reading a GGUF file; each names the file and, where known, the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes do not form a GGUF file (bad magic, version, truncated, inconsistent).
    #[error("{path}: not a valid GGUF file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (byte offset, key or tensor).
        message: String,
    },
    /// A metadata key is missing or has another type than expected.
    #[error("{path}: metadata `{key}`: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing, mis-shaped or of a type tunekit cannot dequantise.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's GGUF name.
        tensor: String,
        /// What is wrong (for an unsupported type: its ggml name).
        message: String,
    },
}

/// ggml tensor types (`enum ggml_type`), by their numeric id. Only `F32`, `F16`, `BF16`,
/// `Q8_0`, `Q4_0`, `Q4_1` are dequantised; the others are known by name so a refusal can say
/// which type the file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of 32: f16 scale, 32 × i8.
    Q8_0,
    /// Blocks of 32: f16 scale, 32 × 4-bit (offset 8).
    Q4_0,
    /// Blocks of 32: f16 scale, f16 minimum, 32 × 4-bit.
    Q4_1,
    /// Any other id (name from ggml's table, or `type <id>`).
    Other(u32),
}

impl GgmlType {
    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// ggml's name of the type (`Q4_K`, `IQ2_XS`, …).
    pub fn name(self) -> String {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        let id = match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Bf16 => 30,
            GgmlType::Other(id) => id,
        };
        NAMES
            .get(id as usize)
            .map_or_else(|| format!("type {id}"), |n| (*n).to_string())
    }

    /// `(elements per block, bytes per block)` of the types tunekit reads; `None` otherwise.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
        }
    }
}

/// A metadata value (GGUF value types 0–12).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    String(String),
    /// `ARRAY` (elements of one type; nested arrays allowed).
    Array(Vec<GgufValue>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer (any integer type, non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer (any integer type that fits).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (either float type).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, for a `STRING` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, for an `ARRAY` value.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's entry in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Shape in row-major order (PyTorch's order: GGUF's sizes reversed), e.g. `[out, in]`.
    pub shape: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// `general.alignment` (32 when absent).
    pub alignment: u64,
    data_start: usize,
    bytes: Vec<u8>,
}

/// Bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Largest element count accepted for one metadata array (a corrupt count must not allocate).
const MAX_ARRAY: u64 = 1 << 28;
/// Deepest array nesting accepted.
const MAX_DEPTH: usize = 8;

impl<'a> Cursor<'a> {
    fn corrupt(&self, message: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.corrupt(format!(
                "truncated at byte {} reading {what} ({n} bytes needed, file has {})",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.bytes.len())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "{what}: string length {len} past the end of the file (truncated or corrupt)"
                ))
            })?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| self.corrupt(format!("{what}: string is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(key)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.corrupt(format!("`{key}`: bool byte {b}"))),
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.corrupt(format!("`{key}`: arrays nested too deep")));
                }
                let elem = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a count past the end is corrupt.
                let left = (self.bytes.len() - self.pos) as u64;
                if n > MAX_ARRAY || n > left {
                    return Err(self.corrupt(format!(
                        "`{key}`: array of {n} elements does not fit in the file (truncated or corrupt)"
                    )));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => {
                return Err(self.corrupt(format!("`{key}`: unknown value type {other}")));
            }
        })
    }
}

impl GgufFile {
    /// Read and parse `path` (the whole file is read into memory).
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Parse a GGUF file's bytes; `path` is only used in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            path,
        };
        let magic = c.take(4, "the magic")?;
        if magic != b"GGUF" {
            return Err(c.corrupt(format!("magic is {magic:?}, not \"GGUF\"")));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(c.corrupt(format!("version {version} (2 and 3 are read)")));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        let left = bytes.len() as u64;
        if n_tensors > left || n_kv > left {
            return Err(c.corrupt(format!(
                "{n_tensors} tensors and {n_kv} metadata entries cannot fit in {left} bytes"
            )));
        }
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name {i}"))?;
            let n_dims = c.u32(&name)?;
            if n_dims > 8 {
                return Err(c.corrupt(format!("tensor `{name}`: {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                shape.push(
                    usize::try_from(d).map_err(|_| {
                        c.corrupt(format!("tensor `{name}`: dimension {d} too large"))
                    })?,
                );
            }
            shape.reverse();
            let ty = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            tensors.push(GgufTensorInfo {
                name,
                shape,
                ty,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| GgufError::Metadata {
                    path: path.to_path_buf(),
                    key: "general.alignment".into(),
                    message: format!("{v:?} is not a power of two"),
                })?,
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_start = usize::try_from(data_start)
            .ok()
            .filter(|&d| d <= bytes.len())
            .ok_or_else(|| c.corrupt("no data section after the tensor infos".into()))?;
        let file = GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_start,
            bytes: Vec::new(),
        };
        file.check_tensors(bytes.len())?;
        Ok(GgufFile { bytes, ..file })
    }

    /// Every tensor's byte range (for a type tunekit reads) lies inside the file.
    fn check_tensors(&self, len: usize) -> Result<(), GgufError> {
        for t in &self.tensors {
            if let Some(range) = self.byte_range(t)?.filter(|r| r.1 > len) {
                return Err(GgufError::Corrupt {
                    path: self.path.clone(),
                    message: format!(
                        "tensor `{}`: data ends at byte {} past the end of the file ({len} bytes)",
                        t.name, range.1
                    ),
                });
            }
        }
        Ok(())
    }

    /// `(start, end)` byte range of `t`'s data, or `None` for a type tunekit does not read.
    fn byte_range(&self, t: &GgufTensorInfo) -> Result<Option<(usize, usize)>, GgufError> {
        let Some((block, size)) = t.ty.block() else {
            return Ok(None);
        };
        let err = |message: String| GgufError::Tensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            message,
        };
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(format!("shape {:?} overflows", t.shape)))?;
        if !numel.is_multiple_of(block) {
            return Err(err(format!(
                "{numel} elements are not whole {} blocks of {block}",
                t.ty.name()
            )));
        }
        let start = usize::try_from(t.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_start))
            .ok_or_else(|| err(format!("offset {} too large", t.offset)))?;
        let end = (numel / block)
            .checked_mul(size)
            .and_then(|n| n.checked_add(start))
            .ok_or_else(|| err("size overflows".into()))?;
        Ok(Some((start, end)))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor info named `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Metadata `key`, or a [`GgufError::Metadata`] saying it is missing.
    pub fn get(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.metadata
            .get(key)
            .ok_or_else(|| self.meta_err(key, "missing"))
    }

    fn meta_err(&self, key: &str, message: &str) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// String metadata `key`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.meta_err(key, "not a string"))
    }

    /// Non-negative integer metadata `key` as `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.get(key)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.meta_err(key, "not a non-negative integer"))
    }

    /// Float metadata `key`.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.meta_err(key, "not a float"))
    }

    /// String-array metadata `key`.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.meta_err(key, "not an array"))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.meta_err(key, "not an array of strings"))
            })
            .collect()
    }

    /// Tensor `name` dequantised to f32 (row-major, shape [`GgufTensorInfo::shape`]). Errors:
    /// missing tensor, a type other than F32/F16/BF16/Q8_0/Q4_0/Q4_1 (named).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let t = self.tensor_info(name).ok_or_else(|| GgufError::Tensor {
            path: self.path.clone(),
            tensor: name.into(),
            message: "missing from the file".into(),
        })?;
        let Some((start, end)) = self.byte_range(t)? else {
            return Err(GgufError::Tensor {
                path: self.path.clone(),
                tensor: name.into(),
                message: format!(
                    "quantisation type {} is not supported (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are)",
                    t.ty.name()
                ),
            });
        };
        // check_tensors verified every range at parse time.
        let raw = self
            .bytes
            .get(start..end)
            .ok_or_else(|| GgufError::Corrupt {
                path: self.path.clone(),
                message: format!("tensor `{name}`: data past the end of the file"),
            })?;
        Ok((t.shape.clone(), dequantize(t.ty, raw)))
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Dequantise `raw` (whole blocks of `ty`, as checked by the caller) to f32; the formulas of
/// ggml's `dequantize_row_*` and gguf-py's `quants.py`. Unsupported types give an empty vector.
pub fn dequantize(ty: GgmlType, raw: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => raw.chunks_exact(2).map(f16).collect(),
        GgmlType::Bf16 => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(raw.len() / 34 * 32);
            for b in raw.chunks_exact(34) {
                let d = f16(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
            out
        }
        GgmlType::Q4_0 => {
            let mut out = Vec::with_capacity(raw.len() / 18 * 32);
            for b in raw.chunks_exact(18) {
                let d = f16(&b[0..2]);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0F) - 8.0)));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
            }
            out
        }
        GgmlType::Q4_1 => {
            let mut out = Vec::with_capacity(raw.len() / 20 * 32);
            for b in raw.chunks_exact(20) {
                let d = f16(&b[0..2]);
                let m = f16(&b[2..4]);
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0F) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
            out
        }
        GgmlType::Other(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writer for small GGUF files in tests.
    #[derive(Default)]
    pub(crate) struct Builder {
        kv: Vec<u8>,
        n_kv: u64,
        infos: Vec<u8>,
        data: Vec<u8>,
        n_tensors: u64,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Builder {
        pub(crate) fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
            put_str(&mut self.kv, key);
            self.kv.extend(ty.to_le_bytes());
            self.kv.extend(value);
            self.n_kv += 1;
            self
        }

        pub(crate) fn kv_str(self, key: &str, s: &str) -> Self {
            let mut v = Vec::new();
            put_str(&mut v, s);
            self.kv(key, 8, &v)
        }

        /// `shape` row-major; `ty` ggml id; `data` raw bytes.
        pub(crate) fn tensor(mut self, name: &str, shape: &[usize], ty: u32, data: &[u8]) -> Self {
            put_str(&mut self.infos, name);
            self.infos.extend((shape.len() as u32).to_le_bytes());
            for d in shape.iter().rev() {
                self.infos.extend((*d as u64).to_le_bytes());
            }
            self.infos.extend(ty.to_le_bytes());
            while !self.data.len().is_multiple_of(32) {
                self.data.push(0);
            }
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend(data);
            self.n_tensors += 1;
            self
        }

        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(self.kv);
            out.extend(self.infos);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            out.extend(self.data);
            out
        }
    }

    fn f16b(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    fn sample() -> Vec<u8> {
        let mut arr = Vec::new();
        arr.extend(8u32.to_le_bytes());
        arr.extend(2u64.to_le_bytes());
        put_str(&mut arr, "a b");
        put_str(&mut arr, "é 🎉");
        let mut nested = Vec::new();
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.extend(5u32.to_le_bytes());
        nested.extend(2u64.to_le_bytes());
        nested.extend((-3i32).to_le_bytes());
        nested.extend(7i32.to_le_bytes());
        let f32s: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0, 0.0, -0.5]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| f16b(*x)).collect();
        let bf16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        // Q8_0: d = 0.5, q = -16..16.
        let mut q8 = f16b(0.5).to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        // Q4_0: d = 2, low nibbles 0..16, high nibbles 15..0.
        let mut q40 = f16b(2.0).to_vec();
        q40.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        // Q4_1: d = 0.25, m = -1.
        let mut q41 = f16b(0.25).to_vec();
        q41.extend(f16b(-1.0));
        q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        Builder::default()
            .kv("u8", 0, &[7])
            .kv("i8", 1, &[0xFF])
            .kv("u16", 2, &300u16.to_le_bytes())
            .kv("i16", 3, &(-300i16).to_le_bytes())
            .kv("u32", 4, &70000u32.to_le_bytes())
            .kv("i32", 5, &(-70000i32).to_le_bytes())
            .kv("f32", 6, &0.5f32.to_le_bytes())
            .kv("bool", 7, &[1])
            .kv_str("str", "llama")
            .kv("arr", 9, &arr)
            .kv("nested", 9, &nested)
            .kv("u64", 10, &(1u64 << 40).to_le_bytes())
            .kv("i64", 11, &(-5i64).to_le_bytes())
            .kv("f64", 12, &1e-5f64.to_le_bytes())
            .tensor("f32", &[2, 3], 0, &f32s)
            .tensor("f16", &[2], 1, &f16s)
            .tensor("bf16", &[2], 30, &bf16s)
            .tensor("q8", &[32], 8, &q8)
            .tensor("q40", &[32], 2, &q40)
            .tensor("q41", &[1, 32], 3, &q41)
            .tensor("q4k", &[256], 12, &[0u8; 144])
            .build()
    }

    #[test]
    fn metadata_of_every_value_type_reads_back() {
        let f = GgufFile::parse(Path::new("t.gguf"), sample()).unwrap();
        assert_eq!(f.version, 3);
        let m = &f.metadata;
        assert_eq!(m["u8"], GgufValue::U8(7));
        assert_eq!(m["i8"], GgufValue::I8(-1));
        assert_eq!(m["u16"], GgufValue::U16(300));
        assert_eq!(m["i16"], GgufValue::I16(-300));
        assert_eq!(m["u32"].as_u64(), Some(70000));
        assert_eq!(m["i32"].as_i64(), Some(-70000));
        assert_eq!(m["f32"].as_f64(), Some(0.5));
        assert_eq!(m["bool"], GgufValue::Bool(true));
        assert_eq!(f.get_str("str").unwrap(), "llama");
        assert_eq!(f.get_strings("arr").unwrap(), vec!["a b", "é 🎉"]);
        assert_eq!(
            m["nested"],
            GgufValue::Array(vec![GgufValue::Array(vec![
                GgufValue::I32(-3),
                GgufValue::I32(7)
            ])])
        );
        assert_eq!(f.get_usize("u64").unwrap(), 1 << 40);
        assert_eq!(m["i64"].as_i64(), Some(-5));
        assert_eq!(f.get_f64("f64").unwrap(), 1e-5);
        assert!(f.get_usize("i64").is_err());
        let e = f.get_str("missing").unwrap_err().to_string();
        assert!(e.contains("`missing`") && e.contains("t.gguf"), "{e}");
    }

    #[test]
    fn each_supported_type_dequantises_as_ggml_does() {
        let f = GgufFile::parse(Path::new("t.gguf"), sample()).unwrap();
        let (shape, v) = f.tensor_f32("f32").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(v, vec![1.5, -2.0, 0.25, 8.0, 0.0, -0.5]);
        assert_eq!(f.tensor_f32("f16").unwrap().1, vec![1.5, -2.0]);
        assert_eq!(f.tensor_f32("bf16").unwrap().1, vec![1.5, -2.0]);
        let q8 = f.tensor_f32("q8").unwrap().1;
        assert_eq!(
            q8,
            (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect::<Vec<_>>()
        );
        let q40 = f.tensor_f32("q40").unwrap().1;
        let want: Vec<f32> = (0..16)
            .map(|j| 2.0 * (j as f32 - 8.0))
            .chain((0..16).map(|j| 2.0 * ((15 - j) as f32 - 8.0)))
            .collect();
        assert_eq!(q40, want);
        let (shape, q41) = f.tensor_f32("q41").unwrap();
        assert_eq!(shape, vec![1, 32]);
        let want: Vec<f32> = (0..16)
            .map(|j| 0.25 * j as f32 - 1.0)
            .chain((0..16).map(|j| 0.25 * (15 - j) as f32 - 1.0))
            .collect();
        assert_eq!(q41, want);
    }

    #[test]
    fn unsupported_quant_type_is_refused_by_name_with_the_tensor() {
        let f = GgufFile::parse(Path::new("t.gguf"), sample()).unwrap();
        let e = f.tensor_f32("q4k").unwrap_err().to_string();
        assert!(e.contains("q4k") && e.contains("Q4_K"), "{e}");
        let e = f.tensor_f32("nope").unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("missing"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        // The full file parses; every strict prefix that cuts into the header or a readable
        // tensor's data fails with a typed error (never a panic).
        assert!(GgufFile::parse(Path::new("t.gguf"), bytes.clone()).is_ok());
        for len in 0..bytes.len() {
            let r = GgufFile::parse(Path::new("t.gguf"), bytes[..len].to_vec());
            // The last tensor (Q4_K) is not read, so cutting it is only caught when reading it.
            if let Ok(f) = r {
                assert!(f.tensor_f32("q4k").is_err());
                assert!(len + 144 + 32 > bytes.len(), "prefix of {len} bytes parsed");
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = sample();
        // Flip each header byte in turn (and a few patterns): parsing and reading every tensor
        // return Ok or Err, never panic or allocate absurdly.
        let header_end = bytes.len() - 400;
        for i in 0..header_end {
            for x in [0xFFu8, 0x80, 0x01] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok(f) = GgufFile::parse(Path::new("t.gguf"), b) {
                    for t in f.tensors.clone() {
                        let _ = f.tensor_f32(&t.name);
                    }
                }
            }
        }
        let e = GgufFile::parse(Path::new("t.gguf"), b"GGML....".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("magic"), "{e}");
    }
}
