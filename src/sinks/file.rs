//! A JSON-lines or CSV file (or standard output) as a sink. Worker 0 writes everything, so a
//! job's output is one file whatever the number of workers. Lines are written as they come and
//! flushed after every activation that wrote some, so a reader tailing the file is at most a
//! batch behind; or, with an order, all at once in that order when the input ends (for bounded
//! jobs), into a temporary file renamed onto the path, so the output appears whole or not at all.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use toml::Spanned;

use super::Encode;
use super::registry::{Rows, Settings, Sink, SinkKind};
use crate::failure::fail;
use crate::operators::aside::Aside;
use crate::operators::prefetch;
use crate::settings::{Check, Text};
use crate::state::SectionCheckpoint;

/// `kind = "file"`: a file sink's settings, as the job file writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// `path`: the file written, relative to the job file.
    pub path: Option<Text>,
    /// `format`: how rows are encoded.
    pub format: Option<Text>,
    /// `columns`: the columns written.
    pub columns: Option<Spanned<Vec<Text>>>,
    /// `order_by`: for bounded jobs, write everything at the end, sorted by these columns.
    #[serde(default)]
    pub order_by: Vec<Text>,
}

impl Settings for FileSettings {
    fn rows(&self) -> Rows<'_> {
        Rows {
            format: self.format.as_ref(),
            key: None,
            columns: self.columns.as_ref(),
            order_by: &self.order_by,
        }
    }

    fn check<C: Check>(&self, check: &mut C, kind: Range<usize>, field: &str) -> Option<SinkKind> {
        match &self.path {
            Some(p) => Some(SinkKind::File(FileTarget::Path(
                check.path(p, format!("{field}.path")),
            ))),
            None => {
                check.error(
                    kind,
                    format!("{field}.path"),
                    "a file sink needs a `path`".into(),
                );
                None
            }
        }
    }
}

/// `kind = "stdout"`: the settings of a file sink writing to standard output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSettings {
    /// `format`: how rows are encoded.
    pub format: Option<Text>,
    /// `columns`: the columns written.
    pub columns: Option<Spanned<Vec<Text>>>,
}

impl Settings for StdoutSettings {
    fn rows(&self) -> Rows<'_> {
        Rows {
            format: self.format.as_ref(),
            columns: self.columns.as_ref(),
            ..Rows::default()
        }
    }

    fn check<C: Check>(&self, _: &mut C, _: Range<usize>, _: &str) -> Option<SinkKind> {
        Some(SinkKind::File(FileTarget::Stdout))
    }
}

/// Where a file sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file: created or truncated when the job starts, or, for sorted output, replaced when
    /// the input ends (see [`WriteFile::write_file`]).
    Path(PathBuf),
}

impl fmt::Display for FileTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileTarget::Stdout => f.write_str("standard output"),
            FileTarget::Stderr => f.write_str("standard error"),
            FileTarget::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Sink for FileTarget {
    /// A file at a path: standard output and standard error cannot be cut back.
    fn checkpointed(&self) -> bool {
        matches!(self, FileTarget::Path(_))
    }

    fn write<'scope, D: ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        encoder: E,
        order: Option<Order<D>>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        Ok(stream.write_file(self.clone(), encoder, order, checkpoint)?)
    }
}

impl FileTarget {
    /// Checks, before a job reads anything, that the file can be written: the path is not a
    /// directory; an existing regular file opens for writing, and a new or regular file's
    /// directory takes new files (sorted output is renamed into it). A device or a pipe is
    /// opened only by the sink.
    pub fn check_writable(&self) -> io::Result<()> {
        let FileTarget::Path(path) = self else {
            return Ok(());
        };
        let context = |e: io::Error, what: &str| {
            io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
        };
        if path.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{}: is a directory, not a file", path.display()),
            ));
        }
        if path.exists() {
            if !is_regular(path) {
                // Opening a pipe would block, or hand its reader an end of file.
                return Ok(());
            }
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| context(e, "cannot be written"))?;
        }
        let dir = directory_of(path);
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                ),
            ));
        }
        let probe = partial_path(path);
        File::create(&probe).map_err(|e| context(e, "its directory takes no new files"))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }
}

/// Whether `path` is a regular file (not a device such as /dev/null, or a pipe), following
/// symbolic links.
fn is_regular(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// The directory a file at `path` is created in.
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Where the whole output for `path` is written before it is renamed onto `path`: a hidden file
/// beside it (so the rename stays within one file system), which the next run overwrites should
/// one be left behind.
fn partial_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    directory_of(path).join(format!(".{name}.partial"))
}

