//! Dataflows: the compiler from a job file to a timely dataflow, and the built-in graphs.

pub mod engagement;
pub mod enrich;
pub mod fraud;
pub mod metrics;
pub mod notify;
pub mod routes;
pub mod views;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use timely::dataflow::operators::{Concatenate, Inspect, Probe};
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::backlog::Backlog;
use crate::job::{Job, SinkSpec, SourceKind, SourceSpec};
use crate::operators::delivery::{Acknowledge, Delivery};
use crate::record::{DeadLetter, Event, Record};
use crate::sinks::file::{FileTarget, Order, WriteFile};
use crate::sinks::format::{DeadLetterEncoder, RowEncoder};
use crate::sinks::view::{Views, WriteView};
use crate::sources::file::FileReader;
use crate::sources::generator::GeneratorReader;
use crate::sources::kafka::{KafkaReader, KafkaSourceConfig, StartFrom};
use crate::sources::{Reader, SourceOptions, SourceStreams, deal_slot, event_source};
use crate::state::{Checkpointing, Position, SectionCheckpoint, WorkerCheckpoint};
use crate::stats::{CountInto, Counter, Stats};

/// How a job is run, beyond what its file says.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where Kafka sources start.
    pub start: StartFrom,
    /// Stop Kafka sources at the end offsets seen at start-up.
    pub until_end: bool,
    /// Set to stop: sources commit what the sinks have flushed, and the job ends without
    /// emitting windows that are still open.
    pub stop: Arc<AtomicBool>,
    /// Counters for progress displays.
    pub stats: Arc<Stats>,
    /// The stores of the job's views (see [`Job::view_stores`]), shared with whoever serves them.
    pub views: Views,
    /// The stateful sections whose checkpointed state is not restored: they start empty.
    pub reset_state: Vec<String>,
}

/// Progress of a built job.
#[derive(Clone)]
pub struct JobProbes {
    /// How many sources this worker has.
    pub sources: usize,
    /// How many of them have halted after a stop.
    pub halted: Rc<Cell<usize>>,
    /// What the sources have emitted.
    pub ingested: ProbeHandle<u64>,
    /// What every sink has flushed; done once the sources have ended and everything is flushed.
    pub flushed: ProbeHandle<u64>,
}

/// The probes sources commit behind.
pub struct Progress<'scope> {
    /// Every sink's flushed stream: output derived from input sent before its frontier is durable.
    pub flushed: ProbeHandle<u64>,
    /// Every window and pattern operator's fired stream: windows firing before its frontier are
    /// emitted and flushed.
    pub fired: ProbeHandle<u64>,
    /// The fired streams, [`Acknowledge`]d: passes `t` once every worker has seen `fired` pass
    /// `t`. Window and pattern operators keep what fired unsettled until then.
    pub acknowledged: ProbeHandle<u64>,
    /// Every sink's flushed stream and every window and pattern operator's settled stream: what
    /// was sent before its frontier is flushed, and `fired` counts the windows it made.
    pub settled: ProbeHandle<u64>,
    /// How many of this worker's sources have halted after a stop.
    pub halted: Rc<Cell<usize>>,
    /// The fired streams tracked so far: probed together once the job is built.
    fired_streams: RefCell<Vec<StreamVec<'scope, u64, ()>>>,
    /// This worker's part of the job's checkpoints, if it takes them.
    pub checkpoints: Option<WorkerCheckpoint>,
}

impl<'scope> Progress<'scope> {
    fn new(checkpoints: Option<WorkerCheckpoint>) -> Self {
        Progress {
            checkpoints,
            flushed: ProbeHandle::new(),
            fired: ProbeHandle::new(),
            acknowledged: ProbeHandle::new(),
            settled: ProbeHandle::new(),
            halted: Rc::new(Cell::new(0)),
            fired_streams: RefCell::new(Vec::new()),
        }
    }

    /// What window and pattern operators judge delivery by.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            flushed: self.flushed.clone(),
            acknowledged: self.acknowledged.clone(),
        }
    }

    /// The checkpointing of the stateful section `name` on this worker, if the job takes
    /// checkpoints.
    pub fn section(&self, name: &str) -> Option<SectionCheckpoint> {
        let worker = self.checkpoints.as_ref()?;
        Some(SectionCheckpoint::new(worker, name.to_string()))
    }

    /// Follows a window or pattern operator's fired and settled streams.
    pub fn track(&self, fired: StreamVec<'scope, u64, ()>, settled: StreamVec<'scope, u64, ()>) {
        self.fired_streams.borrow_mut().push(fired);
        settled.probe_with(&self.settled);
    }

    /// Probes the tracked fired streams, as they are and acknowledged: once every operator is
    /// tracked.
    fn probe_fired(&self, scope: Scope<'scope, u64>) {
        scope
            .concatenate(self.fired_streams.take())
            .probe_with(&self.fired)
            .acknowledge()
            .probe_with(&self.acknowledged);
    }
}

