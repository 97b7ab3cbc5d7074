//! Which calls take the careful path: one word, `ARMED`, a bit per hooked call, which every
//! hook tests first and which is its only cost when the bit is clear. It is the union of three
//! reasons, each set by the one part of errshim that knows it:
//! - the real function behind the hook is not resolved (all bits until the constructor has
//!   resolved them; `interpose::real`),
//! - the configuration needs the careful path: a rule may turn the call's failure into a
//!   success (it then needs errno from before the call), or `ERRSHIM_COUNT=1` counts its bytes
//!   (`interpose::init`),
//! - some active fault rule names the call, or a control file is watched (`handle::fault`).
//!
//! A read- or write-family call armed for the third reason alone is first consulted quickly
//! (`handle::fault::consult`), and goes on as not armed when no rule fires: the fault engine
//! learns which calls have no other reason from `careful_beyond_faults`.
//!
//! May use: `policy` (for `Call`).

use crate::policy::rules::Call;
use core::sync::atomic::{AtomicU32, Ordering::*};

/// A bit per `Call` that takes the careful path: some active fault rule names it (all bits
/// while a control file is watched), some `ERRSHIM_RULES` rule may turn its failure into a
/// success and so needs errno as it was before the call, `ERRSHIM_COUNT=1` counts its bytes
/// (the read and write families), or a real function behind its hook is not resolved (all
/// bits until the constructor has resolved them: the plain path calls the resolved address
/// without checking it).
static ARMED: AtomicU32 = AtomicU32::new(u32::MAX);
/// The calls with a real function that the constructor did not find (all until it ran).
static UNRESOLVED_CALLS: AtomicU32 = AtomicU32::new(u32::MAX);
/// The calls some active fault rule names (all while a control file is watched: any call may
/// be the one that notices a change).
static FAULT_CALLS: AtomicU32 = AtomicU32::new(0);
/// The calls the configuration arms: those whose failure a rule may turn into a success
/// (`ignore`, `quiet`), and those `ERRSHIM_COUNT=1` counts.
static CONFIG_CALLS: AtomicU32 = AtomicU32::new(0);
/// Whether `call` takes the careful path (see ARMED): the only cost on a hook's path. Acquire:
/// a clear bit means the real functions behind the call are resolved, and this thread sees
/// their addresses (a plain load on x86-64).
#[inline(always)]
pub fn armed(call: Call) -> bool {
    ARMED.load(Acquire) & call.bit() != 0
}

/// The calls with a real function that has no next definition (from the constructor, once it
/// has resolved them all).
pub fn set_unresolved_calls(calls: u32) {
    UNRESOLVED_CALLS.store(calls, Relaxed);
    rearm();
}

/// The calls the configuration arms (see CONFIG_CALLS; from the constructor, before the
/// configuration is published).
pub fn set_config_calls(calls: u32) {
    CONFIG_CALLS.store(calls, Relaxed);
    rearm();
}

/// The calls some active fault rule names (see FAULT_CALLS; from the fault engine, whenever it
/// installs a rule set or starts watching a control file).
pub fn set_fault_calls(calls: u32) {
    FAULT_CALLS.store(calls, Relaxed);
    rearm();
}

/// The calls that take the careful path whatever the fault rules say: their failure may turn
/// into a success, they count bytes, or a real function is not resolved (`handle::fault` reads
/// it when it installs a rule set, after the constructor has set both).
pub fn careful_beyond_faults() -> u32 {
    CONFIG_CALLS.load(Relaxed) | UNRESOLVED_CALLS.load(Relaxed)
}

fn rearm() {
    let calls = FAULT_CALLS.load(Relaxed) | CONFIG_CALLS.load(Relaxed) | UNRESOLVED_CALLS.load(Relaxed);
    ARMED.store(calls, Release);
}

/// The calls some active fault rule names (for the fault engine's tests).
#[cfg(test)]
pub fn fault_calls() -> u32 {
    FAULT_CALLS.load(Relaxed)
}
