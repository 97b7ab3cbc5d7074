//! UTC timestamps for event lines, computed with integer arithmetic only (no libc time
//! functions, which may take locks or read time zone files).

use core::fmt;

/// Seconds and nanoseconds since the Unix epoch, shown as `2026-11-21T10:00:00.123456Z`.
pub struct Utc {
    pub secs: i64,
    pub nanos: i64,
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = crate::text::fmtbuf::StackBuf::<48>::new();
        self.write_to(&mut b);
        f.write_str(core::str::from_utf8(b.as_bytes()).unwrap_or("?"))
    }
}

impl Utc {
    /// Writes `2026-11-21T10:00:00.123456Z` (what `Display` shows), without `core::fmt`.
    pub fn write_to<const N: usize>(&self, b: &mut crate::text::fmtbuf::StackBuf<N>) {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400) as u64;
        let (y, mo, d) = civil_from_days(days);
        if y < 0 {
            b.push(b"-"); // `{:04}` counts the sign in the width
            b.u_zero(y.unsigned_abs(), 3);
        } else {
            b.u_zero(y as u64, 4);
        }
        b.push(b"-");
        b.fixed(mo.into(), 2);
        b.push(b"-");
        b.fixed(d.into(), 2);
        b.push(b"T");
        b.fixed(sod / 3600, 2);
        b.push(b":");
        b.fixed(sod / 60 % 60, 2);
        b.push(b":");
        b.fixed(sod % 60, 2);
        b.push(b".");
        b.fixed((self.nanos / 1000).unsigned_abs(), 6);
        b.push(b"Z");
    }

    /// The time `secs` seconds and `nanos` nanoseconds after the epoch.
    pub fn new(secs: i64, nanos: i64) -> Utc {
        Utc { secs, nanos }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let t = |secs, nanos| Utc { secs, nanos }.to_string();
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(t(951_782_400, 5_000), "2000-02-29T00:00:00.000005Z");
        assert_eq!(t(1_795_255_200, 123_456_789), "2026-11-21T10:00:00.123456Z");
        assert_eq!(t(-1, 0), "1969-12-31T23:59:59.000000Z");
        for (secs, nanos) in [
            (0, 0),
            (951_782_400, 5_000),
            (1_795_255_200, 123_456_789),
            (-1, 0),
            (253_402_300_799, 999_999_999),
        ] {
            let mut b = crate::text::fmtbuf::StackBuf::<64>::new();
            Utc { secs, nanos }.write_to(&mut b);
            assert_eq!(b.as_bytes(), t(secs, nanos).as_bytes());
        }
    }
}
