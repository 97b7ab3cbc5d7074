//! The exported symbols that the dynamic linker binds the program's calls to, one declaration
//! each (see "how a hook is declared" below). Each hook is thin: call the real function exactly
//! once with the caller's arguments and, unless it is armed (`handle::armed`), return its
//! success untouched (the read and write families touch no memory of errshim's but the armed
//! word); hand anything else to the cold functions in `handle::failure` (the failure path:
//! rules, event, errno) and `handle::fault` (faults).
//!
//! Sections, in order: the read family, the write family, the end of a connection (`shutdown`,
//! `close`), descriptors made, copied and released, seccomp, glibc's `syscall()`, `vfork` and
//! `clone`, privileges.
//!
//! Caller memory: a hook reads a pointer the program passed only where the kernel has just
//! proven it valid (see `sys::memory`): the arguments of a failed call travel to the cold path
//! as the raw pointers they were and are read there only after a probe.
//!
//! glibc's forced unwind (`pthread_cancel` of a thread blocked in `read`) must pass through a
//! hook's frame: hooks hold nothing that needs dropping across the real call and never wrap it
//! in `catch_unwind`, which would catch the forced unwind and abort the process (what redhook's
//! `hook!` does; see the README). They are `extern "C-unwind"`, the ABI under which unwinding
//! through them is defined behaviour.

