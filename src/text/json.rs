//! A JSON object writer into a stack buffer: `{"key":value,...}` with strings escaped
//! correctly whatever bytes they hold (invalid UTF-8 becomes U+FFFD).

use crate::text::fmtbuf::StackBuf;
use core::fmt::Write;

pub struct Obj<'b, const N: usize> {
    out: &'b mut StackBuf<N>,
    first: bool,
}

/// Appends `bytes` as the inside of a JSON string.
pub fn escape_into<const N: usize>(out: &mut StackBuf<N>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push(b"\\\""),
                '\\' => out.push(b"\\\\"),
                '\n' => out.push(b"\\n"),
                '\r' => out.push(b"\\r"),
                '\t' => out.push(b"\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.push(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.push("\u{fffd}".as_bytes());
        }
    }
}

impl<'b, const N: usize> Obj<'b, N> {
    pub fn new(out: &'b mut StackBuf<N>) -> Self {
        out.push(b"{");
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b",");
        }
        self.first = false;
        self.out.push(b"\"");
        self.out.push(k.as_bytes());
        self.out.push(b"\":");
    }

    pub fn str(&mut self, k: &str, v: &[u8]) -> &mut Self {
        self.key(k);
        self.out.push(b"\"");
        escape_into(self.out, v);
        self.out.push(b"\"");
        self
    }

    /// A string value produced by `f` (formatted on the stack, then escaped).
    pub fn fmt_str(&mut self, k: &str, f: impl FnOnce(&mut StackBuf<256>)) -> &mut Self {
        let mut tmp = StackBuf::<256>::new();
        f(&mut tmp);
        self.str(k, tmp.as_bytes())
    }

    pub fn num(&mut self, k: &str, v: impl core::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.out.push(if v { b"true" } else { b"false" });
        self
    }

    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.out.push(b"null");
        self
    }

    /// A value written verbatim by `f` (an array the caller builds).
    pub fn raw(&mut self, k: &str, f: impl FnOnce(&mut StackBuf<N>)) -> &mut Self {
        self.key(k);
        f(self.out);
        self
    }

    pub fn end(self) {
        self.out.push(b"}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_escaping() {
        let mut b = StackBuf::<256>::new();
        let mut o = Obj::new(&mut b);
        o.str("comm", b"a\"b\\c\n\x01\xff\xc3\xa9")
            .num("fd", 7)
            .bool("x", true)
            .null("peer");
        o.end();
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "{\"comm\":\"a\\\"b\\\\c\\n\\u0001\u{fffd}\u{e9}\",\"fd\":7,\"x\":true,\"peer\":null}"
        );
    }
}
