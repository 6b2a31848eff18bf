//! The domain dataflows' logic: fraud rules on card payments, the command processor and the
//! orchestrator of the customer-engagement flow. Each is a [`Pattern`](crate::operators::pattern::Pattern)
//! run by the generic pattern operator; none knows of sources, sinks or job files.

pub mod command;
pub mod fraud;
pub mod orchestrate;