use crate::handle::armed;
use crate::observe::cause::hist;
use crate::observe::conntable;
use crate::policy::rules::Call;
use crate::report::event::{CallArgs, Request};
use crate::sys::socket::Kind;
use crate::{
    handle::failure, handle::fault, interpose::real, report::logger, sys::errno, sys::memory, sys::process, sys::raw,
};
use libc::{c_int, c_long, c_uint, c_ulong, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

// --- how a hook is declared ------------------------------------------------------------------
//
// Every hooked function is declared once, below, by one of two macros, each a single flat
// expansion (no macro inside):
// - `data_hook!` for the read and write families: the declaration names the real symbol, the
//   family, the `Call`, what the failure path receives (a `CallArgs` built from raw argument
//   values: pointers as the caller passed them, never read there), and how the real call is
//   made with its length cut to `lim` (the `short` fault). What runs before and after the
//   real call is the function body written out in the macro, top to bottom.
// - `hook!` for every other function: the real symbol, and a body that calls `real` once.

/// The read and write families differ only in which results are a success returned
/// untouched, and in which cold function takes the rest.
trait Family {
    /// A success, returned as it is: `read` > 0 (0 can be the peer's FIN); `write` >= 0.
    fn succeeded(r: isize) -> bool;
    /// Counts the bytes of a success (`ERRSHIM_COUNT=1`; the careful path only).
    fn count(fd: c_int, n: u64, call: Call);
    /// Everything else: the failure path (`handle::failure`).
    fn failed(call: Call, name: &'static str, args: CallArgs, r: isize, errno_before: c_int) -> isize;
}

struct ReadFamily;
struct WriteFamily;

impl Family for ReadFamily {
    #[inline(always)]
    fn succeeded(r: isize) -> bool {
        r > 0
    }
    #[inline(always)]
    fn count(fd: c_int, n: u64, call: Call) {
        conntable::count_in(fd, n, call)
    }
    #[inline(always)]
    fn failed(call: Call, name: &'static str, args: CallArgs, r: isize, errno_before: c_int) -> isize {
        failure::after_read(call, name, args, r, errno_before)
    }
}

impl Family for WriteFamily {
    #[inline(always)]
    fn succeeded(r: isize) -> bool {
        r >= 0
    }
    #[inline(always)]
    fn count(fd: c_int, n: u64, call: Call) {
        conntable::count_out(fd, n, call)
    }
    #[inline(always)]
    fn failed(call: Call, name: &'static str, args: CallArgs, r: isize, errno_before: c_int) -> isize {
        failure::after_failure(call, name, args, r, errno_before)
    }
}

/// `sendmmsg` and `recvmmsg`: a success is a message count of 0 or more (recvmmsg's end of
/// file is a message of length 0, counted as 1).
struct MessagesFamily;

impl Family for MessagesFamily {
    #[inline(always)]
    fn succeeded(r: isize) -> bool {
        r >= 0
    }
    /// The count is of messages, not bytes: only the call is noted.
    #[inline(always)]
    fn count(fd: c_int, _messages: u64, call: Call) {
        conntable::count_out(fd, 0, call)
    }
    #[inline(always)]
    fn failed(call: Call, name: &'static str, args: CallArgs, r: isize, errno_before: c_int) -> isize {
        failure::after_failure(call, name, args, r, errno_before)
    }
}

/// What a hook returns when its real function does not exist: -1 with ENOSYS.
#[cold]
fn no_real_function() -> c_int {
    errno::set(libc::ENOSYS);
    -1
}

/// A read- or write-family hook (returning `ssize_t`, or `int` for the mmsg calls' message
/// count). The exported function tests `armed` (one load, one bit):
/// - Not armed (the common case): the real call through the address the constructor resolved,
///   inline; a success returns at once. No errno read, no check of the address, no count,
///   nothing on the stack: the only cost is the armed test. Anything else jumps to `failed`.
/// - Armed (some fault rule names the call, a rule may turn its failure into a success,
///   `ERRSHIM_COUNT=1`, or the real function is not resolved yet): first `fault::consult`,
///   inline and without a call, whose first load says whether a fault rule names the call.
///   Where the call is armed for one fault rule alone and that rule does not fire, it counts
///   the call and the hook goes on as not armed. Otherwise the careful path: `faulty` where a
///   fault rule names the call (the fault engine decides first), else `careful`; both make the
///   real call with errno from before it kept, and count.
///
/// `failed`, `careful` and `faulty` are functions of their own that take the caller's raw
/// arguments in registers (the optimiser drops those they do not use), so the hook itself
/// needs no stack frame. Inline rather than behind a trampoline: on a VM whose syscalls refill
/// the return stack buffer, every frame around the real call costs a mispredicted return.
macro_rules! data_hook {
    (
        fn $name:ident($fd:ident: c_int $(, $a:ident: $t:ty)*) -> $ret:ty;
        real $real:ident, $family:ident, Call::$call:ident,
        failure gets $ctor:ident($($x:expr),*) $(.$with:ident($($y:expr),*))?,
        shortened |$f:ident, $lim:ident| $limited:expr;
    ) => {
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name($fd: c_int, $($a: $t),*) -> $ret {
            type Real = unsafe extern "C-unwind" fn(c_int, $($t),*) -> $ret;

            /// The failure path: the raw arguments, as values, to `handle::failure`.
            #[cold]
            #[inline(never)]
            #[allow(unused_variables, clippy::too_many_arguments)]
            fn failed(r: $ret, $fd: c_int, $($a: $t,)* errno_before: c_int) -> $ret {
                let args = CallArgs::$ctor($($x),*)$(.$with($($y),*))?;
                $family::failed(Call::$call, stringify!($name), args, r as isize, errno_before) as $ret
            }

            /// The careful path where no fault rule names the call (so `fault::decide` has
            /// nothing to say): the real call alone, in a frame of its own size.
            #[cold]
            #[inline(never)]
            unsafe fn careful($fd: c_int, $($a: $t),*) -> $ret {
                // SAFETY: the caller's own arguments.
                unsafe { counted($fd, $($a),*) }
            }

            /// The real call on the careful path, with errno from before it kept (a rule may
            /// turn its failure into a success), and counted.
            #[inline(always)]
            unsafe fn counted($fd: c_int, $($a: $t),*) -> $ret {
                let errno_before = errno::get();
                // SAFETY: `Real` is this symbol's signature.
                let Some(real) = (unsafe { real::$real.resolved::<Real>() }) else {
                    return no_real_function() as $ret;
                };
                // SAFETY: the caller's own arguments, passed on unchanged.
                let r = unsafe { real($fd, $($a),*) };
                if $family::succeeded(r as isize) {
                    $family::count($fd, r as u64, Call::$call);
                    return r;
                }
                failed(r, $fd, $($a,)* errno_before)
            }

            /// The careful path where the fault engine decides (`fault::decide`) first, while
            /// only the arguments are live; `decide` leaves errno as it was.
            #[cold]
            #[inline(never)]
            unsafe fn faulty($fd: c_int, $($a: $t),*) -> $ret {
                /// A fault fires: the fault engine makes (or skips) the real call. Out of line,
                /// so that the arguments stay in registers on the way to the real call when
                /// none does.
                #[cold]
                #[inline(never)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn inject(inj: fault::Injection, $fd: c_int, $($a: $t),*) -> $ret {
                    let errno_before = errno::get();
                    // SAFETY: `Real` is this symbol's signature.
                    let Some($f) = (unsafe { real::$real.resolved::<Real>() }) else {
                        return no_real_function() as $ret;
                    };
                    // SAFETY: the real call with the caller's arguments, its length cut to
                    // `lim` (usize::MAX: as asked).
                    let mut perform = |$lim: usize| unsafe { $limited } as isize;
                    let args = CallArgs::$ctor($($x),*)$(.$with($($y),*))?;
                    failure::injected(Call::$call, stringify!($name), args, inj, errno_before, &mut perform) as $ret
                }
                let request = CallArgs::$ctor($($x),*)$(.$with($($y),*))?.request();
                if let Some(inj) = fault::decide(Call::$call, $fd, request) {
                    // SAFETY: the caller's own arguments.
                    return unsafe { inject(inj, $fd, $($a),*) };
                }
                // SAFETY: the caller's own arguments.
                unsafe { counted($fd, $($a),*) }
            }

            if armed::armed(Call::$call) {
                // Laid out away from the plain path, which then falls through as it does with
                // no consultation to make.
                core::hint::cold_path();
                match fault::consult(Call::$call, $fd) {
                    fault::Consult::Counted => {}
                    // SAFETY: the caller's own arguments.
                    fault::Consult::Decide => return unsafe { faulty($fd, $($a),*) },
                    // SAFETY: the caller's own arguments.
                    fault::Consult::Nothing => return unsafe { careful($fd, $($a),*) },
                }
            }
            // SAFETY: not armed, so the constructor resolved this symbol to a non-zero address
            // (`armed` pairs with the store that said so), or armed for the one fault rule that
            // `consult` has just asked, which it asks only of resolved calls (its slot was
            // published after the constructor resolved them); `Real` is its signature.
            let real = unsafe { real::$real.loaded_unchecked::<Real>() };
            // SAFETY: the caller's own arguments, passed on unchanged.
            let r = unsafe { real($fd, $($a),*) };
            if $family::succeeded(r as isize) {
                return r;
            }
            // No rule turns this call's failure into a success (it would be armed, and not
            // consulted quickly), so errno from before the call is not needed.
            failed(r, $fd, $($a,)* failure::ERRNO_UNKNOWN)
        }
    };
}

/// `errshim_NAME` exported also as `NAME@VERSION`, hidden (see `hook!`'s `since`).
macro_rules! symver {
    ($name:ident, $ver:literal) => {
        core::arch::global_asm!(concat!(
            ".symver errshim_",
            stringify!($name),
            ", ",
            stringify!($name),
            "@",
            $ver
        ));
    };
}

/// Any other hook: the real function as `$f`, then the body, which calls it once. Before the
/// constructor ran (another library's constructor calling the function), `unresolved`
/// resolves it and takes the hook again: out of line, so that the hook's own path keeps no
/// registers alive for it.
///
/// `since GLIBC_2.N`: a function that older glibcs do not have. It is exported as
/// `errshim_NAME` and, for the program's calls, as `NAME@GLIBC_2.N`, a hidden (non-default)
/// version: every call a program linked against a glibc that has the function makes carries
/// that version and binds to the hook, while an unversioned lookup (`dlsym`, a weak reference
/// checked at run time) does not see errshim's. On a glibc without the function, a program
/// then finds no such symbol, as without errshim. (`build.rs` defines the version names.)
macro_rules! hook {
    (fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty; real $real:ident; since $ver:literal; |$f:ident| $body:block) => {
        symver!($name, $ver);
        hook!(@define #[export_name = concat!("errshim_", stringify!($name))] fn $name($($a: $t),*) -> $ret; real $real; |$f| $body);
    };
    (fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty; real $real:ident; |$f:ident| $body:block) => {
        hook!(@define #[no_mangle] fn $name($($a: $t),*) -> $ret; real $real; |$f| $body);
    };
    (@define #[$export:meta] fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty; real $real:ident; |$f:ident| $body:block) => {
        #[$export]
        pub unsafe extern "C-unwind" fn $name($($a: $t),*) -> $ret {
            type Real = unsafe extern "C-unwind" fn($($t),*) -> $ret;
            #[cold]
            #[inline(never)]
            unsafe fn unresolved($($a: $t),*) -> $ret {
                if real::$real.resolve() == 0 {
                    return no_real_function() as $ret;
                }
                // SAFETY: the caller's own arguments, to the hook that now finds the symbol.
                unsafe { $name($($a),*) }
            }
            // SAFETY: `Real` is this symbol's signature.
            let Some($f) = (unsafe { real::$real.loaded_fn::<Real>() }) else {
                // SAFETY: as above.
                return unsafe { unresolved($($a),*) };
            };
            $body
        }
    };
}

// --- the read family ---------------------------------------------------------------------------

data_hook! {
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    real READ, ReadFamily, Call::Read,
    failure gets buf(fd, n, 0),
    shortened |real, lim| real(fd, buf, n.min(lim));
}

data_hook! {
    fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    real READV, ReadFamily, Call::Readv,
    failure gets iov(fd, iov, cnt),
    shortened |real, lim| failure::short_iov(iov, cnt, lim, |i, c| real(fd, i, c));
}

data_hook! {
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    real RECV, ReadFamily, Call::Recv,
    failure gets buf(fd, n, flags),
    shortened |real, lim| real(fd, buf, n.min(lim), flags);
}

data_hook! {
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    real RECVFROM, ReadFamily, Call::Recvfrom,
    failure gets buf(fd, n, flags).with_from(addr, alen),
    shortened |real, lim| real(fd, buf, n.min(lim), flags, addr, alen);
}

data_hook! {
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    real READ_CHK, ReadFamily, Call::Read,
    failure gets buf(fd, n, 0),
    shortened |real, lim| real(fd, buf, n.min(lim), buflen);
}

data_hook! {
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    real RECV_CHK, ReadFamily, Call::Recv,
    failure gets buf(fd, n, flags),
    shortened |real, lim| real(fd, buf, n.min(lim), buflen, flags);
}

data_hook! {
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    real RECVFROM_CHK, ReadFamily, Call::Recvfrom,
    failure gets buf(fd, n, flags).with_from(addr, alen),
    shortened |real, lim| real(fd, buf, n.min(lim), buflen, flags, addr, alen);
}

data_hook! {
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    real RECVMSG, ReadFamily, Call::Recvmsg,
    failure gets msg(fd, msg, flags),
    shortened |real, lim| failure::short_msg(msg, lim, true, |m| real(fd, m, flags));
}

// --- the write family --------------------------------------------------------------------------

data_hook! {
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    real WRITE, WriteFamily, Call::Write,
    failure gets buf(fd, n, 0),
    shortened |real, lim| real(fd, buf, n.min(lim));
}

data_hook! {
    fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t;
    real WRITEV, WriteFamily, Call::Writev,
    failure gets iov(fd, iov, cnt),
    shortened |real, lim| failure::short_iov(iov, cnt, lim, |i, c| real(fd, i, c));
}

data_hook! {
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    real SEND, WriteFamily, Call::Send,
    failure gets buf(fd, n, flags),
    shortened |real, lim| real(fd, buf, n.min(lim), flags);
}

data_hook! {
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    real SENDTO, WriteFamily, Call::Sendto,
    failure gets buf(fd, n, flags),
    shortened |real, lim| real(fd, buf, n.min(lim), flags, addr, alen);
}

data_hook! {
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    real SENDMSG, WriteFamily, Call::Sendmsg,
    failure gets msg(fd, msg, flags),
    shortened |real, lim| failure::short_msg(msg as *mut msghdr, lim, false, |m| real(fd, m, flags));
}

data_hook! {
    fn sendfile(fd: c_int, in_fd: c_int, off: *mut libc::off_t, n: size_t) -> ssize_t;
    real SENDFILE, WriteFamily, Call::Sendfile,
    failure gets buf(fd, n, 0),
    shortened |real, lim| real(fd, in_fd, off, n.min(lim));
}

data_hook! {
    fn sendfile64(fd: c_int, in_fd: c_int, off: *mut libc::off64_t, n: size_t) -> ssize_t;
    real SENDFILE64, WriteFamily, Call::Sendfile,
    failure gets buf(fd, n, 0),
    shortened |real, lim| real(fd, in_fd, off, n.min(lim));
}

data_hook! {
    fn sendmmsg(fd: c_int, vec: *mut libc::mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    real SENDMMSG, MessagesFamily, Call::Sendmmsg,
    failure gets buf(fd, vlen as usize, flags),
    shortened |real, _lim| real(fd, vec, vlen, flags);
}

data_hook! {
    fn recvmmsg(fd: c_int, vec: *mut libc::mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    real RECVMMSG, MessagesFamily, Call::Recvmmsg,
    failure gets buf(fd, vlen as usize, flags),
    shortened |real, _lim| real(fd, vec, vlen, flags, timeout);
}

// `splice`: a pipe at one end at least, so its fd is not the first argument's alone (see
// `failure::after_splice`). A success is 0 or more (0: the input ended).
// A fault rule that names splice is about its socket end: `fd_in` where the table says it is a
// socket, else `fd_out` (the rule's `fd=` filter then asks the kernel).
hook!(fn splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int, off_out: *mut libc::loff_t, n: size_t, flags: c_uint) -> ssize_t; real SPLICE; |real| {
    let injection = if armed::armed(Call::Splice) {
        let socket_in = Kind::from_u8(conntable::live_kind(fd_in)).is_socket();
        let fd = if socket_in { fd_in } else { fd_out };
        fault::decide(Call::Splice, fd, Request::len(n)).map(|inj| (inj, fd))
    } else {
        None
    };
    let r = match injection {
        Some((inj, fd)) => {
            let errno_before = errno::get();
            // SAFETY: the caller's own arguments (no fault of splice shortens it).
            let mut perform = |_: usize| unsafe { real(fd_in, off_in, fd_out, off_out, n, flags) };
            let args = CallArgs::buf(fd, n, flags as c_int);
            let r = failure::injected(Call::Splice, "splice", args, inj, errno_before, &mut perform);
            if r < 0 {
                // Reported there, as an injection or through the rules.
                return r;
            }
            r
        }
        // SAFETY: the caller's own arguments.
        None => unsafe { real(fd_in, off_in, fd_out, off_out, n, flags) },
    };
    if r >= 0 {
        if armed::armed(Call::Splice) {
            conntable::count_in(fd_in, r as u64, Call::Splice);
            conntable::count_out(fd_out, r as u64, Call::Splice);
        }
        return r;
    }
    failure::after_splice(fd_in, fd_out, n, flags, r) as ssize_t
});

// --- the end of a connection --------------------------------------------------------------------

hook!(fn shutdown(fd: c_int, how: c_int) -> c_int; real SHUTDOWN; |real| {
    /// Some fault rule names shutdown (see `data_hook!`).
    #[cold]
    #[inline(never)]
    unsafe fn faulty(real: unsafe extern "C-unwind" fn(c_int, c_int) -> c_int, fd: c_int, how: c_int) -> c_int {
        let errno_before = errno::get();
        if let Some(inj) = fault::decide(Call::Shutdown, fd, Request::NONE) {
            let args = CallArgs { how, ..CallArgs::fd(fd) };
            // SAFETY: the caller's own arguments.
            let mut perform = |_: usize| unsafe { real(fd, how) } as isize;
            return failure::injected(Call::Shutdown, "shutdown", args, inj, errno_before, &mut perform) as c_int;
        }
        // SAFETY: the caller's own arguments.
        shutdown_done(unsafe { real(fd, how) }, fd, how, errno_before)
    }
    if armed::armed(Call::Shutdown) {
        // SAFETY: the caller's own arguments.
        return unsafe { faulty(real, fd, how) };
    }
    let errno_before = errno::get();
    // SAFETY: the caller's own arguments.
    shutdown_done(unsafe { real(fd, how) }, fd, how, errno_before)
});

#[inline(always)]
fn shutdown_done(r: c_int, fd: c_int, how: c_int, errno_before: c_int) -> c_int {
    if r == 0 {
        conntable::note_shutdown(fd, how);
        return 0;
    }
    failure::after_failure(
        Call::Shutdown,
        "shutdown",
        CallArgs {
            how,
            ..CallArgs::fd(fd)
        },
        r as isize,
        errno_before,
    ) as c_int
}

hook!(fn close(fd: c_int) -> c_int; real CLOSE; |real| {
    // Take the record before the descriptor is released: afterwards another thread may be
    // given the same number.
    let errno_before = errno::get();
    let injection = if armed::armed(Call::Close) { fault::decide(Call::Close, fd, Request::NONE) } else { None };
    let closed = conntable::take(fd);
    if let Some(inj) = injection {
        // SAFETY: the caller's own argument.
        let mut perform = |_: usize| unsafe { real(fd) } as isize;
        return failure::injected_close(closed, fd, inj, errno_before, &mut perform) as c_int;
    }
    // SAFETY: the caller's own argument.
    let r = unsafe { real(fd) };
    if r == 0 {
        return 0;
    }
    failure::after_close(closed, fd, r as isize, errno_before) as c_int
});

// --- descriptors made, copied and released ----------------------------------------------------

hook!(fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int; real SOCKET; |real| {
    // SAFETY: the caller's own arguments.
    let fd = unsafe { real(domain, ty, protocol) };
    if fd >= 0 {
        conntable::start(fd, Kind::from_socket_args(domain, ty, protocol), 0, None);
    }
    fd
});

hook!(fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int; real SOCKETPAIR; |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(domain, ty, protocol, sv) };
    if r == 0 {
        let kind = Kind::from_socket_args(domain, ty, protocol);
        // SAFETY: on success the kernel wrote two descriptors into sv.
        for fd in unsafe { [*sv, *sv.add(1)] } {
            conntable::start(fd, kind, hist::PAIRED, None);
        }
    }
    r
});

hook!(fn connect(fd: c_int, addr: *const sockaddr, alen: socklen_t) -> c_int; real CONNECT; |real| {
    /// Some fault rule names connect (see `data_hook!`).
    #[cold]
    #[inline(never)]
    unsafe fn faulty(real: unsafe extern "C-unwind" fn(c_int, *const sockaddr, socklen_t) -> c_int, fd: c_int, addr: *const sockaddr, alen: socklen_t) -> c_int {
        if fault::connect_filters_address() {
            failure::note_connect_target(fd, addr, alen);
        }
        if let Some(inj) = fault::decide(Call::Connect, fd, Request::NONE) {
            let errno_before = errno::get();
            // SAFETY: the caller's own arguments.
            let mut perform = || connect_done(unsafe { real(fd, addr, alen) }, fd, addr, alen) as isize;
            return failure::injected_attempt(Call::Connect, "connect", fd, (addr, alen), inj, errno_before, &mut perform) as c_int;
        }
        // SAFETY: the caller's own arguments.
        connect_done(unsafe { real(fd, addr, alen) }, fd, addr, alen)
    }
    if armed::armed(Call::Connect) {
        // SAFETY: the caller's own arguments.
        return unsafe { faulty(real, fd, addr, alen) };
    }
    // SAFETY: the caller's own arguments.
    connect_done(unsafe { real(fd, addr, alen) }, fd, addr, alen)
});

/// The real connect returned `r`: its bookkeeping, and a failure through the rules.
#[inline(always)]
fn connect_done(r: c_int, fd: c_int, addr: *const sockaddr, alen: socklen_t) -> c_int {
    failure::after_connect(fd, addr, alen, r);
    if r < 0 {
        return failure::after_attempt_failed(Call::Connect, "connect", fd, r as isize) as c_int;
    }
    r
}

// `getsockopt`: only `SOL_SOCKET`/`SO_ERROR` that returned a non-zero value is errshim's
// business (one compare on every other call): the program has just learnt why its
// non-blocking connect failed, which `failure::after_so_error` reports as a connect failure.
// The result and the value stay the kernel's.
hook!(fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int; real GETSOCKOPT; |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, level, name, val, len) };
    if ((level ^ libc::SOL_SOCKET) | (name ^ libc::SO_ERROR) | r) != 0 {
        return r;
    }
    failure::after_so_error(fd, val, len);
    0
});

