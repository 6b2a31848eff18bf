//! JSON-lines files as a source: each file is cut into splits, each split a partition with its
//! own watermark, decoded through the same path as Kafka messages. A split is every `splits`-th
//! stripe of the file, so the splits move through the file, and through the event time of a
//! time-ordered file, side by side: windows close as the file is read, and the job holds the
//! state of one stretch of event time, not of one stretch per split.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader};
use crate::record::{DeadLetter, Record, Schema};

/// The most a split reads at once.
const CHUNK: usize = 1 << 20;
/// The least a split reads at once (past a stripe's end, only to finish its last line).
const MIN_READ: usize = 1 << 16;
/// The length of a stripe: lines starting in it belong to its split.
const STRIPE: u64 = 1 << 20;
const BATCH: usize = 8192;

/// One split of one file, read line by line: the stripes `index`, `index + splits`, … of it.
struct Split {
    path: Arc<str>,
    index: i32,
    file: File,
    /// The file's length.
    len: u64,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    cursor: usize,
    /// Lines starting before this offset belong to the current stripe.
    end: u64,
    /// The length of a stripe ([`STRIPE`] but in tests).
    stripe: u64,
    /// Where the split's next stripe starts.
    next_stripe: u64,
    /// How far apart the split's stripes are.
    stride: u64,
    eof: bool,
    done: bool,
}

impl Split {
    fn open(path: &Path, index: i32, splits: u64, stripe: u64) -> io::Result<Split> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(named)?;
        let len = file.metadata().map_err(named)?.len();
        let mut split = Split {
            path: path.display().to_string().into(),
            index,
            file,
            len,
            buf_offset: 0,
            buf: Vec::with_capacity(CHUNK),
            cursor: 0,
            end: 0,
            stripe,
            next_stripe: index as u64 * stripe,
            stride: splits * stripe,
            eof: false,
            done: false,
        };
        split.done = !split.enter_next_stripe()?;
        Ok(split)
    }

    /// Moves to the first line of the split's next stripe; false if no line starts in one.
    fn enter_next_stripe(&mut self) -> io::Result<bool> {
        let start = self.next_stripe;
        if start >= self.len {
            return Ok(false);
        }
        self.next_stripe += self.stride;
        self.end = (start + self.stripe).min(self.len);
        // A stripe starting mid-file begins after the first newline at or past `start - 1`, so a
        // line that straddles the boundary belongs to the stripe it starts in.
        let seek = start.saturating_sub(1);
        let buffered = self.buf_offset..=self.buf_offset + self.buf.len() as u64;
        if buffered.contains(&seek) {
            self.cursor = (seek - self.buf_offset) as usize;
        } else {
            self.file.seek(SeekFrom::Start(seek))?;
            self.buf.clear();
            (self.buf_offset, self.cursor, self.eof) = (seek, 0, false);
        }
        if start == 0 {
            return Ok(true);
        }
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf[self.cursor..]) {
                self.cursor += nl + 1;
                return Ok(true);
            }
            self.cursor = self.buf.len();
            if !self.fill()? {
                return Ok(false);
            }
        }
    }

    /// Reads more bytes, up to the stripe's end (past it, a little at a time), keeping the
    /// unread tail. Returns false at end of file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.cursor);
        self.buf_offset += self.cursor as u64;
        self.cursor = 0;
        let len = self.buf.len();
        let to_end = self.end.saturating_sub(self.buf_offset + len as u64);
        let want = usize::try_from(to_end).map_or(CHUNK, |n| n.clamp(MIN_READ, CHUNK));
        self.buf.resize(len + want, 0);
        let n = self.file.read(&mut self.buf[len..])?;
        self.buf.truncate(len + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next line and its file offset, without its newline.
    fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            let offset = self.buf_offset + self.cursor as u64;
            if offset >= self.end {
                if !self.enter_next_stripe()? {
                    return Ok(None);
                }
                continue;
            }
            let rest = &self.buf[self.cursor..];
            if let Some(nl) = memchr::memchr(b'\n', rest) {
                let start = self.cursor;
                self.cursor += nl + 1;
                return Ok(Some((offset, &self.buf[start..start + nl])));
            }
            if !self.fill()? {
                // A last line without a newline.
                if self.cursor < self.buf.len() {
                    let start = self.cursor;
                    self.cursor = self.buf.len();
                    return Ok(Some((offset, &self.buf[start..])));
                }
                return Ok(None);
            }
        }
    }
}

/// Reads this worker's splits of a set of JSON-lines files.
pub struct FileReader {
    schema: Arc<Schema>,
    splits: Vec<Split>,
}

impl FileReader {
    /// Opens the splits worker `index` of `peers` owns: every file is cut into `splits` splits
    /// of interleaved stripes, and the splits of all files are dealt round-robin.
    pub fn open(
        paths: &[PathBuf],
        splits: usize,
        schema: Arc<Schema>,
        index: usize,
        peers: usize,
    ) -> io::Result<FileReader> {
        Self::open_striped(paths, splits, STRIPE, schema, index, peers)
    }

    fn open_striped(
        paths: &[PathBuf],
        splits: usize,
        stripe: u64,
        schema: Arc<Schema>,
        index: usize,
        peers: usize,
    ) -> io::Result<FileReader> {
        let all: Vec<_> = paths
            .iter()
            .flat_map(|path| (0..splits as i32).map(move |i| (path, i)))
            .collect();
        let splits = super::owned_partitions(all.len(), index, peers)
            .map(|i| {
                let (path, split) = all[i];
                Split::open(path, split, splits as u64, stripe)
            })
            .collect::<io::Result<_>>()?;
        Ok(FileReader { schema, splits })
    }
}

