//! What kind each descriptor was when the program created it, remembered by the hooks that
//! create sockets (`socket`, `socketpair`, `accept`, `accept4`, `dup*`). Only `close` needs it:
//! once a close has failed the descriptor is gone and cannot be asked any more.
//!
//! Lock-free: one `AtomicU8` per descriptor in an anonymous mapping sized from the hard
//! `RLIMIT_NOFILE` (at most 4 Mi entries; pages are only backed once touched). A success path
//! pays one relaxed load, and a store only when the slot changes.

use crate::sockinfo::Kind;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering::Relaxed};

static TABLE: AtomicPtr<AtomicU8> = AtomicPtr::new(core::ptr::null_mut());
static LEN: AtomicUsize = AtomicUsize::new(0);

const MAX_ENTRIES: u64 = 1 << 22;

pub fn init() {
    if !TABLE.load(Relaxed).is_null() {
        return;
    }
    let (_, hard) = crate::sys::nofile_limit();
    let n = hard.clamp(1024, MAX_ENTRIES) as usize;
    // SAFETY: a fresh private anonymous mapping; zero bytes are valid AtomicU8 values.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            n,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        LEN.store(n, Relaxed);
        TABLE.store(p.cast(), Relaxed);
    }
}

#[inline(always)]
fn slot(fd: i32) -> Option<&'static AtomicU8> {
    let t = TABLE.load(Relaxed);
    if t.is_null() || fd < 0 || fd as usize >= LEN.load(Relaxed) {
        return None;
    }
    // SAFETY: fd is within the mapping, which lives for the rest of the process.
    Some(unsafe { &*t.add(fd as usize) })
}

#[inline(always)]
pub fn set(fd: i32, kind: Kind) {
    if let Some(s) = slot(fd) {
        if s.load(Relaxed) != kind as u8 {
            s.store(kind as u8, Relaxed);
        }
    }
}

#[inline(always)]
pub fn get(fd: i32) -> Kind {
    slot(fd).map_or(Kind::Unknown, |s| Kind::from_u8(s.load(Relaxed)))
}

/// Forgets `fd` (it is being closed) and returns what it was.
#[inline(always)]
pub fn take(fd: i32) -> Kind {
    match slot(fd) {
        Some(s) => {
            let v = s.load(Relaxed);
            if v != 0 {
                s.store(0, Relaxed);
            }
            Kind::from_u8(v)
        }
        None => Kind::Unknown,
    }
}
