//! Criterion micro-benchmarks of the operators: the window operator (tumbling, hopping, session)
//! and the pattern operator with fraud rules on one worker, watermark stamping, aggregate folding
//! and merging, schema-driven JSON decoding, routing predicates (compiled, and the `cel` crate's
//! interpreter for comparison), the route operator, enrichment (a stream–table join), recent
//! values per key, the command processor and the orchestrator.

mod common;

use std::hash::Hash;
use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::AsCollection;
use eddy::domain::command::Command;
use eddy::domain::fraud::{
    AmountSpike, CardPayment, CardTesting, ImpossibleTravel, SmallThenLarge, Velocity,
};
use eddy::domain::orchestrate::Happening;
use eddy::job::Job;
use eddy::operators::pattern::{DetectPattern, Detection, Pattern, PatternStreams, Suppressed};
use eddy::operators::watermark::Watermarks;
use eddy::record::{FieldType, Id};
use eddy::sources::generator::Generator;
use eddy::{
    Aggregate, AggregateCell, AggregateKind, Enrich, Event, FieldAggregates, KeepRecent, Predicate,
    Record, Route, Routed, Schema, Value, WindowAggregate, WindowSpec, WindowStreams,
};
use timely::ExchangeData;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Probe, ToStream};
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

const EVENTS: u64 = 200_000;

/// `(event time, datum)` stamped as a source would stamp one partition with 2 s of
/// out-of-orderness.
fn stamped<D>(data: impl IntoIterator<Item = (u64, D)>) -> Vec<Event<D>> {
    let mut max_plus_one = 0u64;
    data.into_iter()
        .map(|(time, data)| {
            let frontier = max_plus_one.saturating_sub(2_000);
            max_plus_one = max_plus_one.max(time + 1);
            Event {
                time,
                frontier,
                data,
            }
        })
        .collect()
}

/// Runs `input` on one worker through the dataflow `build` makes of it, in batches of 8192 at
/// the batch's stamp (truncated to 10 ms, as a source would), until the probe it returns is done.
fn run_stamped<D, F>(input: Vec<Event<D>>, build: F)
where
    D: Clone + Send + Sync + 'static,
    F: for<'scope> FnOnce(StreamVec<'scope, u64, Event<D>>) -> ProbeHandle<u64>
        + Send
        + Sync
        + 'static,
{
    timely::execute_directly(move |worker| {
        let mut handle = InputHandle::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| build(handle.to_stream(scope)));
        for chunk in input.chunks(8192) {
            let frontier = chunk[0].frontier - chunk[0].frontier % 10;
            if frontier > *handle.time() {
                handle.advance_to(frontier);
            }
            handle.send_batch(&mut chunk.to_vec());
            worker.step();
        }
        handle.close();
        while !probe.done() {
            worker.step();
        }
    })
}

/// Events `[key, amount]` over `keys` keys, 10 per millisecond of event time, with up to 2 s of
/// disorder.
fn events(keys: i64) -> Vec<Event<Record>> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    stamped((0..EVENTS).map(|i| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let time = 1_700_000_000_000 + i / 10 - x % 2_000;
        let record: Record = vec![
            Value::Int((x >> 20) as i64 % keys),
            Value::Int((x % 50_000) as i64),
        ]
        .into();
        (time, record)
    }))
}

fn window(c: &mut Criterion) {
    let input = events(10_000);
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    for (name, spec) in [
        ("tumbling_60s", WindowSpec::Tumbling { size: 60_000 }),
        (
            "hopping_60s_10s",
            WindowSpec::Hopping {
                size: 60_000,
                slide: 10_000,
            },
        ),
        ("session_5s", WindowSpec::Session { gap: 5_000 }),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| {
                run_stamped(input.clone(), move |events| {
                    let WindowStreams { results, .. } = events.window_aggregate(
                        spec,
                        |r: &Record| r[0].clone(),
                        FieldAggregates(vec![
                            (AggregateKind::Count, 0),
                            (AggregateKind::Sum, 1),
                            (AggregateKind::Max, 1),
                        ]),
                    );
                    results.probe().0
                })
            })
        });
    }
    group.finish();
}

/// The generator's payments in fraud mode (100 000 accounts, an incident every 1 000, spans of
/// 10 s), stamped as one partition with 2 s of out-of-orderness.
fn payments() -> Vec<Event<CardPayment>> {
    let mut generator = Generator::new(common::payments(1, EVENTS, true));
    let mut payments = Vec::new();
    while !generator.finished() {
        generator.take(8192, |t| {
            let payment = CardPayment {
                id: compact_str::format_compact!("t{}", t.seq),
                account: Id::Int(t.account_id),
                amount: t.amount_cents,
                merchant: compact_str::format_compact!("m{}", t.merchant),
                country: t.country.into(),
            };
            payments.push((t.ts, payment));
        });
    }
    stamped(payments)
}

