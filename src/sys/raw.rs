//! Raw system calls for the shim's own work, and nothing else of errshim's: the bottom layer.
//!
//! - Each is a `syscall` instruction written inline: it never passes through a libc wrapper
//!   (which errshim or another preload may interpose, glibc's `syscall()` included), never
//!   reads or sets the program's errno (failures come back as `Err(errno)`), takes no lock and
//!   is async-signal-safe.
//! - Every one goes through one gate. Under a seccomp filter that errshim does not trust
//!   (the `prctl`, `seccomp` and `syscall()` hooks call `forbid`, and the first gated call
//!   looks at the seccomp state the process inherited), a filter may kill the process for any
//!   system call it does not allow, so from then on none is made: each reports `Err(EPERM)`
//!   without entering the kernel. The program's own calls, made by the hooks through the real
//!   functions, are not errshim's and are not affected.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use libc::c_long;

/// Whether errshim may make system calls of its own: not known yet (`UNKNOWN`: the first
/// gated call looks), yes, or no (see the module doc).
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const ALLOWED: u8 = 1;
const FORBIDDEN: u8 = 2;
/// `ERRSHIM_SECCOMP=trust`: a filter the process was started under allows errshim's calls.
static TRUST_INHERITED: AtomicBool = AtomicBool::new(false);
/// The first look found no filter at all (not merely a trusted one).
static NO_FILTER: AtomicBool = AtomicBool::new(false);

/// Whether a seccomp filter that the process was started under is trusted (from the
/// constructor; a filter installed later is never trusted).
pub fn trust_inherited_filter(trust: bool) {
    TRUST_INHERITED.store(trust, Relaxed);
}

/// A filter is being installed (`prctl(PR_SET_SECCOMP)`, `seccomp()`): from now on errshim
/// makes no system call of its own. Returns the state to `restore` if the install fails.
pub fn forbid() -> u8 {
    STATE.swap(FORBIDDEN, Relaxed)
}

pub fn restore(state: u8) {
    STATE.store(state, Relaxed);
}

/// Whether errshim may make a system call of its own now. The first time, whether the process
/// was started under a seccomp filter is read from `/proc/self/status`, with the three calls
/// the dynamic loader itself made to load this library (`openat`, `read`, `close`).
#[inline(always)]
pub fn allowed() -> bool {
    match STATE.load(Relaxed) {
        ALLOWED => true,
        FORBIDDEN => false,
        _ => first_look(),
    }
}

/// Whether errshim is sure it must make no system call (a filter is known); unlike `allowed`,
/// never looks, so it is free on a success path.
#[inline(always)]
pub fn forbidden() -> bool {
    STATE.load(Relaxed) == FORBIDDEN
}

/// Whether the process is known to run under no seccomp filter at all: looked at, none
/// inherited, none installed since. A filter sees the arguments of system calls, so where one
/// may exist (or is trusted with errshim's own calls) arguments are passed exactly as the
/// program gave them. Never looks: free on a success path.
#[inline(always)]
pub fn free_of_filters() -> bool {
    STATE.load(Relaxed) == ALLOWED && NO_FILTER.load(Relaxed)
}

#[cold]
#[inline(never)]
fn first_look() -> bool {
    let filtered = started_under_filter();
    NO_FILTER.store(!filtered, Relaxed);
    let ok = !filtered || TRUST_INHERITED.load(Relaxed);
    // A filter installed meanwhile (forbid) wins.
    let _ = STATE.compare_exchange(UNKNOWN, if ok { ALLOWED } else { FORBIDDEN }, Relaxed, Relaxed);
    STATE.load(Relaxed) == ALLOWED
}

/// `Seccomp:` of `/proc/self/status` is 1 or 2; also when it cannot be read (no /proc), since
/// then nothing says the process is free of a filter. No such line: a kernel without seccomp.
fn started_under_filter() -> bool {
    let path = c"/proc/self/status";
    let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as usize;
    // SAFETY: a NUL-terminated path.
    let Ok(fd) = (unsafe {
        ungated(
            libc::SYS_openat,
            [libc::AT_FDCWD as usize, p(path.as_ptr()), flags, 0, 0, 0],
        )
    }) else {
        return true;
    };
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: reads into the rest of buf.
        match unsafe { ungated(libc::SYS_read, [fd, pm(buf[n..].as_mut_ptr()), buf.len() - n, 0, 0, 0]) } {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(libc::EINTR) => {}
            Err(_) => break,
        }
    }
    // SAFETY: closes the descriptor opened above.
    let _ = unsafe { ungated(libc::SYS_close, [fd, 0, 0, 0, 0, 0]) };
    n == 0 || seccomp_field(&buf[..n]).is_some_and(|mode| mode != b'0')
}

/// The value of the `Seccomp:` line of a `/proc/PID/status` text (None: no such line, which
/// a kernel without seccomp support leaves out; then there is no filter).
pub fn seccomp_field(status: &[u8]) -> Option<u8> {
    let at = status.windows(9).position(|w| w == b"Seccomp:\t")?;
    status.get(at + 9).copied()
}

pub type Result<T> = core::result::Result<T, i32>;

/// The `syscall` instruction itself, ungated.
mod insn {
    use libc::c_long;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn call6(nr: c_long, a: [usize; 6]) -> c_long {
        let r: c_long;
        // SAFETY: the caller vouches for the arguments; the kernel clobbers rcx and r11.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr => r,
                in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
                in("r10") a[3], in("r8") a[4], in("r9") a[5],
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
        }
        r
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub unsafe fn call6(nr: c_long, a: [usize; 6]) -> c_long {
        let r: c_long;
        // SAFETY: the caller vouches for the arguments.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a[0] => r,
                in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
                options(nostack),
            );
        }
        r
    }
}

