//! What errshim remembers about each socket descriptor: kind, peer address (from `connect`'s
//! argument or `accept`'s result, because `getpeername` no longer works once `shutdown` fails),
//! creation time, a history of what happened to it, and with `ERRSHIM_COUNT=1` the bytes moved
//! through the hooks and the last hooked call.
//!
//! Lock-free: one fixed record per descriptor number in an anonymous mapping sized from
//! `RLIMIT_NOFILE` (pages are only backed once touched). Every field is an atomic. The read
//! and write families' success path does not touch the table at all: byte counts come from
//! `TCP_INFO` at event time. Only `ERRSHIM_COUNT=1` counts per call and notes the last call,
//! and it arms those calls, so that the count runs on the careful path (see `inject::ARMED`).
//! Records never describe the wrong connection: every hooked creation (`socket`, `socketpair`, `accept*`, `dup*`) rewrites the slot, every
//! hooked destruction (`close`, `fclose`, `close_range`, `closefrom`) clears it, and for what
//! no hook sees (a raw `close` syscall followed by a reuse) the socket's inode, learnt at its
//! first event, is compared at every later event.

use crate::cause::hist;
use crate::rules::Call;
use crate::sockinfo::{Addr, Kind};
use core::net::{Ipv4Addr, Ipv6Addr};
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed,
};

#[repr(C)]
pub struct Record {
    /// `hist::*` bits; 0 means the slot is empty.
    pub history: AtomicU32,
    pub kind: AtomicU8,
    /// `Call as u8 + 1` of the last hooked call on it (0: none yet).
    pub last_call: AtomicU8,
    /// errno of a failed `connect` (0: none).
    pub connect_errno: AtomicU16,
    /// The first ECONNRESET or EPIPE a call on it returned (0: none).
    pub first_error: AtomicU16,
    /// The local port, learnt when a fault rule first needed it (0: not yet).
    pub local_port: AtomicU16,
    /// CLOCK_MONOTONIC milliseconds when it was created or accepted (0: unknown).
    pub created_ms: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The peer as `pack_addr` stores it (family 0: unknown).
    pub peer: [AtomicU64; 3],
    /// The socket's inode, learnt at its first event (0: not yet).
    pub ino: AtomicU64,
}

/// Whether `ERRSHIM_COUNT=1` asked for byte counts and the last call (set by the constructor).
static COUNTING: AtomicBool = AtomicBool::new(false);

pub fn set_counting(on: bool) {
    COUNTING.store(on, Relaxed);
}

/// Whether the hooks count bytes and note the last call (`ERRSHIM_COUNT=1`).
pub fn counting() -> bool {
    COUNTING.load(Relaxed)
}

static TABLE: AtomicPtr<Record> = AtomicPtr::new(core::ptr::null_mut());
/// Number of records; 0 until the table exists, so one bounds check covers both.
static LEN: AtomicUsize = AtomicUsize::new(0);

const MAX_ENTRIES: u64 = 1 << 20;

pub fn init() {
    if LEN.load(Relaxed) != 0 {
        return;
    }
    let (soft, hard) = crate::sys::nofile_limit();
    // Servers raise their soft limit at run time (nginx's worker_rlimit_nofile): size for the
    // hard limit, within reason; untouched pages cost nothing.
    let n = hard.max(soft).clamp(1024, MAX_ENTRIES) as usize;
    let bytes = n * core::mem::size_of::<Record>();
    // SAFETY: a fresh private anonymous mapping; all-zero bytes are valid (empty) records.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        TABLE.store(p.cast(), Relaxed);
        LEN.store(n, Relaxed);
    }
}

#[inline(always)]
pub fn get(fd: i32) -> Option<&'static Record> {
    if (fd as u32 as usize) >= LEN.load(Relaxed) {
        return None;
    }
    // SAFETY: LEN is only set after TABLE points at LEN records, which live forever.
    Some(unsafe { &*TABLE.load(Relaxed).add(fd as usize) })
}

