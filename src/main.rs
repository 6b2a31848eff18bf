//! The `eddy` command line: run, check, checkpoints, demo, produce and completions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use eddy::dataflows::RunOptions;
use eddy::job::Job;
use eddy::progress::{self, Extent};
use eddy::run::{ClusterArgs, StateChanged, parse_duration, run_job};
use eddy::server::Server;
use eddy::sources::generator::GeneratorConfig;
use eddy::sources::incidents::FraudMix;
use eddy::sources::kafka::StartFrom;
use eddy::stats::{Counter, Shown, Stats};
use eddy::tools::demo::{DemoOptions, demo};
use eddy::tools::produce::{ProduceOptions, produce};

/// Eddy: stream processing on timely dataflow. Reads events from Kafka, files or a generator,
/// computes windowed metrics in event time, and writes results to Kafka or files.
#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    after_help = "Exit status: 0 done, 1 runtime failure, 2 bad job file or usage, 130 interrupted \
                  (SIGINT or SIGTERM)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// After SIGINT or SIGTERM, how long the graceful stop may take before the process quits.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "20s")]
    stop_timeout: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job file until its sources end (files, generators, `--until-end`) or Ctrl-C.
    #[command(disable_help_flag = true)]
    Run {
        /// The job file (TOML).
        job: PathBuf,
        /// Where the job starts: checkpoint (its latest complete checkpoint, if it has
        /// `[checkpoints]` and one was taken; otherwise as committed), or where Kafka sources
        /// start afresh: committed, earliest, latest, or an RFC 3339 time to reprocess
        /// history from.
        #[arg(long, default_value = "checkpoint")]
        from: StartFrom,
        /// Start the state of this stateful section (a metric, fraud, commands or orchestrator
        /// section, or a file sink, by name) empty instead of restoring it: for a section whose
        /// state-relevant settings changed. May be repeated.
        #[arg(long, value_name = "SECTION")]
        reset_state: Vec<String>,
        /// Stop Kafka sources at the end offsets seen at start-up (a backfill) instead of
        /// following the topics.
        #[arg(long)]
        until_end: bool,
        /// How often a bounded job prints its progress when standard error is not a terminal
        /// (on a terminal it shows a progress bar).
        #[arg(long, value_parser = parse_duration, default_value = "5s")]
        progress_every: Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Validate job files: every error with file, line and field; exit status 2 on any.
    Check {
        /// The job files.
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
    },
    /// List a job's checkpoints (its `[checkpoints]` store), newest first: id, frontier time,
    /// size, and each source's positions.
    Checkpoints {
        /// The job file.
        job: PathBuf,
    },
    /// Run the demo on an in-process Kafka-protocol cluster: generators, the demo job, Kafka
    /// sinks, a CPaaS stand-in, and a live panel. Nothing to install.
    #[command(disable_help_flag = true)]
    Demo {
        /// Stop after this long (e.g. 30s); default: at Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Transactions per second fed into the cluster.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Partitions of the input topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Directory of the alerts and notification requests as JSON lines (default: `eddy-demo`
        /// in the temporary directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the alerts and notification requests to standard output instead.
        #[arg(long)]
        stdout: bool,
        /// The address of the demo's HTTP server (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Print shell completions to standard output, e.g.
    /// `eddy completions bash > ~/.local/share/bash-completion/completions/eddy`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The load generator: write generated card transactions (JSON) into a Kafka topic.
    Produce {
        /// Bootstrap brokers, host:port[,host:port…].
        #[arg(long)]
        brokers: String,
        /// The topic written.
        #[arg(long)]
        topic: String,
        /// How many transactions (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Transactions per second; with --unpaced, only spaces their event times.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Produce as fast as possible instead of at --rate.
        #[arg(long)]
        unpaced: bool,
        /// Random seed: the same seed produces the same transactions.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Distinct accounts.
        #[arg(long, default_value_t = 100_000)]
        accounts: u64,
        /// Distinct merchants.
        #[arg(long, default_value_t = 5_000)]
        merchants: u64,
        /// Event times lag their nominal time by up to this much (e.g. 2s).
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        disorder: Duration,
        /// Event time of the first transaction, epoch ms (default: now).
        #[arg(long)]
        start_ms: Option<u64>,
        /// Replace every n-th message by malformed JSON.
        #[arg(long)]
        malformed_every: Option<u64>,
        /// Fraud mode: ordinary traffic that fires no fraud rule, with an incident starting every
        /// n transactions (see `examples/jobs/fraud.toml`).
        #[arg(long)]
        fraud_every: Option<u64>,
        /// Fraud mode: the rules' span that incidents are laid out in.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        fraud_within: Duration,
        /// A librdkafka property, key=value (repeatable).
        #[arg(long = "property", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// What SIGINT and SIGTERM do: the first sets the stop flag, which ends the command gracefully
/// (sources commit what the sinks have flushed); a second one within [`REPEAT_WINDOW`] is taken
/// for the same one (`timeout` and a terminal's process group can deliver one twice); a later
/// one quits at once. If the stop has not finished within the stop timeout, the process quits
/// too. Quitting exits with [`INTERRUPTED`], as does a graceful stop after a signal.
struct Interrupts {
    stop: Arc<AtomicBool>,
    /// When the first signal came, in ms after `epoch`, plus one (0: none yet).
    first: Arc<AtomicU64>,
}

/// A second signal within this long of the first is taken for the first.
const REPEAT_WINDOW: Duration = Duration::from_secs(1);
/// The exit status of a command stopped by SIGINT or SIGTERM.
const INTERRUPTED: u8 = 130;

impl Interrupts {
    /// Installs the handler; `what` says what a graceful stop waits for.
    fn install(stop_timeout: Duration, what: &'static str) -> Interrupts {
        let stop = Arc::new(AtomicBool::new(false));
        let first = Arc::new(AtomicU64::new(0));
        let epoch = std::time::Instant::now();
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&first));
        let result = ctrlc::set_handler(move || {
            let now = epoch.elapsed().as_millis() as u64 + 1;
            match seen.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    flag.store(true, Ordering::Release);
                    eprintln!(
                        "eddy: stopping: {what} (at most {}; a second Ctrl-C quits at once)",
                        jiff::SignedDuration::try_from(stop_timeout)
                            .map_or_else(|_| format!("{stop_timeout:?}"), |d| format!("{d:#}"))
                    );
                    std::thread::spawn(move || {
                        std::thread::sleep(stop_timeout);
                        eprintln!(
                            "eddy: the stop did not finish within the stop timeout: quitting \
                             (output since the last commit may be written again at the next run)"
                        );
                        std::process::exit(INTERRUPTED.into());
                    });
                }
                Err(at) if now.saturating_sub(at) < REPEAT_WINDOW.as_millis() as u64 => {}
                Err(_) => {
                    eprintln!("eddy: quitting at once");
                    std::process::exit(INTERRUPTED.into());
                }
            }
        });
        if let Err(e) = result {
            tracing::warn!("SIGINT and SIGTERM will not stop gracefully: {e}");
        }
        Interrupts { stop, first }
    }

    /// The flag a signal sets.
    fn stop(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The exit status of a command that ended without an error: [`INTERRUPTED`] once a signal
    /// came.
    fn status(&self) -> ExitCode {
        match self.first.load(Ordering::Acquire) {
            0 => ExitCode::SUCCESS,
            _ => ExitCode::from(INTERRUPTED),
        }
    }
}