/// A system call that is not gated: only for the gate's own look at the process's
/// seccomp state (the calls the dynamic loader itself made to load this library).
///
/// # Safety
/// The arguments must be valid for system call `nr`.
pub unsafe fn ungated(nr: c_long, a: [usize; 6]) -> Result<usize> {
    // SAFETY: as the caller vouches.
    let r = unsafe { insn::call6(nr, a) };
    if (-4095..0).contains(&r) {
        Err(-r as i32)
    } else {
        Ok(r as usize)
    }
}

/// A gated system call (see the module doc).
///
/// # Safety
/// The arguments must be valid for system call `nr`.
#[inline]
unsafe fn sc(nr: c_long, a: [usize; 6]) -> Result<usize> {
    if !allowed() {
        return Err(libc::EPERM);
    }
    // SAFETY: as the caller vouches.
    unsafe { ungated(nr, a) }
}

fn p<T>(x: *const T) -> usize {
    x as usize
}

fn pm<T>(x: *mut T) -> usize {
    x as usize
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize> {
    // SAFETY: buf is valid for its length.
    unsafe { sc(libc::SYS_write, [fd as usize, p(buf.as_ptr()), buf.len(), 0, 0, 0]) }
}

/// `pwritev2(fd, buf, -1, RWF_NOWAIT)`: a write at the current position that fails with
/// EAGAIN instead of waiting, without changing the descriptor's flags (which the program
/// shares). Pipes support it since Linux 5.x; other kernels and files answer EOPNOTSUPP.
pub fn write_nowait(fd: i32, buf: &[u8]) -> Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    const RWF_NOWAIT: usize = 8;
    // SAFETY: one valid iovec; offset -1 (both halves) means the current position.
    unsafe {
        sc(
            libc::SYS_pwritev2,
            [fd as usize, p(&iov), 1, usize::MAX, usize::MAX, RWF_NOWAIT],
        )
    }
}

/// `sendto(fd, buf, flags, addr)`; `addr` None: the socket's peer.
pub fn sendto(fd: i32, buf: &[u8], flags: i32, addr: Option<(&libc::sockaddr_un, u32)>) -> Result<usize> {
    let (a, l) = addr.map_or((0, 0), |(a, l)| (p(a), l as usize));
    // SAFETY: buf and addr are valid for the lengths given.
    unsafe {
        sc(
            libc::SYS_sendto,
            [fd as usize, p(buf.as_ptr()), buf.len(), flags as usize, a, l],
        )
    }
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: buf is valid for writing its length.
    unsafe { sc(libc::SYS_read, [fd as usize, pm(buf.as_mut_ptr()), buf.len(), 0, 0, 0]) }
}

pub fn close(fd: i32) {
    // SAFETY: closes a descriptor the shim itself opened.
    let _ = unsafe { sc(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) };
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { sc(libc::SYS_getpid, [0; 6]) }.map_or(0, |v| v as i32)
}

pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { sc(libc::SYS_gettid, [0; 6]) }.map_or(0, |v| v as i32)
}

/// (uid, euid) of the calling thread.
pub fn uids() -> (u32, u32) {
    // SAFETY: no arguments.
    let uid = unsafe { sc(libc::SYS_getuid, [0; 6]) }.map_or(u32::MAX, |v| v as u32);
    // SAFETY: no arguments.
    let euid = unsafe { sc(libc::SYS_geteuid, [0; 6]) }.map_or(u32::MAX, |v| v as u32);
    (uid, euid)
}

pub fn getsockopt_int(fd: i32, level: i32, name: i32) -> Result<i32> {
    let mut v: i32 = 0;
    let mut len = core::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: v and len are valid for writing.
    unsafe {
        sc(
            libc::SYS_getsockopt,
            [fd as usize, level as usize, name as usize, pm(&mut v), pm(&mut len), 0],
        )
    }
    .map(|_| v)
}

/// CLOCK_MONOTONIC in nanoseconds, by the system call itself (no vDSO: see `monotonic_ms`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    let _ = unsafe {
        sc(
            libc::SYS_clock_gettime,
            [libc::CLOCK_MONOTONIC as usize, pm(&mut ts), 0, 0, 0, 0],
        )
    };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// One `nanosleep` of `ns`: whether a signal's handler cut it short (EINTR).
pub fn nanosleep_once(ns: u64) -> bool {
    let req = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    };
    // SAFETY: req is valid; no remainder wanted.
    let r = unsafe { sc(libc::SYS_nanosleep, [p(&req), 0, 0, 0, 0, 0]) };
    r == Err(libc::EINTR)
}

/// Whether some signal has a handler installed without SA_RESTART (one that interrupts a
/// blocking socket call rather than restarting it): `rt_sigaction` of each, read only.
pub fn some_handler_interrupts() -> bool {
    (1..=64usize).any(|sig| {
        // The kernel's sigaction: handler, flags, restorer, mask.
        let mut act = [0usize; 4];
        // SAFETY: no new action; act is valid for the kernel's 32 bytes.
        let r = unsafe { sc(libc::SYS_rt_sigaction, [sig, 0, pm(act.as_mut_ptr()), 8, 0, 0]) };
        let handler = act[0];
        r.is_ok() && handler > 1 && act[1] & libc::SA_RESTART as usize == 0
    })
}

/// CLOCK_MONOTONIC in milliseconds, by the system call itself (for errshim's timer thread,
/// which runs no libc code: see `handle::timer`). The same clock as `conntable::now_ms`.
pub fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

/// `futex(FUTEX_WAIT_PRIVATE)`: sleeps while `*word == expected`, at most `timeout_ms` (None:
/// until woken). Returns at a wake, a signal, the timeout, or at once if the word differs.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ms: Option<u64>) {
    let ts = timeout_ms.map(|ms| libc::timespec {
        tv_sec: (ms / 1000).min(i64::MAX as u64) as i64,
        tv_nsec: (ms % 1000 * 1_000_000) as i64,
    });
    let tsp = ts.as_ref().map_or(0, |t| p(t));
    // SAFETY: word is a valid u32 for the call's duration; ts lives until it returns.
    let _ = unsafe {
        sc(
            libc::SYS_futex,
            [
                p(word.as_ptr()),
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
                expected as usize,
                tsp,
                0,
                0,
            ],
        )
    };
}

