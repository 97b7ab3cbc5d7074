//! The exported symbols that the dynamic linker binds the program's calls to. Each hook is thin:
//! call the real function exactly once with the caller's arguments and, unless it is armed,
//! return its success untouched (the read and write families touch no memory of errshim's but
//! the word of armed calls); hand anything else to the cold functions in `ops`.
//!
//! glibc's forced unwind (`pthread_cancel` of a thread blocked in `read`) must pass through a
//! hook's frame: hooks hold nothing that needs dropping across the real call and never wrap it
//! in `catch_unwind`, which would catch the forced unwind and abort the process (what redhook's
//! `hook!` does; see the README). They are `extern "C-unwind"`, the ABI under which unwinding
//! through them is defined behaviour.

use crate::cause::hist;
use crate::conntable;
use crate::event::{CallArgs, Request};
use crate::rules::Call;
use crate::sockinfo::Kind;
use crate::{errno, inject, logger, ops, real};
use libc::{c_int, c_uint, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Defines an exported hook that calls the real function through `$f` (the read and write
/// families have `io_hook!` instead).
macro_rules! hook {
    (fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty, $real:ident, |$f:ident| $body:block) => {
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name($($a: $t),*) -> $ret {
            /// Before the constructor ran: resolve, then take the hook again. Out of line, so
            /// the hook's own path keeps no registers alive for it.
            #[cold]
            #[inline(never)]
            unsafe fn unresolved($($a: $t),*) -> $ret {
                if real::$real.resolve() == 0 {
                    errno::set(libc::ENOSYS);
                    return -1;
                }
                // SAFETY: the caller's own arguments, to the hook that now finds the symbol.
                unsafe { $name($($a),*) }
            }
            let addr = real::$real.loaded();
            if addr == 0 {
                // SAFETY: as above.
                return unsafe { unresolved($($a),*) };
            }
            // SAFETY: addr is the next definition of this very symbol, which has this signature.
            let $f: unsafe extern "C-unwind" fn($($t),*) -> $ret = unsafe { core::mem::transmute(addr) };
            $body
        }
    };
}

/// What a hook does with the real call's result: return a success (the careful path, `counted`,
/// first counts its bytes if `ERRSHIM_COUNT=1` asked for it), hand anything else to the cold
/// path. `read`: 0 can be the peer's FIN; `write`: 0 is a success. The cold path is a function
/// of its own that takes the caller's arguments (those it does not use are dropped by the
/// optimiser), so that the hook builds no `CallArgs` and needs no stack frame.
macro_rules! finish {
    ($family:ident, $count:ident, $r:expr, $fd:ident: $fdt:ty, ($($a:ident: $t:ty),*), $call:expr, $name:expr, $args:expr, $errno_before:expr, $ret:ty) => {{
        #[cold]
        #[inline(never)]
        #[allow(unused_variables, clippy::too_many_arguments)]
        fn failed(r: $ret, $fd: $fdt, $($a: $t,)* errno_before: c_int) -> $ret {
            finish!(@cold $family, $call, $name, $args, r as isize, errno_before) as $ret
        }
        let r = $r;
        if finish!(@ok $family, r) {
            finish!(@$count $family, $fd, r as u64, $call);
            return r;
        }
        failed(r, $fd, $($a,)* $errno_before)
    }};
    (@ok read, $r:expr) => { $r > 0 };
    (@ok write, $r:expr) => { $r >= 0 };
    (@counted read, $fd:expr, $n:expr, $call:expr) => { conntable::count_in($fd, $n, $call) };
    (@counted write, $fd:expr, $n:expr, $call:expr) => { conntable::count_out($fd, $n, $call) };
    (@uncounted $family:ident, $fd:expr, $n:expr, $call:expr) => {};
    (@cold read, $call:expr, $name:expr, $args:expr, $r:expr, $e:expr) => { ops::after_read($call, $name, $args, $r, $e) };
    (@cold write, $call:expr, $name:expr, $args:expr, $r:expr, $e:expr) => { ops::after_failure($call, $name, $args, $r, $e) };
}

/// The real function, resolved now if need be; the enclosing hook fails with ENOSYS if there
/// is none.
macro_rules! resolved {
    ($real:ident, fn($($t:ty),*) -> $ret:ty) => {{
        let addr = real::$real.get();
        if addr == 0 {
            errno::set(libc::ENOSYS);
            return -1;
        }
        // SAFETY: the next definition of this very symbol, which has this signature.
        let f: unsafe extern "C-unwind" fn($($t),*) -> $ret = unsafe { core::mem::transmute(addr) };
        f
    }};
}

/// A read- or write-family hook. It tests `armed` first:
/// - Armed (some fault rule names the call, some rule may turn its failure into a success,
///   `ERRSHIM_COUNT=1` asks for byte counts, or the constructor has not resolved the real
///   functions yet): a jump to `faulty`, which consults the fault rules, resolves the symbol if
///   need be, keeps errno from before the call and counts.
/// - Otherwise `plain`, inline: the real call through the address the constructor resolved
///   (the call would still be armed if it had found none) and a jump to `failed` when the call
///   did not succeed. No errno read, no check of the address, no count, nothing on the stack
///   but the registers that keep the arguments `failed` needs.
///
/// Inline rather than behind a trampoline: on a VM whose syscalls refill the return stack
/// buffer, every frame around the real call costs a mispredicted return (README,
/// Performance), and a hook's code lines are what the kernel's own code evicts from the
/// instruction cache during the call, so fewer is better.
macro_rules! io_hook {
    ($family:ident, $name:ident($fd:ident: $fdt:ty, $($a:ident: $t:ty),*) -> $ret:ty = $real:ident, $call:expr, $args:expr, |$f:ident, $lim:ident| $limited:expr) => {
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name($fd: $fdt, $($a: $t),*) -> $ret {
            /// The careful path: decide, then inject or carry on as usual.
            #[cold]
            #[inline(never)]
            unsafe fn faulty($fd: $fdt, $($a: $t),*) -> $ret {
                /// A rule fires: inject. Out of line, so that the arguments stay in registers
                /// on the way to the real call when none does.
                #[cold]
                #[inline(never)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn inject(inj: inject::Injection, $fd: $fdt, $($a: $t),*) -> $ret {
                    let errno_before = errno::get();
                    let $f = resolved!($real, fn($fdt, $($t),*) -> $ret);
                    // SAFETY: the real call with the caller's arguments, its length cut to `$lim`.
                    let mut perform = |$lim: usize| unsafe { $limited } as isize;
                    ops::injected($call, stringify!($name), $args, inj, errno_before, &mut perform) as $ret
                }
                // First, while only the arguments are live; `decide` leaves errno as it was.
                if let Some(inj) = inject::decide($call, $fd, $args.request()) {
                    // SAFETY: the caller's own arguments.
                    return unsafe { inject(inj, $fd, $($a),*) };
                }
                let errno_before = errno::get();
                let $f = resolved!($real, fn($fdt, $($t),*) -> $ret);
                // SAFETY: the caller's own arguments, passed on unchanged.
                finish!($family, counted, unsafe { $f($fd, $($a),*) }, $fd: $fdt, ($($a: $t),*), $call, stringify!($name), $args, errno_before, $ret)
            }
            /// The plain path. No rule turns this call's failure into a success, so errno from
            /// before the call is not needed.
            #[inline(always)]
            unsafe fn plain($fd: $fdt, $($a: $t),*) -> $ret {
                // SAFETY: not armed, so the constructor resolved this symbol to a non-zero
                // address (`inject::armed` pairs with the store that said so), the next
                // definition of this very symbol, which has this signature.
                let $f: unsafe extern "C-unwind" fn($fdt, $($t),*) -> $ret = unsafe { core::mem::transmute(real::$real.loaded()) };
                // SAFETY: the caller's own arguments, passed on unchanged.
                finish!($family, uncounted, unsafe { $f($fd, $($a),*) }, $fd: $fdt, ($($a: $t),*), $call, stringify!($name), $args, ops::ERRNO_UNKNOWN, $ret)
            }
            // SAFETY: the caller's own arguments.
            unsafe {
                if inject::armed($call) {
                    faulty($fd, $($a),*)
                } else {
                    plain($fd, $($a),*)
                }
            }
        }
    };
}

io_hook!(read, read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t = READ, Call::Read, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim)));
io_hook!(read, readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = READV, Call::Readv, CallArgs::iov(fd, iov, cnt.max(0) as usize, 0), |real, lim| ops::short_iov(iov, cnt.max(0) as usize, lim, |i, c| real(fd, i, c as c_int)));
io_hook!(read, recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t = RECV, Call::Recv, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags));
io_hook!(read, recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM, Call::Recvfrom, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags, addr, alen));
io_hook!(read, __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t = READ_CHK, Call::Read, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim), buflen));
io_hook!(read, __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t
    = RECV_CHK, Call::Recv, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), buflen, flags));
