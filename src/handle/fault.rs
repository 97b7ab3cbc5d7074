//! Fault injection at run time: which rules are active, how many matching calls each has
//! seen, and the decision for one call. The hooks test `armed(call)` (one relaxed load) and
//! ask only when some rule names the call: the read and write families first `consult`, which
//! knows whether a rule names the call and consults a call's one rule quickly, then `decide`,
//! which decides everything.
//!
//! Two rule slots: `ERRSHIM_FAULTS` fills one at startup; a changed control file is parsed
//! into the other, whose counters are reset, and then becomes the active one. A reader checks
//! its slot's sequence number before and after and injects nothing if a reload overtook it.

use crate::handle::armed;
use crate::observe::conntable;
use crate::observe::sockinfo;
use crate::policy::config::{self as config, Config};
use crate::policy::faults::{self, Fault, FaultSet, MAX_RULES};
use crate::policy::rules::Call;
use crate::report::event::Request;
use crate::report::logger;
use crate::sys::socket::{Addr, Kind};
use crate::text::fmtbuf::StackBuf;
use crate::{sys::errno, sys::process, sys::raw};
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};

/// A rule's hot fields, precomputed at install so the per-call decision reads one small
/// struct and no `Option`s.
#[derive(Clone, Copy)]
struct Hot {
    /// A bit per `Kind` value the rule's `fd=` filter admits; ALL_KINDS: no lookup needed.
    kinds: u16,
    /// The filters that ask more of the descriptor (`ADDR`, `CONN`, `CONN_NTH`); 0: none, the
    /// one test a rule without them pays.
    filters: u8,
    /// `after_bytes=`, `from=` or `for=`: asked only of a call the triggers let through.
    late: bool,
    /// The counter of a `conn_nth=` rule in a connection's record (`Record::conn_calls`).
    conn_slot: u8,
    triggers: faults::Triggers,
}

const ALL_KINDS: u16 = u16::MAX;
/// `Hot::filters`: a `port=` or `peer=` filter.
const ADDR: u8 = 1;
/// `conn=`.
const CONN: u8 = 2;
/// `conn_nth=`.
const CONN_NTH: u8 = 4;

impl Hot {
    const NONE: Hot = Hot {
        kinds: 0,
        filters: 0,
        late: false,
        conn_slot: 0,
        triggers: faults::Triggers::NONE,
    };

    fn of(r: &faults::FaultRule) -> Hot {
        use crate::policy::rules::FdFilter;
        let kinds = match r.fd {
            FdFilter::Any => ALL_KINDS,
            f => (0..=10u8)
                .filter(|&k| f.matches(Kind::from_u8(k)))
                .fold(0u16, |m, k| m | 1 << k),
        };
        let filters = if r.port.is_some() || r.peer.is_some() { ADDR } else { 0 }
            | if r.conn.is_some() { CONN } else { 0 }
            | if r.conn_nth.is_some() { CONN_NTH } else { 0 };
        Hot {
            kinds,
            filters,
            late: r.after_bytes.is_some() || r.windowed(),
            conn_slot: 0,
            triggers: faults::Triggers::of(r),
        }
    }
}

/// The one rule that names a call, for the hooks' quick consultation (`consult`): kept per
/// call, so that its fields are read at offsets fixed when the hook is compiled.
#[derive(Clone, Copy)]
struct Quick {
    /// As the rule's `Hot`.
    kinds: u16,
    /// The rule's index (below MAX_RULES).
    rule: u8,
    triggers: faults::Triggers,
}

impl Quick {
    const NONE: Quick = Quick {
        kinds: 0,
        rule: 0,
        triggers: faults::Triggers::NONE,
    };
}

struct Slot {
    /// Odd while being written.
    seq: AtomicU64,
    /// The rules and their hot fields: zero bytes until the slot's first install (the slots
    /// are fresh pages, see SLOTS). Only rules whose bits `by_call` holds are ever read, and
    /// `install` writes every rule first.
    set: UnsafeCell<MaybeUninit<FaultSet>>,
    hot: UnsafeCell<MaybeUninit<[Hot; MAX_RULES]>>,
    /// Per `Call`, the one rule that names it, where QUICK has this slot for the call; written
    /// with `hot`.
    quick: UnsafeCell<MaybeUninit<[Quick; Call::ALL.len()]>>,
    /// Each rule's random key (`faults::rule_key`), computed when the set is installed.
    keys: [AtomicU64; MAX_RULES],
    /// Per `Call`, a bit per rule that names it.
    by_call: [AtomicU32; Call::ALL.len()],
    matched: [AtomicU64; MAX_RULES],
    injected: [AtomicU64; MAX_RULES],
    /// Tags the `conn_nth=` counts in connections' records as this set's, in this process
    /// (new at every `rekey`; never 0).
    epoch: AtomicU32,
}

// SAFETY: `set` is only written by the single thread that holds RELOADING, into the slot that
// is not active, with `seq` odd meanwhile; readers detect overlap through `seq`.
unsafe impl Sync for Slot {}

impl Slot {
    /// Rule `i`'s hot fields.
    ///
    /// # Safety
    /// `i` is below MAX_RULES and the slot has been installed (its `by_call` names rule `i`,
    /// or this is the active slot after an install); it is not being written.
    #[inline(always)]
    unsafe fn hot(&self, i: usize) -> &Hot {
        (*self.hot.get()).assume_init_ref().get_unchecked(i)
    }

    /// Counts from the start, with the rules' keys for the stream `stream`.
    fn rekey(&self, stream: u64) {
        for c in self.matched.iter().chain(&self.injected) {
            c.store(0, Relaxed);
        }
        for (i, k) in self.keys.iter().enumerate() {
            k.store(faults::rule_key(stream, i + 1), Relaxed);
        }
        self.epoch
            .store(EPOCHS.fetch_add(1, Relaxed).wrapping_add(1).max(1), Relaxed);
    }