/// Prints the checkpoints of `job`'s store.
fn list_checkpoints(job: &Job) -> anyhow::Result<()> {
    let Some(spec) = &job.checkpoints else {
        anyhow::bail!("job `{}` has no [checkpoints] section", job.name);
    };
    let store = eddy::state::CheckpointStore::open(&spec.store)?;
    let listed = store.checkpoints()?;
    if listed.is_empty() {
        eprintln!("eddy: no checkpoints in {store}");
    }
    print!("{}", eddy::state::listing(&listed));
    Ok(())
}

/// What [`bound_address_space`] found, for `main` to report.
static ADDRESS_SPACE_BOUNDED: std::sync::OnceLock<std::io::Result<()>> = std::sync::OnceLock::new();

/// Bounds the address space ([`eddy::allocator::bound_address_space`]) before `main`, and so
/// before Rust's runtime makes the first allocation, at which mimalloc reserves its first arena
/// (1 GiB, were it set in `main`), and before any thread starts.
extern "C" fn bound_address_space() {
    let _ = ADDRESS_SPACE_BOUNDED.set(eddy::allocator::bound_address_space());
}

/// Has the C runtime call [`bound_address_space`] before `main` (the binary's own object, so
/// always linked).
#[used]
#[unsafe(link_section = ".init_array")]
static BOUND_ADDRESS_SPACE: extern "C" fn() = bound_address_space;

