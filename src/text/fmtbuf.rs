//! A fixed-size, stack-allocated text buffer: how every event line and diagnostic is formatted
//! without touching the heap. Writing past the end truncates (marked with `...`) and never fails,
//! so `write!` into it cannot panic or return an error that a caller would have to handle.

// The one unsafe part of this layer: the buffer is not zeroed when made (an event's buffers
// are kilobytes, and zeroing them cost more than formatting the line), so its first `len`
// bytes, the only ones ever read, are the ones written.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::MaybeUninit;

pub struct StackBuf<const N: usize> {
    /// Bytes `..len` are initialised: every write is through `put_at`, which writes before
    /// `len` grows over it.
    buf: [MaybeUninit<u8>; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for StackBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> StackBuf<N> {
    /// Bytes kept free at the end for the truncation mark and the final newline.
    const RESERVE: usize = 4;

    pub const fn new() -> Self {
        StackBuf {
            buf: [const { MaybeUninit::uninit() }; N],
            len: 0,
            truncated: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        let len = self.len.min(N);
        // SAFETY: the first `len` bytes were written (see `buf`); MaybeUninit<u8> has u8's layout.
        unsafe { core::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), len) }
    }

    /// Whether `n` more bytes fit whole (before the reserve kept for the end of a line).
    pub fn fits(&self, n: usize) -> bool {
        self.len + n <= N.saturating_sub(Self::RESERVE)
    }

    /// Writes `bytes` at `at` (within the buffer); false if they do not fit.
    fn put_at(&mut self, at: usize, bytes: &[u8]) -> bool {
        match self.buf.get_mut(at..at + bytes.len()) {
            Some(dst) => {
                for (d, &b) in dst.iter_mut().zip(bytes) {
                    d.write(b);
                }
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[cfg(test)]
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = N.saturating_sub(Self::RESERVE).saturating_sub(self.len);
        let take = bytes.len().min(room);
        if take < bytes.len() {
            self.truncated = true;
        }
        if let Some(src) = bytes.get(..take) {
            if self.put_at(self.len, src) {
                self.len += take;
            }
        }
    }

    /// Appends bytes from an untrusted source (a program name, a path) so that the line stays
    /// one line of printable ASCII: anything else, and space and backslash, become `\xNN`.
    pub fn push_escaped(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            if b.is_ascii_graphic() && b != b'\\' {
                self.push(&[b]);
            } else {
                self.push(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
    }

    /// Ends the text with a newline, after a `...` mark when something was cut.
    pub fn finish_line(&mut self) -> &[u8] {
        let end = if self.truncated { &b"...\n"[..] } else { &b"\n"[..] };
        let at = self.len.min(N.saturating_sub(end.len()));
        if self.put_at(at, end) {
            self.len = at + end.len();
        }
        self.as_bytes()
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn formats_and_ends_with_newline() {
        let mut b = StackBuf::<64>::new();
        let (n, s) = (7, "x");
        let _ = write!(b, "fd={n} {s}");
        assert_eq!(b.finish_line(), b"fd=7 x\n");
    }

    #[test]
    fn truncates_without_panicking() {
        let mut b = StackBuf::<16>::new();
        let _ = write!(b, "{}", "a".repeat(100));
        let line = b.finish_line().to_vec();
        assert_eq!(line.len(), 16);
        assert!(line.ends_with(b"...\n"));
    }

    #[test]
    fn escapes_unprintable_bytes() {
        let mut b = StackBuf::<64>::new();
        b.push_escaped(b"a b\n\\\xff");
        assert_eq!(b.as_bytes(), b"a\\x20b\\x0a\\x5c\\xff");
    }
}
