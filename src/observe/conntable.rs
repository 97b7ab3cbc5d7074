//! What errshim remembers about each descriptor number: kind, peer address (from `connect`'s
//! argument or `accept`'s result, because `getpeername` no longer works once `shutdown` fails),
//! creation time, a history of what happened to it, and with `ERRSHIM_COUNT=1` the bytes moved
//! through the hooks and the last hooked call.
//!
//! Lock-free: one fixed record per descriptor number in an anonymous mapping sized from
//! `RLIMIT_NOFILE` (pages are only backed once touched). Every field is an atomic. The read
//! and write families' success path does not touch the table at all: byte counts come from
//! `TCP_INFO` at event time. Only `ERRSHIM_COUNT=1` (or a fault rule with `after_bytes=`, for
//! the bytes alone) counts per call and notes the last call, and it arms those calls, so that
//! the count runs on the careful path (see `handle::armed`).
//!
//! # When a record still describes the descriptor (one notion, used everywhere)
//!
//! Every hooked creation (`socket`, `socketpair`, `accept*`, `dup*`, `fcntl(F_DUPFD*)`) writes
//! the slot, every hooked destruction (`close`, `fclose`, `close_range`, `closefrom`, and the
//! same through glibc's `syscall()`) empties it. What no hook sees (a `syscall` instruction of
//! the program's own, io_uring) can replace the descriptor behind a number, so a record is
//! trusted only as far as `Record::fits` says, which every user of a record that could act on
//! a wrong answer asks (the event path, and a fault rule before it injects):
//! - the record is live and has the identity of the file behind the number now (device and
//!   inode, from one `fstat`): the same socket, whatever number it was reached through;
//! - a live record whose identity is not known yet (it was made by a hook on a call that
//!   succeeded, where errshim makes no system call) fits if nothing contradicts it: the kind is
//!   the same, and a socket it saw connected or accepted still has a local port. It then
//!   learns the identity.
//!
//! Each record has a generation, changed by every creation and destruction. Writes from event
//! paths (which run after the real call returned, so the number may have been closed and reused
//! by another thread meanwhile) are made only if the generation is still the one the event
//! started from, so an event can never bring back a record for a closed number.
//!
//! In a `vfork` child nothing here is written (`process::may_write`): its memory is its parent's.

use crate::observe::cause::hist;
use crate::policy::rules::Call;
use crate::sys::process;
use crate::sys::socket::{Addr, Kind};
use core::net::{Ipv4Addr, Ipv6Addr};
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Acquire,
    Ordering::Relaxed, Ordering::Release,
};

#[repr(C)]
pub struct Record {
    /// `generation << 32 | hist::*` bits; history 0 means the slot is empty.
    state: AtomicU64,
    pub kind: AtomicU8,
    /// `Call as u8 + 1` of the last hooked call on it (0: none yet).
    pub last_call: AtomicU8,
    /// errno of a failed `connect` (0: none).
    pub connect_errno: AtomicU16,
    /// The first failure of each errno on it, in the order they came (see `Errors`).
    pub errors: AtomicU64,
    /// The local port, learnt when a fault rule first needed it (0: not yet).
    pub local_port: AtomicU16,
    /// The fault rule whose `reset` aborted it or whose errno failed its connect (0: none; see
    /// `hist::RESET_INJECTED`, `hist::CONNECT_INJECTED`).
    pub reset_rule: AtomicU8,
    /// CLOCK_MONOTONIC milliseconds when it was created or accepted (0: unknown).
    pub created_ms: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The peer as `pack_addr` stores it (family 0: unknown).
    pub peer: [AtomicU64; 3],
    /// The identity of the file it describes (device, inode), learnt at its first check
    /// (inode 0: not yet).
    pub dev: AtomicU64,
    pub ino: AtomicU64,
    /// `TCP_INFO`'s bytes received, sent and retransmitted just before an injected reset
    /// (`connect(AF_UNSPEC)` zeroes them); `UNKNOWN` where the kernel did not say.
    pub reset_bytes: [AtomicU64; 3],
    /// Its number among the process's connections, 1, 2, ... in the order of `accept` results
    /// and first `connect` attempts, while fault mode numbers them (0: none; see `numbering`).
    pub conn_no: AtomicU32,
    /// The `conn_nth=` fault rules' matching calls on it: `epoch << 32 | count` per rule that
    /// counts (see `count_call`); zero in every new generation.
    pub conn_calls: [AtomicU64; 4],
    /// A `stall=` on the connection (`handle::failure::stall_step`): `generation << 32 |
    /// rule << 8 | phase`, the end in `now_ms` milliseconds, and the bytes still to be read
    /// that were queued when it began. Of another generation: no stall (never cleared).
    pub stall: [AtomicU64; 3],
}

