//! Layer 5 of 7: what errshim writes. An event's arguments, context and line, in text or JSON
//! (`event`); where lines go, never blocking and never keeping a descriptor (`logger`); the
//! counts and the exit summary (`summary`); errshim's own backtraces (`backtrace`).
//!
//! May use: `text`, `sys`, `policy`, `observe`.

#[cfg(not(test))]
pub mod backtrace;
pub mod event;
pub mod logger;
pub mod summary;
