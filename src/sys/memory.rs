//! The caller's memory: errshim reads or writes it only where that is proven safe, never by
//! trusting a pointer the program passed.
//!
//! - After a call succeeded, what the kernel just read or wrote is proven (a `msghdr` that
//!   `sendmsg` accepted, the address `accept` wrote, and no more than the length written back
//!   and the length passed in).
//! - Otherwise (a call failed: the kernel may have given up before touching it), each page is
//!   first probed with a system call that reports EFAULT instead of faulting
//!   (`raw::probe_readable`, `raw::probe_writable4`): only on event paths, never on a call
//!   that succeeded, and never under a seccomp filter (no system call at all: then nothing is
//!   read).
//! - Memory on the calling thread's own stack between the stack pointer and the top of the
//!   stack is mapped, so a pointer there can be read without asking the kernel (`on_own_stack`).

use crate::sys::raw;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const PAGE: usize = 4096;
/// At most this many bytes are probed for one read (17 pages).
const MAX_PROBED: usize = 64 * 1024;

/// Whether `[addr, addr + len)` can be read, asked of the kernel page by page.
pub fn readable(addr: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    if len > MAX_PROBED || addr < PAGE {
        return false;
    }
    let mut page = addr & !(PAGE - 1);
    while page < end {
        if !raw::probe_readable(page.max(addr)) {
            return false;
        }
        page += PAGE;
    }
    true
}

