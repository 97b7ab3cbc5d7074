//! `ERRSHIM_BACKTRACE=1`: the return addresses of the code that made the failing call, as
//! `module+0xoffset`, or `module:symbol+0xoffset` where the module's dynamic symbol table names
//! the function. Only on the event path, never on a call that succeeded.
//!
//! Walking the stack uses libgcc's `_Unwind_Backtrace` and naming uses `dladdr`; both may take
//! the dynamic loader's lock, so unlike the rest of errshim this is not async-signal-safe. The
//! README says so; it is off by default.

use crate::text::fmtbuf::StackBuf;
use core::ffi::{c_int, c_void, CStr};
use core::fmt::Write;

const MAX_FRAMES: usize = 12;

extern "C" {
    fn _Unwind_Backtrace(trace: extern "C" fn(*mut c_void, *mut c_void) -> c_int, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

struct Walk {
    ips: [usize; 48],
    n: usize,
}

extern "C" fn step(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Walk passed to _Unwind_Backtrace below; ctx is the unwinder's.
    let w = unsafe { &mut *(arg as *mut Walk) };
    if w.n >= w.ips.len() {
        return 5; // _URC_END_OF_STACK
    }
    // SAFETY: ctx is a valid unwind context during the callback.
    w.ips[w.n] = unsafe { _Unwind_GetIP(ctx) };
    w.n += 1;
    0 // _URC_NO_REASON
}

fn own_base() -> usize {
    // SAFETY: an all-zero Dl_info is valid; dladdr fills it for an address in this library.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    unsafe { libc::dladdr(own_base as *const c_void, &mut info) };
    info.dli_fbase as usize
}

/// Formats one return address.
fn describe(ip: usize, out: &mut StackBuf<160>) -> bool {
    // SAFETY: an all-zero Dl_info is valid.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // ip - 1: the call instruction, not the one after it.
    // SAFETY: dladdr only reads loader data for the address.
    if unsafe { libc::dladdr((ip - 1) as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        let _ = write!(out, "{ip:#x}");
        return true;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let module = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    out.push(if module.is_empty() { b"?" } else { module });
    if !info.dli_sname.is_null() && !info.dli_saddr.is_null() {
        // SAFETY: dli_sname is a NUL-terminated symbol name owned by the loader.
        let sym = unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes();
        out.push(b":");
        out.push(sym);
        let _ = write!(out, "+{:#x}", ip.saturating_sub(info.dli_saddr as usize));
    } else {
        let _ = write!(out, "+{:#x}", ip.saturating_sub(info.dli_fbase as usize));
    }
    true
}

/// Collects the caller's frames (errshim's own skipped) and hands them to `f`.
pub fn with_frames(f: impl FnOnce(&[StackBuf<160>])) {
    let mut walk = Walk { ips: [0; 48], n: 0 };
    // SAFETY: step only writes into walk.
    unsafe { _Unwind_Backtrace(step, &mut walk as *mut Walk as *mut c_void) };
    let ours = own_base();
    let mut frames: [StackBuf<160>; MAX_FRAMES] = [const { StackBuf::new() }; MAX_FRAMES];
    let mut n = 0;
    for &ip in walk.ips.get(..walk.n).unwrap_or(&[]) {
        if n == MAX_FRAMES || ip == 0 {
            break;
        }
        // SAFETY: as in describe.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        let in_errshim =
            unsafe { libc::dladdr((ip - 1) as *const c_void, &mut info) } != 0 && info.dli_fbase as usize == ours;
        if in_errshim {
            continue;
        }
        if describe(ip, &mut frames[n]) {
            n += 1;
        }
    }
    f(&frames[..n]);
}

/// Loads and warms the unwinder at startup, so the first event does not.
pub fn prepare() {
    with_frames(|_| {});
}
