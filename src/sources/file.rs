//! JSON-lines files as a source: each file is cut into splits, each split a partition with its
//! own watermark, decoded through the same path as Kafka messages. A split is every `splits`-th
//! stripe of the file, so the splits move through the file, and through the event time of a
//! time-ordered file, side by side: windows close as the file is read, and the job holds the
//! state of one stretch of event time, not of one stretch per split.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader};
use crate::record::{DeadLetter, Payload, PayloadBuilder, Record, Schema};
use crate::state::Position;

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
    /// A longer line is read past, not held.
    max_line: usize,
    eof: bool,
    done: bool,
}

/// A line as a split reads it.
enum Line<'a> {
    /// A line of at most `max_record_bytes`, without its newline.
    Text(&'a [u8]),
    /// A longer line, read past without holding it: its first bytes, length and hash.
    TooLong(Payload),
}

impl Split {
    fn open(
        path: &Path,
        index: i32,
        splits: u64,
        stripe: u64,
        max_line: usize,
    ) -> io::Result<Split> {
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
            max_line,
            eof: false,
            done: false,
        };
        split.done = !split.enter_next_stripe()?;
        Ok(split)
    }

    /// Moves to the line at `next` (a line start this split reached, as [`Positioned::next`]
    /// gave it): the split goes on as if it had read every line before it. False if no line of
    /// the split starts there or after.
    fn resume(&mut self, next: u64) -> io::Result<bool> {
        // The stripe of the split holding the line that ended at `next`: the last one starting
        // before it.
        let first = self.next_stripe - self.stride;
        let last = next.saturating_sub(1);
        let current = if last < first {
            first
        } else {
            first + (last - first) / self.stride * self.stride
        };
        self.next_stripe = current + self.stride;
        self.end = (current + self.stripe).min(self.len);
        self.file.seek(SeekFrom::Start(next))?;
        self.buf.clear();
        (self.buf_offset, self.cursor, self.eof) = (next, 0, false);
        Ok(next < self.end || self.next_stripe < self.len)
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

    /// The next line and its file offset. The buffer never holds more than `max_line` bytes
    /// of a line: past that, the rest of the line is read through and only hashed.
    fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        loop {
            let offset = self.buf_offset + self.cursor as u64;
            if offset >= self.end {
                if !self.enter_next_stripe()? {
                    return Ok(None);
                }
                continue;
            }
            let rest = &self.buf[self.cursor..];
            let head = &rest[..rest.len().min(self.max_line + 1)];
            if let Some(nl) = memchr::memchr(b'\n', head) {
                let start = self.cursor;
                self.cursor += nl + 1;
                return Ok(Some((offset, Line::Text(&self.buf[start..start + nl]))));
            }
            if rest.len() > self.max_line {
                return Ok(Some((offset, Line::TooLong(self.read_past_line()?))));
            }
            if !self.fill()? {
                // A last line without a newline.
                if self.cursor < self.buf.len() {
                    let start = self.cursor;
                    self.cursor = self.buf.len();
                    return Ok(Some((offset, Line::Text(&self.buf[start..]))));
                }
                return Ok(None);
            }
        }
    }

    /// Reads to the end of the line at the cursor (its newline, or the end of the file),
    /// keeping only what a dead letter keeps of it.
    fn read_past_line(&mut self) -> io::Result<Payload> {
        let mut payload = PayloadBuilder::default();
        loop {
            let rest = &self.buf[self.cursor..];
            if let Some(nl) = memchr::memchr(b'\n', rest) {
                payload.push(&rest[..nl]);
                self.cursor += nl + 1;
                return Ok(payload.finish());
            }
            payload.push(rest);
            self.cursor = self.buf.len();
            if !self.fill()? {
                return Ok(payload.finish());
            }
        }
    }
}

/// Reads this worker's splits of a set of JSON-lines files.
pub struct FileReader {
    schema: Arc<Schema>,
    /// The source's `max_record_bytes`.
    max_line: usize,
    splits: Vec<Split>,
    /// Counts the bytes of the lines read (blank, too long and malformed ones too), so that a
    /// bounded job can tell how far through its files it is.
    read_bytes: Counter,
    /// Per split, where it resumed from a checkpoint; and the clocks restored with them.
    resumed: Vec<Option<i64>>,
    restored: Option<Checkpoint>,
}

/// How files are cut into splits, and how long a line may be.
#[derive(Clone, Copy)]
struct Stripes {
    /// Splits per file.
    splits: usize,
    /// The length of a stripe ([`STRIPE`] but in tests).
    stripe: u64,
    /// The source's `max_record_bytes`.
    max_line: usize,
}