/// `futex(FUTEX_WAKE_PRIVATE)`: wakes the waiters on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: plain arguments; word is valid.
    let _ = unsafe {
        sc(
            libc::SYS_futex,
            [
                p(word.as_ptr()),
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
                i32::MAX as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Ends the calling thread (not the process): `exit`, ungated, which every seccomp filter
/// allows (strict mode's four calls include it).
pub fn exit_thread() -> ! {
    loop {
        // SAFETY: no arguments to check.
        let _ = unsafe { ungated(libc::SYS_exit, [0; 6]) };
    }
}

/// Starts a thread the kernel knows and libc does not: `clone` with the process's memory,
/// descriptors and signal handlers, on `stack` (its top, 16-byte aligned), running `f(arg)`,
/// which must never return, use thread-local storage (the new thread shares the calling
/// thread's) or call into libc. Every signal is blocked in it (blocked around the `clone`, so
/// the thread starts with all of them blocked; the caller's mask is then restored). `tid`
/// holds the thread's id from before `clone` returns and 0 once it has exited (the kernel's
/// CLONE_PARENT_SETTID and CLONE_CHILD_CLEARTID, with a futex wake). x86-64 only.
///
/// # Safety
/// `stack` is the top of memory that stays mapped for the thread's life; `tid` lives forever.
#[cfg(target_arch = "x86_64")]
pub unsafe fn spawn_bare_thread(
    stack: *mut u8,
    f: extern "C" fn(usize) -> !,
    arg: usize,
    tid: &'static core::sync::atomic::AtomicI32,
) -> Result<i32> {
    // Not CLONE_FS: a thread sharing the filesystem context would make `setns` into a mount
    // namespace and `unshare(CLONE_NEWNS)` fail for the program.
    let flags = (libc::CLONE_VM
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as usize;
    if !allowed() {
        return Err(libc::EPERM);
    }
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: valid sigset pointers of the kernel's size (8 bytes).
    unsafe {
        sc(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, p(&all), pm(&mut old), 8, 0, 0],
        )
    }?;
    let r: c_long;
    // SAFETY: the child starts on its own stack and jumps straight into `f`, which never
    // returns; the parent goes on as after any system call (rcx and r11 clobbered).
    unsafe {
        core::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone => r,
            in("rdi") flags,
            in("rsi") stack as usize,
            in("rdx") tid.as_ptr() as usize,
            in("r10") tid.as_ptr() as usize,
            in("r8") 0usize,
            in("r12") arg,
            in("r13") f as usize,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    // SAFETY: as above.
    let _ = unsafe {
        sc(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, p(&old), 0, 8, 0, 0],
        )
    };
    if (-4095..0).contains(&r) {
        Err(-r as i32)
    } else {
        Ok(r as i32)
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn spawn_bare_thread(
    _stack: *mut u8,
    _f: extern "C" fn(usize) -> !,
    _arg: usize,
    _tid: &'static core::sync::atomic::AtomicI32,
) -> Result<i32> {
    Err(libc::ENOSYS)
}

/// `SO_RCVTIMEO` or `SO_SNDTIMEO` (`name`) of `fd` in nanoseconds; 0: none (waits for ever).
pub fn sock_timeout_ns(fd: i32, name: i32) -> u64 {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = core::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: tv and len are valid for writing.
    let r = unsafe {
        sc(
            libc::SYS_getsockopt,
            [
                fd as usize,
                libc::SOL_SOCKET as usize,
                name as usize,
                pm(&mut tv),
                pm(&mut len),
                0,
            ],
        )
    };
    match r {
        Ok(_) => (tv.tv_sec.max(0) as u64).saturating_mul(1_000_000_000) + tv.tv_usec.max(0) as u64 * 1000,
        Err(_) => 0,
    }
}

/// `setsockopt(fd, level, name, &v, 4)`: to write back the value just read, which the kernel
/// takes as a nudge to re-check readiness (see `handle::faithful`), or a stall's SO_RCVLOWAT.
pub fn setsockopt_int(fd: i32, level: i32, name: i32, v: i32) -> Result<()> {
    // SAFETY: v is valid for reading its size.
    unsafe {
        sc(
            libc::SYS_setsockopt,
            [
                fd as usize,
                level as usize,
                name as usize,
                p(&v),
                core::mem::size_of::<i32>(),
                0,
            ],
        )
    }
    .map(|_| ())
}

/// The file status flags of `fd` (`fcntl(F_GETFL)`: O_NONBLOCK and the like).
pub fn status_flags(fd: i32) -> Result<i32> {
    // SAFETY: plain integer arguments.
    unsafe { sc(libc::SYS_fcntl, [fd as usize, libc::F_GETFL as usize, 0, 0, 0, 0]) }.map(|v| v as i32)
}

/// How many bytes are queued to read on a socket (`ioctl(FIONREAD)`, which consumes nothing).
pub fn queued_to_read(fd: i32) -> Result<i32> {
    let mut n: i32 = 0;
    // SAFETY: n is valid for writing an int.
    unsafe {
        sc(
            libc::SYS_ioctl,
            [fd as usize, libc::FIONREAD as usize, pm(&mut n), 0, 0, 0],
        )
    }
    .map(|_| n)
}

/// Sends `sig` to the calling thread as the kernel sends SIGPIPE (SI_USER; `tgkill` if the
/// kernel refuses that).
pub fn raise_in_thread(sig: i32) {
    // The kernel's own (`send_sig(sig, current, 0)`) says SI_USER, with this process as the
    // sender: `rt_tgsigqueueinfo` may say so to the calling thread itself (tgkill would say
    // SI_TKILL). siginfo: si_signo, si_errno, si_code, padding, then si_pid and si_uid.
    let mut info = [0i32; 32];
    info[0] = sig;
    info[4] = getpid();
    info[5] = uids().0 as i32;
    // SAFETY: a siginfo of the kernel's size (128 bytes), valid for reading.
    let queued = unsafe {
        sc(
            libc::SYS_rt_tgsigqueueinfo,
            [
                getpid() as usize,
                gettid() as usize,
                sig as usize,
                p(info.as_ptr()),
                0,
                0,
            ],
        )
    };
    if queued.is_err() {
        // SAFETY: plain integer arguments.
        let _ = unsafe {
            sc(
                libc::SYS_tgkill,
                [getpid() as usize, gettid() as usize, sig as usize, 0, 0, 0],
            )
        };
    }
}

/// `shutdown(fd, how)`.
pub fn shutdown(fd: i32, how: i32) -> Result<()> {
    // SAFETY: plain integer arguments.
    unsafe { sc(libc::SYS_shutdown, [fd as usize, how as usize, 0, 0, 0, 0]) }.map(|_| ())
}

/// The running kernel's (major, minor) from `uname`, or None.
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: all-zero bytes are a valid utsname.
    let mut u: libc::utsname = unsafe { core::mem::zeroed() };
    // SAFETY: u is valid for writing.
    unsafe { sc(libc::SYS_uname, [pm(&mut u), 0, 0, 0, 0, 0]) }.ok()?;
    let rel = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8);
    let mut parts = [0u32; 2];
    let mut i = 0;
    for c in rel {
        match c {
            b'0'..=b'9' => parts[i] = parts[i].saturating_mul(10).saturating_add(u32::from(c - b'0')),
            b'.' if i == 0 => i = 1,
            _ => break,
        }
    }
    (parts[0] > 0).then_some((parts[0], parts[1]))
}

/// `getsockname` (peer = false) or `getpeername` (peer = true) into `ss`; the length written.
pub fn sockname(fd: i32, peer: bool, ss: &mut libc::sockaddr_storage) -> Result<usize> {
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let nr = if peer {
        libc::SYS_getpeername
    } else {
        libc::SYS_getsockname
    };
    // SAFETY: ss and len are valid for writing, len holds ss's size.
    unsafe { sc(nr, [fd as usize, pm(ss), pm(&mut len), 0, 0, 0]) }.map(|_| len as usize)
}

pub fn socket(domain: i32, ty: i32) -> Result<i32> {
    // SAFETY: plain integer arguments.
    unsafe { sc(libc::SYS_socket, [domain as usize, ty as usize, 0, 0, 0, 0]) }.map(|v| v as i32)
}

/// `bind(fd, addr)`: the first `len` bytes of `ss`.
pub fn bind(fd: i32, ss: &libc::sockaddr_storage, len: usize) -> Result<()> {
    with_address(libc::SYS_bind, fd, ss, len)
}

/// `connect(fd, addr)`: the first `len` bytes of `ss`.
pub fn connect(fd: i32, ss: &libc::sockaddr_storage, len: usize) -> Result<()> {
    with_address(libc::SYS_connect, fd, ss, len)
}

/// A system call `nr(fd, addr, len)` that reads an address.
fn with_address(nr: c_long, fd: i32, ss: &libc::sockaddr_storage, len: usize) -> Result<()> {
    // SAFETY: ss is valid for reading its size, and len is at most that.
    unsafe { sc(nr, [fd as usize, p(ss), len.min(size_of_storage()), 0, 0, 0]) }.map(|_| ())
}

fn size_of_storage() -> usize {
    core::mem::size_of::<libc::sockaddr_storage>()
}

/// What `fstat` says of a descriptor (or `stat` of a path): enough to tell one file from
/// another and what kind of file it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    /// The device a character or block special file is (`st_rdev`).
    pub rdev: u64,
    pub size: u64,
    /// Modification time in nanoseconds.
    pub mtime: u64,
}

impl Stat {
    fn of(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            kind: st.st_mode & libc::S_IFMT,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            mtime: (st.st_mtime as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(st.st_mtime_nsec as u64),
        }
    }

    /// The same file (a descriptor's identity: any two descriptors of one file agree).
    pub fn same_file(&self, o: &Stat) -> bool {
        self.dev == o.dev && self.ino == o.ino
    }

    pub fn is(&self, kind: u32) -> bool {
        self.kind == kind
    }

    /// `/dev/null` (character device 1:3), where whatever is written is lost.
    pub fn is_dev_null(&self) -> bool {
        self.is(libc::S_IFCHR) && self.rdev == libc::makedev(1, 3)
    }
}

pub fn fstat(fd: i32) -> Result<Stat> {
    fstat_with(fd, sc)
}

/// glibc 2.33 and later make `fstat` with `newfstatat(fd, "", AT_EMPTY_PATH)`, older ones with
/// `fstat`; errshim makes the same call as the program's own libc (and its dynamic loader),
/// so that a seccomp filter written for the program allows it (learnt in the constructor).
static FSTAT_AS_NEWFSTATAT: AtomicBool = AtomicBool::new(true);

/// Learns which call the program's glibc makes for `fstat` (from the constructor):
/// `found_fstat`, the constructor found libc.so's `fstat` (2.33 and later define it); when it
/// did not, glibc's version string says.
#[link_section = ".text.errshim_startup"]
pub fn learn_libc(found_fstat: bool) {
    let new = found_fstat || {
        // SAFETY: returns a static NUL-terminated string such as "2.36".
        let v = unsafe { core::ffi::CStr::from_ptr(gnu_get_libc_version()) }.to_bytes();
        version(v) >= (2, 33)
    };
    FSTAT_AS_NEWFSTATAT.store(new, Relaxed);
}

/// "2.36" as (2, 36); what is not a number counts as 0. By hand: the constructor's path is
/// kept small (see `interpose::init`).
#[link_section = ".text.errshim_startup"]
fn version(v: &[u8]) -> (u32, u32) {
    let mut parts = [0u32; 2];
    let mut i = 0;
    for &b in v {
        match b {
            b'0'..=b'9' => parts[i] = parts[i].saturating_mul(10).saturating_add((b - b'0') as u32),
            b'.' if i == 0 => i = 1,
            _ => break,
        }
    }
    (parts[0], parts[1])
}

extern "C" {
    fn gnu_get_libc_version() -> *const core::ffi::c_char;
}

/// `fstat` through `call` (gated or not).
fn fstat_with(fd: i32, call: unsafe fn(c_long, [usize; 6]) -> Result<usize>) -> Result<Stat> {
    // SAFETY: an all-zero stat is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = if FSTAT_AS_NEWFSTATAT.load(Relaxed) {
        // On the stack, not in the library's read-only data: the kernel reads this byte, and
        // the stack page is already mapped (at start-up, a page of rodata may not be).
        let empty = [0 as core::ffi::c_char; 1];
        // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH: the descriptor itself.
        unsafe {
            call(
                libc::SYS_newfstatat,
                [
                    fd as usize,
                    p(empty.as_ptr()),
                    pm(&mut st),
                    libc::AT_EMPTY_PATH as usize,
                    0,
                    0,
                ],
            )
        }
    } else {
        // SAFETY: st is valid for writing.
        unsafe { call(libc::SYS_fstat, [fd as usize, pm(&mut st), 0, 0, 0, 0]) }
    };
    r.map(|_| Stat::of(&st))
}

/// The calls errshim makes while the library loads, the same ones glibc's own start-up and the
/// dynamic loader make (`prlimit64`, `mmap`, `fstat` as libc makes it), so they are not gated:
/// gating would mean reading `/proc/self/status` in every process that starts.
pub mod startup {
    use super::*;

    pub fn nofile_limit() -> (u64, u64) {
        super::nofile_limit_with(ungated)
    }

    pub fn map_anonymous(bytes: usize) -> Result<*mut u8> {
        super::map_anonymous_with(bytes, ungated)
    }

    pub fn fstat(fd: i32) -> Result<Stat> {
        super::fstat_with(fd, ungated)
    }
}

/// `stat` of a path (following symlinks).
pub fn stat_path(path: &core::ffi::CStr) -> Result<Stat> {
    // SAFETY: an all-zero stat is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: path is NUL-terminated; st is valid for writing.
    unsafe {
        sc(
            libc::SYS_newfstatat,
            [libc::AT_FDCWD as usize, p(path.as_ptr()), pm(&mut st), 0, 0, 0],
        )
    }
    .map(|_| Stat::of(&st))
}

pub fn openat(path: &core::ffi::CStr, flags: i32, mode: u32) -> Result<i32> {
    // SAFETY: path is NUL-terminated.
    unsafe {
        sc(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                p(path.as_ptr()),
                flags as usize,
                mode as usize,
                0,
                0,
            ],
        )
    }
    .map(|v| v as i32)
}