/// Builds `job` into `scope` on this worker, one of a cluster of `processes` processes (which
/// the sources' partitions are dealt over), taking part in `checkpoints` if given.
pub fn build_job(
    scope: Scope<'_, u64>,
    job: &Job,
    options: &RunOptions,
    processes: usize,
    checkpoints: Option<&Checkpointing>,
) -> anyhow::Result<JobProbes> {
    let progress = Progress::new(checkpoints.map(|c| c.worker(scope.index())));
    let ingested = ProbeHandle::new();
    let notifications = notify::plan(job, &options.stats)?;
    let mut events = Vec::new();
    let mut dead = Vec::new();
    for (index, source) in job.sources.iter().enumerate() {
        let backlogs = notifications
            .iter()
            .filter(|n| n.spec.source == index)
            .map(|n| n.backlog.clone())
            .collect();
        let streams = source_stream(scope, job, source, options, &progress, processes, backlogs)?;
        let stats = Arc::clone(&options.stats);
        let counted = streams
            .events
            .count_with(move |n| stats.ingest(n))
            .count_in(options.stats.source_counter(&source.name));
        let counted = fault_for_tests(counted, &source.name);
        events.push((counted.probe_with(&ingested), streams.emitted_before));
        dead.push(streams.dead);
    }
    let mut flushed = Vec::new();
    for plan in &notifications {
        let (outcomes, failed) = notify::build_notify(
            events[plan.spec.source].0.clone(),
            plan,
            job,
            &options.stats,
        )?;
        flushed.push(outcomes);
        dead.push(failed);
    }
    let dead = scope.concatenate(dead);
    let dead = dead.count_into(&options.stats, Counter::DeadLetters);
    flushed.push(match job.dead_letter {
        Some(sink) => write_dead_letters(dead, &job.sinks[sink], &progress, &options.stats)?,
        None => dead.write_file(
            FileTarget::Stderr,
            DeadLetterEncoder { raw: false },
            None,
            None,
        )?,
    });
    for metric in &job.metrics {
        let (source, emitted_before) = &events[metric.source];
        flushed.extend(metrics::build_metric(
            source.clone(),
            *emitted_before,
            &progress,
            job,
            metric,
            &options.stats,
        )?);
    }
    for spec in &job.fraud {
        let (source, emitted_before) = &events[spec.source];
        flushed.extend(fraud::build_fraud(
            source.clone(),
            *emitted_before,
            &progress,
            job,
            spec,
            &options.stats,
        )?);
    }
    for spec in &job.commands {
        flushed.extend(engagement::build_commands(
            events[spec.source].clone(),
            &progress,
            job,
            spec,
            &options.stats,
        )?);
    }
    for spec in &job.orchestrators {
        flushed.extend(engagement::build_orchestrator(
            events[spec.events.source].clone(),
            spec.alerts.map(|a| events[a.source].clone()),
            &progress,
            job,
            spec,
            &options.stats,
        )?);
    }
    for (index, (source, _)) in events.iter().enumerate() {
        flushed.extend(routes::build_routes(
            source.clone(),
            index,
            job,
            &options.stats,
            progress.checkpoints.as_ref(),
        )?);
    }
    let streams: Vec<_> = events.iter().map(|(stream, _)| stream.clone()).collect();
    // Per view, its cells arranged by row key when an enrichment joins with it.
    let mut tables = Vec::new();
    for (index, spec) in job.views.iter().enumerate() {
        let store = options.views.get(&spec.name).ok_or_else(|| {
            anyhow::anyhow!(
                "view `{}` has no store: run the job with `job.view_stores()`",
                spec.name
            )
        })?;
        let checkpoint = progress.section(&spec.name);
        let restored = match &checkpoint {
            Some(c) => c
                .restore::<String, String>(scope.peers())
                .map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        let cells = views::view_cells(scope, &streams, spec, &restored, &progress)?;
        flushed.push(cells.clone().write_view(
            Arc::clone(store),
            spec.columns.clone().into(),
            checkpoint,
        ));
        let joined = job.enrich.iter().any(|e| e.view == index);
        tables.push(joined.then(|| cells.arrange_by_key_named("ViewRows")));
    }
    for spec in &job.enrich {
        let table = tables[spec.view]
            .clone()
            .expect("arranged for its enrichments");
        flushed.extend(enrich::build_enrich(
            streams[spec.source].clone(),
            table,
            job,
            spec,
            &options.stats,
            progress.checkpoints.as_ref(),
        )?);
    }
    scope
        .concatenate(flushed)
        .probe_with(&progress.flushed)
        .probe_with(&progress.settled);
    progress.probe_fired(scope);
    Ok(JobProbes {
        sources: job.sources.len(),
        halted: Rc::clone(&progress.halted),
        ingested,
        flushed: progress.flushed,
    })
}

/// The environment variable of a fault for the tests of what one failing or stuck worker does to
/// a job: `panic:W` makes worker W panic at its first event, `stall:W` makes it stop there for
/// good, deaf to a stop.
pub const TEST_FAULT: &str = "EDDY_TEST_FAULT";

/// `events`, with the fault [`TEST_FAULT`] sets at the first event of `source`, if any. Every
/// worker builds the same operator (timely needs the same dataflow on all workers); without the
/// variable, none is added.
fn fault_for_tests<'scope>(
    events: StreamVec<'scope, u64, Event<Record>>,
    source: &str,
) -> StreamVec<'scope, u64, Event<Record>> {
    let Ok(fault) = std::env::var(TEST_FAULT) else {
        return events;
    };
    let index = events.scope().index().to_string();
    let (stall, panics) = match fault.split_once(':') {
        Some(("stall", worker)) => (worker == index, false),
        Some(("panic", worker)) => (false, worker == index),
        _ => panic!("{TEST_FAULT}={fault}: expected panic:WORKER or stall:WORKER"),
    };
    let source = source.to_string();
    events.inspect(move |_| {
        if panics {
            panic!("{TEST_FAULT}={fault}: an event of `{source}`")
        }
        if stall {
            loop {
                std::thread::park();
            }
        }
    })
}