/// Runs `input` through the pattern operator with `pattern`, per `key`, on one worker.
fn detect<D, K, P>(input: &[Event<D>], key: fn(&D) -> K, pattern: P)
where
    D: ExchangeData + Clone + Ord + Sync,
    K: Hash + Ord + Clone + serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    P: Pattern<D> + Send + Sync,
{
    run_stamped(input.to_vec(), move |data| {
        let PatternStreams { matches, .. } = data.detect(Detection::default(), key, pattern);
        matches.probe().0
    })
}

/// The account a payment is on: the fraud rules' key.
fn account(payment: &CardPayment) -> Id {
    payment.account.clone()
}

fn pattern(c: &mut Criterion) {
    let input = payments();
    let span = 10_000;
    let mut group = c.benchmark_group("pattern");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("velocity", |b| {
        b.iter(|| {
            detect(
                &input,
                account,
                Velocity {
                    count: Some(5),
                    amount: Some(100_000),
                    within: span,
                },
            )
        })
    });
    let rules = (
        Suppressed {
            pattern: Velocity {
                count: Some(5),
                amount: Some(100_000),
                within: span,
            },
            period: span,
        },
        Suppressed {
            pattern: SmallThenLarge {
                small_below: 100,
                large_above: 50_000,
                within: span,
            },
            period: span,
        },
        Suppressed {
            pattern: AmountSpike {
                factor: 5.0,
                history: 10,
                min_history: 4,
            },
            period: span,
        },
        Suppressed {
            pattern: ImpossibleTravel { within: span },
            period: span,
        },
        Suppressed {
            pattern: CardTesting {
                merchants: 3,
                small_below: 100,
                within: span,
            },
            period: span,
        },
    );
    group.bench_function("five_fraud_rules", |b| {
        b.iter(|| detect(&input, account, rules.clone()))
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let schema = Schema::of(
        &[
            ("account_id", FieldType::Int, true),
            ("amount_cents", FieldType::Int, true),
            ("ts", FieldType::Timestamp, true),
        ],
        "ts",
    )
    .unwrap();
    let line = br#"{"txn_id":"t17","account_id":70457,"amount_cents":852,"merchant":"m4425","country":"PT","ts":1699999998798}"#;
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_line_3_of_6_fields", |b| {
        b.iter(|| schema.decode(black_box(line)).unwrap())
    });
    group.finish();
}

fn watermark(c: &mut Criterion) {
    let now = std::time::Instant::now();
    let mut group = c.benchmark_group("watermark");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stamp_4_partitions", |b| {
        let mut marks = Watermarks::new(4, std::time::Duration::from_secs(2), None, now);
        let mut t = 1_700_000_000_000u64;
        b.iter(|| {
            t += 1;
            black_box(marks.stamp((t % 4) as usize, t - t % 1_500, now))
        })
    });
    group.finish();
}

fn aggregate(c: &mut Criterion) {
    let aggs = FieldAggregates(vec![
        (AggregateKind::Count, 0),
        (AggregateKind::Sum, 1),
        (AggregateKind::Max, 1),
    ]);
    let record: Record = vec![Value::Int(7), Value::Int(1234)].into();
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(1));
    let empty = || {
        let mut state = vec![AggregateCell::default(); aggs.width()];
        aggs.init(&mut state);
        state
    };
    group.bench_function("add_count_sum_max", |b| {
        let mut state = empty();
        b.iter(|| aggs.add(&mut state, black_box(&record)))
    });
    group.bench_function("merge_count_sum_max", |b| {
        let mut state = empty();
        let mut other = empty();
        aggs.add(&mut other, &record);
        b.iter(|| aggs.merge(&mut state, black_box(&other)))
    });
    group.finish();
}

/// The generator's transactions as records of all six of its fields, and their schema.
fn transaction_records() -> (Schema, Vec<Record>) {
    let fields = eddy::sources::generator::FIELDS.map(|name| {
        let ty = match name {
            "txn_id" | "merchant" | "country" => FieldType::String,
            "ts" => FieldType::Timestamp,
            _ => FieldType::Int,
        };
        (name, ty, true)
    });
    let schema = Schema::of(&fields, "ts").unwrap();
    let mut generator = Generator::new(common::payments(1, EVENTS, false));
    let mut records = Vec::new();
    while !generator.finished() {
        generator.take(8192, |t| {
            records.push((0..6).map(|f| t.field(f)).collect::<Record>());
        });
    }
    (schema, records)
}

/// The predicates of `common::ROUTES`, compiled against `schema`.
fn route_predicates(schema: &Schema) -> Vec<Predicate> {
    common::ROUTES
        .iter()
        .map(|(_, when)| Predicate::compile(when, schema).unwrap())
        .collect()
}