/// `unlink(path)`.
pub fn unlink(path: &core::ffi::CStr) -> Result<()> {
    // SAFETY: path is NUL-terminated.
    unsafe { sc(libc::SYS_unlink, [p(path.as_ptr()), 0, 0, 0, 0, 0]) }.map(|_| ())
}

/// `rename(from, to)`: atomic replacement of `to`.
pub fn rename(from: &core::ffi::CStr, to: &core::ffi::CStr) -> Result<()> {
    // SAFETY: both paths are NUL-terminated.
    unsafe { sc(libc::SYS_rename, [p(from.as_ptr()), p(to.as_ptr()), 0, 0, 0, 0]) }.map(|_| ())
}

pub fn fchown(fd: i32, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain integer arguments.
    unsafe { sc(libc::SYS_fchown, [fd as usize, uid as usize, gid as usize, 0, 0, 0]) }.map(|_| ())
}

/// What `TCP_INFO` says about an open TCP socket (struct tcp_info, include/uapi/linux/tcp.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: u8,
    /// `tcpi_bytes_received`: data bytes that arrived from the peer (Linux 4.1 and later).
    pub bytes_received: Option<u64>,
    /// `tcpi_bytes_sent` less `tcpi_bytes_retrans`: data bytes sent to the peer, each once
    /// (Linux 4.19 and later).
    pub bytes_sent: Option<u64>,
    /// The facts a timeout or a reset rests on.
    pub evidence: Evidence,
}

