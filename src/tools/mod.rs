//! The tools of the `eddy` binary and of the tests and benchmarks, built on the engine but no
//! part of it: the demo, a local stand-in for the CPaaS the notification adapter calls, and the
//! load generator. No engine module imports them; their API changes with the CLI's needs.

pub mod cpaas;
pub mod demo;
pub mod produce;
