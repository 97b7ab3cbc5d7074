//! Which process the hooks run in, for the state errshim keeps in memory (the descriptor
//! table, counters, the summary, the fault rules' counts).
//!
//! A `vfork` child (`vfork()`: Python's `subprocess`, many `fork`+`exec` replacements; `clone`
//! with `CLONE_VM | CLONE_VFORK`) runs on its parent's memory until it calls `exec` or `_exit`:
//! whatever a hook writes there is written in the parent. Such a child may close and dup
//! descriptors of its own (its descriptor table is a copy) before it execs. So in a vfork child
//! the hooks change nothing errshim keeps: `may_write()` is false there, and every writer of
//! shared state asks it first. Rules still decide what the child's calls return, and its
//! events are still logged (to its own descriptors); nothing is counted.
//!
//! How a vfork child is known: `vfork` is interposed by a trampoline (`interpose::hooks::vfork`)
//! that marks the calling thread (a thread-local flag, which the child shares because it runs on
//! the same thread control block) before the real `vfork`, and clears the mark when the parent
//! resumes (the kernel suspends the parent until the child has exec'd or exited). A global count of
//! marked threads keeps the check to one load while no vfork is in progress.

use crate::sys::raw;
use core::cell::Cell;
use core::ffi::{c_char, CStr};
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering::*};

thread_local! {
    /// This thread has called `vfork` and not resumed from it: if code runs on it now, it is
    /// the child's.
    static IN_VFORK: Cell<bool> = const { Cell::new(false) };
    /// The return address of the `vfork` in progress (the trampoline cannot keep it on the
    /// stack, which the child overwrites).
    static VFORK_RET: Cell<usize> = const { Cell::new(0) };
    /// This thread's id, and the number of the process it was learnt in (see `Ids`; a forked
    /// child's thread has its parent's copy of this).
    static TID: Cell<(u32, i32)> = const { Cell::new((0, 0)) };
}

/// Where the process id is cached: a page that a forked child sees zeroed
/// (`raw::wipe_on_fork_page`), null until the first event needs it, `NO_PAGE` where the kernel
/// has none to give, or once a process that shares this one's memory was made.
static PID_PAGE: AtomicPtr<Ids> = AtomicPtr::new(core::ptr::null_mut());
const NO_PAGE: *mut Ids = core::ptr::dangling_mut::<Ids>();

/// What the page holds: the process id, and this process's number among the processes of the
/// tree (0 until known), which thread ids are stamped with (a child can have its parent's pid,
/// in a new pid namespace; never its number).
#[repr(C)]
struct Ids {
    pid: AtomicI32,
    generation: AtomicU32,
}

/// Numbers the processes of a tree: a forked child's copy continues from its parent's value,
/// and takes the next, so it differs from its parent's number.
static GENERATIONS: AtomicU32 = AtomicU32::new(0);

/// A process sharing this one's memory is being made (`clone(CLONE_VM)`, not a thread): from
/// now on the ids are asked of the kernel each time, in both.
pub fn stop_caching_ids() {
    if may_write() {
        PID_PAGE.store(NO_PAGE, Release);
    }
}

/// The cached ids of this process, filled the first time; None where nothing is cached.
fn ids() -> Option<&'static Ids> {
    if !may_write() {
        return None; // a vfork child shares its parent's memory, and so its cache
    }
    let mut page = PID_PAGE.load(Acquire);
    if page.is_null() {
        let fresh = raw::wipe_on_fork_page().map_or(NO_PAGE, |p| p.cast::<Ids>());
        page = match PID_PAGE.compare_exchange(core::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(other) => {
                if fresh != NO_PAGE {
                    raw::unmap_page(fresh.cast());
                }
                other
            }
        };
    }
    if page == NO_PAGE {
        return None;
    }
    // SAFETY: neither null nor NO_PAGE: a page errshim mapped, which lives as long as the
    // process; its fields are atomics, valid for any bits (zero: not known in this process).
    let ids = unsafe { &*page };
    if ids.pid.load(Relaxed) == 0 {
        ids.generation
            .store(GENERATIONS.fetch_add(1, Relaxed).wrapping_add(1).max(1), Relaxed);
        ids.pid.store(raw::getpid(), Relaxed);
    }
    Some(ids)
}

/// This process's id, with a system call only the first time in each process (an event line
/// used to cost `getpid` and `gettid` every time).
pub fn pid() -> i32 {
    match ids() {
        Some(ids) => ids.pid.load(Relaxed),
        None => raw::getpid(),
    }
}