/// An order of items, for sorted output: appends an item's sort key, bytes that compare as the
/// items are to sort, such as [`write_sort_key`]'s for each sort column in turn. No key may be
/// a proper prefix of another. Keys are encoded once per item and compared as bytes, so sorting
/// never follows an item's pointers.
///
/// [`write_sort_key`]: crate::record::Value::write_sort_key
pub type Order<D> = Box<dyn Fn(&D, &mut Vec<u8>)>;

/// Writes a stream to a file.
///
/// # Examples
///
/// Rows written as CSV, sorted by their first column once the input ends:
///
/// ```
/// use eddy::sinks::file::{FileTarget, Order, WriteFile};
/// use eddy::sinks::format::{Format, RowEncoder};
/// use eddy::{Record, Value};
/// use timely::dataflow::operators::ToStream;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("out.csv");
/// let target = FileTarget::Path(path.clone());
/// timely::example(move |scope| {
///     let rows: Vec<Record> = [("b", 2), ("c", 3), ("a", 1)]
///         .map(|(name, n)| vec![Value::Str(name.into()), Value::Int(n)].into())
///         .into();
///     let columns = vec![("name".to_string(), 0), ("n".to_string(), 1)];
///     let by_name: Order<Record> = Box::new(|row: &Record, key: &mut Vec<u8>| row[0].write_sort_key(key));
///     rows.to_stream(scope)
///         .container::<Vec<_>>()
///         .write_file(target, RowEncoder::new(Format::Csv, columns, None), Some(by_name), None)
///         .unwrap();
/// });
/// assert_eq!(std::fs::read_to_string(path).unwrap(), "name,n\na,1\nb,2\nc,3\n");
/// ```
pub trait WriteFile<'scope, D> {
    /// Writes every item as one line, flushing after each activation that wrote lines; the
    /// returned stream's frontier passes a time once its lines are flushed. With an `order`,
    /// each item's line and sort key are kept until the input ends, then the lines are written
    /// sorted into a hidden file beside the target, which then replaces the target:
    /// a job that stops or fails before its input ends leaves the target as it was. An error
    /// writing ends the worker (see [`fail`]).
    ///
    /// With `checkpoint` (for a file at a path), the sink takes part in the job's checkpoints
    /// (see [`crate::state::Checkpointing`]): it keeps what comes at or after a checkpoint's
    /// frontier aside until everything before it is written, then hands off the length written
    /// (or, with an order, the lines kept), and a restored sink truncates its file to that
    /// length and appends (or takes the lines back), so the rows after the checkpoint, which the
    /// restored job computes again, are written once.
    fn write_file<E: Encode<D>>(
        self,
        target: FileTarget,
        encoder: E,
        order: Option<Order<D>>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> io::Result<StreamVec<'scope, u64, ()>>;
}

/// A file sink's state in a checkpoint, under key 0 for the length and under each line's number
/// for the lines of sorted output.
#[derive(Debug, Serialize, Deserialize)]
enum FileSinkState {
    /// The bytes written to the file.
    Written(u64),
    /// A line kept for sorted output, as [`SortedLines::kept`] gives it.
    Line([u64; 2], Vec<u8>),
}

