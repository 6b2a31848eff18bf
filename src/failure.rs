//! How a worker's failure becomes the job's one error: an operator that cannot go on (a file it
//! cannot write, say) calls [`fail`]; a bug panics. Both unwind out of the worker, which
//! [`catch`] turns into a [`Caught`], instead of each thread printing a backtrace as it goes down.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// Whether this thread is inside [`catch`], whose caller reports the panic itself.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message and location of this thread's latest panic inside [`catch`].
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What ended a worker early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caught {
    /// An operator could not go on, and said why (see [`fail`]).
    Failed(String),
    /// A panic: its message and where it was raised.
    Panicked(String),
}

impl fmt::Display for Caught {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caught::Failed(message) => f.write_str(message),
            Caught::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

/// The payload of [`fail`].
struct Failed(String);

/// Ends the worker with `message`, which should say what failed and why (e.g. "sink `csv`:
/// writing out.csv: No space left on device"). For operators, which cannot return errors.
pub fn fail(message: String) -> ! {
    panic::panic_any(Failed(message))
}

/// Runs `f`, catching a [`fail`] or a panic inside it. Neither is printed (a panic is logged at
/// debug level, with the thread's name): the caller reports it. Panics outside `catch` are
/// printed as before.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install_hook();
    let was = CATCHING.with(|c| c.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(was));
    outcome.map_err(|payload| match payload.downcast::<Failed>() {
        Ok(failed) => Caught::Failed(failed.0),
        Err(payload) => Caught::Panicked(
            CAUGHT
                .with(|c| c.take())
                .unwrap_or_else(|| message(payload.as_ref()).to_string()),
        ),
    })
}

/// Set once the job has failed: later panics (timely's threads, as their peers go) are its
/// aftermath, logged at debug level instead of printed.
static AFTERMATH: AtomicBool = AtomicBool::new(false);

/// Says that the job has failed and its error will be reported: panics from now on are only
/// logged at debug level.
pub fn quiet_aftermath() {
    AFTERMATH.store(true, Ordering::Relaxed);
}

/// Chains a hook before the one installed (the default prints the panic) that keeps to itself
/// panics inside [`catch`], those of timely's communication threads, and those after
/// [`quiet_aftermath`]. [`catch`] installs it; a cluster installs it before its threads start.
pub fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if is_communication_thread() || AFTERMATH.load(Ordering::Relaxed) {
                let thread = std::thread::current();
                tracing::debug!(
                    thread = thread.name(),
                    "panicked: {}",
                    message(info.payload())
                );
                return;
            }
            if !CATCHING.with(Cell::get) {
                return previous(info);
            }
            if info.payload().is::<Failed>() {
                return;
            }
            let text = match info.location() {
                Some(at) => format!("{} ({at})", message(info.payload())),
                None => message(info.payload()).to_string(),
            };
            let thread = std::thread::current();
            tracing::debug!(thread = thread.name(), "panicked: {text}");
            CAUGHT.with(|c| *c.borrow_mut() = Some(text));
        }));
    });
}

/// Whether the current thread is one of timely's communication threads, whose panics (a peer's
/// connection closed, say) are the symptom of a failure that the cluster's control plane names.
fn is_communication_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("timely:send-") || name.starts_with("timely:recv-"))
}

/// The text a panic was raised with.
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    match payload.downcast_ref::<&str>() {
        Some(s) => s,
        None => payload
            .downcast_ref::<String>()
            .map_or("(a panic without a message)", String::as_str),
    }
}

#[cfg(test)]
mod tests {
    use super::{Caught, catch, fail};

    #[test]
    fn a_caught_panic_is_its_message_and_location() {
        let caught = catch(|| -> () { panic!("the {} broke", "window") }).unwrap_err();
        let Caught::Panicked(message) = caught else {
            panic!("{caught:?}")
        };
        assert!(
            message.starts_with("the window broke (src/failure.rs:"),
            "{message}"
        );
        assert_eq!(catch(|| 7), Ok(7));
    }

    #[test]
    fn a_failure_is_its_message() {
        let caught = catch(|| -> () { fail("sink `csv`: disk full".into()) });
        assert_eq!(caught, Err(Caught::Failed("sink `csv`: disk full".into())));
    }
}