fn main() -> ExitCode {
    eddy::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(eddy::terminal::stderr_colour())
        .init();
    // A refusal only costs address space: say so, and go on.
    if let Some(Err(e)) = ADDRESS_SPACE_BOUNDED.get() {
        tracing::warn!("could not bound the process's address space: {e}");
    }
    let cli = Cli::parse();
    let interrupts = Interrupts::install(
        cli.stop_timeout,
        match cli.command {
            Command::Produce { .. } => "flushing what was produced",
            _ => {
                "the sources commit what the sinks have flushed, and a job with [checkpoints] \
                 takes a final one"
            }
        },
    );
    let result = match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "eddy", &mut std::io::stdout());
            Ok(())
        }
        Command::Check { jobs } => {
            let mut failed = false;
            for path in jobs {
                match Job::load(&path) {
                    Ok(_) => println!("{}: ok", path.display()),
                    Err(errors) => {
                        eprintln!("{errors}");
                        failed = true;
                    }
                }
            }
            return if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Command::Checkpoints { job } => {
            let job = match Job::load(&job) {
                Ok(job) => job,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            list_checkpoints(&job)
        }
        Command::Run {
            job,
            from,
            reset_state,
            until_end,
            progress_every,
            cluster,
            ..
        } => {
            let job = match Job::load(&job) {
                Ok(job) => job,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let stats = Arc::new(Stats::default());
            let views = job.view_stores();
            if cluster.processes > 1 {
                let _ = stats.process.set((cluster.process, cluster.processes));
            }
            let server = match Server::for_job(&job, &views, &stats) {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("eddy: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(server) = &server {
                eprintln!(
                    "eddy: serving views, /metrics and /health at http://{}",
                    server.addr()
                );
            }
            let options = RunOptions {
                start: from,
                until_end,
                stop: interrupts.stop(),
                stats: Arc::clone(&stats),
                views,
                reset_state,
            };
            let share = match cluster.processes {
                1 => String::new(),
                n => format!(" of process {} of {n} (its share)", cluster.process),
            };
            // A process of a cluster reads its share of the input, not all of it.
            let extent = match cluster.processes {
                1 => Extent::of(&job, until_end),
                _ => None,
            };
            let display = extent.as_ref().map(|_| Arc::new(progress::Display::new()));
            let interval = display
                .as_ref()
                .map_or(Duration::from_secs(5), |d| d.interval(progress_every));
            let shown = display.clone();
            let result = run_job(
                job,
                &cluster,
                options,
                interval,
                move |stats, elapsed| match (&extent, &shown) {
                    (Some(extent), Some(display)) => {
                        display.show(extent.position(stats), stats, elapsed)
                    }
                    _ => tracing::info!(
                        "progress{share} elapsed={elapsed:?} {} lag={}",
                        stats.totals().line(Shown::Progress, " "),
                        stats.consumer_lag.load(Ordering::Relaxed),
                    ),
                },
            );
            if let Some(display) = &display {
                display.finish();
            }
            if result.is_ok() {
                let rate = stats
                    .ingest_rate()
                    .map_or(String::new(), |(rate, seconds)| {
                        format!(" ({:.0} k/s over {seconds:.2} s)", rate / 1e3)
                    });
                let (totals, rate, scope) = match stats.cluster.get() {
                    Some((totals, processes)) => (
                        *totals,
                        String::new(),
                        format!(
                            " in the cluster of {processes} processes ({} events{rate} in this one)",
                            stats.get(Counter::EventsIn)
                        ),
                    ),
                    None => (stats.totals(), rate, String::new()),
                };
                // The ingest rate follows the events it measures.
                let figures: Vec<String> = totals
                    .shown(Shown::Closing)
                    .map(|(counter, word, value)| match counter {
                        Counter::EventsIn => format!("{value} {word}{rate}"),
                        _ => Shown::Closing.figure(word, value),
                    })
                    .collect();
                eprintln!("eddy: done: {}{scope}", figures.join(", "));
            }
            result
        }
        Command::Demo {
            duration,
            rate,
            partitions,
            out,
            stdout,
            http,
            cluster,
            ..
        } => demo(
            &DemoOptions {
                duration,
                rate,
                partitions,
                out: out.unwrap_or_else(|| std::env::temp_dir().join("eddy-demo")),
                stdout,
                http,
            },
            &cluster,
            interrupts.stop(),
        ),
        Command::Produce {
            brokers,
            topic,
            count,
            rate,
            unpaced,
            seed,
            accounts,
            merchants,
            disorder,
            start_ms,
            malformed_every,
            fraud_every,
            fraud_within,
            mut properties,
        } => {
            properties.insert(0, ("bootstrap.servers".into(), brokers));
            let start_ms =
                start_ms.unwrap_or_else(|| jiff::Timestamp::now().as_millisecond() as u64);
            let options = ProduceOptions {
                properties,
                topic,
                generator: GeneratorConfig {
                    seed,
                    count,
                    rate,
                    accounts,
                    merchants,
                    disorder_ms: disorder.as_millis() as u64,
                    start_ms,
                    paced: !unpaced,
                    fraud: fraud_every.map(|every| FraudMix {
                        every,
                        within_ms: fraud_within.as_millis() as u64,
                    }),
                },
                malformed_every,
            };
            let produced = AtomicU64::new(0);
            produce(&options, &interrupts.stop(), &produced)
                .map(|n| eprintln!("eddy: produced {n}"))
        }
    };
    match result {
        Ok(()) => interrupts.status(),
        Err(e) => {
            eprintln!("eddy: error: {e:#}");
            // Checkpointed state the job file no longer fits is refused like a bad job file.
            match e.downcast_ref::<StateChanged>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}