    /// What `consult` reads for `call`.
    ///
    /// # Safety
    /// QUICK has this slot for `call` (or had: the slot may be overtaken, as for `hot`).
    #[inline(always)]
    unsafe fn quick(&self, call: Call) -> &Quick {
        (*self.quick.get()).assume_init_ref().get_unchecked(call as usize)
    }

    /// Rule `i`. Safety: as for `hot`.
    #[inline(always)]
    unsafe fn rule(&self, i: usize) -> &faults::FaultRule {
        (*self.set.get()).assume_init_ref().rules.get_unchecked(i)
    }
}

/// The two slots, made by `interpose::init` when fault rules or a control file are configured
/// (fresh zero pages from the kernel: all-zero slots are valid and empty). A process without faults
/// has none, and neither its start nor its forks touch their 12 KiB.
static SLOTS: AtomicPtr<[Slot; 2]> = AtomicPtr::new(core::ptr::null_mut());
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// `&SLOTS[ACTIVE]`, for one load on the hot path (null until a rule set is installed).
static ACTIVE_SLOT: AtomicPtr<Slot> = AtomicPtr::new(core::ptr::null_mut());
/// Per `Call`, what a read- or write-family hook asks of the fault engine (`consult`), in one
/// load: null where `decide` has nothing to say (no rule names the call, no control file is
/// watched), DECIDE where `decide` must be asked, and the active slot where the hook may
/// consult the call's rule quickly. Quickly only where the careful path is there for that rule
/// alone, and `consult` can decide all that `decide` would when the rule does not fire: exactly
/// one rule names the call, it filters on the descriptor's kind at most, no control file is
/// watched, the call's real function is resolved, no `ERRSHIM_RULES` rule turns its failure
/// into a success (errno from before the call is not needed) and no byte is counted
/// (`ERRSHIM_COUNT`, `after_bytes=`).
static QUICK: [AtomicPtr<Slot>; Call::ALL.len()] = [const { AtomicPtr::new(core::ptr::null_mut()) }; Call::ALL.len()];
/// QUICK's word for a call that `decide` must decide.
const DECIDE: *mut Slot = core::ptr::without_provenance_mut(1);

fn slots() -> Option<&'static [Slot; 2]> {
    // SAFETY: SLOTS is null or points at a mapping made by `make_slots`, never unmapped.
    unsafe { SLOTS.load(Acquire).as_ref() }
}

/// Makes the slots (from the constructor).
fn make_slots() -> bool {
    if slots().is_some() {
        return true;
    }
    match raw::startup::map_anonymous(core::mem::size_of::<[Slot; 2]>()) {
        Ok(p) => {
            SLOTS.store(p.cast(), Release);
            true
        }
        Err(_) => false,
    }
}
/// The tree's seed: `ERRSHIM_SEED`, or the one this program picked (said in the startup line).
static SEED: AtomicU64 = AtomicU64::new(0);
/// This process's own stream, which the rules' keys come from: the seed in the process errshim
/// was loaded into, and in a forked child its parent's stream mixed with the fork's number
/// (`faults::child_stream`, see `child_after_fork`).
static STREAM: AtomicU64 = AtomicU64::new(0);
/// How many times this process has forked (through glibc's `fork`, whose handlers count).
static FORKS: AtomicU64 = AtomicU64::new(0);
/// The pid of the process installing a rule set (0: none).
static RELOADING: AtomicI32 = AtomicI32::new(0);
/// Whether a control file is watched.
static WATCHING: AtomicBool = AtomicBool::new(false);
/// The last `Slot::epoch` given.
static EPOCHS: AtomicU32 = AtomicU32::new(0);
/// When errshim started in this process (coarse monotonic ms), which `from=` and `for=` count
/// from; a forked child keeps its parent's.
static START_MS: AtomicU64 = AtomicU64::new(0);