// `getpeername`: a failure goes through the rules, which may answer with the peer errshim
// remembered (`remembered`: errno from before the call is then kept, the call being armed).
hook!(fn getpeername(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int; real GETPEERNAME; |real| {
    let errno_before = if armed::armed(Call::Getpeername) { errno::get() } else { failure::ERRNO_UNKNOWN };
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, addr, alen) };
    if r == 0 {
        return 0;
    }
    let args = CallArgs::fd(fd).with_from(addr, alen);
    failure::after_failure(Call::Getpeername, "getpeername", args, r as isize, errno_before) as c_int
});

hook!(fn listen(fd: c_int, backlog: c_int) -> c_int; real LISTEN; |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, backlog) };
    if r == 0 {
        conntable::note_history(fd, hist::LISTENING);
        failure::after_listen(fd);
    }
    r
});

/// The length the caller's `accept` address buffer has (`*alen` before the call), where it
/// can be known without asking the kernel: when `alen` lies on this thread's own stack (see
/// `memory::on_own_stack`). None: no address wanted, or its length cannot be read safely;
/// then the peer is not taken from the buffer.
#[inline(always)]
fn accept_buffer_len(addr: *mut sockaddr, alen: *mut socklen_t) -> Option<socklen_t> {
    if addr.is_null() || alen.is_null() || !memory::on_own_stack(alen as usize, core::mem::size_of::<socklen_t>()) {
        return None;
    }
    // SAFETY: on this thread's stack, between the stack pointer and its top: mapped.
    Some(unsafe { core::ptr::read_volatile(alen) })
}