/// A byte count the kernel did not give.
const UNKNOWN: u64 = u64::MAX;

/// A copy of a record, taken when its descriptor is closed (the number is free afterwards).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordCopy {
    pub history: u32,
    pub kind: u8,
    pub peer: [u64; 3],
    pub created_ms: u64,
    pub connect_errno: u16,
    pub errors: Errors,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_call: u8,
    pub reset_rule: u8,
    pub reset_bytes: [u64; 3],
    pub conn_no: u32,
}

impl RecordCopy {
    pub fn is_live(&self) -> bool {
        self.history & (hist::TRACKED | hist::LATE) != 0
    }

    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.kind)
    }

    pub fn peer(&self) -> Option<Addr> {
        unpack_addr(self.peer)
    }

    pub fn last_call(&self) -> Option<Call> {
        (self.last_call != 0)
            .then(|| Call::ALL.get(self.last_call as usize - 1).copied())
            .flatten()
    }

    /// After an injected reset: `TCP_INFO`'s bytes received, sent (less retransmitted) and
    /// retransmitted just before it, each None where the kernel did not say.
    pub fn bytes_before_reset(&self) -> Option<[Option<u64>; 3]> {
        (self.history & hist::RESET_INJECTED != 0).then(|| self.reset_bytes.map(|b| (b != UNKNOWN).then_some(b)))
    }
}

/// The first failure of each errno on a connection, in the order they came: up to four
/// (call, errno) pairs packed in a word (16 bits each: `Call as u8 + 1`, then the errno;
/// 0 is an empty slot). What came later than the fourth distinct errno is not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors(pub u64);

impl Errors {
    pub const SLOTS: usize = 4;

    /// Just `call`'s failure with `errno` (None: the errno does not fit a byte).
    #[inline(always)]
    pub fn first(call: Call, errno: i32) -> Option<Errors> {
        ((errno as u32).wrapping_sub(1) < 255).then(|| Errors(((call as u64 + 1) << 8) | errno as u64))
    }

    /// With `call`'s failure with `errno` added, or None when the errno is there already,
    /// every slot is taken, or the errno does not fit a byte.
    pub fn with(self, call: Call, errno: i32) -> Option<Errors> {
        let e = u8::try_from(errno).ok().filter(|&e| e != 0)?;
        for i in 0..Self::SLOTS {
            let slot = (self.0 >> (16 * i)) & 0xffff;
            if slot == 0 {
                return Some(Errors(self.0 | Errors::first(call, errno)?.0 << (16 * i)));
            }
            if slot & 0xff == u64::from(e) {
                return None;
            }
        }
        None
    }

    /// The pairs, oldest first.
    pub fn iter(self) -> impl Iterator<Item = (Option<Call>, i32)> {
        (0..Self::SLOTS).map_while(move |i| {
            let slot = (self.0 >> (16 * i)) & 0xffff;
            (slot != 0).then(|| {
                let call = Call::ALL.get(((slot >> 8) as usize).wrapping_sub(1)).copied();
                (call, (slot & 0xff) as i32)
            })
        })
    }
}

/// What the hooks count: `COUNT_ALL` (`ERRSHIM_COUNT=1`: bytes and the last call, set by the
/// constructor) and `COUNT_BYTES` (a fault rule with `after_bytes=`: the bytes, set when such a
/// rule is installed, never cleared). One word, so that a count asks one load.
static COUNTING: AtomicU8 = AtomicU8::new(0);
const COUNT_ALL: u8 = 1;
const COUNT_BYTES: u8 = 2;

pub fn set_counting(on: bool) {
    if on {
        COUNTING.fetch_or(COUNT_ALL, Relaxed);
    } else {
        COUNTING.fetch_and(!COUNT_ALL, Relaxed);
    }
}

/// Whether the hooks count bytes and note the last call (`ERRSHIM_COUNT=1`).
pub fn counting() -> bool {
    COUNTING.load(Relaxed) & COUNT_ALL != 0
}

/// Whether the hooks count anything (`ERRSHIM_COUNT=1`, or an `after_bytes=` rule was installed).
pub fn counts_bytes() -> bool {
    COUNTING.load(Relaxed) != 0
}

/// Counts bytes from now on, for fault rules (the calls that move data must be armed).
pub fn count_bytes() {
    COUNTING.fetch_or(COUNT_BYTES, Relaxed);
}

