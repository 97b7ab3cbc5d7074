//! Where events and errshim's own diagnostics go, and how the shim keeps its descriptors out of
//! the program's way.
//!
//! - Every line is formatted on the stack by the caller and written here with one raw `write`
//!   syscall (SIGPIPE suppressed), never through the program's libc.
//! - stderr: at load time the program's stderr is duplicated to a high, close-on-exec
//!   descriptor, so events keep reaching the original stderr when a daemon closes or redirects
//!   fd 2, and never land in whatever the program opens as fd 2 later.
//! - a file is opened on the first event, append-only, close-on-exec, `O_NOFOLLOW`, mode 0600,
//!   and moved to a high descriptor; it is reopened when it is lost, and per process after a
//!   fork when the path contains `%p`.
//! - The hooks shield these descriptors: `close` on one of them returns EBADF without closing it
//!   (what the program would have seen without errshim), and `dup2`/`dup3` onto one of them
//!   first moves the shim's descriptor away. Before each write the descriptor's identity
//!   (device, inode) is checked, so a descriptor replaced behind the hooks' back (`close_range`,
//!   a raw syscall) is never written to.

use crate::config::LogDest;
use crate::fmtbuf::StackBuf;
use crate::sys;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};
use once_cell::sync::OnceCell;

/// A descriptor the shim owns, with the identity it had when the shim opened it.
struct Owned {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// The pid it was opened by (file destinations with `%p` are per process).
    pid: AtomicI32,
}

impl Owned {
    const fn new() -> Self {
        Owned {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            pid: AtomicI32::new(0),
        }
    }

    /// Takes ownership of `fd` (already a high, close-on-exec descriptor), or drops it when
    /// another thread got there first.
    fn install(&self, fd: i32) -> i32 {
        let Some((dev, ino)) = sys::identity(fd) else {
            sys::close(fd);
            return -1;
        };
        self.dev.store(dev, Relaxed);
        self.ino.store(ino, Relaxed);
        self.pid.store(sys::getpid(), Relaxed);
        match self.fd.compare_exchange(-1, fd, Relaxed, Relaxed) {
            Ok(_) => fd,
            Err(current) => {
                sys::close(fd);
                current
            }
        }
    }

    /// The descriptor, if it still refers to what the shim opened.
    fn valid(&self) -> Option<i32> {
        let fd = self.fd.load(Relaxed);
        if fd < 0 {
            return None;
        }
        if sys::identity(fd) == Some((self.dev.load(Relaxed), self.ino.load(Relaxed))) {
            Some(fd)
        } else {
            // Replaced behind our back: forget it (it is the program's now) and never write.
            let _ = self.fd.compare_exchange(fd, -1, Relaxed, Relaxed);
            None
        }
    }
}

static STDERR: Owned = Owned::new();
static FILE: Owned = Owned::new();
static SYSLOG: Owned = Owned::new();
static FILE_PATH: OnceCell<String> = OnceCell::new();
/// The syslog socket's address, and the program's original stderr (device, inode).
static SYSLOG_ADDR: OnceCell<(libc::sockaddr_un, u32)> = OnceCell::new();
static STDERR_ID: OnceCell<(u64, u64)> = OnceCell::new();

const DEST_OFF: u8 = 0;
const DEST_STDERR: u8 = 1;
const DEST_FILE: u8 = 2;
const DEST_SYSLOG: u8 = 3;
static DEST: AtomicU8 = AtomicU8::new(DEST_OFF);

/// Lines dropped because the destination was gone or full, reported at debug level.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Duplicates `fd` to the highest free descriptor below min(RLIMIT_NOFILE, 1024),
/// close-on-exec. The caller closes the original where it should go.
fn to_high_fd(fd: i32) -> Option<i32> {
    let (soft, _) = sys::nofile_limit();
    let top = soft.min(1024) as i32 - 1;
    let floor = (top - 64).max(3);
    let mut m = top;
    while m >= floor {
        // F_DUPFD gives the lowest free number >= m, which may lie above `top` when `top` is
        // taken and the limit is higher: only a number <= top will do.
        match sys::dup_cloexec_at_least(fd, m) {
            Ok(high) if high <= top => return Some(high),
            Ok(other) => sys::close(other),
            Err(_) => {}
        }
        m -= 1;
    }
    sys::dup_cloexec_at_least(fd, 3).ok()
}

