//! `ERRSHIM_LOG_RATE`: at most BURST lines per kind of event (call, errno, rule; injections by
//! fault rule) in each INTERVAL, as journald limits a service. A fixed lock-free table: a kind
//! claims a slot with one compare-and-swap on its key; its window and counts are atomics. What
//! is held back is counted, and said in one line when the kind's next window opens (or at
//! exit): `... 12345 more like this in the last 5 s`. Races at a window's edge may let a line
//! more or fewer through; the counts of summaries and metrics are kept elsewhere, exact.

use crate::policy::config::Rate;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};

const SLOTS: usize = 64;

struct Slot {
    /// The kind (non-zero), 0 while free.
    key: AtomicU32,
    /// When the current window opened (coarse monotonic ms).
    opened: AtomicU64,
    /// Lines let through in the current window.
    passed: AtomicU64,
    /// Lines held back since the last line that said how many.
    held: AtomicU64,
    /// The process that opened the window: a forked child's inherited windows are its
    /// parent's, whose held lines the parent says.
    pid: AtomicI32,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        key: AtomicU32::new(0),
        opened: AtomicU64::new(0),
        passed: AtomicU64::new(0),
        held: AtomicU64::new(0),
        pid: AtomicI32::new(0),
    }
}; SLOTS];

/// Every line held back by this process, for metrics.
static HELD_TOTAL: AtomicU64 = AtomicU64::new(0);

/// A kind of event: the call, the errno, whether a fault rule made it, and the rule, packed.
pub fn kind(call: u8, errno: u16, rule: usize, fault: bool) -> u32 {
    1 << 31
        | (call as u32 & 0x7f) << 24
        | (errno as u32 & 0xfff) << 12
        | (fault as u32) << 11
        | (rule.min(0x7ff) as u32)
}

/// The parts of a kind: (call, errno, rule, fault).
pub fn unkind(k: u32) -> (u8, u16, usize, bool) {
    (
        ((k >> 24) & 0x7f) as u8,
        ((k >> 12) & 0xfff) as u16,
        (k & 0x7ff) as usize,
        k & 1 << 11 != 0,
    )
}

/// What to do with one event's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Write the event's line.
    pub write: bool,
    /// Lines of this kind held back before it, to be said first (with the window they fell in).
    pub held: u64,
    pub held_ms: u64,
}

/// Admits or holds back one event of kind `k` at `now_ms`. `writer`: this process may change
/// errshim's memory (not a vfork child, whose writes would land in its parent's table); a
/// vfork child writes every line.
pub fn admit(rate: Option<Rate>, k: u32, now_ms: u64, writer: bool) -> Admission {
    let all = Admission {
        write: true,
        held: 0,
        held_ms: 0,
    };
    let Some(rate) = rate else { return all };
    if !writer {
        return all;
    }
    let Some(s) = slot(k) else { return all };
    let opened = s.opened.load(Relaxed);
    if opened == 0 || now_ms.saturating_sub(opened) >= rate.interval_ms {
        // A new window: whoever opens it says what the last one held back.
        if s.opened
            .compare_exchange(opened, now_ms.max(1), Relaxed, Relaxed)
            .is_ok()
        {
            s.passed.store(1, Relaxed);
            let mut held = s.held.swap(0, Relaxed);
            let me = crate::sys::process::pid();
            if s.pid.swap(me, Relaxed) != me {
                held = 0; // a window of the parent's, before a fork
            }
            return Admission {
                write: true,
                held,
                held_ms: now_ms.saturating_sub(opened).min(rate.interval_ms),
            };
        }
    }
    if s.passed.fetch_add(1, Relaxed) < u64::from(rate.burst) {
        return all;
    }
    s.held.fetch_add(1, Relaxed);
    HELD_TOTAL.fetch_add(1, Relaxed);
    Admission {
        write: false,
        held: 0,
        held_ms: 0,
    }
}

/// The slot of kind `k`, claimed if new; None when the table is full (then no limit applies).
fn slot(k: u32) -> Option<&'static Slot> {
    let start = (k.wrapping_mul(0x9e37_79b9) >> 26) as usize;
    for i in 0..SLOTS {
        let s = &TABLE[(start + i) % SLOTS];
        let cur = s.key.load(Relaxed);
        if cur == k {
            return Some(s);
        }
        if cur == 0 {
            match s.key.compare_exchange(0, k, Relaxed, Relaxed) {
                Ok(_) => {
                    USED.store(true, Relaxed);
                    return Some(s);
                }
                Err(now) if now == k => return Some(s),
                Err(_) => {}
            }
        }
    }
    None
}

/// The kinds with lines held back and not yet said, taken (for the line that says so, at exit
/// or when a digest is written), with how long ago their window opened.
pub fn take_held(now_ms: u64, mut each: impl FnMut(u32, u64, u64)) {
    for s in &TABLE {
        let k = s.key.load(Relaxed);
        if k == 0 {
            continue;
        }
        if s.held.load(Relaxed) == 0 || s.pid.load(Relaxed) != crate::sys::process::pid() {
            continue;
        }
        let n = s.held.swap(0, Relaxed);
        if n > 0 {
            each(k, n, now_ms.saturating_sub(s.opened.load(Relaxed)));
        }
    }
}