/// Installs a rule set (startup, or a changed control file) into the inactive slot.
pub fn install(set: &FaultSet) {
    // One reloader at a time: the pid of the process that reloads. A pid that is not this
    // process's own is a parent's, which was reloading when it forked: the child takes over.
    let me = process::pid().max(1);
    let mut held = RELOADING.load(Acquire);
    loop {
        if held == me {
            return; // another thread of this process is at it
        }
        match RELOADING.compare_exchange(held, me, Acquire, Acquire) {
            Ok(_) => break,
            Err(now) => held = now,
        }
    }
    let Some(slots) = slots() else {
        RELOADING.store(0, Release);
        return;
    };
    let next = 1 - ACTIVE.load(Relaxed);
    let slot = &slots[next];
    // Odd while being written (also if a fork left it odd in this process).
    let seq = slot.seq.load(Relaxed) | 1;
    slot.seq.store(seq, Release);
    // SAFETY: this thread holds RELOADING and `next` is not the active slot (see Slot).
    unsafe { (*slot.set.get()).write(*set) };
    let mut calls = 0u32;
    let mut named = 0u32;
    let mut quick_calls = 0u32;
    let mut quick = [Quick::NONE; Call::ALL.len()];
    let mut hot = [Hot::NONE; MAX_RULES];
    let mut conn_slots = 0u8;
    for (h, r) in hot.iter_mut().zip(set.rules()) {
        *h = Hot::of(r);
        if h.filters & CONN_NTH != 0 {
            h.conn_slot = conn_slots;
            conn_slots += 1;
        }
    }
    // `after_bytes=` needs every transfer counted, on calls no rule names too.
    if set
        .rules()
        .iter()
        .any(|r| r.after_bytes.is_some() || matches!(r.fault, Fault::Rate(_)))
    {
        conntable::count_bytes();
        calls |= data_calls();
    }
    // A stall holds every transfer of its connection, and a held close is released by the
    // next call the engine is asked about: both need the read and write families armed.
    let stalls = set.rules().iter().any(|r| matches!(r.fault, Fault::Stall { .. }));
    let slow = set.rules().iter().any(|r| matches!(r.fault, Fault::SlowClose(_))) || crate::handle::timer::pending();
    if stalls || slow {
        calls |= data_calls() | Call::Close.bit();
    }
    EXTRA.store(
        if stalls { STALLS } else { 0 } | if slow { SLOW_CLOSES } else { 0 },
        Relaxed,
    );
    CONNECT_ADDR.store(
        set.rules()
            .iter()
            .any(|r| r.calls.contains(Call::Connect) && (r.port.is_some() || r.peer.is_some())),
        Relaxed,
    );
    // SAFETY: as above.
    unsafe { (*slot.hot.get()).write(hot) };
    slot.rekey(STREAM.load(Relaxed));
    // The calls some rule that can fire names; a rule that can never fire is not consulted
    // (and so not counted).
    let beyond_faults = armed::careful_beyond_faults();
    for (c, mask) in Call::ALL.iter().zip(&slot.by_call) {
        let bits = set
            .rules()
            .iter()
            .zip(&hot)
            .enumerate()
            .filter(|(_, (r, h))| r.calls.contains(*c) && h.triggers.can_fire())
            .fold(0u32, |m, (i, _)| m | 1 << i);
        mask.store(bits, Relaxed);
        if bits != 0 {
            calls |= c.bit();
            named |= c.bit();
        }
        let i = bits.trailing_zeros() as usize;
        if bits.count_ones() == 1 && hot[i].filters == 0 && beyond_faults & c.bit() == 0 {
            let (kinds, triggers) = (hot[i].kinds, hot[i].triggers);
            quick[*c as usize] = Quick {
                kinds,
                rule: i as u8,
                triggers,
            };
            quick_calls |= c.bit();
        }
    }
    // SAFETY: as above.
    unsafe { (*slot.quick.get()).write(quick) };
    slot.seq.store(seq + 1, Release);
    ACTIVE.store(next, Release);
    ACTIVE_SLOT.store(slot as *const Slot as *mut Slot, Release);
    let watching = WATCHING.load(Relaxed);
    if conntable::counts_bytes() {
        quick_calls = 0;
    }
    // Every transfer must reach `decide` (its stall check, the timer's fallback), whichever
    // calls the rules name.
    if stalls || slow {
        named |= data_calls() | Call::Close.bit();
        quick_calls = 0;
    }
    if watching {
        set_consult(slot, 0, u32::MAX);
    } else {
        set_consult(slot, quick_calls, named);
    }
    armed::set_fault_calls(if watching { u32::MAX } else { calls });
    RELOADING.store(0, Release);
}

/// What the hooks ask of the fault engine (see QUICK): the calls whose bit `quick` has consult
/// `slot` quickly, the others of `named` ask `decide`, the rest nothing.
fn set_consult(slot: *const Slot, quick: u32, named: u32) {
    for (c, q) in Call::ALL.iter().zip(&QUICK) {
        let to = match (quick & c.bit() != 0, named & c.bit() != 0) {
            (true, _) => slot.cast_mut(),
            (false, true) => DECIDE,
            (false, false) => core::ptr::null_mut(),
        };
        q.store(to, Release);
    }
}

/// The calls that move data, whose bytes `conntable::count_in` and `count_out` count.
fn data_calls() -> u32 {
    Call::ALL
        .iter()
        .filter(|c| {
            !matches!(
                c,
                Call::Shutdown | Call::Close | Call::Connect | Call::Accept | Call::Getpeername
            )
        })
        .fold(0, |m, c| m | c.bit())
}

/// Each rule in force: (rule, matching calls, injections), since the rules were installed in
/// this process (`summary::RuleCounts`).
fn rule_counts(each: &mut dyn FnMut(usize, u64, u64)) {
    // SAFETY: ACTIVE_SLOT is null or points into SLOTS, which live forever.
    let Some(slot) = (unsafe { ACTIVE_SLOT.load(Acquire).as_ref() }) else {
        return;
    };
    let seq = slot.seq.load(Acquire);
    if seq & 1 != 0 {
        return;
    }
    // SAFETY: the active slot, completely written (seq even), is not written while active.
    let n = unsafe { (*slot.set.get()).assume_init_ref().n }.min(MAX_RULES);
    for i in 0..n {
        each(i + 1, slot.matched[i].load(Relaxed), slot.injected[i].load(Relaxed));
    }
}

/// Sets the seed and the startup rules.
pub fn init(set: &FaultSet, seed: u64) {
    crate::report::summary::set_rule_counts(rule_counts);
    SEED.store(seed, Relaxed);
    STREAM.store(seed, Relaxed);
    START_MS.store(raw::coarse_ms(), Relaxed);
    conntable::set_numbering();
    if !make_slots() {
        log::warn!("no memory for the fault rules; injecting no faults");
        return;
    }
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
    /// The rule's `unfaithful`: no check that Linux could give the result.
    pub unfaithful: bool,
    /// For an errno: nanoseconds to wait first (`FaultRule::wait`).
    pub wait: u64,
    /// This call's number among the rule's matching calls.
    pub k: u64,
    /// The slot (0 or 1) and its sequence number when the rule fired, for `not_injected`.
    slot: usize,
    seq: u64,
}