io_hook!(read, __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM_CHK, Call::Recvfrom, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), buflen, flags, addr, alen));
io_hook!(read, recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = RECVMSG, Call::Recvmsg, msg_args(fd, msg, flags), |real, lim| ops::short_msg(msg, lim, |m| real(fd, m, flags)));

io_hook!(write, write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t = WRITE, Call::Write, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim)));
io_hook!(write, writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = WRITEV, Call::Writev, CallArgs::iov(fd, iov, cnt.max(0) as usize, 0), |real, lim| ops::short_iov(iov, cnt.max(0) as usize, lim, |i, c| real(fd, i, c as c_int)));
io_hook!(write, send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t = SEND, Call::Send, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags));
io_hook!(write, sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t
    = SENDTO, Call::Sendto, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags, addr, alen));
io_hook!(write, sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = SENDMSG, Call::Sendmsg, msg_args(fd, msg, flags), |real, lim| ops::short_msg(msg as *mut msghdr, lim, |m| real(fd, m, flags)));

/// The arguments of recvmsg/sendmsg, read only on the cold path.
fn msg_args(fd: c_int, msg: *const msghdr, flags: c_int) -> CallArgs {
    if msg.is_null() {
        return CallArgs::iov(fd, core::ptr::null(), 0, flags);
    }
    // SAFETY: the caller passed msg to the call that just returned.
    unsafe { CallArgs::iov(fd, (*msg).msg_iov, (*msg).msg_iovlen, flags) }
}

