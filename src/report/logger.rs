//! Where event lines and errshim's own diagnostics go.
//!
//! errshim owns no descriptor between two lines. Each line is written through a descriptor
//! made for that line and closed right after, so there is nothing for the program to close,
//! trip over or wait on: a daemon that closes every descriptor, or a caller waiting for EOF on
//! the program's pipes, sees exactly what it would see without errshim.
//!
//! - stderr: the program's stderr as it was when errshim loaded, and only while fd 2 still is
//!   that file (the same device and inode as at load time). fd 2 is duplicated for the line
//!   (so that the check and the write see the same file even if another thread replaces fd 2
//!   meanwhile), checked, written, closed. A program that detached from its stderr (a daemon:
//!   fd 2 to /dev/null, or closed) gets no more lines there.
//! - a file: opened for the line (append-only, close-on-exec, `O_NOFOLLOW`, `O_NONBLOCK`,
//!   created 0600, `%p` expanded to the writing process's pid), written, closed.
//! - syslog: a datagram socket made for the line, one `sendto`, closed.
//!
//! Nothing ever blocks: sockets are written with `MSG_DONTWAIT`, pipes, FIFOs and terminals
//! without waiting (`pwritev2(RWF_NOWAIT)`, else a non-blocking open of the same pipe through
//! `/proc/self/fd`), with SIGPIPE and SIGTTOU blocked around the write. A line that cannot be
//! written now (full pipe, no reader, no space) is dropped and counted (`dropped`). A line cut
//! short (a full disk) is ended by a newline before the next line, so lines never glue together.

use crate::policy::config::LogDest;
use crate::sys::once::SetOnce;
use crate::text::fmtbuf::StackBuf;
use crate::{sys::process, sys::raw};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};

enum Dest {
    Off,
    Stderr,
    /// The path template (`%p`: the pid), and the path itself, NUL-terminated, when the
    /// template has no `%p` (worked out once, not for every line).
    File(Vec<u8>, Option<Vec<u8>>),
    Syslog(libc::sockaddr_un, u32),
    Journal(libc::sockaddr_un, u32),
}

static DEST: SetOnce<Dest> = SetOnce::new();
/// What fd 2 was when errshim loaded (None: it was not open).
static STDERR_AT_LOAD: SetOnce<Option<raw::Stat>> = SetOnce::new();

/// Lines that could not be written (destination gone, full, or no reader), by the process
/// `DROPPED_PID` (a forked child starts from 0).
static DROPPED: AtomicU64 = AtomicU64::new(0);
static DROPPED_PID: AtomicI32 = AtomicI32::new(0);
/// The last line to stderr or the file was cut short: the next one starts with a newline.
static CUT_STDERR: AtomicBool = AtomicBool::new(false);
static CUT_FILE: AtomicBool = AtomicBool::new(false);
/// The process that last warned that it cannot open its log file (once per process).
static WARNED_PID: AtomicI32 = AtomicI32::new(0);

/// Learns what stderr is and sets the destination up. Called once from the constructor,
/// before any event: one `fstat` of fd 2 (and a `stat` of a syslog socket).
#[link_section = ".text.errshim_startup"]
pub fn init(dest: &LogDest) {
    let stderr = raw::startup::fstat(2).ok();
    let _ = STDERR_AT_LOAD.set(stderr);
    let d = match dest {
        LogDest::Off => Dest::Off,
        // Lines to /dev/null are lost however they are written, and fd 2 gets nothing of
        // errshim's once it is another file: events are then not even formatted.
        LogDest::Stderr if stderr.is_some_and(|st| st.is_dev_null()) => Dest::Off,
        LogDest::Stderr => Dest::Stderr,
        LogDest::File(p) => {
            let fixed = (!p.windows(2).any(|w| w == b"%p")).then(|| [&p[..], b"\0"].concat());
            Dest::File(p.clone(), fixed)
        }
        LogDest::Syslog(path) | LogDest::Journal(path) => match syslog_addr(path) {
            Ok((addr, len)) if matches!(dest, LogDest::Journal(_)) => Dest::Journal(addr, len),
            Ok((addr, len)) => Dest::Syslog(addr, len),
            Err(why) => {
                let _ = DEST.set(Dest::Stderr);
                let what = if matches!(dest, LogDest::Journal(_)) {
                    "journal"
                } else {
                    "syslog"
                };
                log::warn!(
                    "no {what} socket at {} ({why}); events go to stderr",
                    crate::text::escape::Esc(path)
                );
                return;
            }
        },
    };
    let _ = DEST.set(d);
}