/// Whether an `accept` on `listener` whose caller wants no address may be given errshim's own
/// buffer instead, so that the peer is known (libuv, hence Node.js, always passes NULL): the
/// listener is one errshim saw made as a TCP or unix stream socket, and no seccomp filter is
/// known (a filter sees the arguments; under one, errshim passes the caller's exactly).
///
/// The program cannot tell: the kernel's accept (`do_accept` in net/socket.c) asks the new
/// socket's `getname(peer=2)` only when an address is wanted and fails the accept with
/// ECONNABORTED if it fails, so an address wanted where none can be given would lose the
/// connection. For these kinds it cannot fail: `inet_getname`/`inet6_getname` refuse a peer
/// only for a zero destination port (an accepted socket has its client's, which only
/// `tcp_disconnect` clears, never reached before accept; a client port 0 exists only in a
/// crafted SYN) or, with peer=1 alone, in CLOSE or SYN_SENT, so a connection reset before
/// accept still gives its address; `unix_getname`
/// refuses only a socket without a peer, and an accepted one keeps its peer pointer after the
/// client closed. `move_addr_to_user` then copies into this buffer, which is writable and
/// large enough; its one other failure, audit's 128-byte allocation while syscall auditing
/// records the call, is a GFP_KERNEL allocation too small to fail. A listener errshim did not
/// see made (inherited, or an SCTP or MPTCP one) keeps the caller's NULL.
///
/// Both conditions are settled at `listen` (`failure::after_listen`), not here: the kernel's
/// own protocol for the listener (not the arguments `socket` was given: another preload may
/// have made it something else), and that no seccomp filter exists at all (one inherited at
/// exec is found by looking; one installed since by the hooks that install them).
#[inline(always)]
fn lend_accept_buffer(listener: c_int, addr: *mut sockaddr) -> bool {
    addr.is_null()
        && raw::free_of_filters()
        && conntable::get(listener).is_some_and(|r| r.history() & hist::LENDS_ADDRESS != 0)
}