/// A copy of the `T` at address `addr` (a pointer the caller passed, as an address: it is not
/// trusted), if that memory can be read (probed).
pub fn read<T: Copy>(addr: usize) -> Option<T> {
    if !readable(addr, core::mem::size_of::<T>()) {
        return None;
    }
    // SAFETY: the kernel just reported every byte of it readable; unaligned is fine.
    Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Stores `v` at address `addr` (4 or 8 bytes, naturally aligned, owned by the caller's
/// call), if the kernel reports it writable.
pub fn write<T: Copy>(addr: usize, v: T) -> bool {
    let n = core::mem::size_of::<T>();
    if !(n == 4 || n == 8) || !addr.is_multiple_of(n) || !raw::probe_writable4(addr) {
        return false;
    }
    // SAFETY: aligned, and its page proven writable (an aligned 4- or 8-byte field never
    // crosses a page).
    unsafe { core::ptr::write(addr as *mut T, v) };
    true
}

/// Copies `src` (at most a page) into the caller's buffer at `addr`, if every page of it is
/// writable: proven on each page by `raw::probe_writable4` on a 4-byte aligned word of the
/// buffer itself (the probe's store lands where `src` then goes; the word is read after a probe
/// first, and put back if a later page fails). A page that holds no whole aligned word of the
/// buffer cannot be proven: then nothing is copied. Whether it was copied; if not, the buffer
/// is as it was.
pub fn copy_out(addr: usize, src: &[u8]) -> bool {
    if src.is_empty() {
        return true;
    }
    let Some(end) = addr.checked_add(src.len()) else {
        return false;
    };
    if src.len() > PAGE || addr < PAGE || end > usize::MAX - 2 * PAGE {
        return false;
    }
    // At most two pages; the word probed in each, and what it held.
    let mut probed: [Option<(usize, u32)>; 2] = [None, None];
    let mut page = addr & !(PAGE - 1);
    let mut ok = true;
    for slot in &mut probed {
        if page >= end {
            break;
        }
        let word = page.max(addr).next_multiple_of(4);
        let held = (word + 4 <= end.min(page + PAGE)).then(|| read::<u32>(word)).flatten();
        match held {
            Some(v) if raw::probe_writable4(word) => *slot = Some((word, v)),
            _ => {
                ok = false;
                break;
            }
        }
        page += PAGE;
    }
    if !ok {
        for (word, v) in probed.into_iter().flatten() {
            // SAFETY: probed writable just above; its own value back.
            unsafe { core::ptr::write(word as *mut u32, v) };
        }
        return false;
    }
    // SAFETY: every page of the buffer has just been proven writable.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
    true
}

/// The main thread's thread pointer and `__libc_stack_end` (learnt in the constructor, which
/// runs on the main thread).
static MAIN_TP: AtomicUsize = AtomicUsize::new(0);
static MAIN_STACK_END: AtomicUsize = AtomicUsize::new(0);
/// A thread's stack is never this far below its top.
const MAX_STACK: usize = 64 << 20;

extern "C" {
    /// The main thread's initial stack pointer (the dynamic loader's; everything from there
    /// up to the top of the stack is argv, the environment and the auxiliary vector).
    static __libc_stack_end: *const core::ffi::c_void;
}

/// Learns the main thread's stack top (from the constructor).
#[link_section = ".text.errshim_startup"]
pub fn learn_main_stack() {
    MAIN_TP.store(raw::thread_pointer(), Relaxed);
    // SAFETY: the dynamic loader sets this before any constructor runs.
    MAIN_STACK_END.store(unsafe { __libc_stack_end } as usize, Relaxed);
}

/// Whether `[addr, addr + len)` lies on the calling thread's stack between the stack pointer
/// and the top of the stack, which is mapped memory: the main thread's stack up to
/// `__libc_stack_end`, or a thread's stack block up to its control block (glibc puts that at
/// the top of the block, with static TLS just below it). Costs no system call.
///
/// Not proven, and so answered "no": a stack that is neither (a coroutine or a signal stack
/// far from the top, a thread made without glibc). The one case this cannot tell apart is a
/// coroutine stack within 64 MiB below a glibc thread's stack, where a pointer into the gap
/// between them would be taken for mapped memory.
#[inline]
pub fn on_own_stack(addr: usize, len: usize) -> bool {
    let sp = raw::stack_pointer();
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    if addr < sp {
        return false;
    }
    let tp = raw::thread_pointer();
    let top = if tp == MAIN_TP.load(Relaxed) {
        MAIN_STACK_END.load(Relaxed)
    } else {
        tp
    };
    top > sp && top - sp <= MAX_STACK && end <= top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probed_reads() {
        let page = raw::map_anonymous(2 * PAGE).unwrap() as usize;
        // SAFETY: the second page of the mapping becomes inaccessible.
        unsafe { libc::mprotect((page + PAGE) as *mut libc::c_void, PAGE, libc::PROT_NONE) };
        assert!(readable(page, PAGE));
        assert!(!readable(page + PAGE - 4, 8), "runs into the inaccessible page");
        assert!(!readable(0, 1) && !readable(usize::MAX - 3, 8));
        assert!(readable(12345, 0), "nothing to read");
        assert_eq!(read::<u64>(page + 8), Some(0));
        assert_eq!(read::<u32>(page + PAGE), None);
        let mut v = 5u32;
        assert!(write(&mut v as *mut u32 as usize, 9u32) && v == 9);
        assert!(!write(page + PAGE, 1u32));
        // copy_out: across the two pages, the second inaccessible: nothing changes.
        // SAFETY: the first page of the mapping, readable and writable.
        let first = unsafe { core::slice::from_raw_parts_mut(page as *mut u8, PAGE) };
        first[PAGE - 8..].copy_from_slice(&[0xaa; 8]);
        assert!(!copy_out(page + PAGE - 8, &[1; 16]));
        assert_eq!(first[PAGE - 8..], [0xaa; 8], "the probed word is put back");
        assert!(copy_out(page + PAGE - 9, &[1; 9]) && first[PAGE - 9..] == [1; 9]);
        assert!(!copy_out(page + PAGE - 3, &[2; 3]), "no whole aligned word to probe");
        assert!(!copy_out(0, &[1]) && copy_out(0, &[]) && !copy_out(usize::MAX - 8, &[1; 4]));
    }

    #[test]
    fn own_stack() {
        learn_main_stack();
        let local = 0u64;
        let a = &local as *const u64 as usize;
        std::thread::spawn(move || {
            let mine = 0u32;
            assert!(on_own_stack(&mine as *const u32 as usize, 4));
            assert!(!on_own_stack(a, 8), "another thread's stack is not this one's");
            let heap = Box::new(0u32);
            assert!(!on_own_stack(&*heap as *const u32 as usize, 4));
            // Well below: `on_own_stack`'s own frame (larger in a debug build) is below this
            // one's stack pointer too.
            assert!(
                !on_own_stack(raw::stack_pointer() - 64 * 1024, 4),
                "below the stack pointer"
            );
        })
        .join()
        .unwrap();
    }
}