/// The syslog socket's address, checked to be a socket now.
fn syslog_addr(path: &[u8]) -> Result<(libc::sockaddr_un, u32), &'static str> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut sun: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= sun.sun_path.len() || path.contains(&0) {
        return Err("not a usable socket path");
    }
    for (d, &b) in sun.sun_path.iter_mut().zip(path) {
        *d = b as libc::c_char;
    }
    let len = (core::mem::size_of::<libc::sa_family_t>() + path.len() + 1) as u32;
    // SAFETY: sun_path is NUL-terminated (zeroed beyond the path).
    let cpath = unsafe { core::ffi::CStr::from_ptr(sun.sun_path.as_ptr()) };
    match raw::stat_path(cpath) {
        Ok(st) if st.is(libc::S_IFSOCK) => Ok((sun, len)),
        Ok(_) => Err("not a socket"),
        Err(_) => Err("no such socket"),
    }
}

/// Writes one event line to the configured destination.
pub fn event(line: &[u8]) {
    let ok = match DEST.get() {
        None | Some(Dest::Off) => return,
        Some(Dest::Stderr) => to_stderr(line),
        Some(Dest::File(t, fixed)) => to_file(t, fixed.as_deref(), line),
        Some(Dest::Syslog(addr, len)) => to_syslog(addr, *len, line),
        Some(Dest::Journal(addr, len)) => {
            let mut b = StackBuf::<4400>::new();
            journal_message(&mut b, line);
            to_socket(addr, *len, b.as_bytes())
        }
    };
    if !ok {
        count_dropped();
    }
}

/// Whether events go to journald (which takes them as fields, `event_fields`).
/// Whether event lines go anywhere (not `ERRSHIM_LOG=off`, nor a stderr that was `/dev/null`
/// at load).
pub fn writes_events() -> bool {
    !matches!(DEST.get(), None | Some(Dest::Off))
}

pub fn is_journal() -> bool {
    matches!(DEST.get(), Some(Dest::Journal(..)))
}

/// The fields every entry of errshim's has, after any others: `PRIORITY` (5, notice),
/// `SYSLOG_IDENTIFIER`, and last its line as `MESSAGE` (a text line has no newline of its own:
/// everything in it is escaped), so that a line too long for the datagram is cut (and marked
/// `...`) without losing a field.
pub fn journal_message<const N: usize>(b: &mut StackBuf<N>, line: &[u8]) {
    b.push(b"PRIORITY=5\nSYSLOG_IDENTIFIER=errshim\nMESSAGE=");
    b.push(line.strip_suffix(b"\n").unwrap_or(line));
    b.finish_line();
}

/// One event to journald: `fields` (`KEY=value` lines, the message first), one datagram.
pub fn event_fields(fields: &[u8]) {
    let ok = match DEST.get() {
        Some(Dest::Journal(addr, len)) => to_socket(addr, *len, fields),
        _ => return,
    };
    if !ok {
        count_dropped();
    }
}

/// One datagram to a unix socket, never waiting.
fn to_socket(addr: &libc::sockaddr_un, len: u32, data: &[u8]) -> bool {
    let Ok(s) = raw::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) else {
        return false;
    };
    let r = raw::sendto(s, data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL, Some((addr, len)));
    raw::close(s);
    r.is_ok()
}