impl FileReader {
    /// Opens the splits worker `index` of `peers` owns: every file is cut into `splits` splits
    /// of interleaved stripes, and the splits of all files are dealt round-robin.
    /// A line longer than `max_record_bytes` is dead-lettered, read past without holding it.
    /// The bytes of the lines read are counted in `read_bytes`. With `resume` (a checkpoint's
    /// positions of the source, by [`Reader::partition_name`]), each split named there resumes at
    /// its position and clock.
    pub fn open(
        paths: &[PathBuf],
        splits: usize,
        max_record_bytes: usize,
        schema: Arc<Schema>,
        (index, peers): (usize, usize),
        read_bytes: Counter,
        resume: Option<&BTreeMap<String, Position>>,
    ) -> io::Result<FileReader> {
        let stripes = Stripes {
            splits,
            stripe: STRIPE,
            max_line: max_record_bytes,
        };
        let mut reader = Self::open_striped(paths, stripes, schema, index, peers)?;
        reader.read_bytes = read_bytes;
        if let Some(resume) = resume {
            reader.resume(resume)?;
        }
        Ok(reader)
    }

    /// Moves each split named in `positions` to its position, and restores its clock.
    fn resume(&mut self, positions: &BTreeMap<String, Position>) -> io::Result<()> {
        let mut clocks = vec![0; self.splits.len()];
        let names: Vec<String> = (0..self.splits.len())
            .map(|p| self.partition_name(p))
            .collect();
        for (partition, (split, name)) in self.splits.iter_mut().zip(&names).enumerate() {
            let Some(position) = positions.get(name) else {
                continue;
            };
            if split.done {
                continue;
            }
            let (next, clock) = super::restored_position(position).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} split {}: checkpoint: {e}", split.path, split.index),
                )
            })?;
            split.done = !split.resume(next as u64)?;
            self.resumed[partition] = Some(next);
            clocks[partition] = clock;
        }
        self.restored = Some(Checkpoint {
            clocks,
            emitted_before: 0,
        });
        Ok(())
    }

    fn open_striped(
        paths: &[PathBuf],
        stripes: Stripes,
        schema: Arc<Schema>,
        index: usize,
        peers: usize,
    ) -> io::Result<FileReader> {
        let Stripes {
            splits,
            stripe,
            max_line,
        } = stripes;
        let all: Vec<_> = paths
            .iter()
            .flat_map(|path| (0..splits as i32).map(move |i| (path, i)))
            .collect();
        let splits: Vec<Split> = super::owned_partitions(all.len(), index, peers)
            .map(|i| {
                let (path, split) = all[i];
                Split::open(path, split, splits as u64, stripe, max_line)
            })
            .collect::<io::Result<_>>()?;
        Ok(FileReader {
            schema,
            max_line,
            resumed: vec![None; splits.len()],
            splits,
            read_bytes: Counter::default(),
            restored: None,
        })
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
        let mut bytes = 0u64;
        for (partition, split) in self.splits.iter_mut().enumerate() {
            if split.done {
                continue;
            }
            let (path, index) = (Arc::clone(&split.path), split.index);
            let until = batch.events.len() + share;
            while batch.events.len() < until {
                let dead = |offset: u64, error, payload: Payload| Positioned {
                    partition,
                    next: (offset + payload.len + 1) as i64,
                    item: DeadLetter {
                        error,
                        topic: path.to_string(),
                        partition: index,
                        offset: offset as i64,
                        payload,
                    },
                };
                let line = split.next_line();
                bytes += match &line {
                    Ok(Some((_, Line::Text(line)))) => line.len() as u64 + 1,
                    Ok(Some((_, Line::TooLong(payload)))) => payload.len + 1,
                    _ => 0,
                };
                match line {
                    Ok(Some((_, Line::Text(line)))) if line.iter().all(u8::is_ascii_whitespace) => {
                    }
                    Ok(Some((offset, Line::Text(line)))) => match self.schema.decode(line) {
                        Ok(item) => batch.events.push(Positioned {
                            partition,
                            next: (offset + line.len() as u64 + 1) as i64,
                            item,
                        }),
                        Err(e) => batch.dead.push(dead(offset, e.0, Payload::of(line))),
                    },
                    Ok(Some((offset, Line::TooLong(payload)))) => {
                        let error = super::too_long(payload.len, self.max_line);
                        batch.dead.push(dead(offset, error, payload));
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
        self.read_bytes.inc_by(bytes);
        if self.splits.iter().all(|s| s.done) {
            ReadStatus::Done
        } else {
            ReadStatus::Ready
        }
    }

    /// Files keep no committed position: a job resumes in a file only from a checkpoint.
    fn commit(&mut self, _positions: &[i64], _checkpoint: &Checkpoint, _last: bool) {}

    fn restored(&self) -> Option<&Checkpoint> {
        self.restored.as_ref()
    }

    /// The file's path and the split's number.
    fn partition_name(&self, partition: usize) -> String {
        let split = &self.splits[partition];
        format!("{}#{}", split.path, split.index)
    }

    fn resumed(&self, partition: usize) -> Option<i64> {
        self.resumed[partition]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FieldType;
    use std::io::Write;

    /// Records of one required integer field, `ts`, their event time.
    fn ts_schema() -> Arc<Schema> {
        Arc::new(Schema::of(&[("ts", FieldType::Int, true)], "ts").unwrap())
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
                    let stripes = Stripes {
                        splits,
                        stripe,
                        max_line: 1 << 20,
                    };
                    let mut reader =
                        FileReader::open_striped(&paths, stripes, schema.clone(), index, peers)
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
                assert_eq!(dead[0].item.payload, Payload::of(b"not json"));
            }
        }
    }

    /// The bytes read add up to the file's length, blank, malformed and last lines included,
    /// over all splits.
    #[test]
    fn the_bytes_read_add_up_to_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let lines: String = (0..5_000).map(|t| format!("{{\"ts\":{t}}}\n\n")).collect();
        write!(file, "{lines}not json\n{{\"ts\":1}}").unwrap();
        let read = Counter::default();
        let paths = [file.path().to_path_buf()];
        let mut reader =
            FileReader::open(&paths, 3, 1 << 20, ts_schema(), (0, 1), read.clone(), None).unwrap();
        let mut batch = ReadBatch::default();
        while reader.read(&mut batch) != ReadStatus::Done {}
        let len = file.as_file().metadata().unwrap().len();
        // The last line has no newline; it counts as if it had one.
        assert_eq!(read.get(), len + 1);
    }

    /// A line longer than `max_record_bytes` is dead-lettered with its length, its first bytes
    /// and its hash, read past without being held; the lines around it are read as usual, a line
    /// of exactly `max_record_bytes` included.
    #[test]
    fn a_line_longer_than_max_record_bytes_is_dead_lettered_without_being_held() {
        let max_line = 1_000;
        let long = format!("{{\"ts\":1,\"pad\":\"{}\"}}", "x".repeat(8 << 20));
        let exact = format!("{{\"ts\":3,\"pad\":\"{}\"}}", "y".repeat(max_line - 17));
        assert_eq!(exact.len(), max_line);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{{\"ts\":0}}\n{long}\n{{\"ts\":2}}\n{exact}\n{long}").unwrap();
        let stripes = Stripes {
            splits: 1,
            stripe: STRIPE,
            max_line,
        };
        let paths = [file.path().to_path_buf()];
        let mut reader = FileReader::open_striped(&paths, stripes, ts_schema(), 0, 1).unwrap();
        let mut batch = ReadBatch::default();
        let mut held = 0;
        loop {
            let status = reader.read(&mut batch);
            held = held.max(reader.splits[0].buf.capacity());
            if status == ReadStatus::Done {
                break;
            }
        }
        assert!(held <= max_line + 2 * CHUNK, "held {held} bytes of a line");
        let times: Vec<u64> = batch.events.iter().map(|e| e.item.0).collect();
        assert_eq!(times, [0, 2, 3]);
        let expected = Payload::of(long.as_bytes());
        assert!(expected.sha256.is_some() && expected.kept.len() == Payload::KEPT);
        let offsets = [9, 9 + long.len() as i64 + 1 + 9 + max_line as i64 + 1];
        assert_eq!(batch.dead.len(), 2);
        for (dead, offset) in batch.dead.iter().zip(offsets) {
            assert_eq!(dead.item.payload, expected);
            assert_eq!(dead.item.offset, offset);
            assert_eq!(dead.next, offset + long.len() as i64 + 1);
            assert_eq!(
                dead.item.error,
                format!(
                    "record of {} bytes is longer than max_record_bytes (1000): not decoded",
                    long.len()
                )
            );
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
        let stripes = Stripes {
            splits: 2,
            stripe: 1_000,
            max_line: 1 << 20,
        };
        let mut reader = FileReader::open_striped(&paths, stripes, ts_schema(), 0, 1).unwrap();
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
            let mut split =
                Split::open(file.path(), index as i32, splits, stripe, 1 << 20).unwrap();
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
