//! Reading and writing tables batch by batch, and the row hashes that identify their rows.

use std::fs::File;
use std::io::BufWriter;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::ipc::writer::{FileWriter, StreamWriter};
use arrow::row::{RowConverter, Rows, SortField};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{Error, Format};
use crate::store::cas::Key;

/// Rows per record batch read.
pub const BATCH_ROWS: usize = 8192;

/// A table read batch by batch, from an optional first row on.
pub struct Reader {
    path: PathBuf,
    format: Format,
    schema: SchemaRef,
    batches: Batches,
    /// Row of the file the next batch starts at.
    at: u64,
    /// Rows still to drop from the front (IPC, which cannot seek by row).
    skip: u64,
    /// For Parquet: the first row of each row group, to name the one an error is in.
    groups: Vec<u64>,
}

enum Batches {
    Parquet(ParquetRecordBatchReader),
    ArrowFile(FileReader<std::io::BufReader<File>>),
    ArrowStream(StreamReader<std::io::BufReader<File>>),
}

impl Reader {
    /// Opens `path` as `format`, to read from row `from` on.
    pub fn open(path: &Path, format: Format, from: u64) -> Result<Reader, Error> {
        std::panic::catch_unwind(|| Reader::open_unguarded(path, format, from)).unwrap_or_else(|_| {
            Err(Error::Open {
                path: path.to_owned(),
                format,
                source: "the decoder failed on damaged data".into(),
            })
        })
    }

    fn open_unguarded(path: &Path, format: Format, from: u64) -> Result<Reader, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Open {
            path: path.to_owned(),
            format,
            source,
        };
        let file = File::open(path).map_err(io)?;
        let (schema, batches, groups, skip) = match format {
            Format::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| open_err(e.into()))?;
                let meta = builder.metadata().clone();
                let mut groups = Vec::with_capacity(meta.num_row_groups());
                let mut total = 0u64;
                for g in meta.row_groups() {
                    groups.push(total);
                    total += g.num_rows().max(0) as u64;
                }
                let mut builder = builder.with_batch_size(BATCH_ROWS);
                if from > 0 {
                    let from = from.min(total);
                    builder = builder.with_row_selection(RowSelection::from(vec![
                        RowSelector::skip(from as usize),
                        RowSelector::select((total - from) as usize),
                    ]));
                }
                let schema = builder.schema().clone();
                let reader = builder.build().map_err(|e| open_err(e.into()))?;
                (schema, Batches::Parquet(reader), groups, 0)
            }
            Format::ArrowFile => {
                declared_sizes_fit(&file, format).map_err(|e| open_err(e.into()))?;
                let reader =
                    FileReader::try_new(std::io::BufReader::new(file), None).map_err(|e| open_err(e.into()))?;
                (reader.schema(), Batches::ArrowFile(reader), Vec::new(), from)
            }
            Format::ArrowStream => {
                declared_sizes_fit(&file, format).map_err(|e| open_err(e.into()))?;
                let reader =
                    StreamReader::try_new(std::io::BufReader::new(file), None).map_err(|e| open_err(e.into()))?;
                (reader.schema(), Batches::ArrowStream(reader), Vec::new(), from)
            }
        };
        Ok(Reader {
            path: path.to_owned(),
            format,
            schema,
            batches,
            at: from - skip,
            skip,
            groups,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next batch (never empty), or None at the end. An error names the row group or row.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, Error> {
        loop {
            // Damaged input can still trip a panic deep in a decoder: it is an error of the
            // file like any other, not a crash.
            let batches = &mut self.batches;
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match batches {
                Batches::Parquet(r) => r.next(),
                Batches::ArrowFile(r) => r.next(),
                Batches::ArrowStream(r) => r.next(),
            }))
            .unwrap_or_else(|_| {
                Some(Err(arrow::error::ArrowError::ExternalError(
                    "the decoder failed on damaged data".into(),
                )))
            });
            let batch = match next {
                None => return Ok(None),
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        at: self.place(),
                        source: e.into(),
                    })
                }
            };
            let n = batch.num_rows() as u64;
            let drop = self.skip.min(n);
            self.skip -= drop;
            self.at += n;
            if n > drop {
                return Ok(Some(batch.slice(drop as usize, (n - drop) as usize)));
            }
        }
    }

    /// Where the batch that failed is: for Parquet, the first row group it spans that fails
    /// to read alone.
    fn place(&self) -> String {
        match self.format {
            Format::Parquet => {
                let first = self.groups.partition_point(|&start| start <= self.at).saturating_sub(1);
                let last = self
                    .groups
                    .partition_point(|&start| start < self.at + BATCH_ROWS as u64)
                    .saturating_sub(1);
                let bad = (first..=last).find(|&g| !self.row_group_reads(g)).unwrap_or(first);
                let start = self.groups.get(bad).copied().unwrap_or(self.at);
                format!("row group {bad} (from row {start})")
            }
            _ => format!("the record batch after row {}", self.at),
        }
    }

    /// Whether row group `g` of a Parquet file reads on its own.
    fn row_group_reads(&self, g: usize) -> bool {
        let Ok(file) = File::open(&self.path) else { return false };
        let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new(file) else {
            return false;
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match builder.with_row_groups(vec![g]).build() {
                Ok(mut reader) => reader.all(|b| b.is_ok()),
                Err(_) => false,
            }
        }))
        .unwrap_or(false)
    }
}

