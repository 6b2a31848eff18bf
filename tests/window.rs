//! Window semantics of the `window_aggregate` operator, fed directly through a timely input with
//! the stamps a source would give: out-of-order records within the bound, late ones beyond it,
//! window edges, hopping windows, session merging, and the same results on 1 and 2 workers.

mod common;

use std::sync::{Arc, Mutex};

use eddy::{
    AggregateKind, Event, FieldAggregates, Record, Value, WindowAggregate, WindowSpec,
    WindowStreams, Windows,
};
use timely::dataflow::InputHandle;
use timely::dataflow::operators::{Inspect, Probe};

/// (key, start, end, count, sum)
type Row = (i64, i64, i64, i64, i64);

/// Stamps `events` (key, time, amount) as one partition with out-of-orderness `delay`, runs them
/// through `window_aggregate` on `workers` workers, and returns the sorted results and the event
/// times of the late events.
fn run(
    spec: WindowSpec,
    lateness: u64,
    delay: u64,
    events: &[(i64, u64, i64)],
    workers: usize,
) -> (Vec<Row>, Vec<u64>) {
    let windows = Windows {
        spec,
        lateness,
        emitted_before: 0,
        delivery: None,
        checkpoint: None,
    };
    run_windows(windows, delay, events, workers)
}

