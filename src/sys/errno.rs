//! errno: names for numbers (and back), and access to the calling thread's errno.

use crate::sys::errno_table::ERRNO_NAMES;

/// The canonical name of an errno value (`ENOTCONN`), if Linux defines it.
pub fn name(errno: i32) -> Option<&'static str> {
    // The canonical names are in numeric order with two gaps (41 and 58): look where the
    // number should be first, then search.
    let guess = (errno as usize).wrapping_sub(1);
    for i in [guess, guess.wrapping_sub(1), guess.wrapping_sub(2)] {
        if let Some((n, s)) = ERRNO_NAMES.get(i) {
            if *n == errno {
                return Some(s.as_str());
            }
        }
    }
    ERRNO_NAMES.iter().find(|(n, _)| *n == errno).map(|(_, s)| s.as_str())
}

/// Parses `ENOTCONN` (any case) or a number from 1 to 4095.
pub fn parse(token: &str) -> Option<i32> {
    if let Ok(n) = token.parse::<i32>() {
        return (1..4096).contains(&n).then_some(n);
    }
    ERRNO_NAMES
        .iter()
        .find(|(_, s)| s.as_str().eq_ignore_ascii_case(token))
        .map(|&(n, _)| n)
}

/// All names, for suggestions.
pub fn names() -> impl Iterator<Item = &'static str> {
    ERRNO_NAMES.iter().map(|(_, s)| s.as_str())
}

/// Writes `ENOTCONN`, or the number when the value has no name.
pub struct Name(pub i32);

impl Name {
    /// Writes the name as `Display` does, without `core::fmt`.
    pub fn write_to<const N: usize>(&self, b: &mut crate::text::fmtbuf::StackBuf<N>) {
        match name(self.0) {
            Some(s) => b.s(s),
            None => {
                b.push(b"errno");
                b.i(self.0.into());
            }
        }
    }
}

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match name(self.0) {
            Some(s) => f.write_str(s),
            None => write!(f, "errno{}", self.0),
        }
    }
}

/// glibc keeps errno in static TLS, at the same offset from the thread pointer in every
/// thread. Knowing that offset (learnt once at load time) turns reading errno into two loads
/// instead of a call to `__errno_location`, which matters on every hooked call: a call would
/// force the hook to keep all its arguments in callee-saved registers. 0: not known (before the
/// constructor, or on other architectures), use the call.
static TLS_OFFSET: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

use crate::sys::raw::thread_pointer;

/// Learns errno's offset from the thread pointer (from the constructor).
#[link_section = ".text.errshim_startup"]
pub fn learn_location() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: __errno_location returns this thread's errno slot.
        let loc = unsafe { libc::__errno_location() } as usize;
        let off = loc.wrapping_sub(thread_pointer());
        // Sanity: static TLS lies just below the thread pointer.
        if off != 0 && off.wrapping_neg() < (1 << 20) {
            TLS_OFFSET.store(off, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[inline(always)]
fn location() -> *mut i32 {
    #[cfg(target_arch = "x86_64")]
    {
        let off = TLS_OFFSET.load(core::sync::atomic::Ordering::Relaxed);
        if off != 0 {
            return thread_pointer().wrapping_add(off) as *mut i32;
        }
    }
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { libc::__errno_location() }
}

#[inline(always)]
pub fn get() -> i32 {
    // SAFETY: location() is the calling thread's errno slot.
    unsafe { *location() }
}

#[inline(always)]
pub fn set(value: i32) {
    // SAFETY: as above.
    unsafe { *location() = value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(name(libc::ENOTCONN), Some("ENOTCONN"));
        assert_eq!(name(libc::EAGAIN), Some("EAGAIN"));
        assert_eq!(parse("ENOTCONN"), Some(libc::ENOTCONN));
        assert_eq!(parse("enotconn"), Some(libc::ENOTCONN));
        assert_eq!(parse("EWOULDBLOCK"), Some(libc::EAGAIN));
        assert_eq!(parse("107"), Some(107));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("ENOTCON"), None);
        assert_eq!(Name(9999).to_string(), "errno9999");
        for e in -2..4200 {
            let linear = ERRNO_NAMES.iter().find(|(n, _)| *n == e).map(|(_, s)| s.as_str());
            assert_eq!(name(e), linear, "errno {e}");
            let mut b = crate::text::fmtbuf::StackBuf::<32>::new();
            Name(e).write_to(&mut b);
            assert_eq!(b.as_bytes(), Name(e).to_string().as_bytes());
        }
    }

    #[test]
    fn fast_location_is_errno_in_every_thread() {
        learn_location();
        for _ in 0..2 {
            std::thread::spawn(|| {
                set(libc::EILSEQ);
                // SAFETY: this thread's errno slot.
                assert_eq!(unsafe { *libc::__errno_location() }, libc::EILSEQ);
                unsafe { *libc::__errno_location() = libc::EPIPE };
                assert_eq!(get(), libc::EPIPE);
            })
            .join()
            .unwrap();
        }
    }
}
