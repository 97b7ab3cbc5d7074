//! A JSON object writer into a stack buffer: `{"key":value,...}` with strings escaped
//! correctly whatever bytes they hold (invalid UTF-8 becomes U+FFFD).

use crate::text::fmtbuf::StackBuf;
use core::fmt::Write;

pub struct Obj<'b, const N: usize> {
    out: &'b mut StackBuf<N>,
    first: bool,
}

/// Appends `bytes` as the inside of a JSON string. Runs of plain printable ASCII, nearly all
/// of an event, are copied whole; the rest is looked at character by character.
pub fn escape_into<const N: usize>(out: &mut StackBuf<N>, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(plain);
        out.push(run);
        // Up to the next plain byte: what needs escaping, or a UTF-8 sequence.
        let odd = tail
            .iter()
            .position(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            .unwrap_or(tail.len());
        let (special, after) = tail.split_at(odd);
        escape_slow(out, special);
        rest = after;
    }
}

fn escape_slow<const N: usize>(out: &mut StackBuf<N>, bytes: &[u8]) {
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

/// A number a JSON value can be, written without `core::fmt`.
pub trait Num {
    fn write_to<const N: usize>(self, out: &mut StackBuf<N>);
}

impl Num for i32 {
    fn write_to<const N: usize>(self, out: &mut StackBuf<N>) {
        out.i(self.into());
    }
}

impl Num for isize {
    fn write_to<const N: usize>(self, out: &mut StackBuf<N>) {
        out.i(self as i64);
    }
}

impl Num for u64 {
    fn write_to<const N: usize>(self, out: &mut StackBuf<N>) {
        out.u(self);
    }
}

impl Num for usize {
    fn write_to<const N: usize>(self, out: &mut StackBuf<N>) {
        out.u(self as u64);
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

    /// `"key":value` for each number known.
    pub fn nums(&mut self, pairs: &[(&str, Option<u64>)]) -> &mut Self {
        for (k, v) in pairs {
            if let Some(v) = v {
                self.num(k, *v);
            }
        }
        self
    }

    pub fn num(&mut self, k: &str, v: impl Num) -> &mut Self {
        self.key(k);
        v.write_to(self.out);
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

    #[test]
    fn escaping_agrees_with_serde_json_on_any_bytes() {
        let mut seed = 7u64;
        for n in 0..3000 {
            let len = n % 40;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // plain text mostly, with quotes, controls, UTF-8 and invalid bytes among it
                    match (seed >> 60) as u8 {
                        0 => b'"',
                        1 => b'\\',
                        2 => (seed >> 40) as u8 & 0x1f,
                        3 => 0xc3,
                        4 => 0xa9,
                        5 => (seed >> 32) as u8,
                        _ => b'a' + (seed >> 33) as u8 % 26,
                    }
                })
                .collect();
            let mut b = StackBuf::<512>::new();
            escape_into(&mut b, &bytes);
            let ours = format!("\"{}\"", std::str::from_utf8(b.as_bytes()).unwrap());
            let back: String = serde_json::from_str(&ours).unwrap_or_else(|e| panic!("{ours}: {e}"));
            assert_eq!(back, String::from_utf8_lossy(&bytes), "{bytes:?}");
        }
    }
}
