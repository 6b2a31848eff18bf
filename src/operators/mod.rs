//! Operators: reusable dataflow building blocks, as extension traits on timely streams. They
//! know nothing of sources or sinks.

pub mod aggregate;
pub mod command;
pub mod decode;
pub mod fraud;
pub mod orchestrate;
pub mod pattern;
pub mod predicate;
pub mod route;
pub mod watermark;
pub mod window;
