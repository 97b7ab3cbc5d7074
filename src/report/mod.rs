//! Layer 5 of 7: what errshim writes. An event's arguments, context and line, in text or JSON
//! (`event`); where lines go, never blocking and never keeping a descriptor (`logger`); the
//! counts and the exit summary (`summary`); the rate limit of lines (`rate`); digests while the
//! program runs (`digest`) and the Prometheus metrics file (`metrics`); errshim's own
//! backtraces (`backtrace`).
//!
//! May use: `text`, `sys`, `policy`, `observe`.

#[cfg(not(test))]
pub mod backtrace;
pub mod digest;
pub mod event;
pub mod logger;
pub mod metrics;
pub mod rate;
pub mod summary;