/// Writes one of errshim's own diagnostic lines to the program's original stderr.
pub fn diag(line: &[u8]) {
    if !to_stderr(line) {
        count_dropped();
    }
}

/// Counts a line (or a metrics file) that could not be written.
pub fn count_dropped() {
    if process::may_write() {
        let pid = process::pid();
        if DROPPED_PID.swap(pid, Relaxed) != pid {
            DROPPED.store(0, Relaxed);
        }
        DROPPED.fetch_add(1, Relaxed);
    }
}

/// Lines this process could not write (no system call when there were none).
pub fn dropped() -> u64 {
    if DROPPED.load(Relaxed) == 0 || DROPPED_PID.load(Relaxed) != process::pid() {
        return 0;
    }
    DROPPED.load(Relaxed)
}

/// At exit: says once, on stderr, how many lines this process could not write to its log
/// destination (nothing when there were none).
#[inline(never)]
pub fn report_dropped() {
    let n = dropped();
    if n == 0 {
        return;
    }
    let dest = match DEST.get() {
        Some(Dest::File(..)) => "the log file",
        Some(Dest::Syslog(..)) => "the syslog socket",
        _ => "stderr",
    };
    log::warn!(
        "{n} line(s) could not be written to the log ({dest}: full, without a reader, or gone), and were dropped"
    );
}

/// To fd 2, while it is the file it was when errshim loaded (a daemon that closed it and got
/// another file under the number, a client's socket say, gets nothing of errshim's). Through a
/// copy of fd 2, so that the check and the write see the same file even if another thread
/// puts another file on fd 2 meanwhile.
fn to_stderr(line: &[u8]) -> bool {
    let Some(Some(original)) = STDERR_AT_LOAD.get() else {
        return false;
    };
    let if_original = |fd: i32| match raw::fstat(fd) {
        Ok(st) if st.same_file(original) => put(fd, &st, false, &CUT_STDERR, line),
        _ => false,
    };
    match raw::dup_cloexec(2, 0) {
        Ok(fd) => {
            let ok = if_original(fd);
            raw::close(fd);
            ok
        }
        // No descriptor left to copy into (the events that say so are this moment's): fd 2
        // itself. No other thread can open a file under the number meanwhile, the table is full.
        Err(libc::EMFILE | libc::ENFILE) => if_original(2),
        Err(_) => false,
    }
}

fn to_file(template: &[u8], fixed: Option<&[u8]>, line: &[u8]) -> bool {
    let expanded;
    let path = match fixed {
        Some(p) => p,
        None => {
            expanded = expand_path(template);
            expanded.as_bytes()
        }
    };
    let Ok(cpath) = core::ffi::CStr::from_bytes_with_nul(path) else {
        return false;
    };
    let fd = match raw::openat(cpath, LOG_FLAGS, 0o600) {
        Ok(fd) => fd,
        Err(e) => {
            warn_cannot_open(cpath.to_bytes(), e);
            return false;
        }
    };
    let ok = match raw::fstat(fd) {
        Ok(st) => put(fd, &st, true, &CUT_FILE, line),
        Err(_) => false,
    };
    raw::close(fd);
    ok
}

/// How a log file is opened: append-only, never through a symlink, never as the controlling
/// terminal, never waiting (a FIFO without a reader fails with ENXIO).
const LOG_FLAGS: i32 = libc::O_WRONLY
    | libc::O_APPEND
    | libc::O_CREAT
    | libc::O_CLOEXEC
    | libc::O_NOFOLLOW
    | libc::O_NOCTTY
    | libc::O_NONBLOCK;

#[cold]
fn warn_cannot_open(path: &[u8], e: i32) {
    let pid = process::pid();
    if !process::may_write() || WARNED_PID.swap(pid, Relaxed) == pid {
        return;
    }
    let (uid, euid) = raw::uids();
    log::warn!(
        "cannot open the ERRSHIM_LOG file {} as uid {uid} (euid {euid}): {}; this process's events are dropped",
        crate::text::escape::Esc(path),
        crate::sys::errno::Name(e)
    );
}

