//! The listing `eddy checkpoints` prints: per checkpoint, its id, frontier time, size and every
//! source's positions.

use std::fmt::Write;

use super::manifest::Manifest;
use super::store::Listed;

/// `listed` (newest first, as [`CheckpointStore::checkpoints`](super::CheckpointStore) gives
/// it) as text: a line per checkpoint, then a line per source with its partitions' offsets.
///
/// # Examples
///
/// ```
/// use eddy::state::{Manifest, Position, listing};
///
/// let manifest = Manifest {
///     id: 7,
///     parent: None,
///     job: "q1".into(),
///     history: 1,
///     frontier: 1_700_000_000_000,
///     created_ms: 1_700_000_005_000,
///     peers: 2,
///     sections: Default::default(),
///     positions: [("in".into(), [("0".into(), Position::at(42))].into())].into(),
///     settings: Default::default(),
/// };
/// let text = listing(&[(7, Ok(manifest)), (6, Err("checksum mismatch".into()))]);
/// assert_eq!(
///     text,
///     "checkpoint 7: frontier 2023-11-14T22:13:20Z (1700000000000), taken \
///      2023-11-14T22:13:25Z, 0 B (0 B written), 2 workers\n  \
///      in: 0=42\ncheckpoint 6: unreadable: checksum mismatch\n"
/// );
/// ```
pub fn listing(listed: &[Listed]) -> String {
    let mut out = String::new();
    for (id, manifest) in listed {
        match manifest {
            Ok(manifest) => describe(&mut out, manifest),
            Err(reason) => writeln!(out, "checkpoint {id}: unreadable: {reason}").unwrap(),
        }
    }
    out
}

fn describe(out: &mut String, m: &Manifest) {
    writeln!(
        out,
        "checkpoint {}: frontier {} ({}), taken {}, {} ({} written), {} workers",
        m.id,
        time(m.frontier),
        m.frontier,
        time(m.created_ms),
        bytes(m.size()),
        bytes(m.written()),
        m.peers
    )
    .unwrap();
    for (source, partitions) in &m.positions {
        let offsets: Vec<String> = partitions
            .iter()
            .map(|(partition, position)| format!("{partition}={}", position.offset))
            .collect();
        writeln!(out, "  {source}: {}", offsets.join(" ")).unwrap();
    }
}

/// Milliseconds since the epoch as an RFC 3339 time, or `-` when out of range.
fn time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "-".into(), |t| t.to_string())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_given_in_binary_units() {
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
        assert_eq!(time(u64::MAX), "-");
    }
}
