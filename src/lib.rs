//! errshim: an `LD_PRELOAD` shim that handles socket errnos (ENOTCONN, EPIPE, ECONNRESET, ...)
//! in unmodified programs by rule, and logs each event with its context.
//!
//! Layout (one concern per module):
//! - `hooks`: the exported symbols; thin, unsafe, call the real function exactly once.
//! - `ops`: what happens after a call failed (rules, event, errno); the only slow path.
//! - `rules`, `config`: the configuration grammar, pure functions.
//! - `event`, `fmtbuf`, `timefmt`: formatting an event line on the stack.
//! - `logger`: destinations and the shim's own descriptors.
//! - `sockinfo`, `conntable`, `cause`: what a descriptor is, what happened to it, and why it
//!   failed; `summary`: counts for the exit report; `real`: real symbols.
//! - `memory`: reading the caller's memory only where that is proven safe; `process`: whether
//!   the hooks run in a vfork child (which must change nothing); `escape`: outside text in
//!   diagnostics.
//! - `sys`: raw system calls (inline `syscall` instructions), gated under seccomp filters.
//! - `init`: the load-time constructor.

// Private modules: a cdylib has no Rust API, and `pub` would only hide dead code from the
// compiler. The unit-test binary leaves out the interposing parts (below), which use most of
// the rest, so dead code is judged in the library build only.
#![cfg_attr(test, allow(dead_code))]

mod cause;
mod config;
mod conntable;
mod errno;
mod errno_table;
mod escape;
mod event;
mod faults;
mod fmtbuf;
#[cfg(test)]
mod fuzz;
mod inject;
mod json;
mod logger;
mod memory;
mod once;
mod process;
mod real;
mod rules;
mod sockinfo;
mod suggest;
mod summary;
mod sys;
mod timefmt;

// The interposing parts exist only in the preloadable library, never in the unit-test binary
// (which would otherwise interpose its own libc calls).
#[cfg(not(test))]
mod backtrace;
#[cfg(not(test))]
mod hooks;
#[cfg(not(test))]
mod init;
#[cfg(not(test))]
mod ops;

// The code that runs when the library loads (the constructor and what it calls, marked
// `#[link_section = ".text.errshim_startup"]`) in one section that comes first in the object
// file, so that it is linked right after `.init`: every process start then faults in one
// stretch of code for both, instead of pages scattered over the library. (A section declared in
// module-level assembly is created before any function's.)
#[cfg(not(test))]
core::arch::global_asm!(".pushsection .text.errshim_startup,\"ax\",@progbits", ".popsection");

// `__dso_handle`, which the C start files would provide (`build.rs` links without them): the
// handle that identifies this library to `__cxa_atexit` and `__cxa_thread_atexit_impl` (Rust's
// thread-local destructors). Hidden, like theirs.
#[cfg(not(test))]
core::arch::global_asm!(
    ".pushsection .data.rel.ro.errshim_dso_handle,\"aw\",@progbits",
    ".p2align 3",
    ".globl __dso_handle",
    ".hidden __dso_handle",
    "__dso_handle:",
    ".quad __dso_handle",
    ".popsection",
);

// The unwinder (used for Rust panics, which the failure path catches, and for backtraces)
// linked in, rather than `libgcc_s.so.1` loaded into every process: one library less to load
// at every start. Its symbols stay hidden in this library.
#[cfg(not(test))]
#[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
extern "C" {}