/// The retransmission and keepalive machinery's state, and the times since the connection
/// last moved anything: what tells a timeout from a reset, and one kind of timeout from another.
/// Kept by the kernel after it aborted the connection (until `connect(AF_UNSPEC)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// `tcpi_retransmits`: retransmission timeouts in a row for the oldest unacknowledged data
    /// (or SYN).
    pub retransmits: u8,
    /// `tcpi_probes`: keepalive (or zero-window) probes sent without an answer.
    pub probes: u8,
    /// `tcpi_backoff`: how often the retransmission timer was doubled.
    pub backoff: u8,
    /// `tcpi_unacked`: segments sent and not acknowledged.
    pub unacked: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// `tcpi_bytes_retrans` (Linux 4.19 and later).
    pub bytes_retrans: Option<u64>,
    /// `tcpi_rtt`: smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// `tcpi_segs_out`: segments sent (the SYN included). Not written in events.
    pub segs_out: u32,
    /// Milliseconds since data was last sent, data last received, an ACK last received.
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
}

impl Evidence {
    /// The facts by field name, in the order the formats write them (None: the kernel is too
    /// old to say).
    pub fn fields(&self) -> [(&'static str, Option<u64>); 10] {
        [
            ("retransmits", Some(self.retransmits.into())),
            ("probes", Some(self.probes.into())),
            ("backoff", Some(self.backoff.into())),
            ("unacked", Some(self.unacked.into())),
            ("total_retrans", Some(self.total_retrans.into())),
            ("bytes_retrans", self.bytes_retrans),
            ("rtt_us", Some(self.rtt_us.into())),
            ("last_data_sent_ms", Some(self.last_data_sent_ms.into())),
            ("last_data_recv_ms", Some(self.last_data_recv_ms.into())),
            ("last_ack_recv_ms", Some(self.last_ack_recv_ms.into())),
        ]
    }
}

/// struct tcp_info up to `tcpi_bytes_retrans` (include/uapi/linux/tcp.h): what errshim reads,
/// at the kernel's offsets; the kernel writes as much of it as it knows (`len`), the rest stays
/// zero.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawTcpInfo {
    /// state, ca_state, retransmits, probes, backoff, options, wscales, flags
    head: [u8; 8],
    /// rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets, last_data_sent,
    /// last_ack_sent, last_data_recv, last_ack_recv, pmtu, rcv_ssthresh, rtt, rttvar,
    /// snd_ssthresh, snd_cwnd, advmss, reordering, rcv_rtt, rcv_space, total_retrans
    words: [u32; 24],
    /// pacing_rate, max_pacing_rate, bytes_acked, bytes_received
    rates: [u64; 4],
    /// segs_out .. data_segs_out, then delivery_rate, busy_time, rwnd_limited,
    /// sndbuf_limited, delivered and delivered_ce
    middle: [u32; 6],
    _limits: [u64; 4],
    _delivered: [u32; 2],
    bytes_sent: u64,
    bytes_retrans: u64,
}