/// The ten routes' predicates on every event: compiled into closures, and, for comparison, run
/// by the `cel` crate's interpreter with the event's fields as variables.
fn predicate(c: &mut Criterion) {
    let (schema, records) = transaction_records();
    let compiled = route_predicates(&schema);
    let mut group = c.benchmark_group("predicate");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    group.bench_function("ten_routes_compiled", |b| {
        b.iter(|| {
            let matches: usize = records
                .iter()
                .map(|r| compiled.iter().filter(|p| p.holds(black_box(r))).count())
                .sum();
            matches
        })
    });
    let programs: Vec<cel::Program> = common::ROUTES
        .iter()
        .map(|(_, when)| cel::Program::compile(when).unwrap())
        .collect();
    let few = &records[..records.len() / 10];
    group.throughput(Throughput::Elements(few.len() as u64));
    group.bench_function("ten_routes_cel_interpreter", |b| {
        b.iter(|| {
            let mut matches = 0;
            for record in few {
                let mut context = cel::Context::default();
                for (field, value) in schema.fields().iter().zip(record.iter()) {
                    let value = match value {
                        Value::Int(i) => cel::Value::Int(*i),
                        Value::Str(s) => cel::Value::from(s.as_str()),
                        other => unreachable!("{other:?}"),
                    };
                    context.add_variable_from_value(field.name.as_str(), value);
                }
                matches += programs
                    .iter()
                    .filter(|p| matches!(p.execute(&context), Ok(cel::Value::Bool(true))))
                    .count();
            }
            matches
        })
    });
    group.finish();
}