impl<'scope, D: ExchangeData> WriteFile<'scope, D> for StreamVec<'scope, u64, D> {
    fn write_file<E: Encode<D>>(
        self,
        target: FileTarget,
        encoder: E,
        order: Option<Order<D>>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> io::Result<StreamVec<'scope, u64, ()>> {
        let writes = self.scope().index() == 0;
        let mut checkpoint = checkpoint;
        let restored = match checkpoint.as_ref().filter(|_| writes) {
            Some(c) => c
                .restore::<u64, FileSinkState>(self.scope().peers())
                .map_err(io::Error::other)?,
            None => Vec::new(),
        };
        let preamble = encoder.preamble();
        let encode = move |item: &D, into: &mut Vec<u8>| {
            encoder.value(item, into);
            into.push(b'\n');
        };
        let mut output = Output::new(writes, target, order, encode, preamble, restored)?;
        let sink = self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &D| 0),
            "FileSink",
            move |_cap, _info| {
                // The items at or past a pending checkpoint's frontier, until the handoff.
                let mut aside = Aside::<D, 1>::default();
                move |(input, input_frontier), _output| {
                    let passed =
                        |frontier: u64| input_frontier.frontier().iter().all(|t| *t >= frontier);
                    if !writes {
                        // Hands off an empty share of the section: the worker that writes holds
                        // all of it.
                        input.for_each(|_, data| data.clear());
                        if let Some(c) = checkpoint.as_mut()
                            && c.pending().is_some_and(passed)
                        {
                            c.hand_off(Vec::<(u64, u64, FileSinkState)>::new());
                        }
                        return;
                    }
                    let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                    input.for_each(|cap, data| {
                        if let Some(&time) = cap.least()
                            && checkpoint.as_mut().is_some_and(|c| c.keeps_aside(time))
                        {
                            aside.keep(&cap, time, data);
                            return;
                        }
                        data.drain(..).for_each(|item| output.write(&item));
                    });
                    if plan.is_some_and(passed)
                        && let Some(c) = checkpoint.as_mut()
                    {
                        output.flush();
                        c.hand_off(output.state());
                        for (_, data) in aside.take_before(None) {
                            data.iter().for_each(|item| output.write(item));
                        }
                    }
                    output.flush();
                    if input_frontier.is_empty() {
                        output.finish();
                    }
                }
            },
        );
        Ok(sink)
    }
}

/// Where a file sink's lines go: its file as they come, or, with an order, the lines kept for
/// the end; and how many bytes the file has.
struct Output<D, F> {
    target: FileTarget,
    order: Option<Order<D>>,
    preamble: Option<String>,
    /// The file, for output without an order (on the worker that writes).
    out: Option<BufWriter<Box<dyn Write>>>,
    /// The lines so far, with their sort keys, for output with an order: items are encoded as
    /// they come, which keeps far less than the items would.
    sorted: Option<SortedLines>,
    encode: F,
    line: Vec<u8>,
    /// The bytes written to the file.
    written: u64,
    /// Whether anything was written since the last flush.
    wrote: bool,
}

impl<D, F: Fn(&D, &mut Vec<u8>)> Output<D, F> {
    /// The output of the worker that `writes` (the others write nothing), resuming from a
    /// checkpoint's `restored` state if there is one.
    fn new(
        writes: bool,
        target: FileTarget,
        order: Option<Order<D>>,
        encode: F,
        preamble: Option<String>,
        restored: Vec<(u64, u64, FileSinkState)>,
    ) -> io::Result<Self> {
        let mut sorted = SortedLines::default();
        let mut length = None;
        let mut lines = Vec::new();
        for (_, n, state) in restored {
            match state {
                FileSinkState::Written(written) => length = Some(written),
                FileSinkState::Line(prefix, bytes) => lines.push((n, prefix, bytes)),
            }
        }
        lines.sort_unstable_by_key(|line| line.0);
        for (_, prefix, bytes) in lines {
            sorted.push_kept(prefix, &bytes);
        }
        let (out, written) = match (writes, &order, length) {
            (true, None, Some(length)) => (Some(reopen(&target, length)?), length),
            (true, None, None) => (
                Some(open(&target, preamble.as_deref())?),
                preamble.as_ref().map_or(0, |p| p.len() as u64 + 1),
            ),
            _ => (None, 0),
        };
        Ok(Output {
            target,
            order,
            preamble,
            out,
            sorted: Some(sorted),
            encode,
            line: Vec::new(),
            written,
            wrote: false,
        })
    }

    fn write(&mut self, item: &D) {
        match (&self.order, &mut self.out, &mut self.sorted) {
            (Some(order), _, Some(sorted)) => {
                sorted.push(|key| order(item, key), |into| (self.encode)(item, into))
            }
            (None, Some(w), _) => {
                self.line.clear();
                (self.encode)(item, &mut self.line);
                if let Err(e) = w.write_all(&self.line) {
                    fail(format!("writing {}: {e}", self.target));
                }
                self.written += self.line.len() as u64;
                self.wrote = true;
            }
            _ => unreachable!("a sorted sink gets no items after its end"),
        }
    }

    /// Flushes what was written since the last flush.
    fn flush(&mut self) {
        if let Some(w) = &mut self.out
            && std::mem::take(&mut self.wrote)
            && let Err(e) = w.flush()
        {
            fail(format!("writing {}: {e}", self.target));
        }
    }

