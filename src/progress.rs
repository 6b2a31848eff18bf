//! How far a bounded job has got: its position against the end of its input, the events per
//! second and the time left. On a terminal, a progress bar redrawn in place; anywhere else, a
//! plain line now and then.
//!
//! The input is measured in what each source can count: bytes for files (the lines read against
//! the files' sizes), events for generators with a `count`, and messages for Kafka sources read
//! `--until-end` (those read against those read plus the lag behind the end). A job with one
//! bounded source, the usual case, is measured exactly; with several, their units add up.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::job::{Job, SourceKind};
use crate::stats::{Counter, Stats};

/// What a bounded job's input amounts to, as far as it is known before it runs.
#[derive(Clone, Debug)]
pub struct Extent {
    /// Bytes of the file sources' files.
    file_bytes: u64,
    /// Events of the generator sources.
    generated: Vec<(String, u64)>,
    /// Sources read from Kafka up to the end offsets seen at start-up.
    kafka: Vec<String>,
}

/// A position against an end, in the input's units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// How much has been read.
    pub done: u64,
    /// How much there is (0 while not known yet).
    pub end: u64,
    /// What they count (see [`Extent::unit`]).
    pub unit: &'static str,
}

impl Extent {
    /// The extent of `job`'s input, or `None` when a source has no end (a Kafka source not read
    /// `until_end`, a generator without a `count`). A file that cannot be read counts as empty
    /// here: the job's own checks report it.
    pub fn of(job: &Job, until_end: bool) -> Option<Extent> {
        let mut extent = Extent {
            file_bytes: 0,
            generated: Vec::new(),
            kafka: Vec::new(),
        };
        for source in &job.sources {
            match &source.kind {
                SourceKind::File { paths, .. } => {
                    extent.file_bytes += paths
                        .iter()
                        .filter_map(|p| std::fs::metadata(p).ok())
                        .map(|m| m.len())
                        .sum::<u64>();
                }
                SourceKind::Generator { config, .. } => {
                    extent.generated.push((source.name.clone(), config.count?));
                }
                SourceKind::Kafka { .. } if until_end => extent.kafka.push(source.name.clone()),
                SourceKind::Kafka { .. } => return None,
            }
        }
        Some(extent)
    }

    /// What the position counts: bytes, events, messages, or units of several of these.
    pub fn unit(&self) -> &'static str {
        match (
            self.file_bytes > 0,
            !self.generated.is_empty(),
            !self.kafka.is_empty(),
        ) {
            (true, false, false) => "bytes",
            (false, true, false) => "events",
            (false, false, true) => "messages",
            _ => "units",
        }
    }

    /// Where the job stands, from its counters.
    pub fn position(&self, stats: &Stats) -> Position {
        let files = stats.file_bytes.get().min(self.file_bytes);
        let (mut done, mut end) = (files, self.file_bytes);
        for (source, count) in &self.generated {
            done += stats.source_counter(source).get().min(*count);
            end += count;
        }
        for source in &self.kafka {
            let read = stats.source_counter(source).get();
            done += read;
            end += read + stats.source_lag(source).get().max(0) as u64;
        }
        Position {
            done,
            end,
            unit: self.unit(),
        }
    }
}

impl Position {
    /// The share read, 0 to 1; `None` while the end is not known.
    pub fn fraction(&self) -> Option<f64> {
        (self.end > 0).then(|| (self.done as f64 / self.end as f64).min(1.0))
    }
}

/// The display of a bounded job's progress.
pub enum Display {
    /// A progress bar on a terminal.
    Bar(ProgressBar),
    /// Plain lines.
    Lines,
}

impl Display {
    /// A bar when standard error is a terminal (see [`crate::terminal::stderr_is_terminal`]),
    /// plain lines otherwise.
    pub fn new() -> Display {
        if !crate::terminal::stderr_is_terminal() {
            return Display::Lines;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{wide_bar} {percent:>3}%  {msg}  ETA {eta}")
                .expect("a valid template"),
        );
        Display::Bar(bar)
    }

    /// How often this display wants a report: a bar redraws often, `every` spaces plain lines.
    pub fn interval(&self, every: Duration) -> Duration {
        match self {
            Display::Bar(_) => Duration::from_millis(250),
            Display::Lines => every,
        }
    }

    /// Shows where the job stands after `elapsed`.
    pub fn show(&self, position: Position, stats: &Stats, elapsed: Duration) {
        let events = stats.get(Counter::EventsIn);
        let rate = stats.ingest_rate().map_or(0.0, |(rate, _)| rate);
        match self {
            Display::Bar(bar) => {
                // Until the end is known (Kafka's first statistics), an empty bar says so.
                let known = position.end > 0;
                bar.set_length(position.end.max(1));
                bar.set_position(position.done.min(position.end));
                bar.set_message(match known {
                    true => format!("{events} events, {:.0} k/s", rate / 1e3),
                    false => format!("{events} events, end not known yet"),
                });
            }
            Display::Lines => eprintln!("{}", line(position, events, rate, elapsed)),
        }
    }

    /// Removes the bar; the job's summary follows.
    pub fn finish(&self) {
        if let Display::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

impl Default for Display {
    fn default() -> Self {
        Display::new()
    }
}

/// One plain progress line: `eddy: progress 42% (…), N events (R k/s), ETA T`.
pub fn line(position: Position, events: u64, rate: f64, elapsed: Duration) -> String {
    let share = match position.fraction() {
        Some(f) => {
            let left = match f > 0.0 {
                true => format!("{:.0} s", elapsed.as_secs_f64() * (1.0 - f) / f),
                false => "unknown".to_string(),
            };
            format!(
                "{:.0}% ({} of {} {}), ETA {left}",
                f * 100.0,
                position.done,
                position.end,
                position.unit
            )
        }
        None => "end not known yet".to_string(),
    };
    format!(
        "eddy: progress {share}; {events} events ({:.0} k/s) in {:.0} s",
        rate / 1e3,
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_the_share_read_and_the_time_left() {
        let at = Position {
            done: 250,
            end: 1_000,
            unit: "bytes",
        };
        assert_eq!(
            line(at, 5_000, 2_000.0, Duration::from_secs(10)),
            "eddy: progress 25% (250 of 1000 bytes), ETA 30 s; 5000 events (2 k/s) in 10 s"
        );
        let unknown = Position {
            done: 0,
            end: 0,
            unit: "messages",
        };
        assert!(line(unknown, 0, 0.0, Duration::ZERO).contains("end not known yet"));
    }
}