/// The calling thread's id, with a system call only the first time in each thread (and
/// again in a forked child).
pub fn tid() -> i32 {
    let Some(ids) = ids() else {
        return raw::gettid();
    };
    let generation = ids.generation.load(Relaxed);
    TID.try_with(|c| match c.get() {
        (known, t) if known == generation && t != 0 => t,
        _ => {
            let t = raw::gettid();
            c.set((generation, t));
            t
        }
    })
    .unwrap_or_else(|_| raw::gettid())
}

/// Threads of this process inside `vfork` or `clone(CLONE_VFORK)` right now.
static VFORKING: AtomicUsize = AtomicUsize::new(0);

/// Whether the hooks may change the state errshim keeps in memory (false in a vfork child).
#[inline(always)]
pub fn may_write() -> bool {
    VFORKING.load(Relaxed) == 0 || !in_vfork_child()
}

/// Whether some thread of this process is inside a vfork (one load; `may_write` says whether it
/// is this one's child).
#[inline(always)]
pub fn vfork_in_progress() -> bool {
    VFORKING.load(Relaxed) != 0
}

#[cold]
#[inline(never)]
fn in_vfork_child() -> bool {
    IN_VFORK.try_with(Cell::get).unwrap_or(true)
}

/// Marks this thread as about to vfork (the child inherits the mark, see the module doc).
pub fn vfork_begin() {
    let _ = IN_VFORK.try_with(|v| v.set(true));
    VFORKING.fetch_add(1, Relaxed);
}

/// The parent resumed from its vfork (or the vfork failed): clears the mark. Never called in
/// the child.
pub fn vfork_end() {
    let _ = IN_VFORK.try_with(|v| v.set(false));
    VFORKING.fetch_sub(1, Relaxed);
}

pub fn set_vfork_return(addr: usize) {
    let _ = VFORK_RET.try_with(|r| r.set(addr));
}

pub fn vfork_return() -> usize {
    VFORK_RET.try_with(Cell::get).unwrap_or(0)
}

/// The program's name as the kernel set it at `exec` (`comm`: the executed file's name, at
/// most 15 bytes), worked out without a system call from the auxiliary vector (or argv[0]).
/// Both are the process's own strings, which live as long as it does.
pub fn comm() -> &'static [u8] {
    // Worked out once per process image (it changes only at exec, which starts afresh).
    let (p, n) = (COMM.load(Acquire), COMM_LEN.load(Relaxed));
    if !p.is_null() {
        // SAFETY: stored below from a slice of the process's own strings, which live as long as
        // it does; the length was stored before the pointer (Release/Acquire).
        return unsafe { core::slice::from_raw_parts(p, n) };
    }
    let name = comm_now();
    if may_write() {
        COMM_LEN.store(name.len(), Relaxed);
        COMM.store(name.as_ptr().cast_mut(), Release);
    }
    name
}

static COMM: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static COMM_LEN: AtomicUsize = AtomicUsize::new(0);

fn comm_now() -> &'static [u8] {
    // SAFETY: getauxval only reads the auxiliary vector.
    let p = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const c_char;
    let name = if p.is_null() {
        argv0().unwrap_or(b"?")
    } else {
        // SAFETY: AT_EXECFN points at the NUL-terminated path given to execve, on the initial
        // stack, which is never freed.
        let path = unsafe { CStr::from_ptr(p) }.to_bytes();
        path.rsplit(|&c| c == b'/').next().unwrap_or(path)
    };
    name.get(..15).unwrap_or(name)
}

extern "C" {
    /// glibc's basename of argv[0].
    static program_invocation_short_name: *const c_char;
}

/// glibc's basename of argv[0], if it has one.
pub fn argv0() -> Option<&'static [u8]> {
    // SAFETY: glibc sets this before any constructor runs; it is NUL-terminated or null.
    let p = unsafe { program_invocation_short_name };
    // SAFETY: as above.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_cached_and_right_after_fork() {
        let (p, t) = (pid(), tid());
        assert_eq!((p, t), (raw::getpid(), raw::gettid()));
        assert_eq!((pid(), tid()), (p, t));
        let other = std::thread::spawn(|| (pid(), tid(), raw::gettid())).join().unwrap();
        assert_eq!((other.0, other.1), (p, other.2));
        assert_ne!(other.1, t);
        // SAFETY: the child only makes system calls and exits.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = pid() == raw::getpid() && tid() == raw::gettid() && pid() != p;
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just made.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert_eq!(status, 0, "a forked child knows its own ids");
        assert_eq!((pid(), tid()), (p, t), "the parent's are unchanged");
    }

    #[test]
    fn marks_are_per_thread() {
        assert!(may_write());
        vfork_begin();
        assert!(!may_write(), "the marked thread is taken for the child");
        std::thread::spawn(|| assert!(may_write(), "other threads write as usual"))
            .join()
            .unwrap();
        vfork_end();
        assert!(may_write());
    }
}