/// Monotonic milliseconds (vDSO, no syscall).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is valid for writing.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Record {
    /// A new socket took this descriptor number.
    pub fn start(&self, kind: Kind, history: u32, peer: Option<&Addr>) {
        self.history.store(history | hist::TRACKED, Relaxed);
        self.kind.store(kind as u8, Relaxed);
        self.last_call.store(0, Relaxed);
        self.connect_errno.store(0, Relaxed);
        self.first_error.store(0, Relaxed);
        self.created_ms.store(now_ms(), Relaxed);
        self.bytes_in.store(0, Relaxed);
        self.bytes_out.store(0, Relaxed);
        self.set_peer(peer);
        self.ino.store(0, Relaxed);
        self.local_port.store(0, Relaxed);
    }

    /// A descriptor about which nothing is known yet (inherited, or created where no hook saw
    /// it), first met at an event.
    pub fn start_late(&self, kind: Kind, ino: u64) {
        self.start(kind, 0, None);
        self.history.store(hist::LATE, Relaxed);
        self.created_ms.store(0, Relaxed);
        self.ino.store(ino, Relaxed);
    }

    /// The descriptor was closed.
    #[inline(always)]
    pub fn clear(&self) {
        if self.history.load(Relaxed) != 0 {
            self.history.store(0, Relaxed);
        }
    }

    /// Copies another record (a `dup`): the same socket under another number.
    pub fn copy_from(&self, o: &Record) {
        self.history.store(o.history.load(Relaxed), Relaxed);
        self.kind.store(o.kind.load(Relaxed), Relaxed);
        self.last_call.store(o.last_call.load(Relaxed), Relaxed);
        self.connect_errno.store(o.connect_errno.load(Relaxed), Relaxed);
        self.first_error.store(o.first_error.load(Relaxed), Relaxed);
        self.created_ms.store(o.created_ms.load(Relaxed), Relaxed);
        self.bytes_in.store(o.bytes_in.load(Relaxed), Relaxed);
        self.bytes_out.store(o.bytes_out.load(Relaxed), Relaxed);
        for (a, b) in self.peer.iter().zip(&o.peer) {
            a.store(b.load(Relaxed), Relaxed);
        }
        self.ino.store(o.ino.load(Relaxed), Relaxed);
        self.local_port.store(o.local_port.load(Relaxed), Relaxed);
    }

    /// Whether the slot describes an open socket (created through a hook, or met at an event).
    pub fn is_live(&self) -> bool {
        self.history.load(Relaxed) & (hist::TRACKED | hist::LATE) != 0
    }

    pub fn add_history(&self, bits: u32) {
        if self.history.load(Relaxed) & bits != bits {
            self.history.fetch_or(bits, Relaxed);
        }
    }

    #[inline(always)]
    /// Notes the hooked call made on it (with `ERRSHIM_COUNT=1` only: without it the read and
    /// write families' successes are not seen, so the last call would be wrong).
    pub fn note_call(&self, call: Call) {
        if counting() {
            self.last_call.store(call as u8 + 1, Relaxed);
        }
    }

    pub fn last_call(&self) -> Option<Call> {
        let v = self.last_call.load(Relaxed);
        (v != 0).then(|| Call::ALL.get(v as usize - 1).copied()).flatten()
    }

    pub fn set_peer(&self, peer: Option<&Addr>) {
        let w = pack_addr(peer);
        for (a, v) in self.peer.iter().zip(w) {
            a.store(v, Relaxed);
        }
    }

    pub fn peer(&self) -> Option<Addr> {
        unpack_addr([
            self.peer[0].load(Relaxed),
            self.peer[1].load(Relaxed),
            self.peer[2].load(Relaxed),
        ])
    }

    /// Records the first reset or broken pipe a call returned.
    pub fn note_error(&self, errno: i32) {
        match errno {
            libc::ECONNRESET => self.add_history(hist::RESET_SEEN),
            libc::EPIPE => self.add_history(hist::EPIPE_SEEN),
            _ => return,
        }
        let _ = self.first_error.compare_exchange(0, errno as u16, Relaxed, Relaxed);
    }
}

/// An IP address and port in three words: `[family | port << 16, addr[0..8], addr[8..16]]`.
pub fn pack_addr(a: Option<&Addr>) -> [u64; 3] {
    match a {
        Some(Addr::V4(ip, port)) => {
            let o = ip.octets();
            [
                libc::AF_INET as u64 | (*port as u64) << 16,
                u32::from_be_bytes(o) as u64,
                0,
            ]
        }
        Some(Addr::V6(ip, port)) => {
            let o = ip.octets();
            let hi = u64::from_be_bytes(o[..8].try_into().unwrap_or([0; 8]));
            let lo = u64::from_be_bytes(o[8..].try_into().unwrap_or([0; 8]));
            [libc::AF_INET6 as u64 | (*port as u64) << 16, hi, lo]
        }
        _ => [0; 3],
    }
}

pub fn unpack_addr(w: [u64; 3]) -> Option<Addr> {
    let port = (w[0] >> 16) as u16;
    match (w[0] & 0xffff) as i32 {
        libc::AF_INET => Some(Addr::V4(Ipv4Addr::from(w[1] as u32), port)),
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o[..8].copy_from_slice(&w[1].to_be_bytes());
            o[8..].copy_from_slice(&w[2].to_be_bytes());
            Some(Addr::V6(Ipv6Addr::from(o), port))
        }
        _ => None,
    }
}

