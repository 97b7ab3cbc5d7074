//! `ERRSHIM_METRICS=PATH`: the counts as Prometheus text exposition, in the file format of
//! node_exporter's textfile collector, rewritten atomically (a temporary file beside it, then
//! `rename`) with each digest and at exit. `%p` in PATH becomes the pid, as for the log: each
//! process writes its own file, with `comm` and `pid` labels.
//!
//! Counters (all `_total`): `errshim_events_total` by call, errno, action and cause;
//! `errshim_injections_total` by fault rule; `errshim_fault_matched_total` and
//! `errshim_fault_fired_total` by rule of the fault rules in force; `errshim_dropped_lines_total`;
//! `errshim_held_lines_total` (held back by `ERRSHIM_LOG_RATE`).

use crate::report::{logger, rate, summary};
use crate::sys::{process, raw};
use crate::text::fmtbuf::StackBuf;
use core::fmt::Write;

/// The file's text, at most this long (kinds that do not fit are left out): on the stack of
/// whichever thread's event writes a digest, so kept small.
const MAX: usize = 8 * 1024;

/// A label value: UTF-8 (other bytes as U+FFFD), with `\`, `"` and newline escaped.
fn label<const N: usize>(b: &mut StackBuf<N>, v: &[u8]) {
    for chunk in v.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => b.push(b"\\\\"),
                '"' => b.push(b"\\\""),
                '\n' => b.push(b"\\n"),
                c => {
                    let mut u = [0u8; 4];
                    b.push(c.encode_utf8(&mut u).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            b.push("\u{fffd}".as_bytes());
        }
    }
}

/// Appends `line` to `out` if it fits whole: a file cut in the middle of a line would be
/// refused by every parser, so kinds that do not fit are left out, whole.
fn append(out: &mut StackBuf<MAX>, line: &StackBuf<LINE>) {
    if out.fits(line.as_bytes().len()) {
        out.push(line.as_bytes());
    }
}

/// One line of the file, at most this long.
const LINE: usize = 768;

/// The exposition text of this process's counts: the fixed counters first, then events by
/// kind and injections by rule, as many as fit.
pub fn text(out: &mut StackBuf<MAX>) {
    let calls = crate::policy::rules::Call::ALL;
    let actions = ["pass", "log", "ignore", "quiet", "map", "inject", "remembered"];
    let pid = process::pid();
    let comm = process::comm();
    let labels = |b: &mut StackBuf<LINE>| {
        b.push(b"comm=\"");
        label(b, comm);
        let _ = write!(b, "\",pid=\"{pid}\"");
    };
    let mut line = StackBuf::<LINE>::new();
    let mut one = |out: &mut StackBuf<MAX>, help: &str, name: &str, value: u64| {
        let _ = write!(line, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{");
        labels(&mut line);
        let _ = writeln!(line, "}} {value}");
        append(out, &line);
        line = StackBuf::new();
    };
    one(
        out,
        "Lines errshim could not write without waiting, and dropped.",
        "errshim_dropped_lines_total",
        logger::dropped(),
    );
    one(
        out,
        "Event lines the rate limit (ERRSHIM_LOG_RATE) held back.",
        "errshim_held_lines_total",
        rate::held_total(),
    );
    out.push(b"# HELP errshim_events_total Failed socket calls errshim handled, by call, errno, action and cause.\n");
    out.push(b"# TYPE errshim_events_total counter\n");
    summary::kinds(|k, n, _| {
        let call = calls.get(k.call as usize).map_or("?", |c| c.name());
        let action = actions.get(k.action as usize).unwrap_or(&"?");
        let cause = crate::observe::cause::Cause::from_index(k.cause).map_or("none", |c| c.code());
        let mut l = StackBuf::<LINE>::new();
        l.push(b"errshim_events_total{");
        labels(&mut l);
        let _ = write!(l, ",call=\"{call}\",errno=\"");
        if k.errno == 0 {
            l.push(b"none");
        } else {
            let _ = write!(l, "{}", crate::sys::errno::Name(k.errno as i32));
        }
        let _ = writeln!(l, "\",action=\"{action}\",cause=\"{cause}\"}} {n}");
        append(out, &l);
    });
    out.push(b"# HELP errshim_injections_total Faults errshim injected, by fault rule.\n");
    out.push(b"# TYPE errshim_injections_total counter\n");
    summary::injections(|rule, n| {
        let mut l = StackBuf::<LINE>::new();
        l.push(b"errshim_injections_total{");
        labels(&mut l);
        let _ = writeln!(l, ",rule=\"{rule}\"}} {n}");
        append(out, &l);
    });
    let mut per_rule = |name: &str, help: &str, pick: fn(u64, u64) -> u64| {
        let _ = write!(line, "# HELP {name} {help}\n# TYPE {name} counter\n");
        append(out, &line);
        line = StackBuf::new();
        summary::rule_counts(&mut |rule, matched, fired| {
            let mut l = StackBuf::<LINE>::new();
            let _ = write!(l, "{name}{{");
            labels(&mut l);
            let _ = writeln!(l, ",rule=\"{rule}\"}} {}", pick(matched, fired));
            append(out, &l);
        });
    };
    per_rule(
        "errshim_fault_matched_total",
        "Calls each fault rule in force matched (its filters held), since it was installed.",
        |m, _| m,
    );
    per_rule(
        "errshim_fault_fired_total",
        "Faults each fault rule in force injected, since it was installed.",
        |_, f| f,
    );
}

/// Rewrites the metrics file of `template` (`%p`: the pid): the text into a temporary file of
/// this thread's own beside it (`PATH.tmp.PID.TID`, created anew: `O_EXCL`), then renamed over
/// PATH, so that a collector never reads half a file; the temporary file is removed if that
/// fails. Failures are counted as a dropped line.
#[inline(never)]
pub fn write(template: &[u8]) {
    let mut body = StackBuf::<MAX>::new();
    text(&mut body);
    let path = logger::expand_path(template);
    let Ok(final_path) = core::ffi::CStr::from_bytes_until_nul(path.as_bytes()) else {
        return;
    };
    let mut tmp = StackBuf::<4200>::new();
    tmp.push(final_path.to_bytes());
    let _ = write!(tmp, ".tmp.{}.{}\0", process::pid(), process::tid());
    let Ok(tmp_path) = core::ffi::CStr::from_bytes_until_nul(tmp.as_bytes()) else {
        return;
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let ok = match raw::openat(tmp_path, flags, 0o644) {
        Ok(fd) => {
            let written = raw::write(fd, body.as_bytes()).is_ok_and(|n| n == body.as_bytes().len());
            raw::close(fd);
            let renamed = written && raw::rename(tmp_path, final_path).is_ok();
            if !renamed {
                let _ = raw::unlink(tmp_path);
            }
            renamed
        }
        Err(_) => false,
    };
    if !ok {
        logger::count_dropped();
    }
}
