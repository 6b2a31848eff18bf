//! What the terminal gets: whether standard error is a terminal a person watches (for live
//! progress that redraws itself) and whether it takes colour. One decision for the whole process,
//! so logs, progress bars and the demo's panel agree.
//!
//! Colour follows the usual conventions (anstream's): never when `NO_COLOR` is set to anything
//! non-empty, always with `CLICOLOR_FORCE`, otherwise only on a terminal that supports it.

use std::io::IsTerminal as _;

use anstream::{AutoStream, ColorChoice};

/// Whether standard error is a terminal: live displays redraw in place there, and print plain
/// periodic lines anywhere else.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Whether what goes to standard error may be coloured.
pub fn stderr_colour() -> bool {
    AutoStream::choice(&std::io::stderr()) != ColorChoice::Never
}