/// Indices in `RawTcpInfo::words`.
const W_UNACKED: usize = 4;
const W_LAST_DATA_SENT: usize = 9;
const W_LAST_DATA_RECV: usize = 11;
const W_LAST_ACK_RECV: usize = 12;
const W_RTT: usize = 15;
const W_TOTAL_RETRANS: usize = 23;
/// Offsets of the byte counts: the kernel's length says which it wrote.
const TCPI_BYTES_RECEIVED: usize = 128;
const TCPI_BYTES_SENT: usize = 200;
const TCPI_BYTES_RETRANS: usize = 208;
const _: () = assert!(core::mem::size_of::<RawTcpInfo>() == TCPI_BYTES_RETRANS + 8);
const _: () = assert!(core::mem::offset_of!(RawTcpInfo, rates) + 24 == TCPI_BYTES_RECEIVED);
const _: () = assert!(core::mem::offset_of!(RawTcpInfo, bytes_sent) == TCPI_BYTES_SENT);

/// `TCP_INFO` of `fd` (one `getsockopt`, which changes nothing the program sees next), or None
/// when `fd` is not an open TCP socket. Fields the kernel is too old to fill are None (or 0).
pub fn tcp_info(fd: i32) -> Option<TcpInfo> {
    // SAFETY: all-zero bytes are a valid RawTcpInfo (integers only).
    let mut info: RawTcpInfo = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: info and len are valid for writing; the kernel copies at most len bytes.
    let r = unsafe {
        sc(
            libc::SYS_getsockopt,
            [
                fd as usize,
                libc::IPPROTO_TCP as usize,
                libc::TCP_INFO as usize,
                pm(&mut info),
                pm(&mut len),
                0,
            ],
        )
    };
    if r.is_err() || len == 0 {
        return None;
    }
    let has = |off: usize| len as usize >= off + 8;
    let bytes_retrans = has(TCPI_BYTES_RETRANS).then_some(info.bytes_retrans);
    let w = &info.words;
    Some(TcpInfo {
        state: info.head[0],
        bytes_received: has(TCPI_BYTES_RECEIVED).then_some(info.rates[3]),
        bytes_sent: bytes_retrans.map(|r| info.bytes_sent.saturating_sub(r)),
        evidence: Evidence {
            retransmits: info.head[2],
            probes: info.head[3],
            backoff: info.head[4],
            unacked: w[W_UNACKED],
            total_retrans: w[W_TOTAL_RETRANS],
            bytes_retrans,
            rtt_us: w[W_RTT],
            segs_out: info.middle[0],
            last_data_sent_ms: w[W_LAST_DATA_SENT],
            last_data_recv_ms: w[W_LAST_DATA_RECV],
            last_ack_recv_ms: w[W_LAST_ACK_RECV],
        },
    })
}

/// The timeouts a program set on a TCP socket that decide when the kernel gives up on a
/// silent path: `TCP_USER_TIMEOUT`, and keepalive (`SO_KEEPALIVE`, `TCP_KEEPIDLE`,
/// `TCP_KEEPINTVL`, `TCP_KEEPCNT`). Plain option reads (no `SO_ERROR`); asked only for an
/// event whose cause is a timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Milliseconds; 0: not set (the retransmission and keepalive limits apply).
    pub user_timeout_ms: Option<u32>,
    /// (idle, interval, count) in seconds and probes, when keepalive is on.
    pub keepalive: Option<(u32, u32, u32)>,
}

pub fn tcp_timeouts(fd: i32) -> Timeouts {
    let opt = |level: i32, name: i32| getsockopt_int(fd, level, name).ok();
    let user_timeout_ms = opt(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT).map(|v| v as u32);
    let keepalive = opt(libc::SOL_SOCKET, libc::SO_KEEPALIVE)
        .filter(|&v| v != 0)
        .and_then(|_| {
            let tcp = |name| opt(libc::IPPROTO_TCP, name).map(|v| v as u32);
            Some((
                tcp(libc::TCP_KEEPIDLE)?,
                tcp(libc::TCP_KEEPINTVL)?,
                tcp(libc::TCP_KEEPCNT)?,
            ))
        });
    Timeouts {
        user_timeout_ms,
        keepalive,
    }
}

/// A zero-timeout `ppoll` of `fd` for `events`: its revents, or None when it failed.
fn poll_now(fd: i32, events: i16) -> Option<i16> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: one valid pollfd, a zero timeout, no signal mask.
    let r = unsafe { sc(libc::SYS_ppoll, [pm(&mut pfd), 1, p(&zero), 0, 8, 0]) };
    r.is_ok().then_some(pfd.revents)
}

/// Whether an error is pending on `fd` (POLLERR), without consuming it as SO_ERROR would.
pub fn poll_error(fd: i32) -> Option<bool> {
    poll_now(fd, libc::POLLIN)
        .filter(|r| r & libc::POLLNVAL == 0)
        .map(|r| r & libc::POLLERR != 0)
}

