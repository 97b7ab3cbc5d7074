//! errshim: an `LD_PRELOAD` shim that handles socket errnos (ENOTCONN, EPIPE, ECONNRESET, ...)
//! in unmodified programs by rule, and logs each event with its context.
//!
//! Layout: seven layers, each a folder whose module documentation says what it holds and which
//! layers it may use. Dependencies point down only; `tests/layout.rs` checks it, and that the
//! modules have no circle.
//!
//! | layer | holds |
//! |---|---|
//! | `interpose` | the exported hooks (`hooks`), real symbols (`real`), constructor (`init`) |
//! | `handle` | what happens to a call: armed or not, the failure path, faults |
//! | `report` | event lines (text, JSON), destinations, summary |
//! | `observe` | descriptor table, socket facts, causes |
//! | `policy` | rule, fault and configuration grammar: pure |
//! | `sys` | raw system calls, errno, caller memory, process, socket vocabulary |
//! | `text` | stack buffers, JSON strings, escaping, suggestions, timestamps |
//!
//! Where a call goes: `interpose::hooks::shutdown` calls the real `shutdown`; if it failed,
//! `handle::failure` decides (rules), gathers the context (`observe`) and writes the event
//! (`report::event`, `report::logger`).

// Private modules: a cdylib has no Rust API, and `pub` would only hide dead code from the
// compiler. The unit-test binary leaves out the interposing parts (`interpose::hooks`,
// `interpose::init`, `handle::failure`, `report::backtrace`), which use most of the rest, so
// dead code is judged in the library build only.
#![cfg_attr(test, allow(dead_code))]

mod handle;
mod interpose;
mod observe;
mod policy;
mod report;
mod sys;
mod text;

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