fn to_syslog(addr: &libc::sockaddr_un, len: u32, line: &[u8]) -> bool {
    use core::fmt::Write;
    let mut b = StackBuf::<4200>::new();
    let _ = write!(b, "<13>errshim[{}]: ", process::pid());
    b.push(line.strip_suffix(b"\n").unwrap_or(line));
    to_socket(addr, len, b.as_bytes())
}

/// Whether a write to this file can raise a signal in the host: SIGPIPE (a pipe or FIFO
/// without a reader), SIGTTOU (a terminal, from a background process group), SIGXFSZ (a
/// regular file past `RLIMIT_FSIZE`). Not `/dev/null`, nor a regular file while the file size
/// limit is unlimited (asked each time: one `prlimit64`, where blocking the signals around the
/// write costs two calls; any thread or another process may change the limit); sockets are
/// written with MSG_NOSIGNAL.
fn may_signal(st: &raw::Stat) -> bool {
    match st.kind {
        libc::S_IFREG => !raw::file_size_unlimited(),
        libc::S_IFCHR => !st.is_dev_null(),
        _ => true,
    }
}

/// Writes `line` to `fd`, a file that `fstat` says is `st`, without waiting; `nonblocking`:
/// the descriptor is errshim's own and already non-blocking. A previous line cut short is ended
/// first. Whether the line was written whole.
fn put(fd: i32, st: &raw::Stat, nonblocking: bool, cut: &AtomicBool, line: &[u8]) -> bool {
    let mut joined = StackBuf::<4200>::new();
    let data = if cut.load(Relaxed) {
        joined.push(b"\n");
        joined.push(line);
        joined.as_bytes()
    } else {
        line
    };
    let signals = may_signal(st);
    let r = match st.kind {
        libc::S_IFSOCK => raw::sendto(fd, data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL, None),
        // A regular file never waits, but a write past RLIMIT_FSIZE raises SIGXFSZ.
        libc::S_IFREG | libc::S_IFBLK if signals => raw::without_signals(|| raw::write(fd, data)),
        libc::S_IFREG | libc::S_IFBLK => raw::write_retrying(fd, data),
        _ if nonblocking && signals => raw::without_signals(|| raw::write(fd, data)),
        _ if nonblocking => raw::write_retrying(fd, data),
        _ if signals => raw::without_signals(|| write_without_waiting(fd, data)),
        _ => write_without_waiting(fd, data),
    };
    let whole = r == Ok(data.len());
    if process::may_write() {
        let cut_now = matches!(r, Ok(n) if n > 0 && n < data.len());
        if cut_now != cut.load(Relaxed) && (cut_now || whole) {
            cut.store(cut_now, Relaxed);
        }
    }
    whole
}

