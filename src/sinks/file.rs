//! A JSON-lines or CSV file (or standard output) as a sink. Worker 0 writes everything, so a
//! job's output is one file whatever the number of workers. Lines are written as they come, or,
//! with an order, all at once in that order when the input ends (for bounded jobs).

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::PathBuf;

use smallvec::SmallVec;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::Encode;
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
                // With an order: the lines so far, and each one's sort key and place among them.
                // Items are encoded as they come, which keeps far less than the items would.
                let mut lines = Vec::new();
                let mut kept: Vec<(SortKey, Range<usize>)> = Vec::new();
                move |(input, input_frontier), _output| {
                    let Some(w) = out.as_mut() else {
                        input.for_each(|_, data| data.clear());
                        return;
                    };
                    input.for_each(|_, data| {
                        for item in data.drain(..) {
                            match &order {
                                Some(order) => {
                                    let start = lines.len();
                                    encode(&item, &mut lines);
                                    kept.push((order(&item), start..lines.len()));
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
                        // Equal keys keep their arrival order.
                        kept.sort_unstable_by(|(a, at), (b, bt)| {
                            a.cmp(b).then(at.start.cmp(&bt.start))
                        });
                        for (_, at) in kept.drain(..) {
                            w.write_all(&lines[at]).expect("writing the file sink");
                        }
                        lines = Vec::new();
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
