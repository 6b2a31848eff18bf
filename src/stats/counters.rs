//! The one table of a job's counters: each counter's name and help on `/metrics`, and the word
//! it goes by on each display that shows it (the progress log line, the console, the closing
//! line). `/metrics`, the displays and the cluster's totals all read this table, so a new
//! counter is one entry in it.

use std::ops::Add;

/// Declares [`Counter`] and [`Counter::spec`] from one list, so that a counter and its spec are
/// written in one place; each variant's doc is its help text.
macro_rules! counters {
    ($(
        $(#[$extra:meta])*
        $counter:ident {
            name: $name:literal,
            help: $help:literal,
            metrics: $metrics:literal,
            shown: $shown:expr $(,)?
        }
    ),* $(,)?) => {
        /// A counter of a running job: one variant per counter (see the module's doc).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $(
                #[doc = $help]
                $(#[$extra])*
                $counter,
            )*
        }

        impl Counter {
            /// Every counter, in the table's order: the order of `/metrics` and of every display.
            pub const ALL: [Counter; [$(stringify!($counter)),*].len()] = [$(Counter::$counter),*];

            /// How this counter is named and shown.
            pub const fn spec(self) -> CounterSpec {
                match self {
                    $(Counter::$counter => CounterSpec {
                        name: $name,
                        help: $help,
                        metrics: $metrics,
                        shown: $shown,
                    },)*
                }
            }
        }
    };
}

counters! {
    /// See [`crate::stats::Stats::ingest`].
    EventsIn {
        name: "events_in",
        help: "Events decoded by the sources.",
        metrics: true,
        shown: &[
            (Shown::Progress, "events"),
            (Shown::Closing, "events"),
        ],
    },
    WindowsOut {
        name: "windows_out",
        help: "Window results emitted.",
        metrics: true,
        shown: &[
            (Shown::Progress, "windows"),
            (Shown::Console, "windows"),
            (Shown::Closing, "window results"),
        ],
    },
    Alerts {
        name: "alerts",
        help: "Fraud alerts emitted.",
        metrics: true,
        shown: &[(Shown::Console, "alerts")],
    },
    EventsOut {
        name: "events_out",
        help: "Events (and rejections) emitted by command processors.",
        metrics: true,
        shown: &[(Shown::Console, "events")],
    },
    Late {
        name: "late",
        help: "Events that arrived after all their windows had closed.",
        metrics: true,
        shown: &[
            (Shown::Progress, "late"),
            (Shown::Console, "late"),
            (Shown::Closing, "late"),
        ],
    },
    DeadLetters {
        name: "dead_letters",
        help: "Inputs sent to the dead-letter sink.",
        metrics: true,
        shown: &[
            (Shown::Progress, "dead_letters"),
            (Shown::Console, "dead-lettered"),
            (Shown::Closing, "dead-lettered"),
        ],
    },
    NotificationsRequested {
        name: "notifications_requested",
        help: "Notification requests emitted by orchestrators.",
        metrics: true,
        shown: &[],
    },
    NotificationsSent {
        name: "notifications_sent",
        help: "Notifications the CPaaS accepted.",
        metrics: true,
        shown: &[],
    },
    NotificationsFailed {
        name: "notifications_failed",
        help: "Notifications that failed for good (also dead-lettered).",
        metrics: true,
        shown: &[],
    },
    /// One per message and retry.
    NotificationRetries {
        name: "notification_retries",
        help: "Notifications sent again after a transient error.",
        metrics: true,
        shown: &[],
    },
    /// Dead-lettered, with a `NotificationFailed` outcome when they name a request id.
    NotificationsInvalid {
        name: "notifications_invalid",
        help: "Notification requests refused before any call: records that are no valid request.",
        metrics: false,
        shown: &[],
    },
    /// Requests answered from the sent-record or a request in flight with the same id.
    NotificationsDeduplicated {
        name: "notifications_deduplicated",
        help: "Notification requests answered without sending again (duplicates and replays).",
        metrics: true,
        shown: &[],
    },
}

/// How a [`Counter`] is named and shown.
#[derive(Clone, Copy, Debug)]
pub struct CounterSpec {
    /// Its name on `/metrics`, without the `eddy_` prefix and the `_total` suffix.
    pub name: &'static str,
    /// Its help text on `/metrics`.
    pub help: &'static str,
    /// Whether `/metrics` exports it.
    pub metrics: bool,
    /// The displays that show it, each with the word it goes by there.
    pub shown: &'static [(Shown, &'static str)],
}

/// A display that shows some of the counters, each with a word of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The periodic progress log line of a job without a known end: `word=N`.
    Progress,
    /// The demo's console (its live panel and closing lines): `word N`.
    Console,
    /// The closing line of `eddy run`: `N word`.
    Closing,
}

impl Shown {
    /// One figure as this display writes it.
    pub fn figure(self, word: &str, value: u64) -> String {
        match self {
            Shown::Progress => format!("{word}={value}"),
            Shown::Console => format!("{word} {value}"),
            Shown::Closing => format!("{value} {word}"),
        }
    }
}

/// The value of every [`Counter`] at one moment: what one process counted, or (added up) a
/// whole cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// The value of each counter, in [`Counter::ALL`]'s order.
    values: [u64; Counter::ALL.len()],
}

impl Totals {
    /// Totals with `value` read for each counter.
    pub fn read(value: impl Fn(Counter) -> u64) -> Totals {
        Totals {
            values: Counter::ALL.map(value),
        }
    }

    /// The value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// The figures `display` shows, in the table's order: each counter, its word there, and
    /// its value.
    pub fn shown(&self, display: Shown) -> impl Iterator<Item = (Counter, &'static str, u64)> {
        Counter::ALL.into_iter().filter_map(move |counter| {
            let (_, word) = counter.spec().shown.iter().find(|(on, _)| *on == display)?;
            Some((counter, *word, self.get(counter)))
        })
    }

    /// The figures `display` shows (see [`Totals::shown`]), each written as it writes them,
    /// joined by `separator`.
    pub fn line(&self, display: Shown, separator: &str) -> String {
        let figures: Vec<String> = self
            .shown(display)
            .map(|(_, word, value)| display.figure(word, value))
            .collect();
        figures.join(separator)
    }
}

impl Add for Totals {
    type Output = Totals;

    fn add(self, other: Totals) -> Totals {
        Totals::read(|counter| self.get(counter) + other.get(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter has a name of its own, and each display shows a counter at most once.
    #[test]
    fn names_are_unique_and_displays_show_a_counter_once() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.spec().name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        for counter in Counter::ALL {
            let shown = counter.spec().shown;
            for (i, (display, _)) in shown.iter().enumerate() {
                assert!(
                    !shown[i + 1..].iter().any(|(d, _)| d == display),
                    "{counter:?}"
                );
            }
        }
    }

    /// Each display writes its figures in the table's order, in its own way.
    #[test]
    fn each_display_writes_its_figures() {
        let totals = Totals::read(|counter| counter as u64 + 1);
        assert_eq!(
            totals.line(Shown::Progress, " "),
            "events=1 windows=2 late=5 dead_letters=6"
        );
        assert_eq!(
            totals.line(Shown::Console, "  "),
            "windows 2  alerts 3  events 4  late 5  dead-lettered 6"
        );
        assert_eq!(
            totals.line(Shown::Closing, ", "),
            "1 events, 2 window results, 5 late, 6 dead-lettered"
        );
        assert_eq!((totals + totals).get(Counter::Late), 10);
    }
}