/// A write to a pipe, FIFO or terminal that the program shares with errshim, without waiting
/// and without changing the descriptor's flags: `pwritev2(RWF_NOWAIT)` where the kernel has it
/// for this file, else a non-blocking descriptor of the same pipe or terminal of errshim's own,
/// opened through `/proc/self/fd` (never as the controlling terminal).
fn write_without_waiting(fd: i32, data: &[u8]) -> raw::Result<usize> {
    match raw::write_nowait(fd, data) {
        Err(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {}
        r => return r,
    }
    use core::fmt::Write;
    let mut path = StackBuf::<64>::new();
    let _ = write!(path, "/proc/self/fd/{fd}\0");
    let cpath = core::ffi::CStr::from_bytes_until_nul(path.as_bytes()).map_err(|_| libc::EINVAL)?;
    let own = raw::openat(
        cpath,
        libc::O_WRONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    )?;
    let r = raw::write(own, data);
    raw::close(own);
    r
}

/// The log file's path for this process: `%p` becomes the pid; NUL-terminated.
/// `template` with `%p` replaced by this process's pid, NUL-terminated.
pub fn expand_path(template: &[u8]) -> StackBuf<4200> {
    let pid = if template.windows(2).any(|w| w == b"%p") {
        process::pid()
    } else {
        0
    };
    expand(template, pid)
}

fn expand(template: &[u8], pid: i32) -> StackBuf<4200> {
    use core::fmt::Write;
    let mut b = StackBuf::<4200>::new();
    let mut rest = template;
    while let Some(at) = rest.windows(2).position(|w| w == b"%p") {
        b.push(&rest[..at]);
        let _ = write!(b, "{pid}");
        rest = &rest[at + 2..];
    }
    b.push(rest);
    b.push(b"\0");
    b
}

/// The process is about to change its effective user to `euid` (`setuid` and friends): a
/// process that drops privileges could no longer create its log file where it may have been
/// able to until now (a root-owned directory), and its events would be lost. So the file is
/// made now (empty if no event comes) and given to that user. Changes nothing else; costs
/// nothing unless the log is a file.
///
/// `euid` -1 (`uid_t::MAX`) leaves the effective user as it is: nothing to do.
pub fn before_user_change(euid: u32) {
    if euid == u32::MAX {
        return;
    }
    let Some(Dest::File(template, _)) = DEST.get() else {
        return;
    };
    if !process::may_write() || !raw::allowed() || raw::uids().1 == euid {
        return;
    }
    let path = expand_path(template);
    let Ok(cpath) = core::ffi::CStr::from_bytes_until_nul(path.as_bytes()) else {
        return;
    };
    if let Ok(fd) = raw::openat(cpath, LOG_FLAGS, 0o600) {
        if raw::fstat(fd).is_ok_and(|st| st.is(libc::S_IFREG)) {
            let _ = raw::fchown(fd, euid, u32::MAX);
        }
        raw::close(fd);
    }
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
        assert_eq!(expand(b"/tmp/e-%p.log", 42).as_bytes(), b"/tmp/e-42.log\0");
        assert_eq!(expand(b"/tmp/e.log", 42).as_bytes(), b"/tmp/e.log\0");
        assert_eq!(expand(b"%p/%p", 7).as_bytes(), b"7/7\0");
        assert_eq!(
            expand(b"/tmp/\xff%", 7).as_bytes(),
            b"/tmp/\xff%\0",
            "bytes as they are"
        );
    }

    #[test]
    fn lines_to_descriptors() {
        let mut p = [0i32; 2];
        // SAFETY: p holds two descriptors.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let cut = AtomicBool::new(false);
        let fifo = raw::fstat(p[1]).unwrap();
        assert!(fifo.is(libc::S_IFIFO) && may_signal(&fifo));
        assert!(put(p[1], &fifo, false, &cut, b"one\n"));
        let mut buf = [0u8; 64];
        assert_eq!(raw::read(p[0], &mut buf), Ok(4));
        // A full pipe: the line is dropped, nothing waits.
        // SAFETY: shrinks the pipe to a page and fills it.
        unsafe { libc::fcntl(p[1], libc::F_SETPIPE_SZ, 4096) };
        while raw::write_nowait(p[1], &[b'x'; 512]).is_ok() {}
        assert!(!put(p[1], &fifo, false, &cut, b"two\n"));
        raw::close(p[0]);
        // No reader: EPIPE, and no SIGPIPE reaches the process (the test would die of it).
        assert!(!put(p[1], &fifo, false, &cut, b"three\n"));
        raw::close(p[1]);
    }

    #[test]
    fn which_files_can_raise_a_signal() {
        let null = raw::stat_path(c"/dev/null").unwrap();
        assert!(!may_signal(&null), "/dev/null raises nothing");
        let zero = raw::stat_path(c"/dev/zero").unwrap();
        assert!(may_signal(&zero), "another character device may be a terminal");
        let file = raw::stat_path(c"/proc/self/exe").unwrap();
        assert_eq!(may_signal(&file), !raw::file_size_unlimited());
    }
}