/// Checks that no compressed buffer of an Arrow IPC file or stream declares an uncompressed size
/// larger than this machine's memory. arrow allocates the declared size before it decompresses
/// a buffer, and an allocation that fails aborts the process: a damaged or hostile length must
/// be an error instead. Anything else wrong with the file is left for the reader to find.
fn declared_sizes_fit(file: &File, format: Format) -> Result<(), String> {
    let limit = memory_bytes();
    let too_large = ipc_batches(file, format, &mut |read, body, batch| {
        if batch.compression().is_none() {
            return ControlFlow::Continue(());
        }
        for buffer in batch.buffers().into_iter().flatten() {
            let Some(start) = u64::try_from(buffer.offset()).ok().and_then(|o| body.checked_add(o)) else {
                continue;
            };
            let Some(declared) = read(start, 8).filter(|_| buffer.length() >= 8) else {
                continue;
            };
            let declared = i64::from_le_bytes(declared[..].try_into().expect("8 bytes"));
            if declared > 0 && declared as u64 > limit {
                return ControlFlow::Break(format!(
                    "a compressed buffer at byte {start} declares {declared} bytes uncompressed, more than this machine's memory ({limit} bytes)"
                ));
            }
        }
        ControlFlow::Continue(())
    })?;
    too_large.map_or(Ok(()), Err)
}

/// Reads `n` bytes at `at` of an IPC file, if it has them.
type ReadAt<'a> = dyn Fn(u64, u64) -> Option<Vec<u8>> + 'a;

