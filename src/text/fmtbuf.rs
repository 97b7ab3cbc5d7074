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
    #[inline]
    fn put_at(&mut self, at: usize, bytes: &[u8]) -> bool {
        match self.buf.get_mut(at..at.saturating_add(bytes.len())) {
            Some(dst) => {
                let (src, to, n) = (bytes.as_ptr(), dst.as_mut_ptr().cast::<u8>(), bytes.len());
                // SAFETY: `to` is exactly `n` bytes of this buffer; MaybeUninit<u8> has u8's
                // layout; the two never overlap (`bytes` is borrowed, not ours). The small
                // copies read and write within those `n` bytes (two overlapping words), as a
                // `memcpy` would, without the call (a line is some forty short pieces).
                unsafe {
                    if (8..=16).contains(&n) {
                        let (a, b) = (
                            src.cast::<u64>().read_unaligned(),
                            src.add(n - 8).cast::<u64>().read_unaligned(),
                        );
                        to.cast::<u64>().write_unaligned(a);
                        to.add(n - 8).cast::<u64>().write_unaligned(b);
                    } else if (4..8).contains(&n) {
                        let (a, b) = (
                            src.cast::<u32>().read_unaligned(),
                            src.add(n - 4).cast::<u32>().read_unaligned(),
                        );
                        to.cast::<u32>().write_unaligned(a);
                        to.add(n - 4).cast::<u32>().write_unaligned(b);
                    } else if n < 4 {
                        for i in 0..n {
                            to.add(i).write(src.add(i).read());
                        }
                    } else {
                        core::ptr::copy_nonoverlapping(src, to, n);
                    }
                };
                true
            }
            None => false,
        }
    }

    /// Appends a string (the same as `push`, for text).
    #[inline]
    pub fn s(&mut self, s: &str) {
        self.push(s.as_bytes());
    }

    /// Appends `v` in decimal, without `core::fmt` (an event line writes a dozen numbers, and
    /// the formatting machinery cost more than everything else an event does). The digits are
    /// written in place, from the last.
    pub fn u(&mut self, v: u64) {
        if v < 10 {
            return self.byte(b'0' + v as u8);
        }
        let digits = decimal_digits(v);
        if !self.digits_in_place(v, digits) {
            self.u_cut(v);
        }
    }

    /// Writes the last `width` decimal digits of `v` in place, from the last; false (nothing
    /// written) if they do not fit whole.
    fn digits_in_place(&mut self, v: u64, width: usize) -> bool {
        let end = self.len + width;
        if end > N.saturating_sub(Self::RESERVE) {
            return false;
        }
        let (start, mut at, mut v) = (self.len, end, v);
        let base = self.buf.as_mut_ptr().cast::<u8>();
        // Two digits at a time, from a table (half the divisions of one at a time).
        // SAFETY: start <= at <= end <= N: every write is within the buffer; MaybeUninit<u8>
        // has u8's layout; `d + 1 < 200` indexes the table.
        unsafe {
            while at >= start + 2 {
                let d = (v % 100) as usize * 2;
                v /= 100;
                at -= 2;
                base.add(at).write(*DIGIT_PAIRS.as_ptr().add(d));
                base.add(at + 1).write(*DIGIT_PAIRS.as_ptr().add(d + 1));
            }
            if at > start {
                base.add(at - 1).write(b'0' + (v % 10) as u8);
            }
        }
        self.len = end;
        true
    }

    /// Appends one byte.
    #[inline]
    pub fn byte(&mut self, c: u8) {
        if self.len < N.saturating_sub(Self::RESERVE) {
            if let Some(slot) = self.buf.get_mut(self.len) {
                slot.write(c);
                self.len += 1;
                return;
            }
        }
        self.truncated = true;
    }

    /// `u` of a number that does not fit whole: its first digits, and the mark.
    #[cold]
    fn u_cut(&mut self, v: u64) {
        let mut whole = StackBuf::<24>::new(); // 20 digits and the reserve
        whole.u(v);
        self.push(whole.as_bytes());
    }

    /// Appends `v` in decimal, with a sign when negative.
    pub fn i(&mut self, v: i64) {
        if v < 0 {
            self.push(b"-");
        }
        self.u(v.unsigned_abs());
    }

    /// Appends `v` in decimal with at least `width` digits (leading zeros), `width` at most 20.
    pub fn u_zero(&mut self, v: u64, width: usize) {
        const ZEROES: &[u8; 20] = b"00000000000000000000";
        let pad = width.min(20).saturating_sub(decimal_digits(v));
        self.push(ZEROES.get(..pad).unwrap_or(&[]));
        self.u(v);
    }

    /// Appends the last `width` decimal digits of `v` (at most 20), leading zeros included:
    /// for fields of a fixed width, without counting digits first. Inline: its widths are
    /// constants where it is called (timestamps), which the digit loop is unrolled for.
    #[inline(always)]
    pub fn fixed(&mut self, v: u64, width: usize) {
        let width = width.min(20);
        if !self.digits_in_place(v, width) {
            self.u_zero(v, width);
        }
    }

    /// Appends `v` as `0x` and lowercase hexadecimal digits (`{:#x}`).
    pub fn hex(&mut self, v: u64) {
        self.push(b"0x");
        self.hex_digits(v);
    }

    /// Appends `v` in lowercase hexadecimal digits, without a prefix (`{:x}`).
    pub fn hex_digits(&mut self, v: u64) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut d = [0u8; 16];
        let mut at = d.len();
        let mut v = v;
        loop {
            at -= 1;
            if let Some(slot) = d.get_mut(at) {
                *slot = HEX[(v & 15) as usize];
            }
            v >>= 4;
            if v == 0 || at == 0 {
                break;
            }
        }
        self.push(d.get(at..).unwrap_or(&[]));
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

    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if end <= N.saturating_sub(Self::RESERVE) && self.put_at(self.len, bytes) {
            self.len = end;
            return;
        }
        self.push_cut(bytes);
    }

    /// `push` of bytes that do not all fit: as many as do, and the mark that some were cut.
    #[cold]
    fn push_cut(&mut self, bytes: &[u8]) {
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

/// How many decimal digits `v` has (1 to 20).
fn decimal_digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// "00", "01", ... "99", for two digits at a time.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

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
    fn numbers_match_core_fmt() {
        for v in [0u64, 1, 9, 10, 99, 100, 12_345, u32::MAX as u64, u64::MAX] {
            let mut b = StackBuf::<64>::new();
            b.u(v);
            assert_eq!(b.as_bytes(), v.to_string().as_bytes());
            let mut b = StackBuf::<64>::new();
            b.hex(v);
            assert_eq!(b.as_bytes(), format!("{v:#x}").as_bytes());
            for w in [0, 2, 4, 6, 25] {
                let mut b = StackBuf::<64>::new();
                b.u_zero(v, w);
                let padded = format!("{v:0w$}", w = w.min(20));
                assert_eq!(b.as_bytes(), padded.as_bytes());
                let mut b = StackBuf::<64>::new();
                b.fixed(v, w);
                let last = &padded.as_bytes()[padded.len() - w.min(20).min(padded.len())..];
                if padded.len() <= w.min(20) {
                    assert_eq!(b.as_bytes(), last);
                } else {
                    assert_eq!(b.as_bytes(), last, "the last {w} digits of {v}");
                }
            }
        }
        for v in [0i64, -1, 7, -12_345, i64::MIN, i64::MAX] {
            let mut b = StackBuf::<64>::new();
            b.i(v);
            assert_eq!(b.as_bytes(), v.to_string().as_bytes());
        }
        let mut b = StackBuf::<8>::new();
        b.u(123_456_789);
        assert_eq!(b.finish_line(), b"1234...\n", "numbers truncate like text");
        // Every digit count, at its edges, odd and even, after some text; and a spread of
        // values (a multiplicative walk over the whole range).
        let mut values: Vec<u64> = (0..20u32)
            .flat_map(|k| {
                let p = 10u64.pow(k);
                [p - 1, p, p + 1, p.saturating_mul(5).saturating_add(3)]
            })
            .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(x >> (x % 64));
        }
        for v in values {
            let mut b = StackBuf::<64>::new();
            b.push(b"n=");
            b.u(v);
            b.fixed(v % 1_000_000, 6);
            assert_eq!(b.as_bytes(), format!("n={v}{:06}", v % 1_000_000).as_bytes(), "{v}");
        }
    }

    #[test]
    fn pieces_of_every_length() {
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=text.len() {
            let mut b = StackBuf::<128>::new();
            b.push(b"<");
            b.push(&text[..n]);
            b.push(b">");
            assert_eq!(b.as_bytes(), [&b"<"[..], &text[..n], b">"].concat(), "{n} bytes");
        }
    }

    #[test]
    fn escapes_unprintable_bytes() {
        let mut b = StackBuf::<64>::new();
        b.push_escaped(b"a b\n\\\xff");
        assert_eq!(b.as_bytes(), b"a\\x20b\\x0a\\x5c\\xff");
    }
}