/// `accept` and `accept4` (`entry`), made by `call(addr, alen)` exactly once: with the caller's
/// address buffer, or errshim's own when the caller passes none (`lend_accept_buffer`).
#[inline(always)]
fn accept_with(
    entry: &'static str,
    fd: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
    call: impl FnOnce(*mut sockaddr, *mut socklen_t) -> c_int,
) -> c_int {
    let new = if lend_accept_buffer(fd, addr) {
        let mut ss = core::mem::MaybeUninit::<libc::sockaddr_storage>::uninit();
        let room = core::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        let mut len = room;
        let own = ss.as_mut_ptr().cast::<sockaddr>();
        let new = call(own, &mut len);
        if new >= 0 {
            failure::after_accept(fd, new, own, &mut len, Some(room));
            return new;
        }
        new
    } else {
        let room = accept_buffer_len(addr, alen);
        let new = call(addr, alen);
        if new >= 0 {
            failure::after_accept(fd, new, addr, alen, room);
            return new;
        }
        new
    };
    failure::after_attempt_failed(Call::Accept, entry, fd, new as isize) as c_int
}

/// Some fault rule names accept: `accept_with`, unless a rule fires (`failure::injected_attempt`).
#[cold]
#[inline(never)]
fn accept_faulty(
    entry: &'static str,
    fd: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
    call: impl FnOnce(*mut sockaddr, *mut socklen_t) -> c_int,
) -> c_int {
    let Some(inj) = fault::decide(Call::Accept, fd, Request::NONE) else {
        return accept_with(entry, fd, addr, alen, call);
    };
    let errno_before = errno::get();
    let mut call = Some(call);
    let mut perform = || call.take().map_or(-1, |c| accept_with(entry, fd, addr, alen, c)) as isize;
    failure::injected_attempt(
        Call::Accept,
        entry,
        fd,
        (core::ptr::null(), 0),
        inj,
        errno_before,
        &mut perform,
    ) as c_int
}

