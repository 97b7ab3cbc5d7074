//! The exported symbols that the dynamic linker binds the program's calls to. Each hook is thin:
//! call the real function exactly once with the caller's arguments and, unless it is armed,
//! return its success untouched (the read and write families touch no memory of errshim's but
//! the word of armed calls); hand anything else to the cold functions in `ops`.
//!
//! Caller memory: a hook reads a pointer the program passed only where the kernel has just
//! proven it valid (see `memory`): the arguments of a failed call travel to the cold path as
//! the raw pointers they were and are read there only after a probe.
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
    (@cold read, $call:expr, $name:expr, $args:expr, $r:expr, $e:expr) => { failure::after_read($call, $name, $args, $r, $e) };
    (@cold write, $call:expr, $name:expr, $args:expr, $r:expr, $e:expr) => { failure::after_failure($call, $name, $args, $r, $e) };
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
/// `$args` builds the `CallArgs` from the raw arguments, pointers as they were (it reads no
/// caller memory); it runs on the cold paths only.
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
                unsafe fn inject(inj: fault::Injection, $fd: $fdt, $($a: $t),*) -> $ret {
                    let errno_before = errno::get();
                    let $f = resolved!($real, fn($fdt, $($t),*) -> $ret);
                    // SAFETY: the real call with the caller's arguments, its length cut to `$lim`
                    // (usize::MAX: as asked).
                    let mut perform = |$lim: usize| unsafe { $limited } as isize;
                    failure::injected($call, stringify!($name), $args, inj, errno_before, &mut perform) as $ret
                }
                // First, while only the arguments are live; `decide` leaves errno as it was.
                if let Some(inj) = fault::decide($call, $fd, $args.request()) {
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
                // address (`handle::armed` pairs with the store that said so), the next
                // definition of this very symbol, which has this signature.
                let $f: unsafe extern "C-unwind" fn($fdt, $($t),*) -> $ret = unsafe { core::mem::transmute(real::$real.loaded()) };
                // SAFETY: the caller's own arguments, passed on unchanged.
                finish!($family, uncounted, unsafe { $f($fd, $($a),*) }, $fd: $fdt, ($($a: $t),*), $call, stringify!($name), $args, failure::ERRNO_UNKNOWN, $ret)
            }
            // SAFETY: the caller's own arguments.
            unsafe {
                if armed::armed($call) {
                    faulty($fd, $($a),*)
                } else {
                    plain($fd, $($a),*)
                }
            }
        }
    };
}

io_hook!(read, read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t = READ, Call::Read, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim)));
io_hook!(read, readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = READV, Call::Readv, CallArgs::iov(fd, iov, cnt), |real, lim| failure::short_iov(iov, cnt, lim, |i, c| real(fd, i, c)));
io_hook!(read, recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t = RECV, Call::Recv, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags));
io_hook!(read, recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM, Call::Recvfrom, CallArgs::buf(fd, n, flags).with_from(addr, alen), |real, lim| real(fd, buf, n.min(lim), flags, addr, alen));
io_hook!(read, __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t = READ_CHK, Call::Read, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim), buflen));
io_hook!(read, __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t
    = RECV_CHK, Call::Recv, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), buflen, flags));
io_hook!(read, __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t
    = RECVFROM_CHK, Call::Recvfrom, CallArgs::buf(fd, n, flags).with_from(addr, alen), |real, lim| real(fd, buf, n.min(lim), buflen, flags, addr, alen));
io_hook!(read, recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t = RECVMSG, Call::Recvmsg, CallArgs::msg(fd, msg, flags), |real, lim| failure::short_msg(msg, lim, true, |m| real(fd, m, flags)));

io_hook!(write, write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t = WRITE, Call::Write, CallArgs::buf(fd, n, 0), |real, lim| real(fd, buf, n.min(lim)));
io_hook!(write, writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = WRITEV, Call::Writev, CallArgs::iov(fd, iov, cnt), |real, lim| failure::short_iov(iov, cnt, lim, |i, c| real(fd, i, c)));
io_hook!(write, send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t = SEND, Call::Send, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags));
io_hook!(write, sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t
    = SENDTO, Call::Sendto, CallArgs::buf(fd, n, flags), |real, lim| real(fd, buf, n.min(lim), flags, addr, alen));
