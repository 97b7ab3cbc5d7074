//! `ERRSHIM_SUMMARY=1`: counts of events by call, errno, action and cause, and by peer,
//! kept in fixed lock-free tables (a slot is claimed with one compare-and-swap on its key, then
//! counted with an atomic add) and written once when the process exits.

use crate::sys::socket::Addr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::*};

const SLOTS: usize = 256;

/// A fixed open-addressing table of (non-zero key, count). Keys that find it full are counted
/// in `overflow`.
pub struct Counter {
    keys: [AtomicU64; SLOTS],
    counts: [AtomicU64; SLOTS],
    overflow: AtomicU64,
}

impl Counter {
    pub const fn new() -> Self {
        Counter {
            keys: [const { AtomicU64::new(0) }; SLOTS],
            counts: [const { AtomicU64::new(0) }; SLOTS],
            overflow: AtomicU64::new(0),
        }
    }

    /// Counts `key`; its slot, or None when the table is full (counted in `overflow`).
    pub fn add(&self, key: u64) -> Option<usize> {
        debug_assert!(key != 0);
        let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
        for i in 0..SLOTS {
            let s = (start + i) % SLOTS;
            let k = self.keys[s].load(Relaxed);
            let mine = k == key
                || (k == 0
                    && self.keys[s]
                        .compare_exchange(0, key, Relaxed, Relaxed)
                        .map_or_else(|cur| cur == key, |_| true));
            if mine {
                self.counts[s].fetch_add(1, Relaxed);
                return Some(s);
            }
        }
        self.overflow.fetch_add(1, Relaxed);
        None
    }

    /// (key, count) pairs with a non-zero count, most frequent first (at most SLOTS).
    pub fn sorted(&self) -> ([(u64, u64); SLOTS], usize) {
        let mut out = [(0u64, 0u64); SLOTS];
        let mut n = 0;
        for s in 0..SLOTS {
            let c = self.counts[s].load(Relaxed);
            if c > 0 {
                out[n] = (self.keys[s].load(Relaxed), c);
                n += 1;
            }
        }
        out[..n].sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        (out, n)
    }

    /// The slot of `key`, if it has one.
    fn slot_of(&self, key: u64) -> Option<usize> {
        let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
        for i in 0..SLOTS {
            let s = (start + i) % SLOTS;
            match self.keys[s].load(Relaxed) {
                0 => return None,
                k if k == key => return Some(s),
                _ => {}
            }
        }
        None
    }

    /// The count of `key` since `snap` was taken (see `Snapshot`).
    fn since(&self, key: u64, snap: &Snapshot) -> u64 {
        self.slot_of(key).map_or(0, |s| {
            self.counts[s]
                .load(Relaxed)
                .saturating_sub(snap.counts[s].load(Relaxed))
        })
    }

    /// Every count since `snap` was taken.
    fn total_since(&self, snap: &Snapshot) -> u64 {
        let slots = (0..SLOTS).map(|s| {
            self.counts[s]
                .load(Relaxed)
                .saturating_sub(snap.counts[s].load(Relaxed))
        });
        slots.sum::<u64>() + self.overflow().saturating_sub(snap.overflow.load(Relaxed))
    }

    pub fn overflow(&self) -> u64 {
        self.overflow.load(Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum::<u64>() + self.overflow()
    }

    /// Forgets everything (in a child after `fork`: its summary is its own).
    pub fn reset(&self) {
        for s in 0..SLOTS {
            self.keys[s].store(0, Relaxed);
            self.counts[s].store(0, Relaxed);
        }
        self.overflow.store(0, Relaxed);
    }
}

/// A counter's counts at the last digest, slot by slot: the interval's count is the difference.
/// Taken while other threads count (the counter is never reset under them, which could hand a
/// count to the wrong key), so an event counted meanwhile falls in one interval or the next.
pub struct Snapshot {
    counts: [AtomicU64; SLOTS],
    overflow: AtomicU64,
}

impl Snapshot {
    fn take(&self, c: &Counter) {
        for s in 0..SLOTS {
            self.counts[s].store(c.counts[s].load(Relaxed), Relaxed);
        }
        self.overflow.store(c.overflow(), Relaxed);
    }

    fn reset(&self) {
        for s in 0..SLOTS {
            self.counts[s].store(0, Relaxed);
        }
        self.overflow.store(0, Relaxed);
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// What one event is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub call: u8,
    pub errno: u16,
    pub action: u8,
    pub cause: u8,
}

impl Key {
    pub fn pack(self) -> u64 {
        1 | (self.call as u64) << 8 | (self.errno as u64) << 16 | (self.action as u64) << 32 | (self.cause as u64) << 40
    }