/// A zero-timeout look at whether `fd` is writable. On TCP the kernel marks a socket that is
/// not as waiting for space (SOCK_NOSPACE), so that a later ACK wakes its writers.
pub fn poll_writable(fd: i32) {
    let _ = poll_now(fd, libc::POLLOUT);
}

/// 64 random bits from the kernel (`getrandom`), if it gives them.
pub fn random_u64() -> Option<u64> {
    let mut v: u64 = 0;
    // SAFETY: writes 8 bytes into v.
    let r = unsafe {
        sc(
            libc::SYS_getrandom,
            [pm(&mut v), 8, libc::GRND_NONBLOCK as usize, 0, 0, 0],
        )
    };
    (r == Ok(8)).then_some(v)
}

/// The current wall-clock time (clock_gettime is served by the vDSO: no syscall, no lock).
pub fn wall_clock() -> crate::text::timefmt::Utc {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    crate::text::timefmt::Utc::new(ts.tv_sec, ts.tv_nsec)
}

/// CLOCK_MONOTONIC_COARSE in milliseconds (vDSO: no syscall).
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sleeps at least `ns` nanoseconds, resuming after signals.
pub fn sleep_ns(ns: u64) {
    let mut req = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    };
    loop {
        let mut rem = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: both timespecs are valid.
        match unsafe { sc(libc::SYS_nanosleep, [p(&req), pm(&mut rem), 0, 0, 0, 0]) } {
            Err(libc::EINTR) => req = rem,
            _ => return,
        }
    }
}

/// `connect(fd, AF_UNSPEC)`: on a connected TCP socket, the kernel sends RST and moves it to
/// CLOSE (recipe H).
pub fn abort_connection(fd: i32) -> Result<()> {
    // SAFETY: an all-zero sockaddr with family AF_UNSPEC.
    let mut sa: libc::sockaddr = unsafe { core::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: sa is valid for its size.
    unsafe {
        sc(
            libc::SYS_connect,
            [fd as usize, p(&sa), core::mem::size_of::<libc::sockaddr>(), 0, 0, 0],
        )
    }
    .map(|_| ())
}

/// The soft and hard `RLIMIT_NOFILE` (gated: for the fault engine).
pub fn nofile_limit() -> (u64, u64) {
    nofile_limit_with(sc)
}

/// The soft and hard `RLIMIT_NOFILE` (`prlimit64`, the call glibc's own start-up makes).
fn nofile_limit_with(call: unsafe fn(c_long, [usize; 6]) -> Result<usize>) -> (u64, u64) {
    limit_with(libc::RLIMIT_NOFILE as usize, call, (1024, 1024))
}

/// The soft and hard limit `resource` (`prlimit64` of this process), or `otherwise`.
fn limit_with(
    resource: usize,
    call: unsafe fn(c_long, [usize; 6]) -> Result<usize>,
    otherwise: (u64, u64),
) -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: no new limit; rl is valid for writing.
    let r = unsafe { call(libc::SYS_prlimit64, [0, resource, 0, pm(&mut rl), 0, 0]) };
    match r {
        Ok(_) => (rl.rlim_cur, rl.rlim_max),
        Err(_) => otherwise,
    }
}

