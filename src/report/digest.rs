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

/// Writes a digest now (out of line: its buffers stay off the stack of the event path), then
/// starts a new interval.
#[inline(never)]
pub fn write(cfg: &Config, now_ms: u64, interval_ms: u64) {
    say(cfg, now_ms, cfg.summary_every_ms.map(|_| Some(interval_ms)));
    summary::new_interval();
}

/// At exit: what a digest would say, for the time since the last one, and the summary also
/// when it is asked for at exit only.
pub fn at_exit(cfg: &Config) {
    let now = raw::coarse_ms();
    let last = match LAST.load(Relaxed) {
        0 => now,
        l => l,
    };
    let interval = cfg.summary_every_ms.map(|_| now.saturating_sub(last));
    say(cfg, now, cfg.summary.then_some(interval));
}

/// Held-back lines, the summary lines (`summary`: with the interval's length, if digests are
/// asked for; None: no summary lines), the metrics file.
fn say(cfg: &Config, now_ms: u64, summary: Option<Option<u64>>) {
    rate::say_held(cfg.format, now_ms);
    if let Some(interval) = summary.filter(|_| summary::any()) {
        summary::report(cfg.format, process::comm(), interval);
    }
    if let Some(path) = &cfg.metrics {
        metrics::write(path);
    }
}