/// A rule fired but its fault changed nothing the program sees (a short transfer or a delayed
/// call whose real call failed or found end of file, a reset with no connection to abort): it
/// is no injection, so it takes none of the rule's `max=` (unless the rule set was replaced
/// since).
pub fn not_injected(inj: &Injection) {
    let Some(slot) = slots().and_then(|s| s.get(inj.slot)) else {
        return;
    };
    if slot.seq.load(Acquire) != inj.seq {
        return;
    }
    if let Some(done) = slot.injected.get(inj.rule.wrapping_sub(1)) {
        let _ = done.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}

/// The descriptor's kind for fault filters: from the table, or asked of the kernel once and
/// remembered (so a file or pipe costs one probe in its lifetime, not one per call).
#[inline(always)]
fn kind_of(fd: i32) -> Kind {
    Kind::from_u8(kind_byte(fd))
}

/// The same as the table's byte (`Kind as u8`).
#[inline(always)]
fn kind_byte(fd: i32) -> u8 {
    match conntable::live_kind(fd) {
        0 => probe_and_remember(fd) as u8,
        k => k,
    }
}

#[cold]
#[inline(never)]
fn probe_and_remember(fd: i32) -> Kind {
    // Under a seccomp filter nothing is asked: the kind stays unknown.
    if !raw::allowed() {
        return Kind::Unknown;
    }
    // (errshim's own system calls leave errno as it is.)
    let kind = sockinfo::probe_kind(fd);
    if kind != Kind::NotOpen && kind != Kind::Unknown {
        let _ = conntable::checked(fd, kind, None);
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
        if process::may_write() {
            rec.local_port.store(local, Relaxed);
        }
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

/// Whether a rule injects into this call; `requested` gives the byte count asked for (worked
/// out only for a `short` rule that triggers). Leaves errno as it was, so that a hook can decide
/// before it reads errno.
/// errshim's own log writes are raw syscalls that never pass through a hook, so no fault can
/// reach them.
///
/// Inline, the common case: each rule that names the call is matched against the descriptor,
/// counted with one atomic add and passed over with one compare while the call's number is
/// outside the range its counting triggers allow. A rule that fires goes to `fired`.
#[inline(always)]
pub fn decide(call: Call, fd: i32, requested: Request) -> Option<Injection> {
    // A vfork child shares its parent's counters: it injects nothing and counts nothing.
    if !process::may_write() {
        return None;
    }
    if WATCHING.load(Relaxed) {
        control_poll();
    }
    // SAFETY: ACTIVE_SLOT is null or points into SLOTS, which live forever.
    let slot = unsafe { ACTIVE_SLOT.load(Acquire).as_ref() }?;
    // ACTIVE_SLOT only ever points at a completely written set; a reload that overtakes this
    // decision shows in `seq`, checked before an injection is returned.
    let seq = slot.seq.load(Acquire);
    if EXTRA.load(Relaxed) != 0 {
        if let Some(inj) = stalled_or_held(slot, seq, call, fd) {
            return Some(inj);
        }
    }
    let mut rules = slot.by_call.get(call as usize).map_or(0, |m| m.load(Relaxed)) & RULE_BITS;
    let mut kind = 0u8;
    while rules != 0 {
        let i = rules.trailing_zeros() as usize;
        rules &= rules - 1;
        if let Some(k) = slot.count(i, fd, &mut kind) {
            // SAFETY: the active slot is not written while active (see Slot); i < MAX_RULES.
            let (h, key) = unsafe { (slot.hot(i), slot.keys.get_unchecked(i)) };
            if h.triggers.fire(key.load(Relaxed), k) && (!h.late || late_triggers_hold(slot, i, fd)) {
                return fired(slot, seq, i, k, rules, fd, requested, kind);
            }
        }
    }
    None
}

const RULE_BITS: u32 = (1 << MAX_RULES) - 1;

/// Work beyond the rules: `STALLS` (the installed set has a `stall=` rule) and the sockets a
/// `slow_close=` holds (`timer::pending`).
static EXTRA: AtomicU8 = AtomicU8::new(0);
/// Some rule that names connect filters on `port=` or `peer=`: the hook tells the engine the
/// address a connect is given before asking it (`failure::note_connect_target`).
static CONNECT_ADDR: AtomicBool = AtomicBool::new(false);

/// Whether a connect's target must be known before the rules are asked (see CONNECT_ADDR).
pub fn connect_filters_address() -> bool {
    CONNECT_ADDR.load(Relaxed)
}
const STALLS: u8 = 1;
const SLOW_CLOSES: u8 = 2;

/// Before the rules: releases the sockets a `slow_close=` held whose time has come, and a call
/// on a connection a `stall=` holds belongs to that stall (`handle::failure::stall_step`),
/// whatever the rules say (k 0: no new matching call of the rule, nothing of its `max=`).
#[cold]
#[inline(never)]
fn stalled_or_held(slot: &Slot, seq: u64, call: Call, fd: i32) -> Option<Injection> {
    if crate::handle::timer::due_from_calls() {
        crate::handle::timer::fire_due(conntable::now_ms(), false);
    }
    if EXTRA.load(Relaxed) & STALLS == 0 || data_calls() & call.bit() == 0 {
        return None;
    }
    use crate::handle::timer::{StallWord, STALL_ACTIVE, STALL_TIMED_OUT};
    let rec = conntable::get(fd).filter(|r| r.is_live())?;
    let w = StallWord(rec.stall[0].load(Acquire));
    let rule = w.rule();
    let live = w.gen() == rec.gen() && matches!(w.phase(), STALL_ACTIVE | STALL_TIMED_OUT);
    if !live || rule == 0 || rule > MAX_RULES {
        return None;
    }
    // SAFETY: the active slot (see decide); rule - 1 < MAX_RULES.
    let r = unsafe { slot.rule(rule - 1) };
    let Fault::Stall { .. } = r.fault else {
        return None;
    };
    (seq & 1 == 0).then_some(Injection {
        rule,
        fault: r.fault,
        limit: usize::MAX,
        unfaithful: r.unfaithful,
        wait: 0,
        k: 0,
        slot: slots().map_or(0, |s| usize::from(core::ptr::eq(slot, &s[1]))),
        seq,
    })
}

/// What a read- or write-family hook does about the fault rules (`consult`).
pub enum Consult {
    /// No rule names the call: nothing to ask (`decide` would say no injection and count
    /// nothing).
    Nothing,
    /// The call's one rule was asked quickly: it does not fire, and the call is counted where
    /// the rule matches. The hook goes on as on its plain path.
    Counted,
    /// `decide` decides; nothing has been counted.
    Decide,
}

/// Asks QUICK what the fault rules want of a read- or write-family call, and makes the quick
/// consultation of the call's one rule where QUICK has the slot for it: inline in the exported
/// function before its real call, so it makes no call and takes no stack. The slot leaves the
/// call to `decide` (`Consult::Decide`, nothing counted) where a vfork is in progress, the
/// descriptor's kind is not in the table yet, the rule may fire, or another thread counted the
/// rule meanwhile. The call's number is taken with a compare-and-swap only once it is known
/// not to fire, so a call that fires is numbered and decided by `decide` alone.
#[inline(always)]
pub fn consult(call: Call, fd: i32) -> Consult {
    // SAFETY: in bounds (one entry per Call).
    let slot = unsafe { QUICK.get_unchecked(call as usize) }.load(Acquire);
    // One compare on the way to the slot.
    if slot as usize <= DECIDE as usize {
        return if slot.is_null() {
            Consult::Nothing
        } else {
            Consult::Decide
        };
    }
    // A vfork child counts nothing; `decide` knows which thread is one.
    if process::vfork_in_progress() {
        return Consult::Decide;
    }
    // SAFETY: QUICK's other words point into SLOTS, which live forever; QUICK has this slot
    // for the call.
    let (slot, q) = unsafe { (&*slot, (*slot).quick(call)) };
    if q.kinds != ALL_KINDS {
        let kind = conntable::live_kind(fd);
        if kind == 0 {
            return Consult::Decide;
        }
        if q.kinds & (1 << (kind & 15)) == 0 {
            return Consult::Counted;
        }
    }
    let i = usize::from(q.rule & (MAX_RULES as u8 - 1));
    // SAFETY: i < MAX_RULES.
    let (matched, key) = unsafe { (slot.matched.get_unchecked(i), slot.keys.get_unchecked(i)) };
    // The number the call would take, counted only if it does not fire and no other thread
    // counted meanwhile (a loop that asked again would keep its constants in registers the
    // hook has not saved).
    let before = matched.load(Relaxed);
    let k = before.wrapping_add(1);
    if q.triggers.may_fire(|| key.load(Relaxed), k) {
        return Consult::Decide;
    }
    match matched.compare_exchange(before, k, Relaxed, Relaxed) {
        Ok(_) => Consult::Counted,
        Err(_) => Consult::Decide,
    }
}

impl Slot {
    /// If rule `i` (below MAX_RULES) matches the descriptor, counts the call and returns its
    /// number among the rule's matching calls. `kind` caches the descriptor's kind byte
    /// across the rules of one call (0: not looked up yet).
    #[inline(always)]
    fn count(&self, i: usize, fd: i32, kind: &mut u8) -> Option<u64> {
        // SAFETY: the active slot is not written while active (see Slot); i < MAX_RULES.
        let h = unsafe { self.hot(i) };
        if h.kinds != ALL_KINDS {
            if *kind == 0 {
                *kind = kind_byte(fd);
            }
            if h.kinds & (1 << (*kind & 15)) == 0 {
                return None;
            }
        }
        let mut on_nth = true;
        if h.filters != 0 {
            on_nth = self.connection_filters(i, fd, h)?;
        }
        // A matching call: every matching rule counts it, whichever injects.
        // SAFETY: as above.
        let k = unsafe { self.matched.get_unchecked(i) }.fetch_add(1, Relaxed) + 1;
        on_nth.then_some(k)
    }

    /// Rule `i`'s filters beyond the kind (`Hot::filters`): None when the call does not match;
    /// else whether it is the call a `conn_nth=` asks for (counted here), true without one.
    #[cold]
    #[inline(never)]
    fn connection_filters(&self, i: usize, fd: i32, h: &Hot) -> Option<bool> {
        // SAFETY: as for `count`.
        let r = unsafe { self.rule(i) };
        if h.filters & ADDR != 0 && !address_filters_pass(r, fd) {
            return None;
        }
        if h.filters & (CONN | CONN_NTH) == 0 {
            return Some(true);
        }
        let rec = live_record(fd)?;
        if r.conn.is_some_and(|n| u64::from(rec.conn_no.load(Relaxed)) != n) {
            return None;
        }
        Some(
            r.conn_nth
                .is_none_or(|n| rec.count_call(h.conn_slot as usize, self.epoch.load(Relaxed)) == n),
        )
    }
}

/// The record of `fd` if it describes an open descriptor (one it had not seen made is asked of
/// the kernel and met late, as for the kind).
fn live_record(fd: i32) -> Option<&'static conntable::Record> {
    if conntable::live_kind(fd) == 0 {
        probe_and_remember(fd);
    }
    conntable::get(fd).filter(|r| r.is_live())
}

/// Rule `i`'s triggers that are asked only of a call its other triggers let through: the time
/// window (`from=`, `for=`: the coarse clock, no system call) and `after_bytes=` (the bytes
/// the hooks counted on the connection before this call).
#[cold]
#[inline(never)]
fn late_triggers_hold(slot: &Slot, i: usize, fd: i32) -> bool {
    // SAFETY: the active slot (see decide); i < MAX_RULES.
    let r = unsafe { slot.rule(i) };
    if r.windowed() && !r.in_window(raw::coarse_ms().saturating_sub(START_MS.load(Relaxed))) {
        return false;
    }
    match r.after_bytes {
        Some(0) | None => true,
        Some(n) => live_record(fd).is_some_and(|rec| rec.bytes_moved() >= n),
    }
}

/// Rule `i`'s triggers hold for its `k`-th matching call: inject (unless `max` says no); the
/// rules in `rest` still count the call. A rule whose filters were answered from the table
/// (the descriptor's kind, its ports and peer) injects only once the kernel confirms them
/// (`confirmed`).
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn fired(
    slot: &Slot,
    seq: u64,
    i: usize,
    k: u64,
    mut rest: u32,
    fd: i32,
    requested: Request,
    mut kind: u8,
) -> Option<Injection> {
    let confirmed = confirmed(slot, i, fd);
    let inj = if confirmed {
        triggered(slot, i, k, requested)
    } else {
        None
    };
    while rest != 0 {
        let j = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        slot.count(j, fd, &mut kind);
    }
    // Only if the slot was complete when `seq` was read and no reload has begun since.
    inj.filter(|_| seq & 1 == 0 && slot.seq.load(Acquire) == seq)
        .map(|i| Injection {
            slot: slots().map_or(0, |s| usize::from(core::ptr::eq(slot, &s[1]))),
            seq,
            ..i
        })
}

/// Rule `i` matched on what the table says of `fd`: does the descriptor really have the kind
/// (and the ports and peer) its filters ask for? The record is checked against the kernel
/// (`conntable::Record::fits`); a record that does not fit (the number was reused behind the
/// hooks' back, by a file say) is replaced by what the kernel says, and the filters are asked
/// again. Rules that filter on nothing need no check. Under a seccomp filter nothing can be
/// checked, so such a rule does not inject.
fn confirmed(slot: &Slot, i: usize, fd: i32) -> bool {
    // SAFETY: the active slot (see decide); i < MAX_RULES.
    let h = unsafe { slot.hot(i) };
    if h.kinds == ALL_KINDS && h.filters == 0 {
        return true;
    }
    if !raw::allowed() {
        return false;
    }
    let kind = sockinfo::probe_kind(fd);
    // Bring the record up to date first: the address filters read its ports and peer.
    let _ = conntable::checked(fd, kind, sockinfo::local_addr(fd).as_ref());
    let kind_ok = h.kinds == ALL_KINDS || h.kinds & (1 << (kind as u8 & 15)) != 0;
    // SAFETY: as above.
    let r = unsafe { slot.rule(i) };
    // A record restarted by the check is another connection: it has no number (`conn=`).
    let conn_ok = r.conn.is_none_or(|n| {
        conntable::get(fd).is_some_and(|rec| rec.is_live() && u64::from(rec.conn_no.load(Relaxed)) == n)
    });
    kind_ok && conn_ok && (h.filters & ADDR == 0 || address_filters_pass(r, fd))
}

/// A rule's triggers held: apply `short`'s limit and `max`.
#[cold]
#[inline(never)]
fn triggered(slot: &Slot, i: usize, k: u64, requested: Request) -> Option<Injection> {
    // SAFETY: the active slot (see decide); i < MAX_RULES.
    let r = unsafe { slot.rule(i) };
    let key = slot.keys.get(i)?.load(Relaxed);
    let limit = match r.fault {
        Fault::Short(n) => faults::short_limit_keyed(n, requested.bytes()?, key, k)?,
        Fault::Rate(bps) => (bps / 10).clamp(1, usize::MAX as u64) as usize,
        _ => usize::MAX,
    };
    let fault = match r.fault {
        Fault::Delay(ns) if r.jitter > 0 => Fault::Delay(faults::jittered(ns, r.jitter, key, k)),
        f => f,
    };
    // Counted only while under `max`: the count is the rule's injections (`rule_counts`).
    let max = r.max.unwrap_or(u64::MAX);
    slot.injected
        .get(i)?
        .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
        .ok()?;
    Some(Injection {
        rule: i + 1,
        fault,
        limit,
        unfaithful: r.unfaithful,
        wait: r.wait,
        k,
        slot: 0,
        seq: 0,
    })
}

/// `port=` and `peer=`: only IP sockets have them; what the kernel is asked is remembered.
/// (errshim's own system calls leave errno as it is.)
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

/// The control file's path, NUL-terminated.
static CONTROL: crate::sys::once::SetOnce<Box<[u8]>> = crate::sys::once::SetOnce::new();
static LAST_POLL_MS: AtomicU64 = AtomicU64::new(0);
/// (inode, size, mtime in ns) of the file as last read; all zero: missing.
static SEEN: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// Whether the control file has been read at least once.
static READ_ONCE: AtomicBool = AtomicBool::new(false);

/// Watches `path` (bytes) for fault rules (from the constructor).
pub fn watch(path: &[u8]) {
    let mut p = Vec::with_capacity(path.len() + 1);
    p.extend_from_slice(path);
    p.push(0);
    let _ = CONTROL.set(p.into_boxed_slice());
    WATCHING.store(true, Release);
    set_consult(core::ptr::null(), 0, u32::MAX);
    armed::set_fault_calls(u32::MAX);
    LAST_POLL_MS.store(0, Relaxed);
    control_reload(true);
}

/// At most every 100 ms (a coarse monotonic clock read, no syscall, decides), look whether the
/// control file changed. Not under a seccomp filter (it takes system calls), and not in a vfork
/// child (`decide` returns before).
#[cold]
#[inline(never)]
fn control_poll() {
    let now = raw::coarse_ms();
    let last = LAST_POLL_MS.load(Relaxed);
    if now.saturating_sub(last) < 100 || !raw::allowed() {
        return;
    }
    if LAST_POLL_MS.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        let saved = errno::get();
        control_reload(false);
        errno::set(saved);
    }
}

/// What reading the control file gave.
enum Content {
    /// No file: no faults.
    Missing,
    Text(usize),
    /// Not a regular file, or too large: refused, with the reason.
    Refused(&'static str),
    /// Cannot be read now: keep the rules and look again later.
    Unreadable,
}

/// Reads the control file into `buf` without ever waiting: only a regular file is read (a FIFO
/// would block an `open` for reading until a writer came, and then a `read`), opened
/// non-blocking and checked again after the open.
fn read_control(path: &core::ffi::CStr, st: &raw::Stat, buf: &mut [u8]) -> Content {
    if !st.is(libc::S_IFREG) {
        return Content::Refused("not a regular file");
    }
    let Ok(fd) = raw::openat(
        path,
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    ) else {
        return Content::Unreadable;
    };
    let content = match raw::fstat(fd) {
        Ok(now) if now.is(libc::S_IFREG) => {
            let mut n = 0;
            loop {
                match raw::read(fd, &mut buf[n..]) {
                    Ok(0) => break Content::Text(n),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Content::Refused("4 KiB or larger");
                        }
                    }
                    Err(libc::EINTR) => {}
                    Err(_) => break Content::Unreadable,
                }
            }
        }
        Ok(_) => Content::Refused("not a regular file"),
        Err(_) => Content::Unreadable,
    };
    raw::close(fd);
    content
}