/// Whether `RLIMIT_FSIZE` is unlimited (a write to a regular file then never raises SIGXFSZ);
/// false when it cannot be asked.
pub fn file_size_unlimited() -> bool {
    limit_with(libc::RLIMIT_FSIZE as usize, sc, (0, 0)).0 == libc::RLIM_INFINITY
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: the lowest free descriptor >= min.
pub fn dup_cloexec(fd: i32, min: i32) -> Result<i32> {
    // SAFETY: plain integer arguments.
    unsafe {
        sc(
            libc::SYS_fcntl,
            [fd as usize, libc::F_DUPFD_CLOEXEC as usize, min as usize, 0, 0, 0],
        )
    }
    .map(|v| v as i32)
}

/// `write`, again after EINTR (what `without_signals` does, for a write that raises none).
pub fn write_retrying(fd: i32, data: &[u8]) -> Result<usize> {
    loop {
        match write(fd, data) {
            Err(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// One page of zeroes that a forked child sees zeroed again (`MADV_WIPEONFORK`, Linux 4.14):
/// a cache there is never inherited by a child, whichever way it was forked. None where the
/// kernel cannot, or errshim may not make system calls.
pub fn wipe_on_fork_page() -> Option<*mut u8> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as usize;
    // SAFETY: a fresh mapping at an address the kernel picks.
    let page = unsafe { sc(libc::SYS_mmap, [0, 4096, prot, flags, usize::MAX, 0]) }.ok()?;
    // SAFETY: advice on the page just mapped, which nothing else uses.
    if unsafe { sc(libc::SYS_madvise, [page, 4096, libc::MADV_WIPEONFORK as usize, 0, 0, 0]) }.is_err() {
        // SAFETY: the page just mapped, which nothing uses.
        let _ = unsafe { sc(libc::SYS_munmap, [page, 4096, 0, 0, 0, 0]) };
        return None;
    }
    Some(page as *mut u8)
}

/// Gives back a page of `wipe_on_fork_page` that is not needed.
pub fn unmap_page(page: *mut u8) {
    // SAFETY: a page errshim mapped and nothing uses.
    let _ = unsafe { sc(libc::SYS_munmap, [page as usize, 4096, 0, 0, 0, 0]) };
}

/// A private anonymous mapping that reserves no swap (pages are backed once touched).
pub fn map_anonymous(bytes: usize) -> Result<*mut u8> {
    map_anonymous_with(bytes, sc)
}

fn map_anonymous_with(bytes: usize, call: unsafe fn(c_long, [usize; 6]) -> Result<usize>) -> Result<*mut u8> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize;
    // SAFETY: a fresh mapping at an address the kernel picks.
    unsafe { call(libc::SYS_mmap, [0, bytes, prot, flags, usize::MAX, 0]) }.map(|a| a as *mut u8)
}

/// Whether the page that holds `addr` can be read, asked of the kernel without reading it:
/// `rt_sigprocmask` with an invalid `how` copies 8 bytes from `set` (EFAULT if it cannot) and
/// then refuses the `how` (EINVAL), changing nothing. `addr` is rounded down to 8 bytes, which
/// never leaves its page.
pub fn probe_readable(addr: usize) -> bool {
    if addr < 4096 {
        return false;
    }
    const BAD_HOW: usize = 3;
    // SAFETY: the kernel reads (and only validates) 8 bytes at the address.
    let r = unsafe { sc(libc::SYS_rt_sigprocmask, [BAD_HOW, addr & !7, 0, 8, 0, 0]) };
    r == Err(libc::EINVAL)
}

/// Whether 4 bytes at `addr` (4-aligned) can be written, asked of the kernel: `sched_getparam`
/// of this thread writes its 4-byte priority there (EFAULT if it cannot). The caller owns those
/// 4 bytes and overwrites them right after.
pub fn probe_writable4(addr: usize) -> bool {
    if addr < 4096 || !addr.is_multiple_of(4) {
        return false;
    }
    // SAFETY: writes 4 bytes at addr, which the caller owns.
    unsafe { sc(libc::SYS_sched_getparam, [0, addr, 0, 0, 0, 0]) }.is_ok()
}

/// A set of signals, as the kernel takes it (`sigset_t` of 8 bytes).
pub type SigSet = u64;

pub fn sig_bit(sig: i32) -> SigSet {
    1 << (sig - 1)
}

/// `rt_sigprocmask(how, set)`: returns the previous mask.
pub fn sigmask(how: i32, set: SigSet) -> Result<SigSet> {
    let mut old: SigSet = 0;
    // SAFETY: both sets are valid 8-byte sigsets.
    unsafe { sc(libc::SYS_rt_sigprocmask, [how as usize, p(&set), pm(&mut old), 8, 0, 0]) }.map(|_| old)
}

pub fn sigpending() -> SigSet {
    let mut set: SigSet = 0;
    // SAFETY: set is a valid 8-byte sigset.
    let _ = unsafe { sc(libc::SYS_rt_sigpending, [pm(&mut set), 8, 0, 0, 0, 0]) };
    set
}

/// Takes one pending signal of `set` off the thread, without waiting.
pub fn consume_signal(set: SigSet) {
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid set, no siginfo wanted, a zero timeout.
    let _ = unsafe { sc(libc::SYS_rt_sigtimedwait, [p(&set), 0, p(&zero), 8, 0, 0]) };
}

/// Runs `write` with SIGPIPE, SIGTTOU and SIGXFSZ blocked, so that errshim's own write to a pipe
/// without a reader, to a terminal of another process group, or past `RLIMIT_FSIZE` raises
/// nothing in the host (SIGXFSZ's default action kills); a SIGPIPE or SIGXFSZ that the write
/// itself raised is taken off again. The program sees exactly the signals it would have seen
/// without errshim.
pub fn without_signals(mut write: impl FnMut() -> Result<usize>) -> Result<usize> {
    let pipe = sig_bit(libc::SIGPIPE);
    let xfsz = sig_bit(libc::SIGXFSZ);
    let old = sigmask(libc::SIG_BLOCK, pipe | xfsz | sig_bit(libc::SIGTTOU))?;
    // A signal can only be pending already if the program blocks it.
    let mine = pipe | xfsz;
    let was_pending = if old & mine != 0 { sigpending() & mine } else { 0 };
    let mut r = write();
    while r == Err(libc::EINTR) {
        r = write();
    }
    let raised = match r {
        Err(libc::EPIPE) => pipe,
        Err(libc::EFBIG) => xfsz,
        _ => 0,
    };
    if raised != 0 && was_pending & raised == 0 && sigpending() & raised != 0 {
        consume_signal(raised);
    }
    let _ = sigmask(libc::SIG_SETMASK, old);
    r
}

/// The thread pointer (x86-64: `%fs:0`, the thread control block's own address; aarch64:
/// `TPIDR_EL0`). glibc puts a thread's control block at the top of its stack block, and errno
/// in static TLS at a fixed offset from it.
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: on x86-64 Linux %fs:0 holds the thread control block's own address.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags))
    };
    tp
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nostack, nomem, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nostack, nomem, preserves_flags))
    };
    sp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_lines() {
        assert_eq!(version(b"2.36"), (2, 36));
        assert_eq!(version(b"2.17"), (2, 17));
        assert_eq!(version(b"2.33.9000"), (2, 33));
        assert_eq!(version(b"x"), (0, 0));
        let status = b"Name:\tx\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(seccomp_field(status), Some(b'2'));
        assert_eq!(seccomp_field(b"Name:\tx\nSeccomp:\t0\n"), Some(b'0'));
        assert_eq!(seccomp_field(b"Name:\tx\n"), None);
    }

    #[test]
    fn probes_and_errors() {
        let page = map_anonymous(4096).unwrap() as usize;
        assert!(probe_readable(page) && probe_readable(page + 4095));
        assert!(!probe_readable(0) && !probe_readable(8) && !probe_readable(usize::MAX - 4096));
        let mut x = [7u32; 2];
        assert!(probe_writable4(x.as_mut_ptr() as usize));
        assert_eq!(x[1], 7, "the probe writes 4 bytes only");
        // SAFETY: makes the page inaccessible; nothing else uses it.
        unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ) };
        assert!(probe_readable(page) && !probe_writable4(page));
        // SAFETY: as above.
        unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE) };
        assert!(!probe_readable(page));
        assert_eq!(fstat(-1), Err(libc::EBADF));
        // SAFETY: sets errno, so that the raw calls can be seen to leave it alone.
        unsafe { *libc::__errno_location() = libc::EILSEQ };
        let _ = fstat(-1);
        // SAFETY: reads errno.
        assert_eq!(unsafe { *libc::__errno_location() }, libc::EILSEQ);
        assert!(thread_pointer() != 0 && stack_pointer() != 0);
    }
}
