//! Digests while the program runs (`ERRSHIM_SUMMARY=DURATION`, and the metrics file of
//! `ERRSHIM_METRICS`): the summary with the interval's counts beside the totals, the lines the
//! rate limit held back, and the metrics, written every so often.
//!
//! The timer rides on errshim's own failure path: each event reads the coarse monotonic clock
//! (vDSO, no system call) and the first event after the interval has passed writes the digest.
//! errshim starts no thread: a thread is visible to the program (`/proc/self/task`, the
//! signals it may be sent, what `fork` copies, a seccomp filter that does not expect it), and
//! calls that succeed stay untouched. So a quiet program writes no digest until its next event
//! or its exit, when the last one is written: an interval without events has nothing new to say.

use crate::policy::config::Config;
use crate::report::{metrics, rate, summary};
use crate::sys::{process, raw};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// When the last digest was written (coarse monotonic ms; 0: the clock has not started).
static LAST: AtomicU64 = AtomicU64::new(0);

/// After an event: writes a digest if one is due. The first event starts the clock: the
/// first interval is measured from it, not from the program's start.
pub fn maybe(cfg: &Config, now_ms: u64) {
    let Some(every) = cfg.digest_every_ms() else {
        return;
    };
    if !process::may_write() {
        return;
    }
    let last = LAST.load(Relaxed);
    if last == 0 {
        let _ = LAST.compare_exchange(0, now_ms.max(1), Relaxed, Relaxed);
        return;
    }
    if now_ms.saturating_sub(last) < every {
        return;
    }
    if LAST.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok() {
        write(cfg, now_ms, now_ms - last);
    }
}

/// Writes a digest now (out of line: its buffers stay off the stack of the event path): held-back lines, the summary lines (when asked for with an interval),
/// the metrics file; then starts a new interval.
#[inline(never)]
pub fn write(cfg: &Config, now_ms: u64, interval_ms: u64) {
    rate::say_held(cfg.format, now_ms);
    if cfg.summary_every_ms.is_some() && summary::any() {
        summary::report(cfg.format, process::comm(), Some(interval_ms));
    }
    if let Some(path) = &cfg.metrics {
        metrics::write(path);
    }
    summary::new_interval();
}

/// At exit: what a digest would say, for the time since the last one.
pub fn at_exit(cfg: &Config) {
    let now = raw::coarse_ms();
    let last = match LAST.load(Relaxed) {
        0 => now,
        l => l,
    };
    rate::say_held(cfg.format, now);
    if cfg.summary && summary::any() {
        let interval = cfg.summary_every_ms.map(|_| now.saturating_sub(last));
        summary::report(cfg.format, process::comm(), interval);
    }
    if let Some(path) = &cfg.metrics {
        metrics::write(path);
    }
}
