//! errshim's timer: what a fault must make happen later, when the program may be waiting in
//! `poll` or `epoll_wait` and make no call errshim sees. A `stall=` ends at its time as a real
//! one does (the connection aborted, which wakes the program through any readiness API), and a
//! `slow_close=` sends its FIN at its time (errshim holds a copy of the socket until then).
//!
//! The work is done by one thread, started by the first such fault in a process (never without
//! one): a thread the kernel knows and libc does not (`raw::spawn_bare_thread`), with every
//! signal blocked, which runs raw system calls only (no libc, no thread-local storage) and
//! sleeps on a futex between deadlines. It is stopped before the program installs a seccomp
//! filter (`stop`), and gone in a forked child, which closes the copies it inherited and starts
//! its own when it needs one. Where it cannot run (not x86-64, no memory, `clone` refused),
//! the program's own calls do the same work at the first call the fault engine is asked about
//! after the deadline (`due_from_calls`).
//!
//! Every copy errshim holds is close-on-exec and numbered in the upper half of the descriptor
//! limit, and is closed only after checking that its number still names the same socket.

use crate::observe::conntable;
use crate::sys::{process, raw};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

/// How many deadlines may wait at once; a fault beyond them falls back to the program's calls
/// (a stall) or is not made (a slow close).
const SLOTS: usize = 64;
const STACK_BYTES: usize = 64 * 1024;

/// The phases of `Record::stall[0]` (see `handle::failure::stall_step`).
pub const STALL_ACTIVE: u64 = 1;
pub const STALL_ENDED: u64 = 2;
/// Ended by the timer: the connection is aborted; the program's next call on it fails with
/// the stall's errno.
pub const STALL_TIMED_OUT: u64 = 3;

/// A stall's word in its connection's record (`Record::stall[0]`): the record's generation,
/// whether the stall ends with a reset (else a timeout), its rule (1-based) and its phase. Of
/// another generation than the record's, it is no stall (the word is never cleared). Never 0.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StallWord(pub u64);

impl StallWord {
    pub fn new(gen: u32, reset: bool, rule: usize, phase: u64) -> StallWord {
        StallWord((gen as u64) << 32 | (reset as u64) << 16 | (rule as u64 & 0xff) << 8 | phase)
    }
    pub fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn resets(self) -> bool {
        self.0 >> 16 & 1 != 0
    }
    pub fn rule(self) -> usize {
        (self.0 >> 8 & 0xff) as usize
    }
    pub fn phase(self) -> u64 {
        self.0 & 0xff
    }
    pub fn with_phase(self, phase: u64) -> StallWord {
        StallWord(self.0 & !0xff | phase)
    }
}

struct Timer {
    /// errshim's copy of the socket + 1 (0: free; -1: being written or fired).
    copy: AtomicI32,
    due_ms: AtomicU64,
    /// A stall's: the program's descriptor (its record) and the record's stall word while the
    /// stall is on. 0: a slow close's.
    fd: AtomicI32,
    expect: AtomicU64,
    /// The socket's identity (device, inode).
    dev: AtomicU64,
    ino: AtomicU64,
}

static TIMERS: [Timer; SLOTS] = [const {
    Timer {
        copy: AtomicI32::new(0),
        due_ms: AtomicU64::new(0),
        fd: AtomicI32::new(0),
        expect: AtomicU64::new(0),
        dev: AtomicU64::new(0),
        ino: AtomicU64::new(0),
    }
}; SLOTS];
/// How many are taken.
static TAKEN: AtomicUsize = AtomicUsize::new(0);
/// The thread's futex: bumped by every new deadline and by `stop`.
static SEQ: AtomicU32 = AtomicU32::new(0);
/// The thread's id while it runs, 0 once it has exited (the kernel writes both).
static THREAD_TID: AtomicI32 = AtomicI32::new(0);
/// The process whose thread runs (-pid while being started, 0: none); a forked child's copy
/// names its parent.
static THREAD_PID: AtomicI32 = AtomicI32::new(0);
/// The process in which starting the thread failed: it is not tried again there.
static FAILED_PID: AtomicI32 = AtomicI32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether some deadline waits (one load: asked by the fault engine at every decision).
#[inline(always)]
pub fn pending() -> bool {
    TAKEN.load(Relaxed) != 0
}

