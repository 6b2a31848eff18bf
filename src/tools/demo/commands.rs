//! The demo's command feed: registers the card holders of the fraud incidents the transaction
//! feed will inject (so their alerts reach them by SMS), and sends them purchases and preference
//! changes, with a share of invalid and repeated commands that the command processor must reject
//! or ignore.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::kafka::client_config;

/// Where the fraud incidents' card holders are: the transaction feed gives incident `i` the
/// account `first_account + i`, starting `i × seconds_apart` seconds after the feed started.
#[derive(Clone, Copy, Debug)]
pub struct CardHolders {
    /// The account of the first incident.
    pub first_account: u64,
    /// Seconds between incidents.
    pub seconds_apart: f64,
}

/// Sends commands to `topic` until `stop` is set; counts them in `sent`.
pub fn feed_commands(
    brokers: &str,
    topic: &str,
    holders: CardHolders,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let producer: BaseProducer = client_config(
        &[("linger.ms", "5")],
        &[("bootstrap.servers".into(), brokers.into())],
    )
    .create()
    .context("creating the command producer")?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let started = Instant::now();
    let mut registered = 0u64;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Register every card holder a second before their incident starts.
        let due = ((started.elapsed().as_secs_f64() + 1.0) / holders.seconds_apart) as u64 + 1;
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let mut commands = Vec::new();
        while registered < due {
            let user = holders.first_account + registered;
            let channel = if user.is_multiple_of(3) {
                "email"
            } else {
                "sms"
            };
            // One registration in ten has a malformed phone number, and is rejected.
            let phone = if rng.random_ratio(1, 10) {
                format!("0{user}")
            } else {
                format!("+4479{user:08}")
            };
            commands.push(json!({"type": "RegisterUser", "user_id": user,
                "name": format!("Holder {user}"), "phone": phone,
                "email": format!("holder{user}@example.com"), "channel": channel}));
            registered += 1;
        }
        if registered > 0 {
            let user = holders.first_account + rng.random_range(0..registered);
            commands.push(match rng.random_range(0..10) {
                0 => json!({"type": "UpdatePreferences", "user_id": user,
                    "channel": if rng.random_bool(0.5) { "sms" } else { "email" }}),
                1 => json!({"type": "InitiatePurchase", "user_id": user, "amount_cents": -100,
                    "item": "refund?"}),
                _ => json!({"type": "InitiatePurchase", "user_id": user,
                    "amount_cents": rng.random_range(500..20_000), "item": "concert ticket"}),
            });
        }
        for mut command in commands {
            seq += 1;
            command["command_id"] = json!(format!("cmd-{seq}"));
            command["ts"] = json!(now_ms);
            let payload = command.to_string();
            let key = command["user_id"].to_string();
            // One command in fifty is delivered twice: the processor must ignore the repeat.
            let copies = if seq.is_multiple_of(50) { 2 } else { 1 };
            for _ in 0..copies {
                producer
                    .send(BaseRecord::to(topic).payload(&payload).key(&key))
                    .map_err(|(e, _)| e)
                    .context("producing a command")?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        producer.poll(Duration::from_millis(100));
    }
    producer
        .flush(Duration::from_secs(10))
        .context("flushing the command producer")?;
    Ok(())
}