impl Reader<Record> for FileReader {
    fn partitions(&self) -> usize {
        self.splits.len()
    }

    /// Every split that has not ended reads its share of a batch, so that a worker's splits
    /// advance through their files together: the source's watermark is the least of its
    /// partitions', and a split read to its end before the next would hold it back until then,
    /// with every window of the input open at once.
    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        let share = BATCH.div_ceil(self.splits.iter().filter(|s| !s.done).count().max(1));
        for (partition, split) in self.splits.iter_mut().enumerate() {
            if split.done {
                continue;
            }
            let (path, index) = (Arc::clone(&split.path), split.index);
            let until = batch.events.len() + share;
            while batch.events.len() < until {
                match split.next_line() {
                    Ok(Some((_, line))) if line.iter().all(u8::is_ascii_whitespace) => {}
                    Ok(Some((offset, line))) => {
                        let next = (offset + line.len() as u64 + 1) as i64;
                        match self.schema.decode(line) {
                            Ok(item) => batch.events.push(Positioned {
                                partition,
                                next,
                                item,
                            }),
                            Err(e) => batch.dead.push(Positioned {
                                partition,
                                next,
                                item: DeadLetter {
                                    error: e.0,
                                    topic: path.to_string(),
                                    partition: index,
                                    offset: offset as i64,
                                    payload: line.to_vec(),
                                },
                            }),
                        }
                    }
                    Ok(None) => {
                        split.done = true;
                        batch.finished.push(partition);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(%path, "read failed, split abandoned: {e}");
                        split.done = true;
                        batch.finished.push(partition);
                        break;
                    }
                }
            }
        }
        if self.splits.iter().all(|s| s.done) {
            ReadStatus::Done
        } else {
            ReadStatus::Ready
        }
    }

    /// Files are replayed whole; there is nothing to resume from.
    fn commit(&mut self, _positions: &[i64], _checkpoint: &Checkpoint, _last: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Field, FieldType};
    use std::io::Write;

    /// Records of one required integer field, `ts`, their event time.
    fn ts_schema() -> Arc<Schema> {
        let ts = Field {
            name: "ts".into(),
            ty: FieldType::Int,
            required: true,
        };
        Arc::new(Schema::new(vec![ts], "ts").unwrap())
    }

    #[test]
    fn splits_cover_every_line_once_whatever_the_boundaries() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut expected = Vec::new();
        for i in 0..1000u64 {
            writeln!(
                file,
                "{{\"ts\":{i},\"pad\":\"{}\"}}",
                "x".repeat((i % 37) as usize)
            )
            .unwrap();
            expected.push(i);
        }
        writeln!(file, "not json").unwrap();
        let schema = ts_schema();
        // Stripes shorter than a line, about as long, and longer than the file.
        for (splits, stripe) in [1, 2, 3, 7]
            .into_iter()
            .flat_map(|n| [13, 64, 1_000, STRIPE].map(|stripe| (n, stripe)))
        {
            for peers in [1, 2] {
                let mut times = Vec::new();
                let mut dead = Vec::new();
                for index in 0..peers {
                    let paths = [file.path().to_path_buf()];
                    let mut reader = FileReader::open_striped(
                        &paths,
                        splits,
                        stripe,
                        schema.clone(),
                        index,
                        peers,
                    )
                    .unwrap();
                    let mut batch = ReadBatch::default();
                    while reader.read(&mut batch) != ReadStatus::Done {}
                    times.extend(batch.events.iter().map(|read| read.item.0));
                    dead.append(&mut batch.dead);
                }
                times.sort();
                assert_eq!(
                    times, expected,
                    "splits {splits}, stripe {stripe}, peers {peers}"
                );
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].item.payload, b"not json");
            }
        }
    }

    /// One worker's splits take turns within each read: none runs ahead of the others.
    #[test]
    fn a_read_takes_an_equal_share_from_each_split() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for i in 0..4 * BATCH {
            writeln!(file, "{{\"ts\":{i}}}").unwrap();
        }
        let paths = [file.path().to_path_buf()];
        let mut reader = FileReader::open_striped(&paths, 2, 1_000, ts_schema(), 0, 1).unwrap();
        let mut batch = ReadBatch::default();
        assert_eq!(reader.read(&mut batch), ReadStatus::Ready);
        let of = |p| batch.events.iter().filter(|e| e.partition == p).count();
        assert_eq!((of(0), of(1)), (BATCH / 2, BATCH / 2));
    }

    /// Each split reads the lines that start in its own stripes, in file order, so the splits
    /// of a file advance through it side by side.
    #[test]
    fn a_split_reads_the_lines_starting_in_its_stripes() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut starts = Vec::new();
        let mut at = 0;
        for i in 0..500 {
            let line = format!("{{\"n\":{i}}}{}\n", " ".repeat(i % 50));
            starts.push(at);
            at += line.len() as u64;
            file.write_all(line.as_bytes()).unwrap();
        }
        let (splits, stripe) = (3, 200);
        for index in 0..splits {
            let mut split = Split::open(file.path(), index as i32, splits, stripe).unwrap();
            let mut read = Vec::new();
            while let Some((offset, _)) = split.next_line().unwrap() {
                read.push(offset);
            }
            let expected: Vec<u64> = starts
                .iter()
                .copied()
                .filter(|start| start / stripe % splits == index)
                .collect();
            assert_eq!(read, expected, "split {index}");
        }
    }
}
