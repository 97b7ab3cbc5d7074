//! Text from outside (variable values, tokens, paths, program names) in errshim's own
//! diagnostics: printed so that it can never break the one-line format or forge a line.
//! Control characters (C0, DEL and C1) and bytes that are not UTF-8 become `\xNN`; other text,
//! including non-ASCII letters, is kept as it is.

use core::fmt;

/// Displays bytes escaped (see the module doc).
pub struct Esc<'a>(pub &'a [u8]);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    let mut b = [0u8; 4];
                    for byte in c.encode_utf8(&mut b).bytes() {
                        write!(f, "\\x{byte:02x}")?;
                    }
                } else {
                    write!(f, "{c}")?;
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// The same for text that is already a `str`.
pub fn esc(s: &str) -> Esc<'_> {
    Esc(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_break_a_line() {
        let e = |b: &[u8]| Esc(b).to_string();
        assert_eq!(e(b"plain text, caf\xc3\xa9"), "plain text, caf\u{e9}");
        assert_eq!(e(b"a\nerrshim: error: forged"), "a\\x0aerrshim: error: forged");
        assert_eq!(e(b"\x1b[2J\r\t\x7f"), "\\x1b[2J\\x0d\\x09\\x7f");
        assert_eq!(e(b"\xc2\x85 next line"), "\\xc2\\x85 next line");
        assert_eq!(e(b"/var/log/\xff.log"), "/var/log/\\xff.log");
    }
}