/// Whether the program's calls must do the timer's work: some deadline waits and no thread of
/// this process does it.
pub fn due_from_calls() -> bool {
    pending() && (THREAD_PID.load(Acquire) != process::pid() || THREAD_TID.load(Acquire) == 0)
}

/// `slow_close=`: keeps the socket behind `fd` open for `ns` more nanoseconds, before the
/// program's close of `fd`. Whether it is held (false: no slot, no descriptor left).
pub fn hold_close(fd: i32, ns: u64) -> bool {
    add(fd, conntable::now_ms().saturating_add(ns.div_ceil(1_000_000)), 0)
}

/// A stall began on `fd` (its record's stall word is now `expect`), to end at `due_ms`: the
/// timer ends it then. Without a slot or a copy, the program's next call ends it.
pub fn stall_began(fd: i32, expect: StallWord, due_ms: u64) {
    let _ = add(fd, due_ms, expect.0);
}

fn add(fd: i32, due_ms: u64, expect: u64) -> bool {
    let Ok(st) = raw::fstat(fd) else {
        return false;
    };
    if !st.is(libc::S_IFSOCK) {
        return false;
    }
    let Some(t) = TIMERS
        .iter()
        .find(|t| t.copy.compare_exchange(0, -1, Acquire, Relaxed).is_ok())
    else {
        return false;
    };
    // In the upper half of the limit, but never so high that the kernel must grow the
    // process's descriptor table far beyond what it uses (a limit of 2^30 in containers).
    let (soft, _) = raw::nofile_limit();
    let Ok(copy) = raw::dup_cloexec(fd, (soft / 2).clamp(3, 65_536) as i32) else {
        t.copy.store(0, Release);
        return false;
    };
    t.due_ms.store(due_ms, Relaxed);
    t.fd.store(fd, Relaxed);
    t.expect.store(expect, Relaxed);
    t.dev.store(st.dev, Relaxed);
    t.ino.store(st.ino, Relaxed);
    TAKEN.fetch_add(1, Relaxed);
    t.copy.store(copy + 1, Release);
    ensure_thread();
    SEQ.fetch_add(1, Release);
    raw::futex_wake(&SEQ);
    true
}

/// Does what is due at `now_ms` (everything with `all`); returns the next deadline
/// (u64::MAX: none). Runs on the timer thread and, without one, on the program's calls: raw
/// system calls and atomics only.
pub fn fire_due(now_ms: u64, all: bool) -> u64 {
    let mut next = u64::MAX;
    for t in &TIMERS {
        let c = t.copy.load(Acquire);
        if c <= 0 {
            continue;
        }
        let due = t.due_ms.load(Relaxed);
        if !all && due > now_ms {
            next = next.min(due);
            continue;
        }
        if t.copy.compare_exchange(c, -1, AcqRel, Relaxed).is_err() {
            continue;
        }
        let copy = c - 1;
        let same = raw::fstat(copy).is_ok_and(|st| st.dev == t.dev.load(Relaxed) && st.ino == t.ino.load(Relaxed));
        if same {
            let stall = t.expect.load(Relaxed);
            if stall != 0 && !all {
                end_stall(t.fd.load(Relaxed), StallWord(stall), copy);
            }
            raw::close(copy);
        }
        TAKEN.fetch_sub(1, Relaxed);
        t.copy.store(0, Release);
    }
    next
}

