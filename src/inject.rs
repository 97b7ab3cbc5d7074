//! Fault injection at run time: which rules are active, how many matching calls each has
//! seen, and the decision for one call. The hooks test `armed(call)` (one relaxed load) and
//! call `decide` only when some rule names the call.
//!
//! Two rule slots: `ERRSHIM_FAULTS` fills one at startup; a changed control file is parsed
//! into the other, whose counters are reset, and then becomes the active one. A reader checks
//! its slot's sequence number before and after and injects nothing if a reload overtook it.

use crate::cause::hist;
use crate::conntable;
use crate::faults::{self, Fault, FaultSet, MAX_RULES};
use crate::fmtbuf::StackBuf;
use crate::rules::Call;
use crate::sockinfo::{self, Addr, Kind};
use crate::sys;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

struct Slot {
    /// Odd while being written.
    seq: AtomicU64,
    set: UnsafeCell<FaultSet>,
    /// Each rule's random key (`faults::rule_key`), computed when the set is installed.
    keys: [AtomicU64; MAX_RULES],
    /// Per `Call`, a bit per rule that names it.
    by_call: [AtomicU32; 12],
    matched: [AtomicU64; MAX_RULES],
    injected: [AtomicU64; MAX_RULES],
}

// SAFETY: `set` is only written by the single thread that holds RELOADING, into the slot that
// is not active, with `seq` odd meanwhile; readers detect overlap through `seq`.
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            set: UnsafeCell::new(FaultSet::EMPTY),
            keys: [const { AtomicU64::new(0) }; MAX_RULES],
            by_call: [const { AtomicU32::new(0) }; 12],
            matched: [const { AtomicU64::new(0) }; MAX_RULES],
            injected: [const { AtomicU64::new(0) }; MAX_RULES],
        }
    }
}

static SLOTS: [Slot; 2] = [Slot::new(), Slot::new()];
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// A bit per `Call` that some active rule names (all bits while a control file is watched).
static ARMED: AtomicU32 = AtomicU32::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);
static RELOADING: AtomicBool = AtomicBool::new(false);
/// Whether a control file is watched.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Whether any fault rule could apply to `call`: the only cost on a hook's path.
#[inline(always)]
pub fn armed(call: Call) -> bool {
    ARMED.load(Relaxed) & call.bit() != 0
}

pub fn seed() -> u64 {
    SEED.load(Relaxed)
}

/// Installs a rule set (startup, or a changed control file) into the inactive slot.
pub fn install(set: &FaultSet) {
    if RELOADING.swap(true, Acquire) {
        return;
    }
    let next = 1 - ACTIVE.load(Relaxed);
    let slot = &SLOTS[next];
    slot.seq.fetch_add(1, AcqRel);
    // SAFETY: this thread holds RELOADING and `next` is not the active slot (see Slot).
    unsafe { *slot.set.get() = *set };
    for c in slot.matched.iter().chain(&slot.injected) {
        c.store(0, Relaxed);
    }
    let seed = SEED.load(Relaxed);
    for (i, k) in slot.keys.iter().enumerate() {
        k.store(faults::rule_key(seed, i + 1), Relaxed);
    }
    for (c, mask) in Call::ALL.iter().zip(&slot.by_call) {
        let bits = set
            .rules()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.calls.contains(*c))
            .fold(0u32, |m, (i, _)| m | 1 << i);
        mask.store(bits, Relaxed);
    }
    slot.seq.fetch_add(1, AcqRel);
    ACTIVE.store(next, Release);
    let watching = WATCHING.load(Relaxed);
    ARMED.store(if watching { u32::MAX } else { set.calls() }, Release);
    RELOADING.store(false, Release);
}

/// Sets the seed and the startup rules.
pub fn init(set: &FaultSet, seed: u64) {
    SEED.store(seed, Relaxed);
    install(set);
}

/// What a rule decided for one call.
#[derive(Clone, Copy, Debug)]
pub struct Injection {
    /// 1-based rule number.
    pub rule: usize,
    pub fault: Fault,
    /// For `short`: how many bytes to let through.
    pub limit: usize,
    /// This call's number among the rule's matching calls.
    pub k: u64,
}

/// The descriptor's kind for fault filters: from the table, or asked of the kernel once and
/// remembered (so a file or pipe costs one probe in its lifetime, not one per call).
#[inline(always)]
fn kind_of(fd: i32) -> Kind {
    if let Some(rec) = conntable::get(fd) {
        let known = Kind::from_u8(rec.kind.load(Relaxed));
        if known != Kind::Unknown && rec.is_live() {
            return known;
        }
    }
    probe_and_remember(fd)
}

