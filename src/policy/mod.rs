//! Layer 3 of 7: what the user asked for, as pure functions of text, unit-tested in isolation.
//! The rule grammar and the decision for a failed call (`rules`), the fault grammar (`faults`),
//! the configuration from `ERRSHIM_*` variables with its error lines (`config`). Nothing here
//! makes a system call or keeps state.
//!
//! May use: `text`, `sys::errno`, `sys::socket`.
#![deny(unsafe_code)]

pub mod config;
pub mod faults;
#[cfg(test)]
mod fuzz;
pub mod rules;