fn source_stream<'scope>(
    scope: Scope<'scope, u64>,
    job: &Job,
    source: &SourceSpec,
    options: &RunOptions,
    progress: &Progress<'scope>,
    processes: usize,
    backlogs: Vec<Backlog>,
) -> anyhow::Result<SourceStreams<'scope, Record>> {
    let source_options = SourceOptions {
        out_of_orderness: source.out_of_orderness,
        idle_timeout: source.idle_timeout,
        max_drift: source.max_drift,
        tick: job.tick,
        commit_interval: job.commit_interval,
        stop: Arc::clone(&options.stop),
        halted: Rc::clone(&progress.halted),
        fired: progress.fired.clone(),
        backlogs,
    };
    let peers = scope.peers();
    let slot = deal_slot(scope.index(), peers, processes);
    let schema = Arc::clone(&source.schema);
    let name = &source.name;
    let settled = progress.settled.clone();
    let checkpoint = progress.checkpoints.as_ref().map(WorkerCheckpoint::source);
    Ok(match &source.kind {
        SourceKind::Kafka { properties, topics } => {
            let config = KafkaSourceConfig {
                properties: properties.clone(),
                topics: topics.clone(),
                start: options.start,
                until_end: options.until_end,
                max_record_bytes: source.max_record_bytes,
            };
            let reader = KafkaReader::open(
                name,
                &config,
                schema,
                (slot, peers),
                restored_positions(progress, name),
                Arc::clone(&options.stats),
                &options.stop,
            )
            .with_context(|| format!("source `{name}`"))?;
            let reader = match &progress.checkpoints {
                Some(worker) => reader.offer_offsets(name, worker.shared()),
                None => reader,
            };
            say_if_idle(name, &reader, slot, processes);
            event_source(scope, name, reader, source_options, settled, checkpoint)
        }
        SourceKind::File { paths, splits } => {
            let reader = FileReader::open(
                paths,
                *splits,
                source.max_record_bytes,
                schema,
                (slot, peers),
                options.stats.file_bytes.clone(),
                restored_positions(progress, name),
            )
            .with_context(|| format!("source `{name}`"))?;
            say_if_idle(name, &reader, slot, processes);
            event_source(scope, name, reader, source_options, settled, checkpoint)
        }
        SourceKind::Generator { config, partitions } => {
            let resume = restored_positions(progress, name);
            let reader =
                GeneratorReader::new(config.clone(), *partitions, &schema, (slot, peers), resume)
                    .map_err(|e| anyhow::anyhow!("source `{name}`: {e}"))?;
            say_if_idle(name, &reader, slot, processes);
            event_source(scope, name, reader, source_options, settled, checkpoint)
        }
    })
}