/// Whether connections get numbers (`Record::conn_no`): on in fault mode, set by the constructor.
static NUMBERING: AtomicBool = AtomicBool::new(false);
/// The last connection number given (a forked child goes on from its parent's).
static LAST_CONN: AtomicU32 = AtomicU32::new(0);

pub fn set_numbering() {
    NUMBERING.store(true, Relaxed);
}

/// The next connection number, or 0 when connections are not numbered.
#[inline(always)]
fn next_conn_no() -> u32 {
    if !NUMBERING.load(Relaxed) {
        return 0;
    }
    LAST_CONN.fetch_add(1, Relaxed).wrapping_add(1)
}

static TABLE: AtomicPtr<Record> = AtomicPtr::new(core::ptr::null_mut());
/// Number of records; 0 until the table exists, so one bounds check covers both.
static LEN: AtomicUsize = AtomicUsize::new(0);
/// One more than the highest descriptor number ever written: `close_range` and `closefrom`
/// visit no record above it, whatever `RLIMIT_NOFILE` is.
static HIGH: AtomicUsize = AtomicUsize::new(0);

const MAX_ENTRIES: u64 = 1 << 20;

#[link_section = ".text.errshim_startup"]
pub fn init() {
    if LEN.load(Relaxed) != 0 {
        return;
    }
    let (soft, hard) = crate::sys::raw::startup::nofile_limit();
    // Servers raise their soft limit at run time (nginx's worker_rlimit_nofile): size for the
    // hard limit, within reason; untouched pages cost nothing.
    let n = hard.max(soft).clamp(1024, MAX_ENTRIES) as usize;
    if let Ok(p) = crate::sys::raw::startup::map_anonymous(n * core::mem::size_of::<Record>()) {
        // All-zero bytes are valid, empty records.
        TABLE.store(p.cast(), Relaxed);
        LEN.store(n, Release);
    }
}

#[inline(always)]
pub fn get(fd: i32) -> Option<&'static Record> {
    // Acquire, paired with init's Release: a thread that sees LEN sees TABLE (a thread started
    // by an earlier library's constructor may race errshim's). A plain load on x86-64.
    if (fd as u32 as usize) >= LEN.load(Acquire) {
        return None;
    }
    let table = TABLE.load(Relaxed);
    // SAFETY: LEN is only set after TABLE points at LEN records, which live forever (and the
    // compiler told so asks no null check); fd is below LEN.
    Some(unsafe {
        core::hint::assert_unchecked(!table.is_null());
        &*table.add(fd as u32 as usize)
    })
}

/// The record for `fd`, to be written by a hook: None in a vfork child or out of range.
#[inline(always)]
fn writable(fd: i32) -> Option<&'static Record> {
    if !process::may_write() {
        return None;
    }
    let r = get(fd)?;
    let n = fd as usize + 1;
    if n > HIGH.load(Relaxed) {
        HIGH.fetch_max(n, Relaxed);
    }
    Some(r)
}