/// The record for `fd` as a raw pointer (no `Option` niche to test on the hot path).
#[inline(always)]
fn slot(fd: i32) -> Option<*const Record> {
    ((fd as u32 as usize) < LEN.load(Relaxed))
        .then(|| TABLE.load(Relaxed).wrapping_add(fd as u32 as usize) as *const Record)
}

/// The kind byte of a live record for `fd`, or 0 (not known).
#[inline(always)]
pub fn live_kind(fd: i32) -> u8 {
    match slot(fd) {
        Some(r) => {
            // SAFETY: as in count_in.
            let r = unsafe { &*r };
            if r.history.load(Relaxed) & (hist::TRACKED | hist::LATE) != 0 {
                r.kind.load(Relaxed)
            } else {
                0
            }
        }
        None => 0,
    }
}

/// A successful read-family call moved `n` bytes in (counted with `ERRSHIM_COUNT=1`).
#[inline(always)]
pub fn count_in(fd: i32, n: u64, call: Call) {
    if !counting() {
        return;
    }
    if let Some(r) = slot(fd) {
        // SAFETY: LEN is only non-zero once TABLE points at LEN records, which live forever.
        let r = unsafe { &*r };
        r.bytes_in.fetch_add(n, Relaxed);
        r.note_call(call);
    }
}

/// A successful write-family call moved `n` bytes out (counted with `ERRSHIM_COUNT=1`).
#[inline(always)]
pub fn count_out(fd: i32, n: u64, call: Call) {
    if !counting() {
        return;
    }
    if let Some(r) = slot(fd) {
        // SAFETY: as in count_in.
        let r = unsafe { &*r };
        r.bytes_out.fetch_add(n, Relaxed);
        r.note_call(call);
    }
}

/// Adds history bits to a live record.
pub fn note_history(fd: i32, bits: u32) {
    if let Some(r) = get(fd) {
        if r.is_live() {
            r.add_history(bits);
        }
    }
}

/// A `shutdown(fd, how)` succeeded.
pub fn note_shutdown(fd: i32, how: i32) {
    let bits = match how {
        libc::SHUT_RD => hist::SHUT_RD,
        libc::SHUT_WR => hist::SHUT_WR,
        libc::SHUT_RDWR => hist::SHUT_RD | hist::SHUT_WR,
        _ => 0,
    };
    if let Some(r) = get(fd) {
        if r.is_live() {
            r.add_history(hist::SHUTDOWN | bits);
            r.note_call(Call::Shutdown);
        }
    }
}

/// The descriptor is being closed: forget it, and return what its history was.
#[inline(always)]
pub fn forget(fd: i32) -> u32 {
    match get(fd) {
        Some(r) => {
            let h = r.history.load(Relaxed);
            if h != 0 {
                r.history.store(0, Relaxed);
            }
            h
        }
        None => 0,
    }
}

/// `close_range`/`closefrom`: forget every record in `first..=last`.
pub fn forget_range(first: u32, last: u32) {
    let len = LEN.load(Relaxed);
    if len == 0 || first as usize >= len {
        return;
    }
    let end = (last as usize).min(len - 1);
    for fd in first as usize..=end {
        forget(fd as i32);
    }
}

/// `dup`: the same socket under another number.
pub fn copy(old: i32, new: i32) {
    if new < 0 || old == new {
        return;
    }
    if let (Some(a), Some(b)) = (get(old), get(new)) {
        b.copy_from(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let v4 = Addr::V4(Ipv4Addr::new(127, 0, 0, 1), 8080);
        let v6 = Addr::V6("2001:db8::1".parse().unwrap(), 443);
        for a in [v4, v6] {
            assert_eq!(
                format!("{:?}", unpack_addr(pack_addr(Some(&a))).unwrap()),
                format!("{a:?}")
            );
        }
        assert!(unpack_addr(pack_addr(None)).is_none());
        assert!(unpack_addr(pack_addr(Some(&Addr::UnixUnnamed))).is_none());
    }

    #[test]
    fn records() {
        init();
        let r = get(5).unwrap();
        assert!(get(-1).is_none());
        r.start(Kind::Tcp4, hist::CONNECTED, Some(&Addr::V4(Ipv4Addr::LOCALHOST, 1)));
        r.note_error(libc::ECONNRESET);
        r.note_error(libc::EPIPE);
        assert_eq!(r.first_error.load(Relaxed), libc::ECONNRESET as u16);
        let h = r.history.load(Relaxed);
        assert!(h & hist::RESET_SEEN != 0 && h & hist::EPIPE_SEEN != 0 && h & hist::TRACKED != 0);
        set_counting(true);
        r.note_call(Call::Recv);
        assert_eq!(r.last_call(), Some(Call::Recv));
        get(6).unwrap().copy_from(r);
        assert_eq!(format!("{:?}", get(6).unwrap().peer().unwrap()), "127.0.0.1:1");
        r.clear();
        assert!(!r.is_live());
    }
}