/// The positions of source `name` in the checkpoint the job resumes from, if any.
fn restored_positions<'a>(
    progress: &'a Progress<'_>,
    name: &str,
) -> Option<&'a BTreeMap<String, Position>> {
    let restored = progress.checkpoints.as_ref()?.checkpointing().restored()?;
    restored.positions().get(name)
}

/// Logs, once per process (from the worker that is dealt partitions first), that a source has
/// nothing for this process to read: it has fewer partitions than the cluster has processes.
fn say_if_idle<D>(name: &str, reader: &impl Reader<D>, slot: usize, processes: usize) {
    if slot < processes && reader.partitions() == 0 {
        tracing::warn!(
            "source `{name}` has nothing for this process (process {slot} of {processes}) to \
             read: it has fewer partitions or splits than the cluster has processes"
        );
    }
}

fn write_dead_letters<'scope>(
    dead: StreamVec<'scope, u64, DeadLetter>,
    sink: &SinkSpec,
    progress: &Progress<'scope>,
    stats: &Stats,
) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
    let dead = dead.count_in(stats.sink_counter(&sink.name));
    let encoder = DeadLetterEncoder {
        raw: sink.kind.headers(),
    };
    let checkpoints = progress.checkpoints.as_ref();
    sink.kind
        .write(&sink.name, "dead letters", dead, encoder, None, checkpoints)
}

/// The index of column `name` among an output's fixed `columns`.
fn column(columns: &[&str], name: &str) -> usize {
    columns
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("the output has a `{name}` column"))
}

/// Writes rows (whose columns are named `columns`) of the job's output named `output` to each of
/// the job's `sinks`, counting them into each sink's records counter; returns their flushed
/// streams. Sinks that take part in checkpoints do so through `checkpoints`.
pub fn write_rows<'scope>(
    rows: &StreamVec<'scope, u64, Record>,
    job: &Job,
    sinks: &[usize],
    columns: &[String],
    output: &str,
    stats: &Stats,
    checkpoints: Option<&WorkerCheckpoint>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let provenance = vec![
        ("eddy.job", job.name.clone()),
        ("eddy.output", output.to_string()),
    ];
    sinks
        .iter()
        .map(|&sink| {
            let sink = &job.sinks[sink];
            let rows = rows.clone().count_in(stats.sink_counter(&sink.name));
            let target = Target {
                output,
                provenance: provenance.clone(),
                checkpoints,
            };
            write_to_sink(rows, sink, columns, target)
        })
        .collect()
}

/// Which output rows come from, as a sink writes them.
struct Target<'a> {
    /// The output's name.
    output: &'a str,
    /// The headers Kafka messages carry.
    provenance: Vec<(&'static str, String)>,
    /// The worker's part of the job's checkpoints.
    checkpoints: Option<&'a WorkerCheckpoint>,
}

/// Writes rows (whose columns are named `columns`) to `sink`, projected to the sink's columns
/// (and, for a file sink with `order_by`, sorted by those columns); Kafka messages carry the
/// target's `provenance` headers, and go to the topic the sink's `topic` names for each row.
fn write_to_sink<'scope>(
    rows: StreamVec<'scope, u64, Record>,
    sink: &SinkSpec,
    columns: &[String],
    target: Target<'_>,
) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
    let index = |name: &String| {
        columns
            .iter()
            .position(|c| c == name)
            .expect("checked by the job loader")
    };
    let written: Vec<(String, usize)> = match &sink.columns {
        Some(names) => names.iter().map(|n| (n.clone(), index(n))).collect(),
        None => columns.iter().cloned().zip(0..).collect(),
    };
    let encoder = RowEncoder::new(sink.format, written, sink.key.as_ref().map(index))
        .with_provenance(target.provenance);
    let encoder = sink.kind.row_encoder(&sink.name, encoder, columns)?;
    let order = (!sink.order_by.is_empty()).then(|| {
        let by: Vec<usize> = sink.order_by.iter().map(index).collect();
        Box::new(move |row: &Record, key: &mut Vec<u8>| {
            by.iter().for_each(|&i| row[i].write_sort_key(key))
        }) as Order<Record>
    });
    sink.kind.write(
        &sink.name,
        target.output,
        rows,
        encoder,
        order,
        target.checkpoints,
    )
}