hook!(fn accept(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int; real ACCEPT; |real| {
    if armed::armed(Call::Accept) {
        // SAFETY: as below.
        return accept_faulty("accept", fd, addr, alen, |a, l| unsafe { real(fd, a, l) });
    }
    // SAFETY: the caller's own arguments, or errshim's buffer for an address it did not want.
    accept_with("accept", fd, addr, alen, |a, l| unsafe { real(fd, a, l) })
});

hook!(fn accept4(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t, flags: c_int) -> c_int; real ACCEPT4; |real| {
    if armed::armed(Call::Accept) {
        // SAFETY: as for accept.
        return accept_faulty("accept4", fd, addr, alen, |a, l| unsafe { real(fd, a, l, flags) });
    }
    // SAFETY: as for accept.
    accept_with("accept4", fd, addr, alen, |a, l| unsafe { real(fd, a, l, flags) })
});

hook!(fn dup(old: c_int) -> c_int; real DUP; |real| {
    // SAFETY: the caller's own argument.
    let new = unsafe { real(old) };
    conntable::copy(old, new);
    new
});

hook!(fn dup2(old: c_int, new: c_int) -> c_int; real DUP2; |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new) };
    if r >= 0 {
        conntable::copy(old, r);
    }
    r
});

hook!(fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int; real DUP3; |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new, flags) };
    if r >= 0 {
        conntable::copy(old, r);
    }
    r
});

/// `fcntl(fd, cmd, ...)`: its one optional argument is an integer or a pointer, passed on as
/// the register it came in; `F_DUPFD` and `F_DUPFD_CLOEXEC` make a descriptor of the same
/// socket.
#[inline(always)]
fn fcntl_done(old: c_int, cmd: c_int, r: c_int) -> c_int {
    if (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) && r >= 0 {
        conntable::copy(old, r);
    }
    r
}

hook!(fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int; real FCNTL; |real| {
    // SAFETY: the caller's own arguments.
    fcntl_done(fd, cmd, unsafe { real(fd, cmd, arg) })
});

hook!(fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int; real FCNTL64; since "GLIBC_2.28"; |real| {
    // SAFETY: the caller's own arguments.
    fcntl_done(fd, cmd, unsafe { real(fd, cmd, arg) })
});

