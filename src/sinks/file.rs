//! A JSON-lines or CSV file (or standard output) as a sink. Worker 0 writes everything, so a
//! job's output is one file whatever the number of workers. Lines are written as they come, or,
//! with an order, all at once in that order when the input ends (for bounded jobs).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use smallvec::SmallVec;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::Encode;
use crate::operators::prefetch;
use crate::record::Value;

/// Where a file sink writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, created or truncated when the job starts.
    Path(PathBuf),
}

/// An order of items, for sorted output: the key each item sorts by. Keys are taken once per
/// item and compared in place, so sorting never follows an item's pointers.
pub type Order<D> = Box<dyn Fn(&D) -> SortKey>;

/// The values an item sorts by, compared one after the other; values that do not compare (NaN,
/// or of different types) count as equal.
#[derive(Clone, Debug)]
pub struct SortKey(pub SmallVec<[Value; 2]>);

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.partial_cmp(b).unwrap_or(Ordering::Equal))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for SortKey {}

/// Writes a stream to a file.
pub trait WriteFile<'scope, D> {
    /// Writes every item as one line, flushing whenever the input frontier advances; the returned
    /// stream's frontier passes a time once its lines are flushed. With an `order`, each item's
    /// line and sort key are kept until the input ends, then the lines are written sorted.
    fn write_file<E: Encode<D>>(
        self,
        target: FileTarget,
        encoder: E,
        order: Option<Order<D>>,
    ) -> io::Result<StreamVec<'scope, u64, ()>>;
}

impl<'scope, D: ExchangeData> WriteFile<'scope, D> for StreamVec<'scope, u64, D> {
    fn write_file<E: Encode<D>>(
        self,
        target: FileTarget,
        encoder: E,
        order: Option<Order<D>>,
    ) -> io::Result<StreamVec<'scope, u64, ()>> {
        let writes = self.scope().index() == 0;
        let mut out: Option<BufWriter<Box<dyn Write>>> = if writes {
            let w: Box<dyn Write> =
                match &target {
                    FileTarget::Stdout => Box::new(io::stdout()),
                    FileTarget::Stderr => Box::new(io::stderr()),
                    FileTarget::Path(path) => Box::new(File::create(path).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?),
                };
            let mut w = BufWriter::with_capacity(1 << 20, w);
            if let Some(line) = encoder.preamble() {
                writeln!(w, "{line}")?;
            }
            Some(w)
        } else {
            None
        };
        let encode = move |item: &D, into: &mut Vec<u8>| {
            encoder.value(item, into);
            into.push(b'\n');
        };
        let sink = self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &D| 0),
            "FileSink",
            move |_cap, _info| {
                let mut frontier = Vec::new();
                let mut line = Vec::new();
                // With an order: the lines so far, with their sort keys. Items are encoded as
                // they come, which keeps far less than the items would.
                let mut sorted = SortedLines::default();
                move |(input, input_frontier), _output| {
                    let Some(w) = out.as_mut() else {
                        input.for_each(|_, data| data.clear());
                        return;
                    };
                    input.for_each(|_, data| {
                        for item in data.drain(..) {
                            match &order {
                                Some(order) => {
                                    sorted.push(order(&item), |into| encode(&item, into))
                                }
                                None => {
                                    line.clear();
                                    encode(&item, &mut line);
                                    w.write_all(&line).expect("writing the file sink");
                                }
                            }
                        }
                    });
                    if order.is_some() && input_frontier.is_empty() {
                        std::mem::take(&mut sorted)
                            .write_to(w)
                            .expect("writing the file sink");
                    }
                    if *input_frontier.frontier() != frontier[..] {
                        frontier = input_frontier.frontier().to_vec();
                        w.flush().expect("flushing the file sink");
                    }
                }
            },
        );
        Ok(sink)
    }
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
}

/// Lines and, per line, its key and its byte range among them.
#[derive(Default)]
struct Run {
    bytes: Vec<u8>,
    lines: Vec<(SortKey, (u32, u32))>,
}

impl Run {
    /// Sorts the lines by key, then by position: equal keys keep their arrival order.
    fn sort(&mut self) {
        self.lines
            .sort_unstable_by(|(a, at), (b, bt)| a.cmp(b).then(at.0.cmp(&bt.0)));
    }
}

impl SortedLines {
    /// Keeps the line that `encode` appends to a buffer, under `key`.
    pub fn push(&mut self, key: SortKey, encode: impl FnOnce(&mut Vec<u8>)) {
        let run = &mut self.current;
        let start = run.bytes.len();
        encode(&mut run.bytes);
        let offset = |at: usize| u32::try_from(at).expect("a run of lines under 4 GiB");
        run.lines
            .push((key, (offset(start), offset(run.bytes.len()))));
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
        let mut heads: Vec<_> = runs
            .iter_mut()
            .map(|run| std::mem::take(&mut run.lines).into_iter())
            .collect();
        // The next line of each run, least key (then earliest run) first.
        let mut next = BinaryHeap::new();
        for (i, head) in heads.iter_mut().enumerate() {
            if let Some((key, at)) = head.next() {
                next.push(Reverse((key, i, at)));
            }
        }
        while let Some(Reverse((_, i, (start, end)))) = next.pop() {
            w.write_all(&runs[i].bytes[start as usize..end as usize])?;
            if let Some((key, at)) = heads[i].next() {
                // A run's lines lie in the order they came, not in key order: have the CPU fetch
                // this one while the lines of the other runs ahead of it are written.
                let line = &runs[i].bytes[at.0 as usize..at.1 as usize];
                if let (Some(first), Some(last)) = (line.first(), line.last()) {
                    prefetch(first);
                    prefetch(last);
                }
                next.push(Reverse((key, i, at)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Across several runs, with many equal keys: lines come out by key, and equal keys in the
    /// order they were pushed.
    #[test]
    fn sorted_lines_merge_runs_by_key_then_arrival() {
        let count = RUN_LINES * 2 + 1_234;
        let mut sorted = SortedLines::default();
        let mut expected = Vec::new();
        for i in 0..count {
            let key = (i * 7_919 % 1_000) as i64;
            let line = format!("{key},{i}\n");
            sorted.push(SortKey([Value::Int(key)].into_iter().collect()), |into| {
                into.extend_from_slice(line.as_bytes())
            });
            expected.push((key, i, line));
        }
        assert!(sorted.full.len() >= 2, "the test spans several runs");
        expected.sort_by_key(|(key, i, _)| (*key, *i));
        let mut out = Vec::new();
        sorted.write_to(&mut out).unwrap();
        let expected: String = expected.into_iter().map(|(_, _, line)| line).collect();
        assert!(String::from_utf8(out).unwrap() == expected);
    }
}