    pub fn unpack(k: u64) -> Key {
        Key {
            call: (k >> 8) as u8,
            errno: (k >> 16) as u16,
            action: (k >> 32) as u8,
            cause: (k >> 40) as u8,
        }
    }
}

/// The action index summaries use for injected events.
pub const INJECT: u8 = 5;

/// The tables, made by `enable` when `ERRSHIM_SUMMARY=1` (fresh zero pages from the kernel):
/// a process that does not ask for a summary has none, and its start and its forks touch none
/// of their 14 KiB.
struct Tables {
    by_kind: Counter,
    /// `by_kind` at the last digest (`ERRSHIM_SUMMARY=DURATION`).
    at_digest: Snapshot,
    /// Injections by fault rule (1 to 16).
    injections: [AtomicU64; 17],
    by_peer: Counter,
    /// The peers behind `by_peer`'s keys (IPv4 and IPv6 only), slot by slot.
    peers: [[AtomicU64; 3]; SLOTS],
}

static TABLES: AtomicPtr<Tables> = AtomicPtr::new(core::ptr::null_mut());

fn tables() -> Option<&'static Tables> {
    // SAFETY: TABLES is null or points at a mapping made by `enable`, never unmapped; all-zero
    // bytes are valid, empty tables.
    unsafe { TABLES.load(Acquire).as_ref() }
}

/// Makes the tables (from the constructor, when the summary is asked for).
pub fn enable() {
    if tables().is_some() {
        return;
    }
    if let Ok(p) = crate::sys::raw::startup::map_anonymous(core::mem::size_of::<Tables>()) {
        TABLES.store(p.cast(), Release);
    }
}

/// A peer's key: a non-zero hash of its packed address.
fn peer_key(w: &[u64; 3]) -> u64 {
    let h = w
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x).wrapping_mul(0x0100_0000_01b3));
    h | 1
}

/// Whether anything was counted since the last reset (a forked child then has counts of its
/// parent's to forget).
static COUNTED: AtomicBool = AtomicBool::new(false);

/// Counts an event (nothing without a summary).
pub fn count(key: Key, peer: Option<&Addr>) {
    let Some(t) = tables() else {
        return;
    };
    COUNTED.store(true, Relaxed);
    t.by_kind.add(key.pack());
    let w = crate::observe::conntable::pack_addr(peer);
    if w[0] != 0 {
        let k = peer_key(&w);
        // Remember the address beside the key, in the slot the key has (two peers whose keys
        // start from the same slot then keep their own labels).
        if let Some(s) = t.by_peer.add(k) {
            if t.peers[s][0].load(Relaxed) == 0 {
                for (a, v) in t.peers[s].iter().zip(w) {
                    a.store(v, Relaxed);
                }
            }
        }
    }
}

/// Counts an injection by fault rule `rule` (1-based).
pub fn count_injection(rule: usize) {
    if let Some(c) = tables().and_then(|t| t.injections.get(rule)) {
        c.fetch_add(1, Relaxed);
    }
}

/// Each fault rule's counts, (rule, matching calls, injections), of the rules in force (since
/// they were installed, in this process); given by the fault engine, a layer above, which
/// registers it (`set_rule_counts`).
pub type RuleCounts = fn(&mut dyn FnMut(usize, u64, u64));

static RULE_COUNTS: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers where the fault rules' counts come from (from the constructor, in fault mode).
pub fn set_rule_counts(f: RuleCounts) {
    RULE_COUNTS.store(f as *mut (), Release);
}

/// The fault rules' counts (see `RuleCounts`): nothing outside fault mode.
pub fn rule_counts(each: &mut dyn FnMut(usize, u64, u64)) {
    let p = RULE_COUNTS.load(Acquire);
    if !p.is_null() {
        // SAFETY: only `set_rule_counts` stores here, a `RuleCounts`.
        let f: RuleCounts = unsafe { core::mem::transmute::<*mut (), RuleCounts>(p) };
        f(each);
    }
}

/// Whether some fault rule matched a call.
fn rules_matched() -> bool {
    let mut any = false;
    rule_counts(&mut |_, matched, _| any |= matched > 0);
    any
}

/// The injections by fault rule: (rule, count) for each rule that injected.
pub fn injections(mut each: impl FnMut(usize, u64)) {
    let Some(t) = tables() else { return };
    for (i, c) in t.injections.iter().enumerate() {
        let n = c.load(Relaxed);
        if n > 0 {
            each(i, n);
        }
    }
}