#[cold]
#[inline(never)]
fn probe_and_remember(fd: i32) -> Kind {
    let kind = sockinfo::probe_kind(fd);
    if let Some(rec) = conntable::get(fd) {
        if kind != Kind::NotOpen && kind != Kind::Unknown {
            if rec.is_live() {
                rec.kind.store(kind as u8, Relaxed);
            } else {
                rec.start_late(kind, sys::identity(fd).map_or(0, |(_, ino)| ino));
            }
        }
    }
    kind
}

#[cold]
#[inline(never)]
fn ports_and_peer(fd: i32) -> (u16, Option<Addr>) {
    let Some(rec) = conntable::get(fd) else {
        return (sockinfo::local_addr(fd).map_or(0, port_of), sockinfo::peer_addr(fd));
    };
    let mut local = rec.local_port.load(Relaxed);
    if local == 0 {
        local = sockinfo::local_addr(fd).map_or(0, port_of);
        rec.local_port.store(local, Relaxed);
    }
    let peer = rec.peer().or_else(|| {
        let p = sockinfo::peer_addr(fd);
        if matches!(p, Some(Addr::V4(..) | Addr::V6(..))) && rec.is_live() {
            rec.set_peer(p.as_ref());
        }
        p
    });
    (local, peer)
}

fn port_of(a: Addr) -> u16 {
    match a {
        Addr::V4(_, p) | Addr::V6(_, p) => p,
        _ => 0,
    }
}

fn ip_of(a: &Addr) -> Option<core::net::IpAddr> {
    match a {
        Addr::V4(ip, _) => Some((*ip).into()),
        Addr::V6(ip, _) => Some((*ip).into()),
        _ => None,
    }
}

/// Whether a rule injects into this call; `requested` gives the byte count asked for (asked
/// only by a `short` rule that triggers).
/// errshim's own log writes are raw syscalls that never pass through a hook, so no fault can
/// reach them.
#[inline(always)]
pub fn decide(call: Call, fd: i32, requested: impl Fn() -> usize) -> Option<Injection> {
    if WATCHING.load(Relaxed) {
        control_poll();
    }
    let slot = &SLOTS[ACTIVE.load(Acquire) & 1];
    let seq = slot.seq.load(Acquire);
    if seq & 1 == 1 {
        return None;
    }
    // SAFETY: the active slot is not written while active (see Slot); overlap shows in seq.
    let set = unsafe { &*slot.set.get() };
    let mut kind = Kind::Unknown;
    // (rule index + 1, k, limit) of the first rule that triggers; 0: none.
    let (mut chosen, mut chosen_k, mut chosen_limit) = (0usize, 0u64, 0usize);
    let mut rules = slot.by_call.get(call as usize).map_or(0, |m| m.load(Relaxed));
    while rules != 0 {
        let i = rules.trailing_zeros() as usize;
        rules &= rules - 1;
        // SAFETY: `by_call` only has bits below MAX_RULES (see `install`).
        let r = unsafe { set.rules.get_unchecked(i) };
        if r.fd != crate::rules::FdFilter::Any {
            if kind == Kind::Unknown {
                kind = kind_of(fd);
            }
            if !r.fd.matches(kind) {
                continue;
            }
        }
        if (r.port.is_some() || r.peer.is_some()) && !address_filters_pass(r, fd) {
            continue;
        }
        // A matching call: every matching rule counts it, whichever injects.
        // SAFETY: as above, i < MAX_RULES.
        let (matched, key) = unsafe { (slot.matched.get_unchecked(i), slot.keys.get_unchecked(i)) };
        let k = matched.fetch_add(1, Relaxed) + 1;
        if chosen != 0 || !r.triggers_keyed(key.load(Relaxed), k) {
            continue;
        }
        let limit = match r.fault {
            Fault::Short(n) => match faults::short_limit_keyed(n, requested(), key.load(Relaxed), k) {
                Some(l) => l,
                None => continue,
            },
            _ => usize::MAX,
        };
        // SAFETY: as above.
        let done = unsafe { slot.injected.get_unchecked(i) }.fetch_add(1, Relaxed);
        if r.max.is_some_and(|m| done >= m) {
            continue;
        }
        (chosen, chosen_k, chosen_limit) = (i + 1, k, limit);
    }
    if chosen == 0 || slot.seq.load(Acquire) != seq {
        return None;
    }
    Some(Injection {
        rule: chosen,
        // SAFETY: chosen - 1 < MAX_RULES.
        fault: unsafe { set.rules.get_unchecked(chosen - 1) }.fault,
        limit: chosen_limit,
        k: chosen_k,
    })
}