fn control_reload(first: bool) {
    let Some(path) = CONTROL.get() else {
        return;
    };
    let Ok(cpath) = core::ffi::CStr::from_bytes_until_nul(path) else {
        return;
    };
    let st = raw::stat_path(cpath).ok();
    let id = st.map_or([0; 3], |s| [s.ino, s.size, s.mtime]);
    let unchanged = (0..3).all(|i| SEEN[i].load(Relaxed) == id[i]);
    if unchanged && READ_ONCE.load(Relaxed) && !first {
        return;
    }
    let mut buf = [0u8; 4096];
    let content = match &st {
        None => Content::Missing,
        Some(st) => read_control(cpath, st, &mut buf),
    };
    let name = crate::text::escape::Esc(cpath.to_bytes());
    let len = match content {
        Content::Unreadable => return, // look again later
        Content::Missing => 0,
        Content::Text(n) => n,
        Content::Refused(why) => {
            for (s, v) in SEEN.iter().zip(id) {
                s.store(v, Relaxed);
            }
            READ_ONCE.store(true, Relaxed);
            log::error!("ERRSHIM_CONTROL {name}: {why}; keeping the previous fault rules");
            return;
        }
    };
    for (s, v) in SEEN.iter().zip(id) {
        s.store(v, Relaxed);
    }
    READ_ONCE.store(true, Relaxed);
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

/// In the parent, before `fork` (glibc's, which serialises forks and their handlers): one more
/// fork, whose number the child takes.
pub fn before_fork() {
    FORKS.fetch_add(1, Relaxed);
}

/// In a child after `fork`: a reload that another thread of the parent had begun is not this
/// process's (`install` also notices by the pid, for a fork that bypassed the handlers).
///
/// The child's decisions are its own: its stream is its parent's mixed with the fork's number
/// among its parent's forks, and its rules count its own calls from 1. So sibling workers
/// differ, a child differs from its parent, and one seed replays a tree that forks in the same
/// order: the stream depends on the place in the tree, not on the pid. A child cannot be
/// replayed on its own (it exists only as a fork), so the startup line names the tree's seed.
///
/// Across `exec` nothing of this survives, and nothing can carry it that the program would
/// not see: the environment (errshim's own variable rewritten, or one added), a descriptor, or
/// a file that would also take system calls at every start, outlive the run and hand out
/// numbers in the order concurrent processes raced to it. A program started by exec begins
/// again from the seed, as the process errshim is loaded into; with no `ERRSHIM_SEED` it picks
/// its own (and says it before its first injection).
pub fn child_after_fork() {
    RELOADING.store(0, Relaxed);
    let fork = FORKS.swap(0, Relaxed);
    let stream = faults::child_stream(STREAM.load(Relaxed), fork);
    STREAM.store(stream, Relaxed);
    // SAFETY: ACTIVE_SLOT is null or points into SLOTS, which live forever; the child has one
    // thread, so no decision reads the slot meanwhile.
    if let Some(slot) = unsafe { ACTIVE_SLOT.load(Acquire).as_ref() } {
        slot.rekey(stream);
    }
    crate::handle::timer::child_after_fork();
}

/// Whether this process (or, before a fork, its parent, in the same log) said the startup line.
static SAID: AtomicBool = AtomicBool::new(false);

/// The startup line of fault mode, once (see `startup_line`): a forked child whose parent said
/// it does not repeat it; an exec'd program says its own at its first injection.
pub fn say_startup(cfg: &Config) {
    if SAID.load(Relaxed) {
        return;
    }
    // A vfork child says it without marking it said: the mark would be its parent's.
    if process::may_write() {
        SAID.store(true, Relaxed);
    }
    startup_line(cfg, SEED.load(Relaxed));
}

/// Says, next to the events, that faults are active and with which seed, so any run can be
/// replayed with ERRSHIM_SEED: the tree's seed, also where a forked child says it (its own
/// stream comes from the seed and its place in the tree, see `child_after_fork`).
fn startup_line(cfg: &Config, seed: u64) {
    let mut b = StackBuf::<1024>::new();
    let (pid, n) = (process::pid(), cfg.fault_set().n);
    let control: &[u8] = cfg.control.as_deref().unwrap_or(b"");
    match cfg.format {
        config::Format::Text => {
            let _ = write!(
                b,
                "errshim {} pid={pid} tid={} comm=",
                raw::wall_clock(),
                process::tid()
            );
            b.push_escaped(process::comm());
            let _ = write!(b, " faults: {n} rule(s)");
            if !control.is_empty() {
                b.push(b" and the control file ");
                b.push_escaped(control);
            }
            let _ = write!(
                b,
                ", seed={seed} (ERRSHIM_SEED={seed} replays this program and every process it forks)"
            );
        }
        config::Format::Json => {
            let mut o = crate::text::json::Obj::new(&mut b);
            o.fmt_str("ts", |t| {
                let _ = write!(t, "{}", raw::wall_clock());
            });
            o.num("pid", pid)
                .str("comm", process::comm())
                .num("fault_rules", n)
                .str("control", control)
                .num("seed", seed);
            o.end();
        }
    }
    logger::event(b.finish_line());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::armed::{armed, set_config_calls, set_unresolved_calls};

    /// The only test in this binary that installs rules (the slots are process-wide).
    #[test]
    fn rules_that_cannot_fire_are_not_consulted() {
        // A call with a real function that was not found stays on the careful path.
        set_unresolved_calls(Call::Sendmsg.bit());
        assert!(!armed(Call::Read) && armed(Call::Sendmsg));
        set_unresolved_calls(0);
        let set = faults::parse("*:EIO:p=0;read:EIO:nth=2:after=5").unwrap();
        init(&set, 7);
        assert!(!armed(Call::Read) && !armed(Call::Write), "no rule can fire");
        assert!(decide(Call::Read, 0, Request::len(1)).is_none());

        let set = faults::parse("*:EIO:p=0;read:EIO:nth=7:after=5:fd=any").unwrap();
        install(&set);
        assert!(armed(Call::Read) && !armed(Call::Write));
        let fired: Vec<u64> = (1..=10)
            .filter_map(|_| decide(Call::Read, 0, Request::len(1)).map(|i| i.k))
            .collect();
        assert_eq!(fired, [7], "the live rule counts every call");

        set_config_calls(Call::Close.bit());
        assert!(
            armed(Call::Close) && crate::handle::armed::fault_calls() & Call::Close.bit() == 0 && armed(Call::Read)
        );
        set_config_calls(0);
        install(&FaultSet::EMPTY);
        assert!(!armed(Call::Read) && !armed(Call::Close));

        // A fork while another thread of the parent was installing: the child's copy of the
        // flag names the parent, and its slot's sequence may be odd. The child installs anyway.
        RELOADING.store(i32::MAX, Relaxed);
        let next = 1 - ACTIVE.load(Relaxed);
        let slots = slots().unwrap();
        slots[next].seq.store(41, Relaxed);
        let set = faults::parse("read:EIO:fd=any").unwrap();
        install(&set);
        assert!(armed(Call::Read), "installed despite the parent's flag");
        assert_eq!(RELOADING.load(Relaxed), 0);
        assert_eq!(slots[next].seq.load(Relaxed) % 2, 0, "complete again");
        child_after_fork();
        install(&FaultSet::EMPTY);

        quick_consultation_agrees_with_decide();
    }

    /// `consult` (the hooks' quick path) counts what `decide` would count and leaves every call
    /// that fires, or that it cannot decide, to `decide`, having counted nothing.
    fn quick_consultation_agrees_with_decide() {
        let matched = |i: usize| active_slot().matched[i].load(Relaxed);
        let consulted = |c: Call| match consult(c, 0) {
            Consult::Counted => true,
            Consult::Decide => false,
            Consult::Nothing => panic!("{c:?}: no rule named"),
        };
        // nth: the calls before and after the one that fires are counted quickly.
        install(&faults::parse("read:EIO:nth=3:fd=any").unwrap());
        assert!(consulted(Call::Read) && consulted(Call::Read));
        assert!(!consulted(Call::Read), "the third call fires");
        assert_eq!(matched(0), 2, "and was not counted");
        assert_eq!(decide(Call::Read, 0, Request::len(1)).map(|i| i.k), Some(3));
        assert!(consulted(Call::Read) && matched(0) == 4);
        assert!(
            matches!(consult(Call::Write, 0), Consult::Nothing),
            "no rule names write"
        );
        process::vfork_begin();
        assert!(!consulted(Call::Read) && matched(0) == 4, "a vfork in progress");
        process::vfork_end();

        // p: where the quick path gives up, the draw fires; elsewhere it does not.
        install(&faults::parse("read:EIO:p=0.5:fd=any").unwrap());
        let mut fired = 0;
        for k in 1..=64 {
            if consulted(Call::Read) {
                assert_eq!(matched(0), k);
            } else {
                assert_eq!(decide(Call::Read, 0, Request::len(1)).map(|i| i.k), Some(k));
                fired += 1;
            }
        }
        assert!(fired > 10 && fired < 54, "{fired} of 64 fired");

        // A `when=` step is left to `decide`, on the step or not.
        install(&faults::parse("read:EIO:when=2+3:fd=any").unwrap());
        assert!(consulted(Call::Read), "before the range");
        assert!(!consulted(Call::Read) && matched(0) == 1);
        assert_eq!(decide(Call::Read, 0, Request::len(1)).map(|i| i.k), Some(2));
        assert!(!consulted(Call::Read) && matched(0) == 2);
        assert!(decide(Call::Read, 0, Request::len(1)).is_none() && matched(0) == 3);

        // Descriptors of a kind the table does not know yet (no table in this test) are
        // decided by `decide`; so are calls that two rules name, calls a rule filters by their
        // connection, and calls a rule may turn into a success (errno from before the call is
        // needed).
        for (spec, why) in [
            ("read:EIO:nth=5", "the kind is not known"),
            ("read:EIO:nth=5:fd=any;read:EPIPE:nth=9:fd=any", "two rules"),
            ("read:EIO:nth=5:fd=any:conn=1", "a connection filter"),
        ] {
            install(&faults::parse(spec).unwrap());
            assert!(!consulted(Call::Read), "{spec}: {why}");
            assert_eq!(matched(0), 0, "{spec}: nothing counted");
        }
        set_config_calls(Call::Read.bit());
        install(&faults::parse("read:EIO:nth=5:fd=any").unwrap());
        assert!(!consulted(Call::Read), "errno from before the call is needed");
        set_config_calls(0);
        install(&faults::parse("read:EIO:nth=5:fd=any").unwrap());
        assert!(consulted(Call::Read));
        install(&FaultSet::EMPTY);
        assert!(matches!(consult(Call::Read, 0), Consult::Nothing));
    }

    fn active_slot() -> &'static Slot {
        // SAFETY: installed above; SLOTS live forever.
        unsafe { &*ACTIVE_SLOT.load(Acquire) }
    }
}
