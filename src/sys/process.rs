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

use core::cell::Cell;
use core::ffi::{c_char, CStr};
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

thread_local! {
    /// This thread has called `vfork` and not resumed from it: if code runs on it now, it is
    /// the child's.
    static IN_VFORK: Cell<bool> = const { Cell::new(false) };
    /// The return address of the `vfork` in progress (the trampoline cannot keep it on the
    /// stack, which the child overwrites).
    static VFORK_RET: Cell<usize> = const { Cell::new(0) };
}

/// Threads of this process inside `vfork` or `clone(CLONE_VFORK)` right now.
static VFORKING: AtomicUsize = AtomicUsize::new(0);

/// Whether the hooks may change the state errshim keeps in memory (false in a vfork child).
#[inline(always)]
pub fn may_write() -> bool {
    VFORKING.load(Relaxed) == 0 || !in_vfork_child()
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
