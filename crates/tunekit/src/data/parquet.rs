//! Parquet rows, read through the `parquet` crate with its panics turned into errors.

use std::fs::File;

use super::{DataError, DataSpec, Row};

thread_local! {
    /// Set while [`guard_decoder`] runs: a panic then is reported as an error, not printed.
    static IN_DECODER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run the Parquet decoder, turning a panic inside it into an error message. The `parquet`
/// crate panics (an `unwrap` in its Thrift footer decoder) on some corrupt files, found by the
/// property tests in `tests/readers_prop.rs`; a bad file must be an error naming it, never a
/// crash. The panic hook is wrapped once so that such a panic is not printed; panics anywhere
/// else are printed by the previous hook as before.
fn guard_decoder<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    IN_DECODER.with(|d| d.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_DECODER.with(|d| d.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// Parquet rows, projected on the needed columns. Text columns must be strings; labels may be
/// strings, integers or booleans. The "line" of a row is its 1-based row number.
pub(super) struct ParquetRows {
    rows: parquet::record::reader::RowIter<'static>,
    /// Position of the text, pair and label columns in the projected row.
    text: usize,
    pair: Option<usize>,
    label: Option<usize>,
    row: usize,
}

impl ParquetRows {
    pub(super) fn open(spec: &DataSpec, file: File) -> Result<Self, DataError> {
        match guard_decoder(|| Self::open_unguarded(spec, file)) {
            Ok(result) => result,
            Err(panic) => Err(DataError::Malformed {
                file: spec.path.clone(),
                line: 0,
                message: format!("not a readable Parquet file (the decoder failed: {panic})"),
            }),
        }
    }

    fn open_unguarded(spec: &DataSpec, file: File) -> Result<Self, DataError> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let path = &spec.path;
        let bad = |e: parquet::errors::ParquetError| DataError::Malformed {
            file: path.clone(),
            line: 0,
            message: format!("not a readable Parquet file: {e}"),
        };
        let reader = SerializedFileReader::new(file).map_err(bad)?;
        let root = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema();
        let fields = root.get_fields();
        let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
        // The projection keeps file order, so positions are found among the wanted names.
        let wanted: Vec<&str> = [
            Some(spec.text_column.as_str()),
            spec.text_pair_column.as_deref(),
            spec.label_column.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        for col in &wanted {
            if !names.iter().any(|n| n == col) {
                return Err(DataError::MissingColumn {
                    file: path.clone(),
                    column: col.to_string(),
                    available: names.clone(),
                });
            }
        }
        let kept: Vec<_> = fields
            .iter()
            .filter(|f| wanted.contains(&f.name()))
            .cloned()
            .collect();
        let position = |col: &str| kept.iter().position(|f| f.name() == col).unwrap_or(0);
        let (text, pair, label) = (
            position(&spec.text_column),
            spec.text_pair_column.as_deref().map(position),
            spec.label_column.as_deref().map(position),
        );
        let projection = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(kept)
            .build()
            .map_err(bad)?;
        if reader.metadata().file_metadata().num_rows() == 0 {
            return Err(DataError::Empty { file: path.clone() });
        }
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader))
            .project(Some(projection))
            .map_err(bad)?;
        Ok(ParquetRows {
            rows,
            text,
            pair,
            label,
            row: 0,
        })
    }

    pub(super) fn next_row(&mut self, spec: &DataSpec) -> Option<Result<Row, DataError>> {
        use parquet::record::Field;
        let next = match guard_decoder(|| self.rows.next()) {
            Ok(next) => next,
            Err(panic) => {
                return Some(Err(DataError::Row {
                    file: spec.path.clone(),
                    row: self.row + 1,
                    message: format!("unreadable Parquet row (the decoder failed: {panic})"),
                }));
            }
        };
        let row = match next? {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(DataError::Row {
                    file: spec.path.clone(),
                    row: self.row + 1,
                    message: format!("unreadable Parquet row: {e}"),
                }));
            }
        };
        self.row += 1;
        let line = self.row;
        let columns: Vec<(&String, &Field)> = row.get_column_iter().collect();
        let value = |i: usize, scalars: bool| -> Result<String, DataError> {
            let Some((name, field)) = columns.get(i) else {
                return Ok(String::new());
            };
            match field {
                Field::Null => Ok(String::new()),
                Field::Str(s) => Ok(s.clone()),
                Field::Bool(_)
                | Field::Byte(_)
                | Field::Short(_)
                | Field::Int(_)
                | Field::Long(_)
                | Field::UByte(_)
                | Field::UShort(_)
                | Field::UInt(_)
                | Field::ULong(_)
                    if scalars =>
                {
                    Ok(field.to_string())
                }
                other => Err(DataError::Row {
                    file: spec.path.clone(),
                    row: line,
                    message: format!(
                        "column `{name}` must be a string{}, found {other}",
                        if scalars { ", integer or bool" } else { "" }
                    ),
                }),
            }
        };
        Some((|| {
            Ok(Row {
                text: value(self.text, false)?,
                pair: self.pair.map(|i| value(i, false)).transpose()?,
                label: self.label.map(|i| value(i, true)).transpose()?,
                line,
                replaced: false,
            })
        })())
    }
}
