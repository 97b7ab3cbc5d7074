//! Raw system calls for the shim's own work. Everything here goes through `syscall(2)`, never
//! through the libc wrappers that errshim (or another preload) interposes, so the shim's own
//! I/O can never re-enter a hook. All of these are async-signal-safe.

use crate::sockinfo::Addr;
use libc::{c_long, c_void};

fn ret(r: c_long) -> Result<c_long, i32> {
    if r < 0 {
        Err(crate::errno::get())
    } else {
        Ok(r)
    }
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: buf is a valid slice for its whole length.
    let r = unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) };
    ret(r).map(|n| n as usize)
}

pub fn close(fd: i32) {
    // SAFETY: closes a descriptor the shim itself owns.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

pub fn getsockopt_int(fd: i32, level: i32, name: i32) -> Result<i32, i32> {
    let mut v: i32 = 0;
    let mut len = core::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: v and len are valid for writing.
    let r = unsafe { libc::syscall(libc::SYS_getsockopt, fd, level, name, &mut v as *mut i32, &mut len) };
    ret(r).map(|_| v)
}

/// `getsockname` (peer = false) or `getpeername` (peer = true).
pub fn sockname(fd: i32, peer: bool) -> Option<Addr> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let nr = if peer {
        libc::SYS_getpeername
    } else {
        libc::SYS_getsockname
    };
    // SAFETY: ss and len are valid for writing, len holds ss's size.
    let r = unsafe { libc::syscall(nr, fd, &mut ss as *mut _ as *mut c_void, &mut len) };
    ret(r).ok()?;
    Addr::from_storage(&ss, len as usize)
}

pub fn socket(domain: i32, ty: i32) -> Result<i32, i32> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_socket, domain, ty, 0) };
    ret(r).map(|n| n as i32)
}

pub fn sendto(fd: i32, buf: &[u8], flags: i32, addr: &libc::sockaddr_un, len: u32) -> Result<usize, i32> {
    // SAFETY: buf and addr are valid for the lengths given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            flags,
            addr as *const libc::sockaddr_un,
            len,
        )
    };
    ret(r).map(|n| n as usize)
}

/// Whether the path in `sun` names a socket in the filesystem.
pub fn is_socket_path(sun: &libc::sockaddr_un) -> bool {
    // SAFETY: an all-zero stat is valid; sun_path is NUL-terminated (zeroed beyond the path).
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    let r = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            sun.sun_path.as_ptr(),
            &mut st as *mut libc::stat,
            0,
        )
    };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
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
}

/// Offsets in struct tcp_info.
const TCPI_BYTES_RECEIVED: usize = 128;
const TCPI_BYTES_SENT: usize = 200;
const TCPI_BYTES_RETRANS: usize = 208;

/// `TCP_INFO` of `fd` (one `getsockopt`, which changes nothing the program sees next), or None
/// when `fd` is not an open TCP socket. Fields the kernel is too old to fill are None.
pub fn tcp_info(fd: i32) -> Option<TcpInfo> {
    let mut info = [0u8; TCPI_BYTES_RETRANS + 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: info and len are valid for writing; the kernel copies at most len bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getsockopt,
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr(),
            &mut len,
        )
    };
    if r != 0 || len == 0 {
        return None;
    }
    let len = (len as usize).min(info.len());
    let field = |off: usize| {
        let b = info[..len].get(off..off + 8)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    };
    Some(TcpInfo {
        state: info[0],
        bytes_received: field(TCPI_BYTES_RECEIVED),
        bytes_sent: field(TCPI_BYTES_SENT)
            .zip(field(TCPI_BYTES_RETRANS))
            .map(|(s, r)| s.saturating_sub(r)),
    })
}

/// Whether an error is pending on `fd` (POLLERR), without consuming it as SO_ERROR would.
pub fn poll_error(fd: i32) -> Option<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::syscall(libc::SYS_poll, &mut p as *mut libc::pollfd, 1, 0) };
    (r >= 0 && p.revents & libc::POLLNVAL == 0).then_some(p.revents & libc::POLLERR != 0)
}

/// 64 random bits from the kernel (`getrandom`), or from the clock and pid if that fails.
pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: writes 8 bytes into v.
    let r = unsafe { libc::syscall(libc::SYS_getrandom, &mut v as *mut u64, 8usize, libc::GRND_NONBLOCK) };
    if r == 8 {
        return v;
    }
    let t = crate::timefmt::now();
    crate::faults::mix(t.secs as u64 ^ (t.nanos as u64) << 20 ^ getpid() as u64)
}

