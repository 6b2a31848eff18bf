//! What `eddy demo` shows while it runs: a few lines of figures every second (produced and
//! processed rates, lag per source, outputs, output latency, what became of the notification
//! requests). On a terminal they form a live panel redrawn in place, with the latest alerts and
//! notifications and where the full streams are; anywhere else they are printed as plain lines.

use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::notifications::Accounting;
use crate::stats::{Counter, Shown, Stats};

/// The figures of one report, measured by the demo.
pub struct Figures<'a> {
    /// Time since the job started.
    pub elapsed: Duration,
    /// Transactions produced so far, and in the last second.
    pub produced: (u64, u64),
    /// Events the job's sources decoded so far, and in the last second.
    pub processed: (u64, u64),
    /// The job's counters.
    pub stats: &'a Stats,
    /// The job's sources, for their lag.
    pub sources: &'a [String],
    /// The notification requests.
    pub notifications: Accounting,
    /// What the demo is doing, when it is not just running (stopping, draining).
    pub phase: Option<String>,
}

/// The lines of figures, the same on a terminal and off one.
pub fn figure_lines(f: &Figures) -> Vec<String> {
    let stats = f.stats;
    let mut lagging: Vec<(i64, &str)> = f
        .sources
        .iter()
        .map(|s| (stats.source_lag(s).get(), s.as_str()))
        .filter(|(lag, _)| *lag > 0)
        .collect();
    lagging.sort_unstable_by(|a, b| b.cmp(a));
    let behind = match lagging.as_slice() {
        [] => String::new(),
        worst => {
            let named: Vec<String> = worst
                .iter()
                .take(2)
                .map(|(lag, source)| format!("{source} {lag}"))
                .collect();
            format!(" ({})", named.join(", "))
        }
    };
    let p99 = stats
        .output_latency_quantile(0.99)
        .map_or("n/a (no output yet)".to_string(), |d| {
            format!("{:.2}s", d.as_secs_f64())
        });
    let retried = stats.get(Counter::NotificationRetries);
    let mut lines = vec![
        format!(
            "{:>5.0}s  produced {} ({}/s)  processed {} ({}/s)  lag {}{behind}",
            f.elapsed.as_secs_f64(),
            f.produced.0,
            f.produced.1,
            f.processed.0,
            f.processed.1,
            stats
                .consumer_lag
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        format!(
            "        {}  output latency p99 {p99}",
            stats.totals().line(Shown::Console, "  "),
        ),
        format!(
            "        notifications {}  (retried {retried})",
            f.notifications
        ),
    ];
    if let Some(phase) = &f.phase {
        lines.push(format!("        {phase}"));
    }
    lines
}

/// Where the panel finds the latest alerts and notifications: the demo's output files, or
/// nothing when the streams go to standard output.
pub struct Tails {
    /// The alerts file.
    pub alerts: PathBuf,
    /// The notification requests file.
    pub notifications: PathBuf,
}

/// The display: a panel redrawn in place on a terminal, plain lines elsewhere.
pub enum Panel {
    /// A terminal: the panel, with the latest alerts and notifications from `tails` and the
    /// `footer` (where the full streams are).
    Live {
        /// The panel, drawn by indicatif.
        bar: ProgressBar,
        /// Where the latest records are read from.
        tails: Option<Tails>,
        /// Lines shown under the figures.
        footer: Vec<String>,
    },
    /// Not a terminal: the figure lines, printed.
    Plain,
}

impl Panel {
    /// A live panel on a terminal (see [`crate::terminal::stderr_is_terminal`]), plain lines
    /// otherwise.
    pub fn new(tails: Option<Tails>, footer: Vec<String>) -> Panel {
        if !crate::terminal::stderr_is_terminal() {
            return Panel::Plain;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        Panel::Live { bar, tails, footer }
    }

    /// Shows `figures`.
    pub fn show(&self, figures: &Figures) {
        let lines = figure_lines(figures);
        match self {
            Panel::Plain => eprintln!("{}", lines.join("\n")),
            Panel::Live { bar, tails, footer } => {
                let mut text = lines.join("\n");
                if let Some(tails) = tails {
                    latest(&mut text, "latest alerts", &tails.alerts, alert_line);
                    latest(
                        &mut text,
                        "latest notification requests",
                        &tails.notifications,
                        notification_line,
                    );
                }
                for line in footer {
                    let _ = write!(text, "\n{line}");
                }
                bar.set_message(text);
            }
        }
    }

    /// Leaves the last panel on the terminal.
    pub fn finish(&self) {
        if let Panel::Live { bar, .. } = self {
            bar.finish();
        }
    }
}

/// How many of the latest records the panel shows per stream.
const LATEST: usize = 3;

/// Appends a heading and the latest records of the JSON-lines file at `path`, each as
/// `describe` puts it.
fn latest(
    text: &mut String,
    heading: &str,
    path: &Path,
    describe: fn(&serde_json::Value) -> String,
) {
    let _ = write!(text, "\n  {heading}:");
    let lines = last_lines(path, LATEST);
    if lines.is_empty() {
        text.push_str(" none yet");
    }
    for line in lines {
        let shown = serde_json::from_str(&line).map_or(line, |v| describe(&v));
        let _ = write!(text, "\n    {shown}");
    }
}

/// The last `n` complete lines of the file at `path` (none if it cannot be read yet).
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    const TAIL: u64 = 16 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL)))
        .is_err()
    {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let tail = String::from_utf8_lossy(&bytes);
    // Only whole lines: the first may have begun before the tail, the last may be unfinished.
    let complete = tail.rfind('\n').map_or("", |end| &tail[..end]);
    let whole = match len > TAIL {
        true => complete
            .find('\n')
            .map_or("", |start| &complete[start + 1..]),
        false => complete,
    };
    let mut lines: Vec<String> = whole.lines().rev().take(n).map(str::to_string).collect();
    lines.reverse();
    lines
}

fn field<'a>(value: &'a serde_json::Value, name: &str) -> std::borrow::Cow<'a, str> {
    match &value[name] {
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string().into(),
    }
}

fn alert_line(alert: &serde_json::Value) -> String {
    format!(
        "{:<18} account {:<8} {}",
        field(alert, "rule"),
        field(alert, "account_id"),
        field(alert, "detail")
    )
}

fn notification_line(request: &serde_json::Value) -> String {
    format!(
        "{:<5} {:<14} {}",
        field(request, "channel"),
        field(request, "to"),
        field(request, "text")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_the_complete_ones_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream.jsonl");
        assert!(last_lines(&path, 3).is_empty());
        std::fs::write(&path, "a\nb\nc\nd\npartial").unwrap();
        assert_eq!(last_lines(&path, 3), ["b", "c", "d"]);
        assert_eq!(last_lines(&path, 9), ["a", "b", "c", "d"]);
    }
}