/// Monotonic milliseconds (vDSO, no syscall; 0 under a seccomp filter, where errshim avoids
/// even the vDSO's fallback system call).
pub fn now_ms() -> u64 {
    if crate::sys::raw::forbidden() {
        return 0;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

const HIST_MASK: u64 = 0xffff_ffff;

impl Record {
    #[inline(always)]
    fn state(&self) -> u64 {
        self.state.load(Acquire)
    }

    /// The `hist::*` bits (0: empty).
    #[inline(always)]
    pub fn history(&self) -> u32 {
        (self.state() & HIST_MASK) as u32
    }

    /// The generation: changes at every creation and destruction.
    pub fn gen(&self) -> u32 {
        (self.state() >> 32) as u32
    }

    /// Whether the slot describes an open socket (created through a hook, or met at an event).
    #[inline(always)]
    pub fn is_live(&self) -> bool {
        self.history() & (hist::TRACKED | hist::LATE) != 0
    }

    /// Writes a new generation of this record: what `c` says (history, kind, peer, creation
    /// time, errors, counts, last call), the identity `ident` (device, inode) and the local
    /// port. Not live while its fields change; live again with the last store. `from`: the
    /// state the record must still be in (a record restarted behind other threads' backs);
    /// false when it moved on, and then nothing was written.
    fn publish(&self, c: &RecordCopy, ident: (u64, u64), local_port: u16, from: Option<u64>) -> bool {
        let s = from.unwrap_or_else(|| self.state());
        let next = (s >> 32).wrapping_add(1) & HIST_MASK;
        match from {
            Some(s) if self.state.compare_exchange(s, next << 32, Release, Relaxed).is_err() => return false,
            Some(_) => {}
            None => self.state.store(next << 32, Release),
        }
        self.kind.store(c.kind, Relaxed);
        self.last_call.store(c.last_call, Relaxed);
        self.connect_errno.store(c.connect_errno, Relaxed);
        self.errors.store(c.errors.0, Relaxed);
        self.created_ms.store(c.created_ms, Relaxed);
        self.bytes_in.store(c.bytes_in, Relaxed);
        self.bytes_out.store(c.bytes_out, Relaxed);
        for (a, v) in self.peer.iter().zip(c.peer) {
            a.store(v, Relaxed);
        }
        self.dev.store(ident.0, Relaxed);
        self.ino.store(ident.1, Relaxed);
        self.local_port.store(local_port, Relaxed);
        self.reset_rule.store(c.reset_rule, Relaxed);
        for (a, v) in self.reset_bytes.iter().zip(c.reset_bytes) {
            a.store(v, Relaxed);
        }
        self.conn_no.store(c.conn_no, Relaxed);
        for a in &self.conn_calls {
            a.store(0, Relaxed);
        }
        self.state.store(next << 32 | c.history as u64, Release);
        true
    }

    /// The descriptor was closed: a new generation, empty.
    fn clear(&self) {
        let s = self.state();
        if s & HIST_MASK != 0 {
            let next = (s >> 32).wrapping_add(1) & HIST_MASK;
            self.state.store(next << 32, Release);
        }
    }

    /// Copies another record (a `dup`): the same socket under another number.
    fn copy_from(&self, o: &Record) {
        let ident = (o.dev.load(Relaxed), o.ino.load(Relaxed));
        self.publish(&o.copy(), ident, o.local_port.load(Relaxed), None);
    }

    pub fn copy(&self) -> RecordCopy {
        RecordCopy {
            history: self.history(),
            kind: self.kind.load(Relaxed),
            peer: [
                self.peer[0].load(Relaxed),
                self.peer[1].load(Relaxed),
                self.peer[2].load(Relaxed),
            ],
            created_ms: self.created_ms.load(Relaxed),
            connect_errno: self.connect_errno.load(Relaxed),
            errors: Errors(self.errors.load(Relaxed)),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            last_call: self.last_call.load(Relaxed),
            reset_rule: self.reset_rule.load(Relaxed),
            reset_bytes: self.reset_bytes.each_ref().map(|b| b.load(Relaxed)),
            conn_no: self.conn_no.load(Relaxed),
        }
    }

    /// A `connect` was attempted on it: its connection's number, unless it has one.
    pub fn number_connection(&self) {
        if process::may_write() && self.conn_no.load(Relaxed) == 0 {
            self.conn_no.store(next_conn_no(), Relaxed);
        }
    }

    /// Counts a matching call of the `conn_nth=` rule whose counter is `slot` (below 4), for the
    /// rule set of `epoch` (non-zero; counts of another epoch's rules start over): the call's
    /// number on this connection.
    pub fn count_call(&self, slot: usize, epoch: u32) -> u64 {
        let Some(c) = self.conn_calls.get(slot) else {
            return 0;
        };
        let step = |w: u64| {
            let n = if (w >> 32) as u32 == epoch { w as u32 } else { 0 };
            (epoch as u64) << 32 | n.saturating_add(1) as u64
        };
        match c.fetch_update(Relaxed, Relaxed, |w| Some(step(w))) {
            Ok(w) => step(w) as u32 as u64,
            Err(_) => 0,
        }
    }

    /// Bytes moved through the hooks on it, in and out (counted while `counting_bytes`).
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_in.load(Relaxed).saturating_add(self.bytes_out.load(Relaxed))
    }

    /// Adds history bits, if the record is still of generation `gen` (None: whatever it is;
    /// for hooks on a call that just succeeded on this very descriptor).
    pub fn add_history(&self, bits: u32, gen: Option<u32>) {
        if !process::may_write() {
            return;
        }
        let _ = self.state.fetch_update(Release, Acquire, |s| {
            let same = gen.is_none_or(|g| (s >> 32) as u32 == g);
            (same && s & HIST_MASK != 0 && (s as u32) & bits != bits).then_some(s | bits as u64)
        });
    }

    /// A `reset` of fault rule `rule` (1-based) is about to abort the connection (of generation
    /// `gen`), whose `TCP_INFO` byte counts are `bytes` (received, sent, retransmitted): kept for
    /// its later events, which the abort's zeroing would otherwise show as 0.
    pub fn note_reset_injected(&self, gen: u32, rule: usize, bytes: [Option<u64>; 3]) {
        if !process::may_write() || self.gen() != gen {
            return;
        }
        self.reset_rule.store(u8::try_from(rule).unwrap_or(0), Relaxed);
        for (a, v) in self.reset_bytes.iter().zip(bytes) {
            a.store(v.unwrap_or(UNKNOWN), Relaxed);
        }
        self.add_history(hist::RESET_INJECTED, Some(gen));
    }

    /// The same from errshim's timer thread (`handle::timer`), which must not ask whether it
    /// is a vfork child (a thread-local): it never is.
    pub fn note_reset_from_timer(&self, gen: u32, rule: usize, bytes: [Option<u64>; 3]) {
        if self.gen() != gen {
            return;
        }
        self.reset_rule.store(u8::try_from(rule).unwrap_or(0), Relaxed);
        for (a, v) in self.reset_bytes.iter().zip(bytes) {
            a.store(v.unwrap_or(UNKNOWN), Relaxed);
        }
        let bits = hist::RESET_INJECTED as u64;
        let _ = self.state.fetch_update(Release, Acquire, |s| {
            ((s >> 32) as u32 == gen && s & HIST_MASK != 0).then_some(s | bits)
        });
    }

    /// Fault rule `rule` (1-based) failed a connect of this socket (of generation `gen`) with
    /// `errno`, aimed at `peer`: the history of a failed connect (`pending`: one that said
    /// EINPROGRESS and fails later, through SO_ERROR), marked as the injection's.
    pub fn note_connect_injected(&self, gen: u32, rule: usize, errno: i32, peer: Option<&Addr>, pending: bool) {
        if !process::may_write() || self.gen() != gen {
            return;
        }
        self.store_peer(peer);
        self.connect_errno.store(errno as u16, Relaxed);
        self.reset_rule.store(u8::try_from(rule).unwrap_or(0), Relaxed);
        let pending = if pending { hist::CONNECT_PENDING } else { 0 };
        self.add_history(hist::CONNECT_FAILED | hist::CONNECT_INJECTED | pending, Some(gen));
    }

    /// Notes the hooked call made on it (with `ERRSHIM_COUNT=1` only: without it the read and
    /// write families' successes are not seen, so the last call would be wrong).
    #[inline(always)]
    pub fn note_call(&self, call: Call) {
        if counting() && process::may_write() {
            self.last_call.store(call as u8 + 1, Relaxed);
        }
    }

    fn store_peer(&self, peer: Option<&Addr>) {
        let w = pack_addr(peer);
        for (a, v) in self.peer.iter().zip(w) {
            a.store(v, Relaxed);
        }
    }

    /// Sets the peer (an address `connect` was given, or `getpeername` still reports).
    pub fn set_peer(&self, peer: Option<&Addr>) {
        if process::may_write() {
            self.store_peer(peer);
        }
    }

    pub fn peer(&self) -> Option<Addr> {
        unpack_addr([
            self.peer[0].load(Relaxed),
            self.peer[1].load(Relaxed),
            self.peer[2].load(Relaxed),
        ])
    }

    /// Records that a call failed with `errno` (on the record of generation `gen`): the
    /// history bit of the errno's kind, which the event of this very failure shows already.
    /// Atomics only: this runs for every failure, matched by a rule or not.
    pub fn note_error(&self, errno: i32, gen: u32) {
        let bit = match errno {
            libc::ECONNRESET => hist::RESET_SEEN,
            libc::EPIPE => hist::EPIPE_SEEN,
            libc::ETIMEDOUT => hist::TIMEOUT_SEEN,
            // The common ENOTCONN and the rest return at once, without the kind.
            e if crate::observe::cause::is_unreachable(e) => hist::UNREACH_SEEN,
            _ => return,
        };
        self.add_history(bit, Some(gen));
    }

    /// Records `call`'s failure with `errno` as the errno's first (see `Errors`), after its
    /// event: the history of later events shows it. Errnos that say nothing about the
    /// connection (EAGAIN, EINTR, a connect in progress) are not kept. Atomics only.
    #[inline(always)]
    pub fn note_first_error(&self, call: Call, errno: i32, gen: u32) {
        // getpeername's ENOTCONN answers a question ("connected?"): not a failure to keep.
        let skip = matches!(errno, libc::EAGAIN | libc::EINTR | libc::EINPROGRESS | libc::EALREADY)
            | (call == Call::Getpeername);
        if skip || self.gen() != gen || !process::may_write() {
            return;
        }
        // One attempt: a failure another thread noted at the same moment may win the slot.
        // The first failure of a connection (the usual case) needs no search.
        let e = self.errors.load(Relaxed);
        let next = if e == 0 {
            Errors::first(call, errno)
        } else {
            Errors(e).with(call, errno)
        };
        if let Some(next) = next {
            let _ = self.errors.compare_exchange(e, next.0, Relaxed, Relaxed);
        }
    }

    /// Whether this record (of generation `gen`) describes the file now behind its number,
    /// whose `fstat` is `now`, of kind `kind` and local address `local` (see the module doc);
    /// learns the identity when it was not known yet.
    pub fn fits(&self, gen: u32, now: &crate::sys::raw::Stat, kind: Kind, local: Option<&Addr>) -> bool {
        if self.gen() != gen || !self.is_live() {
            return false;
        }
        let ino = self.ino.load(Relaxed);
        if ino != 0 {
            return ino == now.ino && self.dev.load(Relaxed) == now.dev;
        }
        let was = Kind::from_u8(self.kind.load(Relaxed));
        if was != Kind::Unknown && was != kind {
            return false;
        }
        // A TCP or UDP socket that was once connected or accepted keeps its local port (only a
        // UDP `connect(AF_UNSPEC)` gives it back, and then the record's peer is stale anyway):
        // an "established" record on a socket without one is another socket's.
        let established = self.history() & (hist::CONNECTED | hist::ACCEPTED) != 0;
        if established && matches!(local, Some(Addr::V4(_, 0) | Addr::V6(_, 0))) {
            return false;
        }
        if process::may_write() && self.gen() == gen {
            self.dev.store(now.dev, Relaxed);
            self.ino.store(now.ino, Relaxed);
            if was == Kind::Unknown {
                self.kind.store(kind as u8, Relaxed);
            }
        }
        true
    }

    /// The record did not fit (or there was none): what is behind the number now starts a new
    /// record, met late (inherited, or created where no hook saw it), unless the number was
    /// closed or reused meanwhile (the generation moved on).
    pub fn restart_late(&self, gen: u32, kind: Kind, now: &crate::sys::raw::Stat) -> bool {
        if !process::may_write() {
            return false;
        }
        let s = self.state();
        if (s >> 32) as u32 != gen {
            return false;
        }
        let c = RecordCopy {
            history: hist::LATE,
            kind: kind as u8,
            ..RecordCopy::default()
        };
        self.publish(&c, (now.dev, now.ino), 0, Some(s))
    }
}

/// The record of `fd`, checked against the kernel: kept when it still describes the file now
/// behind the number (`Record::fits`, one `fstat`), else started again as met late. None: no
/// record for the number, no `fstat`, or the number was closed or reused meanwhile.
pub fn checked(fd: i32, kind: Kind, local: Option<&Addr>) -> Option<&'static Record> {
    let rec = get(fd)?;
    let gen = rec.gen();
    let now = crate::sys::raw::fstat(fd).ok()?;
    (rec.fits(gen, &now, kind, local) || rec.restart_late(gen, kind, &now)).then_some(rec)
}