/// Calls `f` with every record batch header of an Arrow IPC file or stream (dictionary batches
/// included), the offset its body starts at, and a way to read the file, until `f` breaks off
/// the walk with what it found. A stream's messages are walked by their own lengths, a file's
/// batches found through its footer; only headers are read. Where the file is malformed the
/// walk stops quietly: the reader reports it. An error only where the file's size is unknown.
fn ipc_batches<B>(
    file: &File,
    format: Format,
    f: &mut dyn FnMut(&ReadAt<'_>, u64, arrow::ipc::RecordBatch<'_>) -> ControlFlow<B>,
) -> Result<Option<B>, String> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let read = |at: u64, n: u64| -> Option<Vec<u8>> {
        let end = at.checked_add(n).filter(|&end| end <= size)?;
        let mut buf = vec![0u8; (end - at) as usize];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(buf)
    };
    // The message at `at`: `f` on its batch, if it is one; then the offset after its body, if
    // the walk goes on.
    let mut message = |at: u64| -> ControlFlow<B, Option<u64>> {
        let word = |at: u64| read(at, 4).map(|b| i32::from_le_bytes(b[..].try_into().expect("4 bytes")));
        let Some(mut len) = word(at) else {
            return ControlFlow::Continue(None);
        };
        let mut at = at + 4;
        if len == -1 {
            // The continuation marker, then the length.
            let Some(l) = word(at) else {
                return ControlFlow::Continue(None);
            };
            len = l;
            at += 4;
        }
        let Some(meta) = u64::try_from(len).ok().filter(|&l| l > 0).and_then(|l| read(at, l)) else {
            return ControlFlow::Continue(None);
        };
        let Ok(message) = arrow::ipc::root_as_message(&meta) else {
            return ControlFlow::Continue(None);
        };
        let body = at + meta.len() as u64;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(batch) = batch {
            f(&read, body, batch)?;
        }
        ControlFlow::Continue(
            u64::try_from(message.bodyLength())
                .ok()
                .and_then(|l| body.checked_add(l)),
        )
    };
    match format {
        Format::ArrowFile => {
            // The footer, before its 4-byte length and the closing magic, lists every batch.
            let Some(tail) = size.checked_sub(10).and_then(|at| read(at, 4)) else {
                return Ok(None);
            };
            let footer_len = u64::from(u32::from_le_bytes(tail[..].try_into().expect("4 bytes")));
            let Some(footer) = (size - 10).checked_sub(footer_len).and_then(|at| read(at, footer_len)) else {
                return Ok(None);
            };
            let Ok(footer) = arrow::ipc::root_as_footer(&footer) else {
                return Ok(None);
            };
            let blocks = footer
                .dictionaries()
                .into_iter()
                .chain(footer.recordBatches())
                .flatten();
            for block in blocks {
                if let Ok(at) = u64::try_from(block.offset()) {
                    if let ControlFlow::Break(found) = message(at) {
                        return Ok(Some(found));
                    }
                }
            }
            Ok(None)
        }
        _ => {
            let mut at = 0;
            loop {
                match message(at) {
                    ControlFlow::Break(found) => return Ok(Some(found)),
                    ControlFlow::Continue(Some(next)) => at = next,
                    ControlFlow::Continue(None) => return Ok(None),
                }
            }
        }
    }
}

/// The compression of an Arrow IPC file's first compressed batch (`lz4` or `zstd`), if any.
fn ipc_compression(path: &Path, format: Format) -> Option<String> {
    let file = File::open(path).ok()?;
    let first = ipc_batches(&file, format, &mut |_, _, batch| match batch.compression() {
        Some(c) if c.codec() == arrow::ipc::CompressionType::ZSTD => ControlFlow::Break("zstd"),
        Some(_) => ControlFlow::Break("lz4"),
        None => ControlFlow::Continue(()),
    });
    first.ok().flatten().map(str::to_string)
}

/// This machine's memory in bytes (`MemTotal` of /proc/meminfo), or 2^40 where that cannot be read.
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(1 << 40)
}

/// How checkout writes a table again: for Parquet its pages' compression (`zstd`, `snappy`,
/// `gzip`, `lz4`, `lz4_raw`, `brotli` or `uncompressed`; the codec, not its level, which
/// Parquet does not record) and rows per row group, for Arrow IPC its buffers' compression
/// (`lz4`, `zstd`, or none).
#[derive(Debug, Clone, Default)]
pub struct Style {
    pub compression: Option<String>,
    pub row_group_rows: Option<u64>,
}

impl Style {
    /// zstd, with the writer's row groups: for tables sparse writes itself.
    pub fn zstd() -> Style {
        Style {
            compression: Some("zstd".into()),
            row_group_rows: None,
        }
    }

    /// The style of the table at `path`, read as `format`.
    pub fn of(path: &Path, format: Format) -> Style {
        match format {
            Format::Parquet => Style::of_parquet(path),
            _ => Style {
                compression: ipc_compression(path, format),
                row_group_rows: None,
            },
        }
    }

    /// The compression and row group size of `path`'s first row group and column.
    fn of_parquet(path: &Path) -> Style {
        let Ok(file) = File::open(path) else {
            return Style::default();
        };
        let Ok(builder) = ParquetRecordBatchReaderBuilder::try_new(file) else {
            return Style::default();
        };
        let meta = builder.metadata();
        let Some(g) = meta.row_groups().first() else {
            return Style::default();
        };
        let compression = g.columns().first().map(|c| {
            match c.compression() {
                Compression::UNCOMPRESSED => "uncompressed",
                Compression::SNAPPY => "snappy",
                Compression::GZIP(_) => "gzip",
                Compression::LZ4 => "lz4",
                Compression::LZ4_RAW => "lz4_raw",
                Compression::BROTLI(_) => "brotli",
                // LZO, which arrow-rs cannot write.
                _ => "zstd",
            }
            .to_string()
        });
        Style {
            compression,
            row_group_rows: (g.num_rows() > 0).then_some(g.num_rows() as u64),
        }
    }