/// The route operator with the ten routes' predicates and a default output, on one worker.
fn route(c: &mut Criterion) {
    let (schema, records) = transaction_records();
    let predicates = route_predicates(&schema);
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    group.bench_function("ten_routes_and_default", |b| {
        // The records are cloned outside the measurement, and moved into the dataflow.
        let setup = || (records.clone(), predicates.clone());
        b.iter_batched(
            setup,
            |(mut records, predicates)| {
                timely::execute_directly(move |worker| {
                    let mut handle = InputHandle::new();
                    let probe = worker.dataflow::<u64, _, _>(|scope| {
                        let holds = predicates
                            .into_iter()
                            .map(|p| move |r: &Record| p.holds(r))
                            .collect();
                        let Routed { matched, unmatched } =
                            handle.to_stream(scope).route("bench", holds);
                        scope
                            .concatenate(matched.into_iter().chain([unmatched]))
                            .probe()
                            .0
                    });
                    while !records.is_empty() {
                        let mut batch: Vec<Record> =
                            records.drain(..records.len().min(8192)).collect();
                        handle.send_batch(&mut batch);
                        worker.step();
                    }
                    handle.close();
                    while !probe.done() {
                        worker.step();
                    }
                })
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Keys of the enrichment's stream, each a row of its table.
const TABLE_KEYS: i64 = 100_000;

/// Enriching events over 100k keys with a table of those keys arranged by key (built at time 0,
/// in each iteration: the figure counts only the events).
fn enrich(c: &mut Criterion) {
    let input = events(TABLE_KEYS);
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("table_100k_keys", |b| {
        b.iter(|| {
            run_stamped(input.clone(), |events| {
                // A view's rows: per key, two cells (column, JSON text).
                let table = (0..TABLE_KEYS)
                    .flat_map(|k| {
                        [
                            (Id::Int(k), (0, format!("\"tier{}\"", k % 4))),
                            (Id::Int(k), (1, (k * 37 % 1_000).to_string())),
                        ]
                    })
                    .map(|row| (row, 0u64, 1isize))
                    .to_stream(events.scope())
                    .as_collection()
                    .arrange_by_key();
                events
                    .enrich_with(
                        table,
                        |event: &Event<Record>| Id::of(&event.data[0]),
                        |event| event.time.max(event.frontier),
                        |event, cells: &[((usize, String), isize)]| {
                            let mut record = event.data.into_vec();
                            record.extend(
                                cells
                                    .iter()
                                    .map(|((_, json), _)| Value::Str(json.as_str().into())),
                            );
                            Some(record.into_boxed_slice())
                        },
                    )
                    .probe()
                    .0
            })
        })
    });
    group.finish();
}

/// Keeping the 5 latest amounts of each of 10k keys (20 each), counted at the end of 10 ms ticks.
fn recent(c: &mut Criterion) {
    let input = events(10_000);
    let mut group = c.benchmark_group("recent");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function("10k_keys_keep_5", |b| {
        b.iter(|| {
            run_stamped(input.clone(), |events| {
                events
                    .map(|event| {
                        let [Value::Int(key), Value::Int(amount)] = *event.data else {
                            unreachable!("events are [key, amount]")
                        };
                        // As a view's `recent` column: at the end of the event's tick.
                        let t = event.time.max(event.frontier);
                        (key, (event.time, amount), t - t % 10 + 9)
                    })
                    .keep_recent(|_| 5, None)
                    .probe()
                    .0
            })
        })
    });
    group.finish();
}

/// The engagement example job, for its command processor, orchestrator and source schemas.
fn engagement_job() -> Job {
    let text = include_str!("../examples/jobs/engagement.toml");
    Job::parse_with(Path::new("examples/jobs/engagement.toml"), text, &|name| {
        let value = match name {
            "EDDY_CPAAS_URL" => "http://localhost",
            _ => "bench",
        };
        Some(value.into())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The feed of `common::command_lines` (`EVENTS` commands: every user registers, then purchases
/// and preference changes, one in ten invalid), one in twenty sent again 1 000 commands (100 ms)
/// later, as the engagement job's command processor reads them.
fn commands(job: &Job) -> Vec<Event<Command>> {
    let spec = &job.commands[0];
    let lines = common::command_lines(EVENTS);
    let resent = (0..lines.len()).flat_map(|i| {
        let again = (i >= 1_000 && i % 20 == 0).then(|| i - 1_000);
        std::iter::once(i).chain(again)
    });
    let fields = [spec.id, spec.user, spec.kind];
    stamped(resent.map(|i| {
        let (time, record) = decoded(job, spec.source, &lines[i]);
        (time, Command::from_record(record, fields))
    }))
}

/// `line` decoded with the schema of the job's source `source`.
fn decoded(job: &Job, source: usize, line: &str) -> (u64, Record) {
    let schema = &job.sources[source].schema;
    schema
        .decode(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// What the engagement job's orchestrator reads: `EVENTS` user events, 10 000 per second of event
/// time (every user registers, then purchases and preference changes; one in ten a rejected
/// command), and a fraud alert on the user's card after every 50th event.
fn happenings(job: &Job) -> Vec<Event<Happening>> {
    let spec = &job.orchestrators[0];
    let alerts = spec.alerts.expect("the engagement job reads alerts");
    let users = EVENTS / 10;
    stamped((0..EVENTS).flat_map(|i| {
        let time = 1_700_000_000_000 + i / 10;
        let user = if i < users { i } else { i * 7919 % users };
        let fields = match (i < users, i % 10) {
            (true, _) => format!(
                r#""event":"UserRegistered","name":"U{i}","phone":"+4479{i:08}","email":"u{i}@example.com","channel":"sms""#
            ),
            (false, 0) => r#""event":"CommandRejected""#.to_string(),
            (false, 1) => r#""event":"PreferencesUpdated","channel":"email""#.to_string(),
            _ => r#""event":"PurchaseInitiated","amount_cents":1500,"item":"ticket""#.to_string(),
        };
        let line = format!(r#"{{"event_id":"e{i}","user_id":{user},"time":{time},{fields}}}"#);
        let (time, record) = decoded(job, spec.events.source, &line);
        let event = (time, Happening::event(record, spec.events.indexes()));
        let alert = (i % 50 == 49).then(|| {
            let line = format!(
                r#"{{"alert_id":"a{i}","rule":"velocity","account_id":{user},"time":{time},"detail":"5 payments within 10 s"}}"#
            );
            let (time, record) = decoded(job, alerts.source, &line);
            (time, Happening::alert(record, alerts.indexes()))
        });
        std::iter::once(event).chain(alert)
    }))
}

/// Benchmarks `pattern` per user on `input`, on one worker, as the group `name`.
fn per_user<D, P>(c: &mut Criterion, name: &str, input: &[Event<D>], user: fn(&D) -> Id, pattern: P)
where
    D: ExchangeData + Clone + Ord + Sync,
    P: Pattern<D> + Clone + Send + Sync,
{
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(input.len() as u64));
    group.sample_size(10);
    group.bench_function("engagement_job", |b| {
        b.iter(|| detect(input, user, pattern.clone()))
    });
    group.finish();
}

/// The engagement job's command processor on [`commands`]: validation, users and deduplication.
fn command(c: &mut Criterion) {
    let job = engagement_job();
    let processor = job.commands[0].processor.clone();
    per_user(
        c,
        "command",
        &commands(&job),
        |c: &Command| c.user.clone(),
        processor,
    );
}

/// The engagement job's orchestrator on [`happenings`]: profiles, and requests rendered from
/// templates.
fn orchestrate(c: &mut Criterion) {
    let job = engagement_job();
    let orchestrator = job.orchestrators[0].orchestrator.clone();
    per_user(
        c,
        "orchestrate",
        &happenings(&job),
        |h: &Happening| h.user.clone(),
        orchestrator,
    );
}

criterion_group!(
    benches,
    window,
    pattern,
    watermark,
    aggregate,
    decode,
    predicate,
    route,
    enrich,
    recent,
    command,
    orchestrate
);
criterion_main!(benches);