/// An IP address and port in three words: `[family | port << 16, addr[0..8], addr[8..16]]`.
pub fn pack_addr(a: Option<&Addr>) -> [u64; 3] {
    match a {
        Some(Addr::V4(ip, port)) => {
            let o = ip.octets();
            [
                libc::AF_INET as u64 | (*port as u64) << 16,
                u32::from_be_bytes(o) as u64,
                0,
            ]
        }
        Some(Addr::V6(ip, port)) => {
            let o = ip.octets();
            let hi = u64::from_be_bytes(o[..8].try_into().unwrap_or([0; 8]));
            let lo = u64::from_be_bytes(o[8..].try_into().unwrap_or([0; 8]));
            [libc::AF_INET6 as u64 | (*port as u64) << 16, hi, lo]
        }
        _ => [0; 3],
    }
}

pub fn unpack_addr(w: [u64; 3]) -> Option<Addr> {
    let port = (w[0] >> 16) as u16;
    match (w[0] & 0xffff) as i32 {
        libc::AF_INET => Some(Addr::V4(Ipv4Addr::from(w[1] as u32), port)),
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o[..8].copy_from_slice(&w[1].to_be_bytes());
            o[8..].copy_from_slice(&w[2].to_be_bytes());
            Some(Addr::V6(Ipv6Addr::from(o), port))
        }
        _ => None,
    }
}