/// Every line this process held back.
pub fn held_total() -> u64 {
    HELD_TOTAL.load(Relaxed)
}

/// Whether any kind has a slot (a forked child then has its parent's windows to forget).
static USED: AtomicBool = AtomicBool::new(false);

/// In a child after `fork`: its lines are its own. Touches the table only if it was used.
pub fn reset() {
    if !USED.swap(false, Relaxed) {
        return;
    }
    for s in &TABLE {
        s.key.store(0, Relaxed);
        s.opened.store(0, Relaxed);
        s.passed.store(0, Relaxed);
        s.held.store(0, Relaxed);
        s.pid.store(0, Relaxed);
    }
    HELD_TOTAL.store(0, Relaxed);
}

/// The line that says how many lines of kind `k` were held back in the last `ms`:
/// `errshim TIME pid=P tid=T comm=C ... 12345 more like this in the last 5 s: shutdown ENOTCONN
/// rule=1`; in JSON an object with `held_back` (and no `call` of its own: it is not an event).
pub fn write_held(format: crate::policy::config::Format, k: u32, n: u64, ms: u64) {
    use crate::text::fmtbuf::StackBuf;
    use core::fmt::Write;
    let (call, errno, rule, fault) = unkind(k);
    let call = crate::policy::rules::Call::ALL
        .get(call as usize)
        .map_or("?", |c| c.name());
    let secs = ms.div_ceil(1000).max(1);
    let (pid, tid) = (crate::sys::process::pid(), crate::sys::process::tid());
    let comm = crate::sys::process::comm();
    let mut b = StackBuf::<512>::new();
    match format {
        crate::policy::config::Format::Text => {
            let _ = write!(b, "errshim {} pid={pid} tid={tid} comm=", crate::sys::raw::wall_clock());
            b.push_escaped(comm);
            let _ = write!(b, " ... {n} more like this in the last {secs} s: {call}");
            if errno != 0 {
                let _ = write!(b, " {}", crate::sys::errno::Name(errno as i32));
            }
            let _ = write!(b, " {}={rule}", if fault { "fault_rule" } else { "rule" });
        }
        crate::policy::config::Format::Json => {
            let mut o = crate::text::json::Obj::new(&mut b);
            o.fmt_str("ts", |t| {
                let _ = write!(t, "{}", crate::sys::raw::wall_clock());
            });
            o.num("pid", pid)
                .num("tid", tid)
                .str("comm", comm)
                .num("held_back", n)
                .num("seconds", secs);
            o.str("like_call", call.as_bytes());
            if errno != 0 {
                o.fmt_str("like_errno", |t| {
                    let _ = write!(t, "{}", crate::sys::errno::Name(errno as i32));
                });
            }
            o.num(if fault { "like_fault_rule" } else { "like_rule" }, rule);
            o.end();
        }
    }
    crate::report::logger::event(b.finish_line());
}

/// Says every kind's held-back lines not yet said (at exit, and with each digest).
pub fn say_held(format: crate::policy::config::Format, now_ms: u64) {
    take_held(now_ms, |k, n, ms| write_held(format, k, n, ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_held_lines_said_once() {
        let rate = Some(Rate {
            burst: 3,
            interval_ms: 1000,
        });
        let k = kind(11, 107, 0, false);
        assert_eq!(unkind(k), (11, 107, 0, false));
        let w: Vec<bool> = (0..10).map(|i| admit(rate, k, 5000 + i, true).write).collect();
        assert_eq!(w, [true, true, true, false, false, false, false, false, false, false]);
        // Another kind has its own budget.
        let other = kind(11, 104, 0, false);
        assert!(admit(rate, other, 5001, true).write);
        // The next window: the first line says how many were held back.
        let a = admit(rate, k, 6100, true);
        assert!(a.write);
        assert_eq!(a.held, 7);
        assert!(admit(rate, k, 6101, true).write && admit(rate, k, 6102, true).write);
        assert!(!admit(rate, k, 6103, true).write && !admit(rate, k, 6104, true).write);
        // Unlimited, and in a vfork child: every line.
        assert!((0..100).all(|i| admit(None, k, 7000 + i, true).write));
        assert!((0..100).all(|i| admit(rate, k, 6200 + i, false).write));
        let mut said = Vec::new();
        take_held(6500, |k, n, ms| said.push((unkind(k), n, ms)));
        assert_eq!(said, [((11, 107, 0, false), 2, 400)], "the two held back since");
        let mut again = Vec::new();
        take_held(6600, |k, n, _| again.push((k, n)));
        assert!(again.is_empty(), "said once");
        assert!(held_total() >= 7);
        let f = kind(3, 0, 2, true);
        assert_eq!(unkind(f), (3, 0, 2, true));
    }
}
