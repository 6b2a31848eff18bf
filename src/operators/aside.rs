//! Input set aside while a checkpoint is pending: a stateful operator keeps each message at or
//! past the checkpoint's frontier, with a capability per output the message makes output on,
//! until it has handed off its state (the contract of [`crate::state::SectionCheckpoint`]), and
//! then folds the messages in as if they had just arrived.

use timely::dataflow::operators::{Capability, InputCapability};

/// Messages set aside, in arrival order, each with capabilities at its time on outputs `0..N`.
pub struct Aside<D, const N: usize> {
    messages: Vec<([Capability<u64>; N], Vec<D>)>,
}

impl<D, const N: usize> Default for Aside<D, N> {
    fn default() -> Self {
        Aside {
            messages: Vec::new(),
        }
    }
}

impl<D, const N: usize> Aside<D, N> {
    /// Sets aside the `data` of an input message at timely time `time`, leaving `data` empty.
    pub fn keep(&mut self, cap: &InputCapability<u64>, time: u64, data: &mut Vec<D>) {
        let caps = std::array::from_fn(|port| cap.delayed(&time, port));
        self.messages.push((caps, std::mem::take(data)));
    }

    /// Takes the messages set aside before `frontier` (all of them with `None`), oldest first,
    /// each with its capabilities (whose time is the message's) and data. Called with the
    /// frontier of the checkpoint pending now: once the one they waited for is handed off, the
    /// next one is at a later frontier than any of them, and all of them are taken.
    pub fn take_before(&mut self, frontier: Option<u64>) -> Vec<([Capability<u64>; N], Vec<D>)> {
        let (wait, ready) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition(|(caps, _)| frontier.is_some_and(|f| *caps[0].time() >= f));
        self.messages = wait;
        ready
    }

    /// The times of the messages set aside.
    pub fn times(&self) -> impl Iterator<Item = u64> + '_ {
        self.messages.iter().map(|(caps, _)| *caps[0].time())
    }
}

/// Where the output made from one input message may go: the message's own capability, or the
/// ones set aside with it.
pub enum MessageCaps<'a, const N: usize> {
    /// A message as it arrives.
    Input(&'a InputCapability<u64>),
    /// A message set aside.
    Kept(&'a [Capability<u64>; N]),
}

impl<const N: usize> MessageCaps<'_, N> {
    /// A capability for `time` (at or after the message's) on output `port`.
    pub fn delayed(&self, time: u64, port: usize) -> Capability<u64> {
        match self {
            MessageCaps::Input(cap) => cap.delayed(&time, port),
            MessageCaps::Kept(caps) => caps[port].delayed(&time),
        }
    }
}
