//! `slow_close=D`: the program's `close` of a TCP socket returns at once, as always, and the
//! peer sees the FIN D later. The kernel sends the FIN when the last descriptor of the socket
//! is closed, so errshim keeps one more (close-on-exec, numbered in the upper half of the
//! descriptor limit) and closes it once D has passed. errshim has no thread or timer: a held
//! socket is released by the first hooked call the fault engine is asked about after its time
//! (a slow-close rule asks it about every read, write and close), or at the process's exit.
//!
//! Only reached when a rule fires, or while something is held (`HELD`); every system call is
//! errshim's own (gated, errno untouched).

use crate::sys::raw;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::*};

/// How many sockets may be held at once; a close beyond them is made as asked.
const SLOTS: usize = 64;

/// A held socket: errshim's descriptor + 1 (0: free), when to close it (`now_ms`), and the
/// socket's identity (device, inode), checked before closing: a number the program closed
/// behind errshim's back and reused is never closed.
struct Held {
    fd: AtomicI32,
    due_ms: AtomicU64,
    dev: AtomicU64,
    ino: AtomicU64,
}

static TABLE: [Held; SLOTS] = [const {
    Held {
        fd: AtomicI32::new(0),
        due_ms: AtomicU64::new(0),
        dev: AtomicU64::new(0),
        ino: AtomicU64::new(0),
    }
}; SLOTS];
/// How many slots are taken: the fault engine's one test while nothing is held.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether some socket is held (one load: asked on every decision).
#[inline(always)]
pub fn holding() -> bool {
    HELD.load(Relaxed) != 0
}

/// Keeps the socket behind `fd` open for `ns` more nanoseconds, before the program's close of
/// `fd`. Whether it is held (false: no slot, no descriptor left, not a socket).
pub fn hold(fd: i32, ns: u64) -> bool {
    let Ok(st) = raw::fstat(fd) else {
        return false;
    };
    if !st.is(libc::S_IFSOCK) {
        return false;
    }
    let Some(slot) = TABLE
        .iter()
        .find(|h| h.fd.compare_exchange(0, -1, Acquire, Relaxed).is_ok())
    else {
        return false;
    };
    let (soft, _) = raw::nofile_limit();
    let Ok(copy) = raw::dup_cloexec(fd, (soft / 2).clamp(3, i32::MAX as u64) as i32) else {
        slot.fd.store(0, Release);
        return false;
    };
    slot.due_ms.store(
        crate::observe::conntable::now_ms().saturating_add(ns.div_ceil(1_000_000)),
        Relaxed,
    );
    slot.dev.store(st.dev, Relaxed);
    slot.ino.store(st.ino, Relaxed);
    slot.fd.store(copy + 1, Release);
    HELD.fetch_add(1, Relaxed);
    true
}

/// Closes every held socket whose time has come (all of them with `all`).
#[cold]
#[inline(never)]
pub fn release_due(all: bool) {
    let now = crate::observe::conntable::now_ms();
    for h in &TABLE {
        let fd = h.fd.load(Acquire);
        if fd <= 0 || (!all && h.due_ms.load(Relaxed) > now) {
            continue;
        }
        if h.fd.compare_exchange(fd, -1, AcqRel, Relaxed).is_err() {
            continue;
        }
        let fd = fd - 1;
        if raw::fstat(fd).is_ok_and(|st| st.dev == h.dev.load(Relaxed) && st.ino == h.ino.load(Relaxed)) {
            raw::close(fd);
        }
        h.fd.store(0, Release);
        HELD.fetch_sub(1, Relaxed);
    }
}