/// A stall's time has come: unless the program's own call ended it first, the connection is
/// aborted for real (an RST to the peer; poll then says IN|OUT|ERR|HUP|RDHUP), which wakes a
/// program waiting on it, and its record says the program's next call gets the errno.
fn end_stall(fd: i32, expect: StallWord, copy: i32) {
    let Some(rec) = conntable::get(fd) else {
        return;
    };
    let timed_out = expect.with_phase(STALL_TIMED_OUT);
    // A record of another generation (the program closed the descriptor meanwhile) still
    // holds the old word, which nothing reads; the abort then ends the socket errshim holds.
    let ours = rec.stall[0]
        .compare_exchange(expect.0, timed_out.0, AcqRel, Relaxed)
        .is_ok();
    let same_socket = rec.gen() == expect.gen();
    if !ours && same_socket {
        // The program's call ended it: the connection is already aborted.
        return;
    }
    if ours && same_socket {
        if let Some(info) = raw::tcp_info(copy) {
            let bytes = [info.bytes_received, info.bytes_sent, info.evidence.bytes_retrans];
            rec.note_reset_from_timer(expect.gen(), expect.rule(), bytes);
        }
    }
    if raw::abort_connection(copy).is_ok() {
        // Reads then give 0, as after a peer's RST; the abort's error stays pending (poll says
        // ERR too, as after a real RST or timeout) until the program's next call takes it as
        // the stall's errno (`stall_step`, or SO_ERROR: `after_so_error`).
        let _ = raw::shutdown(copy, libc::SHUT_RDWR);
    }
}

/// Starts the timer thread of this process, unless it runs or cannot.
fn ensure_thread() {
    let pid = process::pid();
    let cur = THREAD_PID.load(Acquire);
    if (cur == pid && THREAD_TID.load(Acquire) != 0) || cur == -pid || FAILED_PID.load(Relaxed) == pid {
        return;
    }
    if THREAD_PID.compare_exchange(cur, -pid, AcqRel, Relaxed).is_err() {
        return;
    }
    STOP.store(false, Release);
    let started = raw::map_anonymous(STACK_BYTES).ok().and_then(|base| {
        // SAFETY: the top of a fresh mapping that is never unmapped; THREAD_TID is static.
        unsafe { raw::spawn_bare_thread(base.add(STACK_BYTES), run, 0, &THREAD_TID) }.ok()
    });
    match started {
        Some(_) => THREAD_PID.store(pid, Release),
        None => {
            FAILED_PID.store(pid, Relaxed);
            THREAD_PID.store(0, Release);
        }
    }
}

/// The thread: sleeps until the next deadline or a new one, does what is due; ends when told
/// (`stop`) or when errshim may make no system call.
extern "C" fn run(_: usize) -> ! {
    loop {
        if STOP.load(Acquire) || !raw::allowed() {
            raw::exit_thread();
        }
        let seen = SEQ.load(Acquire);
        let next = fire_due(raw::monotonic_ms(), false);
        let wait = (next != u64::MAX).then(|| next.saturating_sub(raw::monotonic_ms()).max(1));
        raw::futex_wait(&SEQ, seen, wait);
    }
}

/// A seccomp filter is about to be installed, or the program changes its credentials: what
/// waits is done now (copies closed: FINs go early, stalls end with the kernel's own calls),
/// since errshim may make no system call under the filter, and the thread ends (a filter
/// given to every thread could kill the process for one of its calls; a thread libc does not
/// know keeps its old credentials). Waits for it, at most 0.2 s.
pub fn stop() {
    if pending() {
        fire_due(0, true);
    }
    if THREAD_PID.load(Acquire) != process::pid() || THREAD_TID.load(Acquire) == 0 {
        return;
    }
    STOP.store(true, Release);
    SEQ.fetch_add(1, Release);
    raw::futex_wake(&SEQ);
    for _ in 0..200 {
        if THREAD_TID.load(Acquire) == 0 {
            break;
        }
        raw::sleep_ns(1_000_000);
    }
    THREAD_PID.store(0, Release);
}

/// In a forked child: the copies are the parent's business (closed here, so that they do not
/// hold its sockets open), and the parent's thread is not the child's.
pub fn child_after_fork() {
    THREAD_PID.store(0, Relaxed);
    THREAD_TID.store(0, Relaxed);
    if pending() {
        fire_due(0, true);
    }
    // A slot another thread of the parent was filling or firing at the fork: its copy, if
    // any, is lost to the child (close-on-exec, and closed with it).
    for t in &TIMERS {
        let _ = t.copy.compare_exchange(-1, 0, Relaxed, Relaxed);
    }
    TAKEN.store(0, Relaxed);
}
