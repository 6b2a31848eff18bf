//! JSON-lines files as a source: each file is cut into byte-range splits, each split a partition
//! with its own watermark, decoded through the same path as Kafka messages.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader};
use crate::record::{DeadLetter, Record, Schema};

const CHUNK: usize = 1 << 20;
const BATCH: usize = 8192;

/// One byte range of one file, read line by line.
struct Split {
    path: Arc<str>,
    index: i32,
    file: File,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    cursor: usize,
    /// Lines starting before this offset belong to the split.
    end: u64,
    eof: bool,
    done: bool,
}

impl Split {
    fn open(path: &Path, index: i32, start: u64, end: u64) -> io::Result<Split> {
        let mut file = File::open(path)?;
        // A split starting mid-file begins after the first newline at or past `start - 1`, so a
        // line that straddles the boundary belongs to the split it starts in.
        let seek = start.saturating_sub(1);
        file.seek(SeekFrom::Start(seek))?;
        let mut split = Split {
            path: path.display().to_string().into(),
            index,
            file,
            buf_offset: seek,
            buf: Vec::with_capacity(CHUNK),
            cursor: 0,
            end,
            eof: false,
            done: start >= end,
        };
        if start > 0 {
            loop {
                if let Some(nl) = memchr::memchr(b'\n', &split.buf[split.cursor..]) {
                    split.cursor += nl + 1;
                    break;
                }
                split.cursor = split.buf.len();
                if !split.fill()? {
                    split.done = true;
                    break;
                }
            }
        }
        Ok(split)
    }

    /// Reads more bytes, keeping the unread tail. Returns false at end of file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.cursor);
        self.buf_offset += self.cursor as u64;
        self.cursor = 0;
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
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
                return Ok(None);
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
    /// Opens the splits worker `index` of `peers` owns: every file is cut into `splits` byte
    /// ranges, and the ranges of all files are dealt round-robin.
    pub fn open(
        paths: &[PathBuf],
        splits: usize,
        schema: Arc<Schema>,
        index: usize,
        peers: usize,
    ) -> io::Result<FileReader> {
        let mut ranges = Vec::new();
        for path in paths {
            let len = std::fs::metadata(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
                .len();
            for i in 0..splits as u64 {
                let at = |i: u64| len * i / splits as u64;
                ranges.push((path, i as i32, at(i), at(i + 1)));
            }
        }
        let splits = super::owned_partitions(ranges.len(), index, peers)
            .map(|i| {
                let (path, split, start, end) = ranges[i];
                Split::open(path, split, start, end)
            })
            .collect::<io::Result<_>>()?;
        Ok(FileReader { schema, splits })
    }
}

impl Reader<Record> for FileReader {
    fn partitions(&self) -> usize {
        self.splits.len()
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        for (partition, split) in self.splits.iter_mut().enumerate() {
            if split.done {
                continue;
            }
            let (path, index) = (Arc::clone(&split.path), split.index);
            while batch.events.len() < BATCH {
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
        let schema = Arc::new(
            Schema::new(
                vec![Field {
                    name: "ts".into(),
                    ty: FieldType::Int,
                    required: true,
                }],
                "ts",
            )
            .unwrap(),
        );
        for splits in [1, 2, 3, 7] {
            for peers in [1, 2] {
                let mut times = Vec::new();
                let mut dead = Vec::new();
                for index in 0..peers {
                    let paths = [file.path().to_path_buf()];
                    let mut reader =
                        FileReader::open(&paths, splits, schema.clone(), index, peers).unwrap();
                    let mut batch = ReadBatch::default();
                    while reader.read(&mut batch) != ReadStatus::Done {}
                    times.extend(batch.events.iter().map(|read| read.item.0));
                    dead.append(&mut batch.dead);
                }
                times.sort();
                assert_eq!(times, expected, "splits {splits}, peers {peers}");
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].item.payload, b"not json");
            }
        }
    }
}