hook!(fn shutdown(fd: c_int, how: c_int) -> c_int, SHUTDOWN, |real| {
    /// Some fault rule names shutdown (see `read_hook`).
    #[cold]
    #[inline(never)]
    unsafe fn faulty(real: unsafe extern "C-unwind" fn(c_int, c_int) -> c_int, fd: c_int, how: c_int) -> c_int {
        let errno_before = errno::get();
        if let Some(inj) = inject::decide(Call::Shutdown, fd, Request::NONE) {
            let args = CallArgs { how, ..CallArgs::fd(fd) };
            // SAFETY: the caller's own arguments.
            let mut perform = |_: usize| unsafe { real(fd, how) } as isize;
            return ops::injected(Call::Shutdown, "shutdown", args, inj, errno_before, &mut perform) as c_int;
        }
        // SAFETY: the caller's own arguments.
        shutdown_done(unsafe { real(fd, how) }, fd, how, errno_before)
    }
    if inject::armed(Call::Shutdown) {
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
    ops::after_failure(
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

hook!(fn close(fd: c_int) -> c_int, CLOSE, |real| {
    if logger::owns(fd) {
        // errshim's own log descriptor: the program never opened it, so it gets what it would
        // get without errshim, and the log keeps working.
        errno::set(libc::EBADF);
        return -1;
    }
    // Forget the record before the descriptor is released: afterwards another thread may be
    // given the same number.
    let errno_before = errno::get();
    let injection = if inject::armed(Call::Close) { inject::decide(Call::Close, fd, Request::NONE) } else { None };
    let history = conntable::forget(fd);
    if let Some(inj) = injection {
        let args = CallArgs { history, ..CallArgs::fd(fd) };
        // SAFETY: the caller's own argument.
        let mut perform = |_: usize| unsafe { real(fd) } as isize;
        return ops::injected(Call::Close, "close", args, inj, errno_before, &mut perform) as c_int;
    }
    // SAFETY: the caller's own argument.
    let r = unsafe { real(fd) };
    if r == 0 {
        return 0;
    }
    let args = CallArgs { history, ..CallArgs::fd(fd) };
    ops::after_failure(Call::Close, "close", args, r as isize, errno_before) as c_int
});

hook!(fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, SOCKET, |real| {
    // SAFETY: the caller's own arguments.
    let fd = unsafe { real(domain, ty, protocol) };
    if let Some(rec) = conntable::get(fd) {
        rec.start(Kind::from_socket_args(domain, ty, protocol), 0, None);
    }
    fd
});

hook!(fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int, SOCKETPAIR, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(domain, ty, protocol, sv) };
    if r == 0 {
        let kind = Kind::from_socket_args(domain, ty, protocol);
        // SAFETY: on success the kernel wrote two descriptors into sv.
        for fd in unsafe { [*sv, *sv.add(1)] } {
            if let Some(rec) = conntable::get(fd) {
                rec.start(kind, hist::PAIRED, None);
            }
        }
    }
    r
});

hook!(fn connect(fd: c_int, addr: *const sockaddr, alen: socklen_t) -> c_int, CONNECT, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, addr, alen) };
    ops::after_connect(fd, addr, alen, r);
    r
});

hook!(fn listen(fd: c_int, backlog: c_int) -> c_int, LISTEN, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, backlog) };
    if r == 0 {
        conntable::note_history(fd, hist::LISTENING);
    }
    r
});

hook!(fn accept(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int, ACCEPT, |real| {
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen) };
    ops::after_accept(fd, new, addr, alen);
    new
});

hook!(fn accept4(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t, flags: c_int) -> c_int, ACCEPT4, |real| {
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen, flags) };
    ops::after_accept(fd, new, addr, alen);
    new
});

hook!(fn dup(old: c_int) -> c_int, DUP, |real| {
    // SAFETY: the caller's own argument.
    let new = unsafe { real(old) };
    conntable::copy(old, new);
    new
});

hook!(fn dup2(old: c_int, new: c_int) -> c_int, DUP2, |real| {
    if logger::owns(new) {
        logger::relocate(new);
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new) };
    if r >= 0 && old != new {
        conntable::copy(old, r);
    }
    r
});

hook!(fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int, DUP3, |real| {
    if logger::owns(new) {
        logger::relocate(new);
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new, flags) };
    conntable::copy(old, r);
    r
});

hook!(fn fclose(fp: *mut libc::FILE) -> c_int, FCLOSE, |real| {
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

hook!(fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int, CLOSE_RANGE, |real| {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        conntable::forget_range(first, last);
    }
    // SAFETY: the caller's own arguments.
    unsafe { real(first, last, flags) }
});

/// `void closefrom(int)`: written out because it returns nothing.
#[no_mangle]
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