/// The event kinds counted so far, most frequent first: (key, total, since the last digest).
pub fn kinds(mut each: impl FnMut(Key, u64, u64)) {
    let Some(t) = tables() else { return };
    let (rows, n) = t.by_kind.sorted();
    for &(k, c) in &rows[..n] {
        each(Key::unpack(k), c, t.by_kind.since(k, &t.at_digest));
    }
}

/// Starts a new interval (after a digest).
pub fn new_interval() {
    if let Some(t) = tables() {
        t.at_digest.take(&t.by_kind);
    }
}

/// The address counted under `key`, if remembered.
fn peer_of(t: &Tables, key: u64) -> Option<Addr> {
    let s = t.by_peer.slot_of(key)?;
    let w = [
        t.peers[s][0].load(Relaxed),
        t.peers[s][1].load(Relaxed),
        t.peers[s][2].load(Relaxed),
    ];
    (peer_key(&w) == key)
        .then(|| crate::observe::conntable::unpack_addr(w))
        .flatten()
}

/// In a child after `fork`: forgets the parent's counts. Only when there are any, so that a
/// forked child without events never touches (and copies) the tables' pages.
pub fn reset() {
    if !COUNTED.swap(false, Relaxed) {
        return;
    }
    let Some(t) = tables() else {
        return;
    };
    t.by_kind.reset();
    t.at_digest.reset();
    t.by_peer.reset();
    for c in &t.injections {
        c.store(0, Relaxed);
    }
    for p in &t.peers {
        for w in p {
            w.store(0, Relaxed);
        }
    }
}

/// An errno name, or `none` for events whose call did not fail (injected short transfers,
/// delays).
struct ErrnoOrNone(i32);

impl core::fmt::Display for ErrnoOrNone {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0 == 0 {
            f.write_str("none")
        } else {
            write!(f, "{}", crate::sys::errno::Name(self.0))
        }
    }
}

/// Whether there is anything to report: an event, or a fault rule that matched a call.
pub fn any() -> bool {
    tables().is_some_and(|t| (COUNTED.load(Relaxed) && t.by_kind.total() > 0) || rules_matched())
}