/// `port=` and `peer=`: only IP sockets have them; what the kernel is asked is remembered.
#[cold]
#[inline(never)]
fn address_filters_pass(r: &faults::FaultRule, fd: i32) -> bool {
    let kind = kind_of(fd);
    if !(kind.is_tcp() || kind.is_udp()) {
        return false;
    }
    let (local, peer) = ports_and_peer(fd);
    if r.port.is_some_and(|p| p != local && peer.map(port_of) != Some(p)) {
        return false;
    }
    match r.peer {
        Some(pf) => peer.as_ref().and_then(ip_of).is_some_and(|ip| pf.matches(ip)),
        None => true,
    }
}

// --- the control file -------------------------------------------------------------------

static CONTROL: once_cell::sync::OnceCell<StackBuf<4200>> = once_cell::sync::OnceCell::new();
static LAST_POLL_MS: AtomicU64 = AtomicU64::new(0);
/// (inode, size, mtime in ns) of the file as last read; all zero: missing.
static SEEN: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// Whether the control file has been read at least once.
static READ_ONCE: AtomicBool = AtomicBool::new(false);

/// Watches `path` for fault rules (from the constructor).
pub fn watch(path: &str) {
    let mut p = StackBuf::<4200>::new();
    p.push(path.as_bytes());
    p.push(b"\0");
    let _ = CONTROL.set(p);
    WATCHING.store(true, Release);
    ARMED.store(u32::MAX, Release);
    LAST_POLL_MS.store(0, Relaxed);
    control_reload(true);
}

/// At most every 100 ms (a coarse monotonic clock read, no syscall, decides), look whether the
/// control file changed.
fn control_poll() {
    let now = sys::coarse_ms();
    let last = LAST_POLL_MS.load(Relaxed);
    if now.saturating_sub(last) < 100 {
        return;
    }
    if LAST_POLL_MS.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        control_reload(false);
    }
}

fn control_reload(first: bool) {
    let Some(path) = CONTROL.get() else {
        return;
    };
    let Ok(cpath) = core::ffi::CStr::from_bytes_until_nul(path.as_bytes()) else {
        return;
    };
    let id = sys::stat_path(cpath).unwrap_or([0; 3]);
    let unchanged = (0..3).all(|i| SEEN[i].load(Relaxed) == id[i]);
    if unchanged && READ_ONCE.load(Relaxed) && !first {
        return;
    }
    let mut buf = [0u8; 4096];
    let text = if id == [0; 3] {
        Ok(0) // missing: no faults
    } else {
        sys::read_file(cpath, &mut buf)
    };
    let len = match text {
        Ok(n) => n,
        Err(_) => return, // unreadable now: keep what we have, look again later
    };
    if len == buf.len() {
        for (s, v) in SEEN.iter().zip(id) {
            s.store(v, Relaxed);
        }
        READ_ONCE.store(true, Relaxed);
        log::error!(
            "ERRSHIM_CONTROL: the file is larger than {} bytes; keeping the previous fault rules",
            buf.len()
        );
        return;
    }
    for (s, v) in SEEN.iter().zip(id) {
        s.store(v, Relaxed);
    }
    READ_ONCE.store(true, Relaxed);
    let name = core::str::from_utf8(path.as_bytes().strip_suffix(b"\0").unwrap_or(b"?")).unwrap_or("?");
    let Ok(spec) = core::str::from_utf8(&buf[..len]) else {
        log::error!("ERRSHIM_CONTROL {name}: not UTF-8 text; keeping the previous fault rules");
        return;
    };
    // Lines, comments (#) and ';' all separate rules in the file.
    let mut joined = StackBuf::<4200>::new();
    for line in spec.lines() {
        let line = line.split('#').next().unwrap_or("");
        joined.push(line.as_bytes());
        joined.push(b";");
    }
    let spec = core::str::from_utf8(joined.as_bytes()).unwrap_or("");
    match faults::parse(spec) {
        Ok(set) => {
            install(&set);
            log::info!("ERRSHIM_CONTROL {name}: {} fault rule(s) active", set.n);
        }
        Err(e) => log::error!("ERRSHIM_CONTROL {name}: {e}; keeping the previous fault rules"),
    }
}

/// The history bit an injected `reset` leaves (the connection was aborted on purpose).
pub const RESET_HISTORY: u32 = hist::RESET_SEEN;
