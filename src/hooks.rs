//! The exported symbols that the dynamic linker binds the program's calls to. Each hook is thin:
//! call the real function exactly once with the caller's arguments, return at once when it
//! succeeded, and hand a failure to `ops::after_failure`.
//!
//! glibc's forced unwind (`pthread_cancel` of a thread blocked in `read`) must pass through a
//! hook's frame: hooks hold nothing that needs dropping across the real call and never wrap it
//! in `catch_unwind`, which would catch the forced unwind and abort the process (what redhook's
//! `hook!` does; see the README). They are `extern "C-unwind"`, the ABI under which unwinding
//! through them is defined behaviour.

use crate::event::CallArgs;
use crate::rules::Call;
use crate::sockinfo::Kind;
use crate::{errno, fdtable, logger, ops, real};
use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Defines an exported hook that calls the real function through `$f`.
macro_rules! hook {
    (fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty, $real:ident, |$f:ident| $body:block) => {
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name($($a: $t),*) -> $ret {
            let addr = real::$real.get();
            if addr == 0 {
                errno::set(libc::ENOSYS);
                return -1;
            }
            // SAFETY: addr is the next definition of this very symbol, which has this signature.
            let $f: unsafe extern "C-unwind" fn($($t),*) -> $ret = unsafe { core::mem::transmute(addr) };
            $body
        }
    };
}

/// A hook whose failures (a negative return) go through the rules.
macro_rules! rule_hook {
    ($name:ident($($a:ident: $t:ty),*) -> $ret:ty = $real:ident, $call:expr, $args:expr) => {
        hook!(fn $name($($a: $t),*) -> $ret, $real, |real| {
            let errno_before = errno::get();
            // SAFETY: the caller's own arguments, passed on unchanged.
            let r = unsafe { real($($a),*) };
            if r >= 0 {
                return r;
            }
            ops::after_failure($call, stringify!($name), $args, r as isize, errno_before) as $ret
        });
    };
}

rule_hook!(read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t = READ, Call::Read, CallArgs::buf(fd, n, 0));
rule_hook!(write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t = WRITE, Call::Write, CallArgs::buf(fd, n, 0));
rule_hook!(readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = READV, Call::Readv, CallArgs::iov(fd, iov, cnt.max(0) as usize, 0));
rule_hook!(writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = WRITEV, Call::Writev, CallArgs::iov(fd, iov, cnt.max(0) as usize, 0));
rule_hook!(recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t = RECV, Call::Recv, CallArgs::buf(fd, n, flags));
rule_hook!(recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM, Call::Recvfrom, CallArgs::buf(fd, n, flags));
rule_hook!(send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t = SEND, Call::Send, CallArgs::buf(fd, n, flags));
rule_hook!(sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t
    = SENDTO, Call::Sendto, CallArgs::buf(fd, n, flags));
rule_hook!(shutdown(fd: c_int, how: c_int) -> c_int = SHUTDOWN, Call::Shutdown, CallArgs { how, ..CallArgs::fd(fd) });
rule_hook!(__read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t = READ_CHK, Call::Read, CallArgs::buf(fd, n, 0));
rule_hook!(__recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t
    = RECV_CHK, Call::Recv, CallArgs::buf(fd, n, flags));
rule_hook!(__recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM_CHK, Call::Recvfrom, CallArgs::buf(fd, n, flags));

/// The iovec array of a msghdr, read only on the failure path.
fn msg_iov(msg: *const msghdr) -> (*const iovec, usize) {
    if msg.is_null() {
        return (core::ptr::null(), 0);
    }
    // SAFETY: the caller passed msg to the call that just returned.
    unsafe { ((*msg).msg_iov, (*msg).msg_iovlen) }
}

rule_hook!(recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = RECVMSG, Call::Recvmsg, {
    let (iov, n) = msg_iov(msg);
    CallArgs::iov(fd, iov, n, flags)
});
rule_hook!(sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = SENDMSG, Call::Sendmsg, {
    let (iov, n) = msg_iov(msg);
    CallArgs::iov(fd, iov, n, flags)
});

hook!(fn close(fd: c_int) -> c_int, CLOSE, |real| {
    if logger::owns(fd) {
        // errshim's own log descriptor: the program never opened it, so it gets what it would
        // get without errshim, and the log keeps working.
        errno::set(libc::EBADF);
        return -1;
    }
    let kind = fdtable::take(fd);
    let errno_before = errno::get();
    // SAFETY: the caller's own argument.
    let r = unsafe { real(fd) };
    if r == 0 {
        return 0;
    }
    let args = CallArgs { kind_hint: kind, ..CallArgs::fd(fd) };
    ops::after_failure(Call::Close, "close", args, r as isize, errno_before) as c_int
});

hook!(fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, SOCKET, |real| {
    // SAFETY: the caller's own arguments.
    let fd = unsafe { real(domain, ty, protocol) };
    fdtable::set(fd, Kind::from_socket_args(domain, ty, protocol));
    fd
});

hook!(fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int, SOCKETPAIR, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(domain, ty, protocol, sv) };
    if r == 0 {
        let kind = Kind::from_socket_args(domain, ty, protocol);
        // SAFETY: on success the kernel wrote two descriptors into sv.
        unsafe {
            fdtable::set(*sv, kind);
            fdtable::set(*sv.add(1), kind);
        }
    }
    r
});

hook!(fn accept(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int, ACCEPT, |real| {
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen) };
    fdtable::set(new, fdtable::get(fd));
    new
});

hook!(fn accept4(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t, flags: c_int) -> c_int, ACCEPT4, |real| {
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen, flags) };
    fdtable::set(new, fdtable::get(fd));
    new
});

hook!(fn dup(old: c_int) -> c_int, DUP, |real| {
    // SAFETY: the caller's own argument.
    let new = unsafe { real(old) };
    fdtable::set(new, fdtable::get(old));
    new
});

hook!(fn dup2(old: c_int, new: c_int) -> c_int, DUP2, |real| {
    if logger::owns(new) {
        logger::relocate(new);
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new) };
    fdtable::set(r, fdtable::get(old));
    r
});

hook!(fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int, DUP3, |real| {
    if logger::owns(new) {
        logger::relocate(new);
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new, flags) };
    fdtable::set(r, fdtable::get(old));
    r
});