hook!(fn fclose(fp: *mut libc::FILE) -> c_int; real FCLOSE; |real| {
    if !fp.is_null() {
        let e = errno::get();
        // SAFETY: fp is the caller's open stream; fileno neither locks nor blocks.
        let fd = unsafe { libc::fileno(fp) };
        errno::set(e);
        conntable::forget(fd);
    }
    // SAFETY: the caller's own argument.
    unsafe { real(fp) }
});

hook!(fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int; real CLOSE_RANGE; since "GLIBC_2.34"; |real| {
    // Before the call: afterwards, another thread may have a new socket at a freed number.
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        conntable::forget_range(first, last);
    }
    // SAFETY: the caller's own arguments.
    unsafe { real(first, last, flags) }
});

symver!(closefrom, "GLIBC_2.34");

/// `void closefrom(int)`: written out because it returns nothing. Since glibc 2.34 (see
/// `hook!`'s `since`).
#[export_name = "errshim_closefrom"]
pub unsafe extern "C-unwind" fn closefrom(lowfd: c_int) {
    let addr = real::CLOSEFROM.get();
    conntable::forget_range(lowfd.max(0) as c_uint, c_uint::MAX);
    if addr != 0 {
        // SAFETY: the next definition of closefrom, which has this signature.
        let f: unsafe extern "C-unwind" fn(c_int) = unsafe { core::mem::transmute(addr) };
        // SAFETY: the caller's own argument.
        unsafe { f(lowfd) }
    }
}

// --- seccomp ------------------------------------------------------------------------------

/// A seccomp filter is about to be installed: from now on errshim makes no system call of its
/// own (`raw::forbid`); undone if the install fails.
#[inline(always)]
fn with_filter_install(install: bool, call: impl FnOnce() -> c_long) -> c_long {
    if !install {
        return call();
    }
    // errshim's timer thread (if a fault started one) ends first: a filter given to every
    // thread must never see one of its calls.
    crate::handle::timer::stop();
    let before = raw::forbid();
    let r = call();
    if r < 0 {
        raw::restore(before);
    }
    r
}

/// `int prctl(int option, ...)`: up to four more integer arguments, passed on as they came.
#[no_mangle]
pub unsafe extern "C-unwind" fn prctl(option: c_int, a2: c_ulong, a3: c_ulong, a4: c_ulong, a5: c_ulong) -> c_int {
    let addr = real::PRCTL.get();
    if addr == 0 {
        errno::set(libc::ENOSYS);
        return -1;
    }
    // SAFETY: glibc's prctl, variadic.
    let f: unsafe extern "C-unwind" fn(c_int, ...) -> c_int = unsafe { core::mem::transmute(addr) };
    with_filter_install(option == libc::PR_SET_SECCOMP, || {
        // SAFETY: the caller's own arguments.
        unsafe { f(option, a2, a3, a4, a5) as c_long }
    }) as c_int
}

// --- glibc's syscall() ----------------------------------------------------------------------

/// The `syscall()` numbers whose bookkeeping errshim does: closes and dups (the descriptor
/// table), and the two ways to install a seccomp filter. A bit per number below 512.
static SLOW_SYSCALLS: [u64; 8] = {
    let mut m = [0u64; 8];
    let nrs = [
        libc::SYS_close,
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_fcntl,
        libc::SYS_close_range,
        libc::SYS_seccomp,
        libc::SYS_prctl,
    ];
    let mut i = 0;
    while i < nrs.len() {
        m[(nrs[i] / 64) as usize] |= 1 << (nrs[i] % 64);
        i += 1;
    }
    m
};

/// glibc's `long syscall(long number, ...)`, interposed by a trampoline: any number errshim has
/// nothing to do with (the common case: futex, gettid, getrandom...) goes on with one bit test
/// and a jump, leaving registers and stack exactly as the caller made them, so that even a
/// `vfork` or `clone` made through it returns where it should. The others go to
/// `syscall_slow`, with the seventh argument where the caller put it.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn syscall() {
    core::arch::naked_asm!(
        "cmp rdi, 511",
        "ja 2f",
        "bt qword ptr [rip + {slow_set}], rdi",
        "jc 3f",
        "2:",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "jmp {slow}",
        slow_set = sym SLOW_SYSCALLS,
        real = sym real::SYSCALL,
        slow = sym syscall_slow,
    )
}

/// `syscall()` for the numbers of `SLOW_SYSCALLS` (and any number before the constructor
/// found the real function): the real call once, with the table kept as the libc function of
/// the same name would keep it, and errno as the real call left it.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn syscall_slow(
    n: c_long,
    a: c_long,
    b: c_long,
    c: c_long,
    d: c_long,
    e: c_long,
    f: c_long,
) -> c_long {
    let addr = real::SYSCALL.get();
    if addr == 0 {
        errno::set(libc::ENOSYS);
        return -1;
    }
    // SAFETY: glibc's syscall, variadic.
    let real: unsafe extern "C" fn(c_long, ...) -> c_long = unsafe { core::mem::transmute(addr) };
    // SAFETY: the caller's own arguments.
    let call = || unsafe { real(n, a, b, c, d, e, f) };
    match n {
        libc::SYS_close => {
            conntable::forget(a as c_int);
            call()
        }
        libc::SYS_close_range => {
            if c as c_int & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
                conntable::forget_range(a as c_uint, b as c_uint);
            }
            call()
        }
        libc::SYS_dup => {
            let r = call();
            conntable::copy(a as c_int, r as c_int);
            r
        }
        libc::SYS_dup2 | libc::SYS_dup3 => {
            let r = call();
            if r >= 0 {
                conntable::copy(a as c_int, r as c_int);
            }
            r
        }
        libc::SYS_fcntl => {
            let r = call();
            fcntl_done(a as c_int, b as c_int, r as c_int);
            r
        }
        libc::SYS_seccomp => {
            let install = a as u32 == libc::SECCOMP_SET_MODE_STRICT || a as u32 == libc::SECCOMP_SET_MODE_FILTER;
            with_filter_install(install, call)
        }
        libc::SYS_prctl => with_filter_install(a as c_int == libc::PR_SET_SECCOMP, call),
        _ => call(),
    }
}