/// The kind byte of a live record for `fd`, or 0 (not known).
#[inline(always)]
pub fn live_kind(fd: i32) -> u8 {
    match get(fd) {
        Some(r) if r.is_live() => r.kind.load(Relaxed),
        _ => 0,
    }
}

/// A hook created a socket (or accepted a connection) at `fd`.
#[inline(always)]
pub fn start(fd: i32, kind: Kind, history: u32, peer: Option<&Addr>) {
    if let Some(r) = writable(fd) {
        let c = RecordCopy {
            history: history | hist::TRACKED,
            kind: kind as u8,
            peer: pack_addr(peer),
            created_ms: now_ms(),
            conn_no: if history & hist::ACCEPTED != 0 {
                next_conn_no()
            } else {
                0
            },
            ..RecordCopy::default()
        };
        r.publish(&c, (0, 0), 0, None);
    }
}

/// A successful read-family call moved `n` bytes in (counted with `ERRSHIM_COUNT=1`, or for
/// an `after_bytes=` fault rule).
#[inline(always)]
pub fn count_in(fd: i32, n: u64, call: Call) {
    let what = COUNTING.load(Relaxed);
    if what == 0 {
        return;
    }
    if let Some(r) = writable(fd) {
        r.bytes_in.fetch_add(n, Relaxed);
        if what & COUNT_ALL != 0 {
            r.note_call(call);
        }
    }
}