    /// For a checkpoint: the lines kept, with an order; the length written, without.
    fn state(&self) -> Vec<(u64, u64, FileSinkState)> {
        match (&self.order, &self.sorted) {
            (Some(_), Some(sorted)) => sorted
                .kept()
                .enumerate()
                .map(|(n, (prefix, bytes))| {
                    (0, n as u64, FileSinkState::Line(prefix, bytes.to_vec()))
                })
                .collect(),
            _ => vec![(0, 0, FileSinkState::Written(self.written))],
        }
    }

    /// At the end of the input: writes sorted output, once.
    fn finish(&mut self) {
        if self.order.is_some()
            && let Some(lines) = self.sorted.take()
            && let Err(e) = replace(&self.target, self.preamble.as_deref(), lines)
        {
            fail(format!("writing {}: {e}", self.target));
        }
    }
}

/// A buffered writer appending to the file at `target` once it is cut to `length`: the length a
/// checkpoint recorded. A file shorter than that is an error: it is not the file the checkpoint
/// wrote.
fn reopen(target: &FileTarget, length: u64) -> io::Result<BufWriter<Box<dyn Write>>> {
    let FileTarget::Path(path) = target else {
        return Err(io::Error::other(format!(
            "{target}: a checkpoint records a length written, but this sink writes no file"
        )));
    };
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(context)?;
    let found = file.metadata().map_err(context)?.len();
    if found < length {
        return Err(io::Error::other(format!(
            "{}: the checkpoint restored had written {length} bytes, but the file holds only \
             {found}: it was changed since; remove the checkpoints (or restore the file) to \
             start again",
            path.display()
        )));
    }
    file.set_len(length).map_err(context)?;
    file.seek(SeekFrom::End(0)).map_err(context)?;
    buffered(Box::new(file) as Box<dyn Write>, None)
}

/// A buffered writer at `target`, with the preamble written.
fn open(target: &FileTarget, preamble: Option<&str>) -> io::Result<BufWriter<Box<dyn Write>>> {
    let w: Box<dyn Write> = match target {
        FileTarget::Stdout => Box::new(io::stdout()),
        FileTarget::Stderr => Box::new(io::stderr()),
        FileTarget::Path(path) => Box::new(
            File::create(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        ),
    };
    buffered(w, preamble)
}

/// `w`, buffered, with the preamble written.
fn buffered<W: Write>(w: W, preamble: Option<&str>) -> io::Result<BufWriter<W>> {
    let mut w = BufWriter::with_capacity(1 << 20, w);
    if let Some(line) = preamble {
        writeln!(w, "{line}")?;
    }
    Ok(w)
}

/// Writes the preamble and `lines` in order to `target`: a new or regular file through its
/// [`partial_path`], renamed onto it once complete and synced; anything else (standard output,
/// a device, a pipe) directly.
fn replace(target: &FileTarget, preamble: Option<&str>, lines: SortedLines) -> io::Result<()> {
    let path = match target {
        FileTarget::Path(path) if !path.exists() || is_regular(path) => path,
        _ => {
            let mut w = open(target, preamble)?;
            lines.write_to(&mut w)?;
            return w.flush();
        }
    };
    let partial = partial_path(path);
    let mut w = buffered(File::create(&partial)?, preamble)?;
    lines.write_to(&mut w)?;
    w.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    std::fs::rename(partial, path)
}

/// How many lines a run of [`SortedLines`] holds before it is sorted and a new one begins.
const RUN_LINES: usize = 1 << 16;
/// The most bytes of lines a run holds (its byte ranges are `u32`).
const MAX_RUN_BYTES: usize = u32::MAX as usize / 2;

/// Lines kept to be written in the order of their keys, equal keys in the order they came. They
/// are kept in runs of [`RUN_LINES`], each with its own bytes and sorted once full, and the runs
/// are merged as they are written: the store grows by runs, never copying what it holds (one
/// vector doubling up to the whole output would copy it and have the kernel zero twice its size),
/// and each sort works on a run that fits in cache.
#[derive(Default)]
pub struct SortedLines {
    full: Vec<Run>,
    current: Run,
    /// The key being pushed.
    key: Vec<u8>,
}

/// Lines and, per line, its [`Entry`]. Each line lies in `bytes` after the rest of its key (past
/// the entry's prefix), which comes after its length: for a key of two ints, 24 bytes of entry
/// and 3 in `bytes` besides the line.
#[derive(Default)]
struct Run {
    bytes: Vec<u8>,
    lines: Vec<Entry>,
}

/// How many bytes of a key an [`Entry`] holds.
const PREFIX_BYTES: usize = 16;

/// A kept line, in 24 bytes: the first bytes of its key, which order most lines without looking
/// further (two ints' keys all but in full), and where the rest of its key and the line lie in
/// its run's bytes. Sorting and merging then rarely read a line before writing it.
#[derive(Clone, Copy)]
struct Entry {
    /// The key's first [`PREFIX_BYTES`] as big-endian words, zero-padded (which cannot order
    /// keys wrongly, as no key is a proper prefix of another).
    prefix: [u64; 2],
    /// Where the line's bytes begin: the length of the rest of its key, that rest, then the line.
    at: u32,
    /// Where the line ends.
    end: u32,
}

impl Entry {
    /// The rest of the key and the line, in their run's `bytes`.
    fn split(self, bytes: &[u8]) -> (&[u8], &[u8]) {
        let kept = &bytes[self.at as usize..self.end as usize];
        let (len, rest) = read_len(kept);
        rest.split_at(len)
    }

    /// Orders by key: by prefix, then, when the prefixes are equal, by the rest of the keys.
    fn cmp_key(self, bytes: &[u8], other: Entry, other_bytes: &[u8]) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.split(bytes).0.cmp(other.split(other_bytes).0))
    }
}