io_hook!(write, sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t = SENDMSG, Call::Sendmsg, CallArgs::msg(fd, msg, flags), |real, lim| failure::short_msg(msg as *mut msghdr, lim, false, |m| real(fd, m, flags)));

hook!(fn shutdown(fd: c_int, how: c_int) -> c_int, SHUTDOWN, |real| {
    /// Some fault rule names shutdown (see `io_hook!`).
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

hook!(fn close(fd: c_int) -> c_int, CLOSE, |real| {
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

hook!(fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int, SOCKET, |real| {
    // SAFETY: the caller's own arguments.
    let fd = unsafe { real(domain, ty, protocol) };
    if fd >= 0 {
        conntable::start(fd, Kind::from_socket_args(domain, ty, protocol), 0, None);
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
            conntable::start(fd, kind, hist::PAIRED, None);
        }
    }
    r
});

hook!(fn connect(fd: c_int, addr: *const sockaddr, alen: socklen_t) -> c_int, CONNECT, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(fd, addr, alen) };
    failure::after_connect(fd, addr, alen, r);
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

hook!(fn accept(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int, ACCEPT, |real| {
    let room = accept_buffer_len(addr, alen);
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen) };
    if new >= 0 {
        failure::after_accept(fd, new, addr, alen, room);
    }
    new
});

hook!(fn accept4(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t, flags: c_int) -> c_int, ACCEPT4, |real| {
    let room = accept_buffer_len(addr, alen);
    // SAFETY: the caller's own arguments.
    let new = unsafe { real(fd, addr, alen, flags) };
    if new >= 0 {
        failure::after_accept(fd, new, addr, alen, room);
    }
    new
});

hook!(fn dup(old: c_int) -> c_int, DUP, |real| {
    // SAFETY: the caller's own argument.
    let new = unsafe { real(old) };
    conntable::copy(old, new);
    new
});

hook!(fn dup2(old: c_int, new: c_int) -> c_int, DUP2, |real| {
    // SAFETY: the caller's own arguments.
    let r = unsafe { real(old, new) };
    if r >= 0 {
        conntable::copy(old, r);
    }
    r
});

hook!(fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int, DUP3, |real| {
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

hook!(fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int, FCNTL, |real| {
    // SAFETY: the caller's own arguments.
    fcntl_done(fd, cmd, unsafe { real(fd, cmd, arg) })
});

hook!(fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int, FCNTL64, |real| {
    // SAFETY: the caller's own arguments.
    fcntl_done(fd, cmd, unsafe { real(fd, cmd, arg) })
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
    // Before the call: afterwards, another thread may have a new socket at a freed number.
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

// --- seccomp ------------------------------------------------------------------------------

/// A seccomp filter is about to be installed: from now on errshim makes no system call of its
/// own (`raw::forbid`); undone if the install fails.
#[inline(always)]
fn with_filter_install(install: bool, call: impl FnOnce() -> c_long) -> c_long {
    if !install {
        return call();
    }
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

/// A hook for a call that may change the effective user: the log file is prepared for the new
/// user first (`logger::before_user_change`), then the real call.
macro_rules! user_hook {
    (fn $name:ident($($a:ident: $t:ty),*), $real:ident, |$($b:ident),*| $euid:expr) => {
        hook!(fn $name($($a: $t),*) -> c_int, $real, |real| {
            let euid: Option<libc::uid_t> = (|$($b: $t),*| $euid)($($a),*);
            if let Some(u) = euid.filter(|&u| u != libc::uid_t::MAX) {
                logger::before_user_change(u);
            }
            // SAFETY: the caller's own arguments.
            unsafe { real($($a),*) }
        });
    };
}

user_hook!(fn setuid(uid: libc::uid_t), SETUID, |uid| Some(uid));
user_hook!(fn seteuid(euid: libc::uid_t), SETEUID, |euid| Some(euid));
user_hook!(fn setreuid(ruid: libc::uid_t, euid: libc::uid_t), SETREUID, |_ruid, euid| Some(euid));
user_hook!(fn setresuid(ruid: libc::uid_t, euid: libc::uid_t, suid: libc::uid_t), SETRESUID, |_ruid, euid, _suid| Some(euid));