/// A successful write-family call moved `n` bytes out (counted as `count_in`).
#[inline(always)]
pub fn count_out(fd: i32, n: u64, call: Call) {
    let what = COUNTING.load(Relaxed);
    if what == 0 {
        return;
    }
    if let Some(r) = writable(fd) {
        r.bytes_out.fetch_add(n, Relaxed);
        if what & COUNT_ALL != 0 {
            r.note_call(call);
        }
    }
}

/// Adds history bits to a live record (a hooked call on it just succeeded).
pub fn note_history(fd: i32, bits: u32) {
    if let Some(r) = writable(fd) {
        if r.is_live() {
            r.add_history(bits, None);
        }
    }
}

/// A `shutdown(fd, how)` succeeded.
pub fn note_shutdown(fd: i32, how: i32) {
    let bits = match how {
        libc::SHUT_RD => hist::SHUT_RD,
        libc::SHUT_WR => hist::SHUT_WR,
        libc::SHUT_RDWR => hist::SHUT_RD | hist::SHUT_WR,
        _ => 0,
    };
    if let Some(r) = writable(fd) {
        if r.is_live() {
            r.add_history(hist::SHUTDOWN | bits, None);
            r.note_call(Call::Shutdown);
        }
    }
}

/// The descriptor is being closed: a copy of its record (history 0 if there was none), which
/// is emptied (except in a vfork child, where nothing is written).
#[inline(always)]
pub fn take(fd: i32) -> RecordCopy {
    let Some(r) = get(fd) else {
        return RecordCopy::default();
    };
    if r.history() == 0 {
        return RecordCopy::default();
    }
    let c = r.copy();
    if process::may_write() {
        r.clear();
    }
    c
}

/// The descriptor was closed (`fclose`, a raw close): forget it.
#[inline(always)]
pub fn forget(fd: i32) {
    // Not `writable`: forgetting writes nothing new, so the highest number in use stays.
    if let Some(r) = get(fd).filter(|_| process::may_write()) {
        r.clear();
    }
}

/// `close_range`/`closefrom`: forget every record in `first..=last` (at most up to the highest
/// number ever written, so the cost follows what is in use, not `RLIMIT_NOFILE`).
pub fn forget_range(first: u32, last: u32) {
    if !process::may_write() {
        return;
    }
    let end = HIGH.load(Relaxed).min(LEN.load(Acquire));
    let last = (last as usize).min(end.saturating_sub(1));
    let mut fd = first as usize;
    while fd <= last && fd < end {
        if let Some(r) = get(fd as i32) {
            r.clear();
        }
        fd += 1;
    }
}

