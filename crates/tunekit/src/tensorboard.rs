//! TensorBoard scalar logs: `events.out.tfevents.*` files (TFRecord framing of `Event`
//! protobufs), so `tensorboard --logdir runs/` shows a run's curves. Written by hand — the
//! format is four fields deep — instead of pulling in a protobuf toolchain.
//!
//! Record framing: `u64 length`, `u32 masked CRC32C(length)`, `data`, `u32 masked CRC32C(data)`
//! (little-endian). Messages used: `Event { double wall_time = 1; int64 step = 2;
//! string file_version = 3; Summary summary = 5 }`, `Summary { repeated Value value = 1 }`,
//! `Value { string tag = 1; float simple_value = 2 }`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// CRC-32C (Castagnoli), reflected, as TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masked CRC.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An `Event` with wall time, step and either a file version or scalar values.
fn event(step: i64, file_version: Option<&str>, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(1 << 3 | 1); // wall_time, fixed64
    e.extend_from_slice(&wall_time().to_le_bytes());
    e.push(2 << 3); // step, varint
    varint(&mut e, step as u64);
    if let Some(v) = file_version {
        len_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut v = Vec::new();
            len_field(&mut v, 1, tag.as_bytes());
            v.push(2 << 3 | 5); // simple_value, fixed32
            v.extend_from_slice(&value.to_le_bytes());
            len_field(&mut summary, 1, &v);
        }
        len_field(&mut e, 5, &summary);
    }
    e
}

/// Appends scalar events to one events file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Create a new events file in `dir` (a resumed run adds a file; TensorBoard merges the
    /// files of a directory).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!(
            "events.out.tfevents.{}.tunekit.{}",
            nanos / 1_000_000_000,
            nanos % 1_000_000_000
        ));
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path,
        };
        w.record(&event(0, Some("brain.Event:2"), &[]))?;
        w.flush()?;
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out
            .write_all(&buf)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Scalars (tag, value) at a step.
    pub fn scalars(&mut self, step: usize, values: &[(&str, f64)]) -> Result<()> {
        let values: Vec<(&str, f32)> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (*t, *v as f32))
            .collect();
        self.record(&event(step as i64, None, &values))
    }

    /// Flush to disk (after each evaluation, so a live TensorBoard sees the curves).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// A decoded scalar event (for tests and tools): (step, tag, value).
pub type Scalar = (i64, String, f32);

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Parse an events file, checking every CRC; returns the file version and the scalars.
pub fn read_events(path: &Path) -> Result<(Option<String>, Vec<Scalar>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: &str| Error::Engine(format!("{}: {what}", path.display()));
    let (mut version, mut scalars) = (None, Vec::new());
    let mut i = 0;
    while i < bytes.len() {
        let len_bytes = bytes.get(i..i + 8).ok_or_else(|| bad("truncated length"))?;
        let crc = bytes.get(i + 8..i + 12).ok_or_else(|| bad("truncated"))?;
        if masked_crc(len_bytes).to_le_bytes() != crc {
            return Err(bad("length CRC mismatch"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| bad("length"))?) as usize;
        let data = bytes
            .get(i + 12..i + 12 + len)
            .ok_or_else(|| bad("truncated data"))?;
        let crc = bytes
            .get(i + 12 + len..i + 16 + len)
            .ok_or_else(|| bad("truncated"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(bad("data CRC mismatch"));
        }
        i += 16 + len;
        // Event fields.
        let (mut j, mut step) = (0, 0i64);
        let mut values = Vec::new();
        while j < data.len() {
            let key = read_varint(data, &mut j).ok_or_else(|| bad("key"))?;
            match (key >> 3, key & 7) {
                (1, 1) => j += 8,
                (2, 0) => step = read_varint(data, &mut j).ok_or_else(|| bad("step"))? as i64,
                (f, 2) => {
                    let n = read_varint(data, &mut j).ok_or_else(|| bad("len"))? as usize;
                    let body = data.get(j..j + n).ok_or_else(|| bad("field"))?;
                    j += n;
                    if f == 3 {
                        version = Some(String::from_utf8_lossy(body).into_owned());
                    } else if f == 5 {
                        // Summary: repeated Value.
                        let mut k = 0;
                        while k < body.len() {
                            let _key = read_varint(body, &mut k).ok_or_else(|| bad("value"))?;
                            let n = read_varint(body, &mut k).ok_or_else(|| bad("value"))? as usize;
                            let v = body.get(k..k + n).ok_or_else(|| bad("value"))?;
                            k += n;
                            let (mut m, mut tag, mut val) = (0, String::new(), f32::NAN);
                            while m < v.len() {
                                let key = read_varint(v, &mut m).ok_or_else(|| bad("tag"))?;
                                match key {
                                    10 => {
                                        let n = read_varint(v, &mut m).ok_or_else(|| bad("tag"))?
                                            as usize;
                                        tag = String::from_utf8_lossy(
                                            v.get(m..m + n).ok_or_else(|| bad("tag"))?,
                                        )
                                        .into_owned();
                                        m += n;
                                    }
                                    21 => {
                                        let b: [u8; 4] = v
                                            .get(m..m + 4)
                                            .and_then(|s| s.try_into().ok())
                                            .ok_or_else(|| bad("value"))?;
                                        val = f32::from_le_bytes(b);
                                        m += 4;
                                    }
                                    _ => return Err(bad("unexpected Value field")),
                                }
                            }
                            values.push((tag, val));
                        }
                    }
                }
                _ => return Err(bad("unexpected Event field")),
            }
        }
        scalars.extend(values.into_iter().map(|(t, v)| (step, t, v)));
    }
    Ok((version, scalars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn events_round_trip_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, &[("train/loss", 0.5), ("train/lr", 1e-4)])
            .unwrap();
        w.scalars(300, &[("validation/accuracy", 0.8125)]).unwrap();
        w.flush().unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        );
        let (version, scalars) = read_events(&path).unwrap();
        assert_eq!(version.as_deref(), Some("brain.Event:2"));
        assert_eq!(
            scalars,
            vec![
                (1, "train/loss".to_string(), 0.5),
                (1, "train/lr".to_string(), 1e-4),
                (300, "validation/accuracy".to_string(), 0.8125)
            ]
        );
        // A flipped byte is caught by the CRC.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_events(&path).is_err());
    }
}