/// Sets the destination up. Called once from the constructor, before any event.
pub fn init(dest: &LogDest) {
    if let Some(id) = sys::identity(2) {
        let _ = STDERR_ID.set(id);
        if let Some(fd) = to_high_fd(2) {
            STDERR.install(fd);
        }
    }
    match dest {
        LogDest::Stderr => DEST.store(DEST_STDERR, Relaxed),
        LogDest::Off => DEST.store(DEST_OFF, Relaxed),
        LogDest::File(p) => {
            let _ = FILE_PATH.set(p.clone());
            DEST.store(DEST_FILE, Relaxed);
        }
        LogDest::Syslog(path) => match open_syslog(path) {
            Ok(()) => DEST.store(DEST_SYSLOG, Relaxed),
            Err(why) => {
                log::warn!("no syslog socket at {path} ({why}); events go to stderr");
                DEST.store(DEST_STDERR, Relaxed);
            }
        },
    }
}

/// An unconnected datagram socket (so a restarted syslog daemon is simply reached again at its
/// path), high-numbered and close-on-exec, plus the address it sends to.
fn open_syslog(path: &str) -> Result<(), &'static str> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sun: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() >= sun.sun_path.len() {
        return Err("path too long");
    }
    for (d, &b) in sun.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = (core::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as u32;
    if !sys::is_socket_path(&sun) {
        return Err("not a socket");
    }
    let low = sys::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC).map_err(|_| "socket failed")?;
    let high = to_high_fd(low);
    sys::close(low);
    let fd = SYSLOG.install(high.ok_or("no free descriptor")?);
    if fd < 0 {
        return Err("no descriptor");
    }
    let _ = SYSLOG_ADDR.set((sun, len));
    Ok(())
}

/// Whether `fd` is one of the shim's own descriptors (checked by `close`, `dup2`, `dup3`).
#[inline(always)]
pub fn owns(fd: i32) -> bool {
    fd >= 0
        && (fd == STDERR.fd.load(Relaxed) || fd == FILE.fd.load(Relaxed) || fd == SYSLOG.fd.load(Relaxed))
        && still_owned(fd)
}

/// The number is one the shim holds: is the descriptor behind it still the shim's? After a
/// `close_range` or a raw close (which no hook sees) the program may own that number by now
/// (`fcntl(F_DUPFD)`, `open` once the lower numbers are taken): then it is forgotten, and the
/// program's `close`, `dup2` and `dup3` on it act on the program's descriptor. errno is kept.
#[cold]
#[inline(never)]
fn still_owned(fd: i32) -> bool {
    let e = crate::errno::get();
    let mine = [&STDERR, &FILE, &SYSLOG]
        .iter()
        .any(|o| o.fd.load(Relaxed) == fd && o.valid() == Some(fd));
    crate::errno::set(e);
    mine
}

/// The program is about to `dup2`/`dup3` onto `fd`, which the shim owns (`owns(fd)`, so it is
/// still the shim's descriptor): move the shim's descriptor to another number first so the
/// program gets exactly the descriptor it asked for.
pub fn relocate(fd: i32) {
    for owned in [&STDERR, &FILE, &SYSLOG] {
        if owned.fd.load(Relaxed) != fd {
            continue;
        }
        match to_high_fd(fd) {
            Some(new) if owned.fd.compare_exchange(fd, new, Relaxed, Relaxed).is_ok() => sys::close(fd),
            Some(new) => sys::close(new),
            None => {
                let _ = owned.fd.compare_exchange(fd, -1, Relaxed, Relaxed);
                sys::close(fd);
            }
        }
    }
}

fn expand_path(template: &str, pid: i32) -> StackBuf<4200> {
    use core::fmt::Write;
    let mut b = StackBuf::<4200>::new();
    let mut parts = template.split("%p");
    if let Some(first) = parts.next() {
        b.push(first.as_bytes());
    }
    for part in parts {
        let _ = write!(b, "{pid}");
        b.push(part.as_bytes());
    }
    b.push(b"\0");
    b
}

