//! Layer 6 of 7: what errshim does about a call, between the hook and the lines it writes.
//! Which calls take the careful path (`armed`); what happens after a call failed: the rule's
//! decision, the event, errno (`failure`: `shutdown`'s ENOTCONN is handled there); the fault
//! engine: the installed rule set, its counters, the control file, and whether a fault fires
//! for one call (`fault`); where a fault is one Linux could produce (`faithful`); what a fault makes happen later: a stall's end, a slow close's FIN (`timer`); and the process's configuration, set once by the constructor (here).
//!
//! May use: `text`, `sys`, `policy`, `observe`, `report`.

use crate::policy::config::Config;
use crate::sys::once::SetOnce;

pub mod armed;
#[cfg(not(test))]
pub mod failure;
#[cfg(not(test))]
pub mod faithful;
pub mod fault;
pub mod timer;

static CONFIG: SetOnce<Config> = SetOnce::new();

/// The configuration, once the constructor has finished; `None` before that or when disabled.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

/// Publishes the configuration (from the constructor, once). Inline: it runs in the
/// constructor's code section (see `lib.rs`).
#[inline(always)]
pub fn set_config(cfg: Config) {
    let _ = CONFIG.set(cfg);
}