// --- vfork ----------------------------------------------------------------------------------

/// `pid_t vfork(void)`, interposed by a trampoline that marks the thread as vforking (see
/// `process`) and keeps its return address off the stack: the child runs first, on the
/// parent's stack, and overwrites it before the parent resumes, so the trampoline returns with
/// a jump to the address `vfork_leave` gives back, in the child and again in the parent.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn vfork() {
    core::arch::naked_asm!(
        "pop rdi",
        "call {enter}",
        "test rax, rax",
        "jz 2f",
        "call rax",
        "mov edi, eax",
        "3:",
        "call {leave}",
        "mov rcx, rax",
        "mov rax, rdx",
        "jmp rcx",
        "2:",
        "mov edi, -1",
        "jmp 3b",
        enter = sym vfork_enter,
        leave = sym vfork_leave,
    )
}

/// Before the real vfork: keeps the return address, marks the thread, and gives the real
/// function's address (0, with errno ENOSYS, if there is none).
extern "C" fn vfork_enter(ret: usize) -> usize {
    process::set_vfork_return(ret);
    process::vfork_begin();
    let addr = real::VFORK.get();
    if addr == 0 {
        errno::set(libc::ENOSYS);
    }
    addr
}

#[repr(C)]
struct VforkResult {
    ret: usize,
    value: isize,
}

/// After the real vfork, in the child (0) and then in the parent (the pid, or -1): the return
/// address, and the result. The parent clears the mark; the child changes nothing.
extern "C" fn vfork_leave(result: c_int) -> VforkResult {
    if result != 0 {
        process::vfork_end();
    }
    VforkResult {
        ret: process::vfork_return(),
        value: result as isize,
    }
}

/// `int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)` (then `pid_t *ptid,
/// void *tls, pid_t *ctid`, passed on as they came). With `CLONE_VM | CLONE_VFORK` (and no TLS
/// of its own) the child runs on this process's memory while this thread waits, like a vfork
/// child: the thread is marked for that time. The child starts in `fn` on its own stack and
/// never returns through this frame.
#[no_mangle]
pub unsafe extern "C-unwind" fn clone(
    f: *mut c_void,
    stack: *mut c_void,
    flags: c_int,
    arg: *mut c_void,
    ptid: *mut c_void,
    tls: *mut c_void,
    ctid: *mut c_void,
) -> c_int {
    let addr = real::CLONE.get();
    if addr == 0 {
        errno::set(libc::ENOSYS);
        return -1;
    }
    // SAFETY: glibc's clone, variadic after its fourth argument.
    let real: unsafe extern "C-unwind" fn(*mut c_void, *mut c_void, c_int, *mut c_void, ...) -> c_int =
        unsafe { core::mem::transmute(addr) };
    let shared = libc::CLONE_VM | libc::CLONE_VFORK;
    let vforkish = flags & shared == shared && flags & (libc::CLONE_SETTLS | libc::CLONE_THREAD) == 0;
    if flags & libc::CLONE_VM != 0 && flags & libc::CLONE_THREAD == 0 {
        // A process on this one's memory: it would share the cached ids.
        process::stop_caching_ids();
    }
    if vforkish {
        process::vfork_begin();
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(f, stack, flags, arg, ptid, tls, ctid) };
    if vforkish {
        process::vfork_end();
    }
    r
}

// --- privileges ---------------------------------------------------------------------------

// The calls that may change the effective user: the log file is prepared for the new user
// first (`logger::before_user_change`; -1 leaves the effective user as it is), errshim's timer
// thread (which libc does not know, so would keep the old user) ends, then the real call.

hook!(fn setuid(uid: libc::uid_t) -> c_int; real SETUID; |real| {
    logger::before_user_change(uid);
    crate::handle::timer::stop();
    // SAFETY: the caller's own argument.
    unsafe { real(uid) }
});

hook!(fn seteuid(euid: libc::uid_t) -> c_int; real SETEUID; |real| {
    logger::before_user_change(euid);
    crate::handle::timer::stop();
    // SAFETY: the caller's own argument.
    unsafe { real(euid) }
});

hook!(fn setreuid(ruid: libc::uid_t, euid: libc::uid_t) -> c_int; real SETREUID; |real| {
    logger::before_user_change(euid);
    crate::handle::timer::stop();
    // SAFETY: the caller's own arguments.
    unsafe { real(ruid, euid) }
});

hook!(fn setresuid(ruid: libc::uid_t, euid: libc::uid_t, suid: libc::uid_t) -> c_int; real SETRESUID; |real| {
    logger::before_user_change(euid);
    crate::handle::timer::stop();
    // SAFETY: the caller's own arguments.
    unsafe { real(ruid, euid, suid) }
});