    fn ipc_options(&self) -> arrow::ipc::writer::IpcWriteOptions {
        let codec = match self.compression.as_deref() {
            Some("lz4") => Some(arrow::ipc::CompressionType::LZ4_FRAME),
            Some("zstd") => Some(arrow::ipc::CompressionType::ZSTD),
            _ => None,
        };
        arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(codec)
            .expect("the default options take either compression")
    }

    fn properties(&self) -> WriterProperties {
        let compression = match self.compression.as_deref() {
            Some("uncompressed") => Compression::UNCOMPRESSED,
            Some("snappy") => Compression::SNAPPY,
            Some("gzip") => Compression::GZIP(GzipLevel::default()),
            Some("lz4") => Compression::LZ4,
            Some("lz4_raw") => Compression::LZ4_RAW,
            Some("brotli") => Compression::BROTLI(BrotliLevel::default()),
            _ => Compression::ZSTD(ZstdLevel::try_new(3).expect("3 is a zstd level")),
        };
        let mut props = WriterProperties::builder().set_compression(compression);
        if let Some(n) = self.row_group_rows {
            props = props.set_max_row_group_row_count(Some(n as usize));
        }
        props.build()
    }
}

/// A table being written. Batches for an Arrow IPC file are gathered to at least [`BATCH_ROWS`]
/// rows first: a table replayed from pieces comes in runs of a few rows, and each IPC batch
/// carries its own header and compressed buffers (Parquet gathers rows into row groups itself).
pub struct Writer {
    path: PathBuf,
    format: Format,
    inner: Inner,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

enum Inner {
    Parquet(Box<ArrowWriter<File>>),
    ArrowFile(FileWriter<BufWriter<File>>),
    ArrowStream(StreamWriter<BufWriter<File>>),
}

impl Writer {
    /// Starts writing a table of `schema` to `file` (named `path` in errors).
    pub fn new(file: File, path: &Path, format: Format, schema: &SchemaRef, style: &Style) -> Result<Writer, Error> {
        let err = |source| Error::Write {
            path: path.to_owned(),
            format,
            source,
        };
        let inner = match format {
            // arrow-rs's Parquet writer panics on unions (ARROW-8817) instead of refusing them.
            Format::Parquet if schema.fields().iter().any(|f| has_union(f.data_type())) => {
                return Err(err("Parquet cannot hold a union column".into()));
            }
            Format::Parquet => Inner::Parquet(Box::new(
                ArrowWriter::try_new(file, schema.clone(), Some(style.properties())).map_err(|e| err(e.into()))?,
            )),
            Format::ArrowFile => Inner::ArrowFile(
                FileWriter::try_new_with_options(BufWriter::new(file), schema, style.ipc_options())
                    .map_err(|e| err(e.into()))?,
            ),
            Format::ArrowStream => Inner::ArrowStream(
                StreamWriter::try_new_with_options(BufWriter::new(file), schema, style.ipc_options())
                    .map_err(|e| err(e.into()))?,
            ),
        };
        Ok(Writer {
            path: path.to_owned(),
            format,
            inner,
            schema: schema.clone(),
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        if let Inner::Parquet(w) = &mut self.inner {
            return w.write(batch).map_err(|e| self.err(e.into()));
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch.clone());
        if self.pending_rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the gathered batches as one.
    fn flush(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = arrow::compute::concat_batches(&self.schema, &self.pending).map_err(|e| self.err(e.into()))?;
        self.pending.clear();
        self.pending_rows = 0;
        let r: Result<(), arrow::error::ArrowError> = match &mut self.inner {
            Inner::Parquet(w) => w.write(&batch).map_err(Into::into),
            Inner::ArrowFile(w) => w.write(&batch),
            Inner::ArrowStream(w) => w.write(&batch),
        };
        r.map_err(|e| self.err(e.into()))
    }

    fn err(&self, source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::Write {
            path: self.path.clone(),
            format: self.format,
            source,
        }
    }

    /// Writes the footer and flushes.
    pub fn finish(mut self) -> Result<(), Error> {
        self.flush()?;
        let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = match self.inner {
            Inner::Parquet(w) => w.close().map(|_| ()).map_err(Into::into),
            Inner::ArrowFile(mut w) => w.finish().map_err(Into::into).and_then(|_| {
                w.into_inner()
                    .map_err(Into::into)
                    .and_then(|b| b.into_inner().map(|_| ()).map_err(|e| e.into_error().into()))
            }),
            Inner::ArrowStream(mut w) => w.finish().map_err(Into::into).and_then(|_| {
                w.into_inner()
                    .map_err(Into::into)
                    .and_then(|b| b.into_inner().map(|_| ()).map_err(|e| e.into_error().into()))
            }),
        };
        r.map_err(|source| Error::Write {
            path: self.path,
            format: self.format,
            source,
        })
    }
}

/// Whether `t` is or holds a union.
fn has_union(t: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType as T;
    match t {
        T::Union(..) => true,
        T::List(f) | T::LargeList(f) | T::FixedSizeList(f, _) | T::ListView(f) | T::LargeListView(f) | T::Map(f, _) => {
            has_union(f.data_type())
        }
        T::Struct(fields) => fields.iter().any(|f| has_union(f.data_type())),
        T::Dictionary(_, v) => has_union(v),
        T::RunEndEncoded(_, v) => has_union(v.data_type()),
        _ => false,
    }
}

/// Rows of one schema in arrow's row format: what identifies a row and what its hash covers.
pub struct RowHasher {
    converter: RowConverter,
    whole: blake3::Hasher,
    pub rows: u64,
}

impl RowHasher {
    /// None when arrow's row format cannot encode some column of `schema`.
    pub fn new(schema: &SchemaRef) -> Option<RowHasher> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Some(RowHasher {
            converter: RowConverter::new(fields).ok()?,
            whole: blake3::Hasher::new(),
            rows: 0,
        })
    }

    /// The batch's rows in the row format (columns of the converter's schema, in order).
    pub fn rows_of(&self, columns: &[arrow::array::ArrayRef]) -> Result<Rows, arrow::error::ArrowError> {
        self.converter.convert_columns(columns)
    }

    /// Adds `batch`'s rows to the running hash of the table.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
        let rows = self.rows_of(batch.columns())?;
        self.add_rows(&rows);
        Ok(())
    }

    pub fn add_rows(&mut self, rows: &Rows) {
        for row in rows.iter() {
            let bytes = row.as_ref();
            self.whole.update(&(bytes.len() as u32).to_le_bytes());
            self.whole.update(bytes);
        }
        self.rows += rows.num_rows() as u64;
    }

    /// The hash of every row added so far.
    pub fn finish(&self) -> Key {
        Key(*self.whole.finalize().as_bytes())
    }
}

/// A row's identity: the first 64 bits of the blake3 of its row format. Two rows can share
/// one; every use checks what it found (add plays its plan back and compares the table's hash).
pub fn row_id(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(blake3::hash(bytes).as_bytes()[..8].try_into().expect("8 bytes"))
}

/// `batch`'s columns in the order of `projection` (indices into its schema), under `schema`.
pub fn project(
    batch: &RecordBatch,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = projection.iter().map(|&i| batch.column(i).clone()).collect();
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};

    /// The rows' hash that stored table manifests record: it must not change when arrow does
    /// (docs/FORMAT.md, "Tables"). A new arrow whose row format differs fails here first.
    #[test]
    fn the_row_format_hash_of_a_fixed_table_is_pinned() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, -2, 3])),
            Arc::new(StringArray::from(vec![Some("naïve"), None, Some("")])),
            Arc::new(Float64Array::from(vec![Some(-0.0), Some(f64::NAN), None])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("columns fit");
        let mut hasher = RowHasher::new(&schema).expect("encodable");
        hasher.add(&batch).expect("rows");
        assert_eq!(hasher.rows, 3);
        assert_eq!(hasher.finish().to_string(), PINNED);
    }

    /// Computed with arrow 60.1 when tables were first stored.
    const PINNED: &str = "dbe6237759dba3dfa644eede31b3596b3902d64fe826803b3e5a3f1fb7da493e";
}