/// CLOCK_MONOTONIC_COARSE in milliseconds (vDSO: no syscall).
pub fn coarse_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// (inode, size, mtime in ns) of a path, following symlinks.
pub fn stat_path(path: &core::ffi::CStr) -> Option<[u64; 3]> {
    // SAFETY: an all-zero stat is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: path is NUL-terminated; st is valid for writing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_newfstatat,
            libc::AT_FDCWD,
            path.as_ptr(),
            &mut st as *mut libc::stat,
            0,
        )
    };
    (r == 0).then(|| {
        [
            st.st_ino,
            st.st_size as u64,
            (st.st_mtime as u64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(st.st_mtime_nsec as u64),
        ]
    })
}

/// Reads up to `buf.len()` bytes of a file with raw syscalls.
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: path is NUL-terminated.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    let fd = ret(fd)? as i32;
    let mut n = 0;
    while n < buf.len() {
        // SAFETY: writes within buf.
        let r = unsafe { libc::syscall(libc::SYS_read, fd, buf[n..].as_mut_ptr(), buf.len() - n) };
        match ret(r) {
            Ok(0) => break,
            Ok(k) => n += k as usize,
            Err(libc::EINTR) => continue,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
    close(fd);
    Ok(n)
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
        let r = unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &req as *const libc::timespec,
                &mut rem as *mut libc::timespec,
            )
        };
        if r == 0 || crate::errno::get() != libc::EINTR {
            return;
        }
        req = rem;
    }
}

/// `connect(fd, AF_UNSPEC)`: on a connected TCP socket, the kernel sends RST and moves it to
/// CLOSE (recipe H).
pub fn abort_connection(fd: i32) -> Result<(), i32> {
    // SAFETY: an all-zero sockaddr with family AF_UNSPEC.
    let mut sa: libc::sockaddr = unsafe { core::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: sa is valid for its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_connect,
            fd,
            &sa as *const libc::sockaddr,
            core::mem::size_of::<libc::sockaddr>(),
        )
    };
    ret(r).map(|_| ())
}

/// (device, inode) of an open descriptor: how the logger knows its descriptor is still its own.
pub fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: st is valid for writing.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    ret(r).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`.
pub fn dup_cloexec_at_least(fd: i32, min: i32) -> Result<i32, i32> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) };
    ret(r).map(|n| n as i32)
}

/// Opens a log file: append-only, close-on-exec, never through a symlink, created 0600.
pub fn open_log(path: &core::ffi::CStr) -> Result<i32, i32> {
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY;
    // SAFETY: path is NUL-terminated.
    let r = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), flags, 0o600) };
    ret(r).map(|n| n as i32)
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn nofile_limit() -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is valid for writing.
    let r = unsafe { libc::syscall(libc::SYS_getrlimit, libc::RLIMIT_NOFILE, &mut rl as *mut libc::rlimit) };
    if r < 0 {
        return (1024, 1024);
    }
    (rl.rlim_cur, rl.rlim_max)
}

/// The calling thread's name (`prctl(PR_GET_NAME)`), at most 15 bytes.
pub fn thread_name(out: &mut [u8; 16]) -> usize {
    *out = [0; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into out.
    unsafe { libc::syscall(libc::SYS_prctl, libc::PR_GET_NAME, out.as_mut_ptr()) };
    out.iter().position(|&b| b == 0).unwrap_or(16)
}

/// Writes `buf` to `fd` with one `write` syscall, without letting a broken pipe raise SIGPIPE
/// in the host: SIGPIPE is blocked around the write and a SIGPIPE the write itself raised is
/// consumed, so the program sees exactly the signals it would have seen without errshim.
pub fn write_nosigpipe(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    const SIGSET_BYTES: usize = 8;
    let pipe_bit: u64 = 1 << (libc::SIGPIPE - 1);
    let mut old: u64 = 0;
    // SAFETY: the kernel sigset is 8 bytes on Linux; both pointers are valid.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &pipe_bit as *const u64,
            &mut old as *mut u64,
            SIGSET_BYTES,
        )
    };
    let mut pending: u64 = 0;
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut pending as *mut u64, SIGSET_BYTES) };
    let was_pending = pending & pipe_bit != 0;
    let mut r = write(fd, buf);
    while r == Err(libc::EINTR) {
        r = write(fd, buf);
    }
    if r == Err(libc::EPIPE) && !was_pending {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: consumes the SIGPIPE our own write raised; all pointers valid.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &pipe_bit as *const u64,
                core::ptr::null_mut::<libc::siginfo_t>(),
                &zero as *const libc::timespec,
                SIGSET_BYTES,
            )
        };
    }
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            core::ptr::null_mut::<u64>(),
            SIGSET_BYTES,
        )
    };
    r
}