/// `dup`: the same socket under another number (or nothing known about it: the new number's
/// record is emptied).
pub fn copy(old: i32, new: i32) {
    if new < 0 || old == new {
        return;
    }
    let Some(b) = writable(new) else {
        return;
    };
    match get(old) {
        Some(a) if a.history() != 0 => b.copy_from(a),
        _ => b.clear(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let v4 = Addr::V4(Ipv4Addr::new(127, 0, 0, 1), 8080);
        let v6 = Addr::V6("2001:db8::1".parse().unwrap(), 443);
        for a in [v4, v6] {
            assert_eq!(
                format!("{:?}", unpack_addr(pack_addr(Some(&a))).unwrap()),
                format!("{a:?}")
            );
        }
        assert!(unpack_addr(pack_addr(None)).is_none());
        assert!(unpack_addr(pack_addr(Some(&Addr::UnixUnnamed))).is_none());
    }

    fn stat(dev: u64, ino: u64) -> crate::sys::raw::Stat {
        crate::sys::raw::Stat {
            dev,
            ino,
            kind: libc::S_IFSOCK,
            rdev: 0,
            size: 0,
            mtime: 0,
        }
    }

    #[test]
    fn errors_keep_four_distinct_in_order() {
        let mut e = Errors::default();
        for (i, errno) in [libc::ETIMEDOUT, libc::ENOTCONN, libc::EPIPE, libc::ECONNRESET]
            .into_iter()
            .enumerate()
        {
            e = e.with(Call::ALL[i], errno).unwrap();
        }
        assert_eq!(e.with(Call::Read, libc::ENOTCONN), None, "already there");
        assert_eq!(e.with(Call::Read, libc::EHOSTUNREACH), None, "full");
        assert_eq!(Errors::default().with(Call::Read, 300), None, "does not fit");
        let got: Vec<_> = e.iter().collect();
        assert_eq!(got[0], (Some(Call::ALL[0]), libc::ETIMEDOUT));
        assert_eq!(got[3], (Some(Call::ALL[3]), libc::ECONNRESET));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn records_and_generations() {
        init();
        start(5, Kind::Tcp4, hist::CONNECTED, Some(&Addr::V4(Ipv4Addr::LOCALHOST, 1)));
        let r = get(5).unwrap();
        assert!(get(-1).is_none());
        let g = r.gen();
        r.note_error(libc::ECONNRESET, g);
        r.note_error(libc::EPIPE, g);
        r.note_first_error(Call::Read, libc::ECONNRESET, g);
        r.note_first_error(Call::Write, libc::EPIPE, g);
        r.note_first_error(Call::Write, libc::ECONNRESET, g);
        r.note_first_error(Call::Read, libc::EAGAIN, g);
        r.note_first_error(Call::Read, libc::ETIMEDOUT, g + 1);
        r.note_error(libc::ETIMEDOUT, g + 1);
        let errors: Vec<_> = Errors(r.errors.load(Relaxed)).iter().collect();
        assert_eq!(
            errors,
            [(Some(Call::Read), libc::ECONNRESET), (Some(Call::Write), libc::EPIPE)],
            "each errno's first failure, in order; not EAGAIN; not from another generation"
        );
        let h = r.history();
        assert!(h & hist::RESET_SEEN != 0 && h & hist::EPIPE_SEEN != 0 && h & hist::TRACKED != 0);
        assert!(h & hist::TIMEOUT_SEEN == 0);
        set_counting(true);
        r.note_call(Call::Recv);
        assert_eq!(r.copy().last_call(), Some(Call::Recv));
        copy(5, 6);
        assert_eq!(format!("{:?}", get(6).unwrap().peer().unwrap()), "127.0.0.1:1");
        // The first check learns the identity; later ones compare it.
        let local = Addr::V4(Ipv4Addr::LOCALHOST, 4000);
        assert!(r.fits(g, &stat(1, 77), Kind::Tcp4, Some(&local)));
        assert!(r.fits(g, &stat(1, 77), Kind::Tcp4, Some(&local)));
        assert!(!r.fits(g, &stat(1, 78), Kind::Tcp4, Some(&local)), "another inode");
        // Closed: the copy keeps what it was, the slot is empty, and an event that started
        // before the close can neither add to it nor bring it back.
        let c = take(5);
        assert!(c.is_live() && c.history & hist::RESET_SEEN != 0);
        assert!(!r.is_live() && r.gen() != g);
        r.add_history(hist::READ_EOF, Some(g));
        assert_eq!(r.history(), 0);
        assert!(!r.restart_late(g, Kind::Tcp4, &stat(1, 79)));
        assert!(!r.is_live());
        let g2 = r.gen();
        assert!(r.restart_late(g2, Kind::UnixStream, &stat(1, 80)));
        assert_eq!(r.history(), hist::LATE);
        // A record made by a hook without an identity yet: the wrong kind, or an established
        // record on a socket without a local port, is another socket's.
        start(7, Kind::Tcp4, hist::ACCEPTED, None);
        let r7 = get(7).unwrap();
        let g7 = r7.gen();
        assert!(!r7.fits(g7, &stat(1, 90), Kind::UnixStream, None));
        assert!(!r7.fits(g7, &stat(1, 90), Kind::Tcp4, Some(&Addr::V4(Ipv4Addr::UNSPECIFIED, 0))));
        forget_range(0, u32::MAX);
        assert!(!get(6).unwrap().is_live() && !r7.is_live());
    }
}