/// [`run`] with the windows' settings spelled out.
fn run_windows(
    windows: Windows,
    delay: u64,
    events: &[(i64, u64, i64)],
    workers: usize,
) -> (Vec<Row>, Vec<u64>) {
    // Windows may hold a probe, which stays on its worker: rebuilt there from these.
    let Windows {
        spec,
        lateness,
        emitted_before,
        ..
    } = windows;
    let mut stamped = Vec::new();
    let mut max_plus_one = 0u64;
    for &(key, time, amount) in events {
        let frontier = max_plus_one.saturating_sub(delay);
        max_plus_one = max_plus_one.max(time + 1);
        let record: Record = vec![Value::Int(key), Value::Int(amount)].into();
        stamped.push(Event {
            time,
            frontier,
            data: record,
        });
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(Vec::new()));
    let (r, l) = (Arc::clone(&results), Arc::clone(&late));
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut input = InputHandle::new();
        let (r, l) = (Arc::clone(&r), Arc::clone(&l));
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let WindowStreams { results, late, .. } = input.to_stream(scope).window_aggregate(
                Windows {
                    spec,
                    lateness,
                    emitted_before,
                    delivery: None,
                    checkpoint: None,
                },
                |record: &Record| record[0].clone(),
                FieldAggregates(vec![(AggregateKind::Count, 0), (AggregateKind::Sum, 1)]),
            );
            late.inspect(move |e: &Event<Record>| l.lock().unwrap().push(e.time));
            results
                .inspect(move |w| {
                    let (Value::Int(key), [Value::Int(count), Value::Int(sum)]) =
                        (&w.key, &w.value[..])
                    else {
                        panic!("unexpected result {w:?}");
                    };
                    r.lock().unwrap().push((*key, w.start, w.end, *count, *sum));
                })
                .probe()
                .0
        });
        if worker.index() == 0 {
            for (sent, event) in stamped.clone().into_iter().enumerate() {
                // The source sends at its frontier, which never exceeds a record's stamp.
                if event.frontier > *input.time() {
                    input.advance_to(event.frontier);
                }
                input.send(event);
                // Windows fire, and their state is freed, while later records arrive.
                if sent % 64 == 63 {
                    worker.step();
                }
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut results = results.lock().unwrap().clone();
    results.sort();
    let mut late = late.lock().unwrap().clone();
    late.sort();
    (results, late)
}

#[test]
fn tumbling_counts_disorder_within_the_bound_and_routes_later_records_to_late() {
    let events = [
        (1, 1_000, 1),
        (1, 9_999, 2),  // the window's last millisecond
        (1, 10_000, 4), // the next window's first
        (1, 8_500, 8),  // behind the highest seen, within 2 s: counted
        (1, 12_500, 16),
        (1, 9_000, 32), // the watermark (10 500) passed its window's end: late
        (2, 20_000, 64),
    ];
    let (rows, late) = run(WindowSpec::Tumbling { size: 10_000 }, 0, 2_000, &events, 1);
    assert_eq!(
        rows,
        vec![
            (1, 0, 10_000, 3, 11),
            (1, 10_000, 20_000, 2, 20),
            (2, 20_000, 30_000, 1, 64),
        ]
    );
    assert_eq!(late, vec![9_000]);
}

#[test]
fn allowed_lateness_keeps_windows_open_longer() {
    let events = [
        (1, 1_000, 1),
        (1, 12_500, 2),
        (1, 9_000, 4),
        (1, 30_000, 8),
        (1, 9_500, 16),
    ];
    let (rows, late) = run(
        WindowSpec::Tumbling { size: 10_000 },
        5_000,
        2_000,
        &events,
        1,
    );
    // 9 000 arrives at watermark 10 500 < 10 000 + 5 000 - 1: counted; 9 500 at 28 000: late.
    assert_eq!(
        rows,
        vec![
            (1, 0, 10_000, 2, 5),
            (1, 10_000, 20_000, 1, 2),
            (1, 30_000, 40_000, 1, 8)
        ]
    );
    assert_eq!(late, vec![9_500]);
}

#[test]
fn hopping_records_count_only_in_the_windows_still_open() {
    // Windows of 10 s every 5 s. 12 000 belongs to [5 000, 15 000) and [10 000, 20 000).
    let events = [(1, 4_000, 1), (1, 16_000, 2), (1, 12_000, 4), (1, 9_000, 8)];
    let (rows, late) = run(
        WindowSpec::Hopping {
            size: 10_000,
            slide: 5_000,
        },
        0,
        2_000,
        &events,
        1,
    );
    // At 12 000 the watermark is 14 000: [5 000, 15 000) is still open (fires at 14 999).
    // At 9 000 the watermark is still 14 000: [0, 10 000) has closed, [5 000, 15 000) has not.
    assert_eq!(
        rows,
        vec![
            (1, -5_000, 5_000, 1, 1),
            (1, 0, 10_000, 1, 1),
            (1, 5_000, 15_000, 2, 12),
            (1, 10_000, 20_000, 2, 6),
            (1, 15_000, 25_000, 1, 2),
        ]
    );
    assert!(late.is_empty());
    let (_, late) = run(
        WindowSpec::Hopping {
            size: 10_000,
            slide: 5_000,
        },
        0,
        0,
        &[(1, 20_000, 1), (1, 9_000, 2)],
        1,
    );
    assert_eq!(
        late,
        vec![9_000],
        "a record whose windows have all closed is late"
    );
}

#[test]
fn sessions_merge_when_a_record_bridges_or_touches_them() {
    let events = [
        (1, 0, 1),
        (1, 1_000, 2),
        (1, 5_000, 4),   // more than the gap after 1 000: a second session
        (1, 3_500, 8),   // bridges [0, 4 000) and [5 000, 8 000)
        (1, 11_000, 16), // [11 000, 14 000)
        (1, 14_000, 32), // [14 000, 17 000) touches it: merged, as in Flink
        (2, 2_000, 64),
    ];
    let (rows, late) = run(WindowSpec::Session { gap: 3_000 }, 0, 100_000, &events, 1);
    assert_eq!(
        rows,
        vec![
            (1, 0, 8_000, 4, 15),
            (1, 11_000, 17_000, 2, 48),
            (2, 2_000, 5_000, 1, 64)
        ]
    );
    assert!(late.is_empty());
}

#[test]
fn a_late_record_that_would_open_a_closed_session_is_late() {
    let events = [(1, 0, 1), (1, 20_000, 2), (1, 1_000, 4), (1, 19_000, 8)];
    let (rows, late) = run(WindowSpec::Session { gap: 3_000 }, 0, 1_000, &events, 1);
    // 1 000 arrives at watermark 19 000: its session [1 000, 4 000) has closed. 19 000 joins
    // the open session [20 000, 23 000).
    assert_eq!(rows, vec![(1, 0, 3_000, 1, 1), (1, 19_000, 23_000, 2, 10)]);
    assert_eq!(late, vec![1_000]);
}

#[test]
fn results_equal_the_reference_and_do_not_depend_on_the_number_of_workers() {
    let events = common::transactions(20_000, 50, 1_500, 97, 8_000);
    // The same, with keys that change every 1.3 s: the operator frees the state of keys that are
    // gone and gives their places to new ones.
    let churning: Vec<_> = events
        .iter()
        .map(|&(key, time, amount)| (key + 1_000 * (time / 1_300) as i64, time, amount))
        .collect();
    // And with thousands of keys per window: each worker's states span several chunks of slots,
    // and a window's results several batches.
    let wide = common::transactions(20_000, 5_000, 1_500, 97, 8_000);
    for events in [&events, &churning, &wide] {
        equal_the_reference(WindowSpec::Tumbling { size: 5_000 }, events);
        equal_the_reference(
            WindowSpec::Hopping {
                size: 6_000,
                slide: 2_000,
            },
            events,
        );
    }
}

/// Windows of tens of thousands of keys (states over many chunks, results over many batches
/// and over several activations while later records keep arriving, slots reused as keys come
/// and go): every result is still there, once.
#[test]
fn windows_of_many_keys_equal_the_reference() {
    // About 22 000 keys in each 30 s window: more than one activation's share on each worker.
    let events = common::transactions(60_000, 50_000, 1_500, 97, 40_000);
    equal_the_reference(WindowSpec::Tumbling { size: 30_000 }, &events);
    equal_the_reference(
        WindowSpec::Hopping {
            size: 30_000,
            slide: 10_000,
        },
        &events,
    );
}

/// The operator's rows and late count for `events` (out-of-orderness 1.5 s) equal the
/// reference's, on 1 and on 2 workers; the input must have late records.
fn equal_the_reference(spec: WindowSpec, events: &[common::Txn]) {
    let (size, slide) = match spec {
        WindowSpec::Tumbling { size } => (size as i64, size as i64),
        WindowSpec::Hopping { size, slide } => (size as i64, slide as i64),
        WindowSpec::Session { .. } => unreachable!("the reference has no sessions"),
    };
    let (expected, expected_late) = common::reference_windows(events, 1_500, size, slide, 0);
    let expected: Vec<Row> = expected
        .iter()
        .map(|((key, start), (count, sum, _))| (*key, *start, start + size, *count, *sum))
        .collect();
    for workers in [1, 2] {
        let (rows, late) = run(spec, 0, 1_500, events, workers);
        assert_eq!(rows, expected, "{spec:?} on {workers} workers");
        assert_eq!(late.len(), expected_late, "{spec:?} on {workers} workers");
    }
    assert!(expected_late > 0, "the input has late records");
}

#[test]
fn windows_an_earlier_run_emitted_take_no_replayed_records() {
    // A restart replays these; the checkpoint says windows firing before 20 000 were emitted.
    let events = [(1, 5_000, 1), (1, 15_000, 2), (1, 25_000, 4), (1, 8_000, 8)];
    let tumbling = Windows {
        spec: WindowSpec::Tumbling { size: 10_000 },
        lateness: 0,
        emitted_before: 20_000,
        delivery: None,
        checkpoint: None,
    };
    let (rows, late) = run_windows(tumbling, 100_000, &events, 1);
    assert_eq!(
        rows,
        vec![(1, 10_000, 20_000, 1, 2), (1, 20_000, 30_000, 1, 4)]
    );
    assert!(
        late.is_empty(),
        "records of emitted windows are not late: {late:?}"
    );
    // Hopping windows of 10 s every 5 s: 8 000 counts in [5 000, 15 000) only.
    let hopping = Windows {
        spec: WindowSpec::Hopping {
            size: 10_000,
            slide: 5_000,
        },
        lateness: 0,
        emitted_before: 15_000,
        delivery: None,
        checkpoint: None,
    };
    let (rows, _) = run_windows(hopping, 100_000, &[(1, 8_000, 1), (1, 12_000, 2)], 1);
    assert_eq!(
        rows,
        vec![(1, 5_000, 15_000, 2, 3), (1, 10_000, 20_000, 1, 2)]
    );
    // Sessions: one ending (and firing) before 20 000 was emitted; a later one was not.
    let sessions = Windows {
        spec: WindowSpec::Session { gap: 3_000 },
        lateness: 0,
        emitted_before: 20_000,
        delivery: None,
        checkpoint: None,
    };
    let (rows, _) = run_windows(sessions, 100_000, &[(1, 1_000, 1), (1, 30_000, 2)], 1);
    assert_eq!(rows, vec![(1, 30_000, 33_000, 1, 2)]);
}