/// Appends `len` as LEB128: seven bits a byte, low bits first, the high bit set on all bytes but
/// the last (one byte for the rest of any key under 128 bytes).
fn push_len(bytes: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        bytes.push(len as u8 | 0x80);
        len >>= 7;
    }
    bytes.push(len as u8);
}

/// Reads what [`push_len`] appended at the start of `bytes`: the length, and the bytes after it.
fn read_len(bytes: &[u8]) -> (usize, &[u8]) {
    let mut len = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            return (len, &bytes[i + 1..]);
        }
    }
    unreachable!("a length ends with a byte under 0x80")
}

impl Run {
    /// Sorts the lines by key, then by position: equal keys keep their arrival order.
    fn sort(&mut self) {
        let bytes = &self.bytes;
        self.lines
            .sort_unstable_by(|&a, &b| a.cmp_key(bytes, b, bytes).then(a.at.cmp(&b.at)));
    }
}

/// A run's next line in the merge: ordered by key, then by run (earlier runs' lines came first).
struct Head<'a> {
    entry: Entry,
    run: usize,
    bytes: &'a [u8],
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.entry
            .cmp_key(self.bytes, other.entry, other.bytes)
            .then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head<'_> {}

impl SortedLines {
    /// Keeps the line that `line` appends to a buffer, under the key that `key` appends to one.
    pub fn push(&mut self, key: impl FnOnce(&mut Vec<u8>), line: impl FnOnce(&mut Vec<u8>)) {
        self.key.clear();
        key(&mut self.key);
        let (first, rest) = self.key.split_at(self.key.len().min(PREFIX_BYTES));
        let mut prefix = [0; PREFIX_BYTES];
        prefix[..first.len()].copy_from_slice(first);
        let run = &mut self.current;
        let start = run.bytes.len();
        push_len(&mut run.bytes, rest.len());
        run.bytes.extend_from_slice(rest);
        line(&mut run.bytes);
        let prefix =
            [0, 8].map(|at| u64::from_be_bytes(prefix[at..at + 8].try_into().expect("8 bytes")));
        self.added(prefix, start);
    }

