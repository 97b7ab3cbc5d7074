//! Layer 1 of 7, the bottom: text made on the stack, without allocating and without the
//! program's stdio. A fixed-size line buffer (`fmtbuf`), JSON strings (`json`), outside text made
//! safe for a diagnostic (`escape`), "did you mean" suggestions (`suggest`), timestamps
//! (`timefmt`).
//!
//! May use: nothing of errshim's. Safe code only, but for `fmtbuf`'s buffer, which is not zeroed.
#![deny(unsafe_code)]

pub mod escape;
pub mod fmtbuf;
pub mod json;
pub mod suggest;
pub mod timefmt;