fn file_fd() -> Option<i32> {
    let template = FILE_PATH.get()?;
    let pid = sys::getpid();
    if let Some(fd) = FILE.valid() {
        if !template.contains("%p") || FILE.pid.load(Relaxed) == pid {
            return Some(fd);
        }
        // A forked child with a per-process path: stop writing to the parent's file.
        if FILE.fd.compare_exchange(fd, -1, Relaxed, Relaxed).is_ok() {
            sys::close(fd);
        }
    }
    let path = expand_path(template, pid);
    let cpath = core::ffi::CStr::from_bytes_until_nul(path.as_bytes()).ok()?;
    match sys::open_log(cpath) {
        Ok(low) => {
            let high = to_high_fd(low);
            sys::close(low);
            let fd = FILE.install(high?);
            (fd >= 0).then_some(fd)
        }
        Err(e) => {
            static WARNED: AtomicU8 = AtomicU8::new(0);
            if WARNED.swap(1, Relaxed) == 0 {
                log::warn!(
                    "cannot open ERRSHIM_LOG file {template}: {}; events are dropped",
                    crate::errno::Name(e)
                );
            }
            None
        }
    }
}

fn write_line(fd: Option<i32>, line: &[u8]) {
    match fd.map(|fd| sys::write_nosigpipe(fd, line)) {
        Some(Ok(_)) => {}
        _ => {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Writes one event line to the configured destination.
pub fn event(line: &[u8]) {
    match DEST.load(Relaxed) {
        DEST_STDERR => write_line(stderr_fd(), line),
        DEST_FILE => write_line(file_fd(), line),
        DEST_SYSLOG => send_syslog(line),
        _ => {}
    }
}

/// Writes one diagnostic line to the program's original stderr.
pub fn diag(line: &[u8]) {
    write_line(stderr_fd(), line);
}

/// errshim's copy of the program's original stderr. If a `close_range` or a raw close took it,
/// it is copied again from fd 2 as long as fd 2 still is that same stderr.
fn stderr_fd() -> Option<i32> {
    if let Some(fd) = STDERR.valid() {
        return Some(fd);
    }
    let id = STDERR_ID.get()?;
    if sys::identity(2).as_ref() != Some(id) {
        return None;
    }
    let fd = STDERR.install(to_high_fd(2)?);
    (fd >= 0).then_some(fd)
}

/// One datagram per event: `<13>errshim[PID]: LINE` (facility user, severity notice), which
/// journald and rsyslog accept on /dev/log. Never blocks: a full queue drops the event.
fn send_syslog(line: &[u8]) {
    use core::fmt::Write;
    let (Some(fd), Some((addr, len))) = (SYSLOG.valid(), SYSLOG_ADDR.get()) else {
        DROPPED.fetch_add(1, Relaxed);
        return;
    };
    let mut b = StackBuf::<4200>::new();
    let _ = write!(b, "<13>errshim[{}]: ", sys::getpid());
    b.push(line.strip_suffix(b"\n").unwrap_or(line));
    if sys::sendto(fd, b.as_bytes(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL, addr, *len).is_err() {
        DROPPED.fetch_add(1, Relaxed);
    }
}

pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// errshim's own diagnostics (`log::warn!` and friends), formatted on the stack.
pub struct DiagLogger;

impl log::Log for DiagLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        use core::fmt::Write;
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut b = StackBuf::<1024>::new();
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let _ = write!(b, "errshim: {level}: {}", record.args());
        diag(b.finish_line());
    }

    fn flush(&self) {}
}

pub static DIAG_LOGGER: DiagLogger = DiagLogger;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_in_path() {
        assert_eq!(expand_path("/tmp/e-%p.log", 42).as_bytes(), b"/tmp/e-42.log\0");
        assert_eq!(expand_path("/tmp/e.log", 42).as_bytes(), b"/tmp/e.log\0");
        assert_eq!(expand_path("%p/%p", 7).as_bytes(), b"7/7\0");
    }
}