    /// Every kept line as (its key's prefix, the rest of its key and the line), runs in the
    /// order they were filled: what [`SortedLines::push_kept`] takes back, for a checkpoint.
    pub fn kept(&self) -> impl Iterator<Item = ([u64; 2], &[u8])> + '_ {
        self.full
            .iter()
            .chain(std::iter::once(&self.current))
            .flat_map(|run| {
                run.lines
                    .iter()
                    .map(|e| (e.prefix, &run.bytes[e.at as usize..e.end as usize]))
            })
    }

    /// Keeps a line as [`SortedLines::kept`] gave it. Lines taken back in the order `kept` gave
    /// them keep their order among equal keys.
    pub fn push_kept(&mut self, prefix: [u64; 2], bytes: &[u8]) {
        let start = self.current.bytes.len();
        self.current.bytes.extend_from_slice(bytes);
        self.added(prefix, start);
    }

    /// Indexes the line that ends the current run's bytes, from `start` on, under `prefix`; a
    /// full run is sorted and a new one begun.
    fn added(&mut self, prefix: [u64; 2], start: usize) {
        let run = &mut self.current;
        let offset = |at: usize| u32::try_from(at).expect("a run of lines under 4 GiB");
        run.lines.push(Entry {
            prefix,
            at: offset(start),
            end: offset(run.bytes.len()),
        });
        if run.lines.len() == RUN_LINES || run.bytes.len() > MAX_RUN_BYTES {
            // The next run gets the room this one ended with, so it does not grow by doubling.
            let next = Run {
                bytes: Vec::with_capacity((run.bytes.len() / 8 * 9).min(MAX_RUN_BYTES)),
                lines: Vec::with_capacity(RUN_LINES),
            };
            let mut full = std::mem::replace(run, next);
            full.sort();
            self.full.push(full);
        }
    }

    /// Writes every line, in order.
    pub fn write_to(mut self, w: &mut impl Write) -> io::Result<()> {
        self.current.sort();
        let mut runs = self.full;
        runs.push(self.current);
        let (bytes, mut lines): (Vec<_>, Vec<_>) = runs
            .into_iter()
            .map(|run| (run.bytes, run.lines.into_iter()))
            .unzip();
        // The next line of each run, least first.
        let mut next = BinaryHeap::new();
        for (run, (lines, bytes)) in lines.iter_mut().zip(&bytes).enumerate() {
            if let Some(entry) = lines.next() {
                next.push(Reverse(Head { entry, run, bytes }));
            }
        }
        while let Some(Reverse(Head { entry, run, bytes })) = next.pop() {
            w.write_all(entry.split(bytes).1)?;
            if let Some(entry) = lines[run].next() {
                // A run's lines lie in the order they came, not in key order: have the CPU fetch
                // this one (after the rest of its key) while the lines of the other runs ahead of
                // it are written.
                prefetch(&bytes[entry.at as usize..entry.end as usize]);
                next.push(Reverse(Head { entry, run, bytes }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;

    /// Across several runs, with many equal keys of two int columns: lines come out by key, and
    /// equal keys in the order they were pushed.
    #[test]
    fn sorted_lines_merge_runs_by_key_then_arrival() {
        let count = RUN_LINES * 2 + 1_234;
        let mut sorted = SortedLines::default();
        let mut expected = Vec::new();
        for i in 0..count {
            let key = (i * 7_919 % 1_000) as i64;
            let line = format!("{key},{i}\n");
            let columns = [Value::Int(key / 100), Value::Int(key % 100)];
            sorted.push(
                |into| columns.iter().for_each(|c| c.write_sort_key(into)),
                |into| into.extend_from_slice(line.as_bytes()),
            );
            expected.push((key, i, line));
        }
        assert!(sorted.full.len() >= 2, "the test spans several runs");
        expected.sort_by_key(|(key, i, _)| (*key, *i));
        let mut out = Vec::new();
        sorted.write_to(&mut out).unwrap();
        let expected: String = expected.into_iter().map(|(_, _, line)| line).collect();
        assert!(String::from_utf8(out).unwrap() == expected);
    }

    /// Keys of a string column then an int column, some longer than a prefix: lines come out by
    /// the string, then by the int.
    #[test]
    fn sorted_lines_order_columns_one_after_another() {
        let rows = [
            ("ab", 1),
            ("a", 2),
            ("a long string past the prefix", 7),
            ("", 3),
            ("a long string past the prefix", -7),
            ("a", -2),
            ("a\0", 0),
        ];
        let mut sorted = SortedLines::default();
        for (text, int) in rows {
            let columns = [Value::Str(text.into()), Value::Int(int)];
            sorted.push(
                |into| columns.iter().for_each(|c| c.write_sort_key(into)),
                |into| into.extend_from_slice(format!("{text:?},{int}\n").as_bytes()),
            );
        }
        let mut out = Vec::new();
        sorted.write_to(&mut out).unwrap();
        let expected = [
            "\"\",3",
            "\"a\",-2",
            "\"a\",2",
            "\"a\\0\",0",
            "\"a long string past the prefix\",-7",
            "\"a long string past the prefix\",7",
            "\"ab\",1",
        ];
        assert_eq!(
            String::from_utf8(out).unwrap().lines().collect::<Vec<_>>(),
            expected
        );
    }
}
