//! errno: names for numbers (and back), and access to the calling thread's errno.

use crate::errno_table::ERRNO_NAMES;

/// The canonical name of an errno value (`ENOTCONN`), if Linux defines it.
pub fn name(errno: i32) -> Option<&'static str> {
    ERRNO_NAMES.iter().find(|&&(n, _)| n == errno).map(|&(_, s)| s)
}

/// Parses `ENOTCONN` (any case) or a number from 1 to 4095.
pub fn parse(token: &str) -> Option<i32> {
    if let Ok(n) = token.parse::<i32>() {
        return (1..4096).contains(&n).then_some(n);
    }
    ERRNO_NAMES
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(token))
        .map(|&(n, _)| n)
}

/// All names, for suggestions.
pub fn names() -> impl Iterator<Item = &'static str> {
    ERRNO_NAMES.iter().map(|&(_, s)| s)
}

/// Writes `ENOTCONN`, or the number when the value has no name.
pub struct Name(pub i32);

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match name(self.0) {
            Some(s) => f.write_str(s),
            None => write!(f, "errno{}", self.0),
        }
    }
}

#[inline(always)]
pub fn get() -> i32 {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[inline(always)]
pub fn set(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value }
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
    }
}