/// Writes the exit summary to the log destination: text lines, or one JSON object; nothing when
/// the process had no event.
/// `interval_ms`: with `ERRSHIM_SUMMARY=DURATION`, the time since the last digest, whose
/// counts are given beside the totals (`interval_events=`, `interval_count=`).
pub fn report(format: crate::policy::config::Format, comm: &[u8], interval_ms: Option<u64>) {
    use crate::text::fmtbuf::StackBuf;
    use core::fmt::Write;
    let calls = crate::policy::rules::Call::ALL;
    let actions = ["pass", "log", "ignore", "quiet", "map", "inject", "remembered"];
    let Some(t) = tables() else {
        return;
    };
    let (kinds, nk) = t.by_kind.sorted();
    let (peers, np) = t.by_peer.sorted();
    let total = t.by_kind.total();
    // A process with nothing to report writes nothing (a server forking a worker per
    // connection would otherwise leave a file per connection).
    if total == 0 && !rules_matched() {
        return;
    }
    let pid = crate::sys::process::pid();
    let rows = &kinds[..nk.min(40)];
    let top_peers = &peers[..np.min(10)];
    let cause_code = |i: u8| crate::observe::cause::Cause::from_index(i).map_or("none", |c| c.code());
    match format {
        crate::policy::config::Format::Text => {
            let mut b = StackBuf::<512>::new();
            let _ = write!(b, "errshim summary pid={pid} comm=");
            b.push_escaped(comm);
            let _ = write!(b, " events={total} dropped_lines={}", crate::report::logger::dropped());
            if let Some(ms) = interval_ms {
                let _ = write!(
                    b,
                    " interval_events={} interval_ms={ms}",
                    t.by_kind.total_since(&t.at_digest)
                );
            }
            crate::report::logger::event(b.finish_line());
            for &(k, c) in rows {
                let ic = t.by_kind.since(k, &t.at_digest);
                let k = Key::unpack(k);
                let call = calls.get(k.call as usize).map_or("?", |c| c.name());
                let action = actions.get(k.action as usize).unwrap_or(&"?");
                let mut b = StackBuf::<512>::new();
                let _ = write!(
                    b,
                    "errshim summary count={c} call={call} errno={} action={action} cause={}",
                    ErrnoOrNone(k.errno as i32),
                    cause_code(k.cause)
                );
                if interval_ms.is_some() {
                    let _ = write!(b, " interval_count={ic}");
                }
                crate::report::logger::event(b.finish_line());
            }
            for &(k, c) in top_peers {
                let mut b = StackBuf::<512>::new();
                b.push(b"errshim summary peer=");
                match peer_of(t, k) {
                    Some(a) => a.write_to(&mut b),
                    None => b.push(b"?"),
                }
                let _ = write!(b, " count={c}");
                crate::report::logger::event(b.finish_line());
            }
            rule_counts(&mut |rule, matched, fired| {
                let mut b = StackBuf::<512>::new();
                let _ = write!(b, "errshim summary fault_rule={rule} matched={matched} fired={fired}");
                crate::report::logger::event(b.finish_line());
            });
        }
        crate::policy::config::Format::Json => {
            let mut b = StackBuf::<16384>::new();
            let _ = write!(b, "{{\"summary\":{{\"pid\":{pid},\"comm\":\"");
            crate::text::json::escape_into(&mut b, comm);
            let _ = write!(
                b,
                "\",\"events\":{total},\"dropped_lines\":{},",
                crate::report::logger::dropped()
            );
            if let Some(ms) = interval_ms {
                let _ = write!(
                    b,
                    "\"interval_events\":{},\"interval_ms\":{ms},",
                    t.by_kind.total_since(&t.at_digest)
                );
            }
            b.push(b"\"counts\":[");
            for (i, &(k, c)) in rows.iter().enumerate() {
                let ic = t.by_kind.since(k, &t.at_digest);
                let k = Key::unpack(k);
                let call = calls.get(k.call as usize).map_or("?", |c| c.name());
                let action = actions.get(k.action as usize).unwrap_or(&"?");
                let _ = write!(
                    b,
                    "{}{{\"call\":\"{call}\",\"errno\":\"{}\",\"action\":\"{action}\",\"cause\":\"{}\",\"count\":{c}",
                    if i > 0 { "," } else { "" },
                    ErrnoOrNone(k.errno as i32),
                    cause_code(k.cause)
                );
                if interval_ms.is_some() {
                    let _ = write!(b, ",\"interval_count\":{ic}");
                }
                b.push(b"}");
            }
            b.push(b"],\"peers\":[");
            for (i, &(k, c)) in top_peers.iter().enumerate() {
                b.push(if i > 0 { b",{\"peer\":\"" } else { b"{\"peer\":\"" });
                if let Some(a) = peer_of(t, k) {
                    a.write_to(&mut b);
                }
                let _ = write!(b, "\",\"count\":{c}}}");
            }
            b.push(b"],\"fault_rules\":[");
            let mut first = true;
            rule_counts(&mut |rule, matched, fired| {
                let sep = if first { "" } else { "," };
                first = false;
                let _ = write!(b, "{sep}{{\"rule\":{rule},\"matched\":{matched},\"fired\":{fired}}}");
            });
            b.push(b"]}}");
            crate::report::logger::event(b.finish_line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_the_same_home_slot_keep_slots_of_their_own() {
        let home = |k: u64| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
        let a = 1u64;
        let b = (2..).find(|&k| home(k) == home(a)).unwrap();
        let c = Counter::new();
        let (sa, sb) = (c.add(a).unwrap(), c.add(b).unwrap());
        assert_ne!(sa, sb);
        assert_eq!((c.slot_of(a), c.slot_of(b)), (Some(sa), Some(sb)));
        assert_eq!(c.add(b), Some(sb));
    }

    #[test]
    fn counts_keys_and_overflow() {
        let c = Counter::new();
        for i in 1..=300u64 {
            for _ in 0..(i % 3 + 1) {
                c.add(i);
            }
        }
        let (top, n) = c.sorted();
        assert_eq!(n, SLOTS);
        assert_eq!(top[0].1, 3);
        assert_eq!(c.total(), (1..=300u64).map(|i| i % 3 + 1).sum::<u64>());
        assert!(c.overflow() > 0);
        c.reset();
        assert_eq!(c.total(), 0);
    }

    #[test]
    fn keys_round_trip() {
        let k = Key {
            call: 10,
            errno: 107,
            action: 2,
            cause: 3,
        };
        assert_eq!(Key::unpack(k.pack()), k);
    }

    #[test]
    fn peers_are_remembered() {
        let a = Addr::V4(core::net::Ipv4Addr::new(10, 1, 2, 3), 80);
        let key = Key {
            call: 1,
            errno: 104,
            action: 1,
            cause: 1,
        };
        count(key, Some(&a));
        assert!(!any(), "no tables, nothing counted");
        enable();
        count(
            Key {
                call: 1,
                errno: 104,
                action: 1,
                cause: 1,
            },
            Some(&a),
        );
        let t = tables().unwrap();
        let (top, n) = t.by_peer.sorted();
        assert!(n >= 1 && any());
        assert_eq!(format!("{:?}", peer_of(t, top[0].0).unwrap()), "10.1.2.3:80");
        reset();
        assert!(!any(), "a forked child starts from nothing");
    }
}
