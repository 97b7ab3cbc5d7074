//! `ERRSHIM_RULES`: the grammar, and the decision for one failed call. Pure functions only.
//!
//! `CALLS:ERRNOS:ACTION[:OPTION...]`, rules separated by `;`, first match wins.

use crate::sys::errno;
use crate::sys::socket::Kind;
use crate::text::suggest;
use std::borrow::Cow;

/// Every interposed call that rules can name. The fortified `__*_chk` entry points count as
/// their plain names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Call {
    Read,
    Write,
    Readv,
    Writev,
    Recv,
    Recvfrom,
    Recvmsg,
    Send,
    Sendto,
    Sendmsg,
    Shutdown,
    Close,
    /// Failures only, and only those that end the attempt (not EINPROGRESS, EALREADY, EINTR).
    Connect,
    /// `accept` and `accept4`; failures only, not EAGAIN or EINTR.
    Accept,
    /// `sendfile` and `sendfile64`.
    Sendfile,
    /// The event's descriptor is the end that is a socket (see `failure::after_splice`).
    Splice,
    /// Success: a message count of 0 or more.
    Sendmmsg,
    Recvmmsg,
    /// Not in `*`: it is a question, and programs ask it of sockets that are not connected.
    Getpeername,
}

impl Call {
    pub const ALL: [Call; 19] = [
        Call::Read,
        Call::Write,
        Call::Readv,
        Call::Writev,
        Call::Recv,
        Call::Recvfrom,
        Call::Recvmsg,
        Call::Send,
        Call::Sendto,
        Call::Sendmsg,
        Call::Shutdown,
        Call::Close,
        Call::Connect,
        Call::Accept,
        Call::Sendfile,
        Call::Splice,
        Call::Sendmmsg,
        Call::Recvmmsg,
        Call::Getpeername,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::Write => "write",
            Call::Readv => "readv",
            Call::Writev => "writev",
            Call::Recv => "recv",
            Call::Recvfrom => "recvfrom",
            Call::Recvmsg => "recvmsg",
            Call::Send => "send",
            Call::Sendto => "sendto",
            Call::Sendmsg => "sendmsg",
            Call::Shutdown => "shutdown",
            Call::Close => "close",
            Call::Connect => "connect",
            Call::Accept => "accept",
            Call::Sendfile => "sendfile",
            Call::Splice => "splice",
            Call::Sendmmsg => "sendmmsg",
            Call::Recvmmsg => "recvmmsg",
            Call::Getpeername => "getpeername",
        }
    }

    pub fn from_name(s: &str) -> Option<Call> {
        let plain = match s {
            "__read_chk" => "read",
            "__recv_chk" => "recv",
            "__recvfrom_chk" => "recvfrom",
            "accept4" => "accept",
            "sendfile64" => "sendfile",
            other => other,
        };
        Call::ALL.iter().copied().find(|c| c.name() == plain)
    }

    /// Calls that read data in.
    pub fn is_read_family(self) -> bool {
        matches!(
            self,
            Call::Read | Call::Readv | Call::Recv | Call::Recvfrom | Call::Recvmsg
        )
    }

    /// Calls that transfer data out: reporting success for them would silently lose data
    /// (splice too, either way: its 0 says that the input ended).
    pub fn is_write_family(self) -> bool {
        matches!(
            self,
            Call::Write
                | Call::Writev
                | Call::Send
                | Call::Sendto
                | Call::Sendmsg
                | Call::Sendfile
                | Call::Splice
                | Call::Sendmmsg
        )
    }

    pub fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Calls whose failure cannot be turned into a success: a connect that did not connect, an
    /// accept without a connection, a recvmmsg without a message (the kernel's count is never
    /// 0), a getpeername without an address (but see `Action::Remembered`).
    pub fn has_no_success_to_give(self) -> bool {
        matches!(self, Call::Connect | Call::Accept | Call::Recvmmsg | Call::Getpeername)
    }

    /// Calls the fault engine can act on when a rule names them (`ERRSHIM_FAULTS`): all but
    /// `getpeername`, a question rather than a transfer.
    pub fn takes_faults(self) -> bool {
        self != Call::Getpeername
    }

    /// The calls `*` means in `ERRSHIM_FAULTS`: the read and write families, `shutdown` and
    /// `close`, as before `connect`, `accept`, `sendfile`, `splice` and the mmsg calls took
    /// faults (their faults are narrower: `policy::faults::call_errnos`), so an existing
    /// `*:EIO` keeps its meaning. They are named.
    pub fn in_fault_star(self) -> bool {
        !self.has_no_success_to_give() && !matches!(self, Call::Sendfile | Call::Splice | Call::Sendmmsg)
    }

    /// Whether a failure of this call with `err` is an event: for `connect` and `accept`, only
    /// failures that end the attempt (a non-blocking connect in progress, an accept with
    /// nothing queued, a signal, are how those calls are used).
    pub fn fails_for_real(self, err: i32) -> bool {
        match self {
            Call::Connect => !matches!(err, libc::EINPROGRESS | libc::EALREADY | libc::EINTR),
            Call::Accept => !matches!(err, libc::EAGAIN | libc::EINTR),
            _ => true,
        }
    }

    /// Whether a failure of this call with `err` proves the descriptor a socket: a call that
    /// only sockets have, failing with an errno that only the socket layer gives, after it has
    /// found the socket (not EINVAL, EFAULT, EPERM...: the kernel checks flags and buffers
    /// before it looks the descriptor up, and a seccomp filter may return any errno).
    pub fn proves_socket(self, err: i32) -> bool {
        matches!(
            self,
            Call::Recv
                | Call::Recvfrom
                | Call::Recvmsg
                | Call::Send
                | Call::Sendto
                | Call::Sendmsg
                | Call::Shutdown
                | Call::Connect
                | Call::Accept
                | Call::Sendmmsg
                | Call::Recvmmsg
                | Call::Getpeername
        ) && matches!(
            err,
            libc::ENOTCONN
                | libc::ECONNRESET
                | libc::ECONNREFUSED
                | libc::ECONNABORTED
                | libc::ETIMEDOUT
                | libc::EDESTADDRREQ
                | libc::EISCONN
                | libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::ENETRESET
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSet(u32);

impl CallSet {
    /// What `*` names: every call but `getpeername`, whose ENOTCONN is the answer to a
    /// question (is this socket connected?) rather than a failure of the connection, so
    /// `*:*:log` does not log it; rules name it.
    pub const ANY: CallSet = CallSet(((1 << Call::ALL.len()) - 1) & !(1 << Call::Getpeername as u32));
    pub const EMPTY: CallSet = CallSet(0);

    pub fn with(self, c: Call) -> CallSet {
        CallSet(self.0 | c.bit())
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, c: Call) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Call> {
        Call::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrnoSet {
    Any,
    List(Cow<'static, [i32]>),
}

impl ErrnoSet {
    pub fn matches(&self, e: i32) -> bool {
        match self {
            ErrnoSet::Any => true,
            ErrnoSet::List(l) => l.contains(&e),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave the result alone, log nothing.
    Pass,
    /// Leave the result alone, log an event.
    Log,
    /// Report success (0: close/shutdown succeed, the read family sees end of file) and log.
    Ignore,
    /// Like `Ignore`, without logging.
    Quiet,
    /// Fail with another errno, and log.
    Map(i32),
    /// `getpeername` only: answer with the peer errshim remembered from `accept` or
    /// `connect`, where it still describes the socket (`failure::remembered_peer`), and log;
    /// otherwise like `Log`.
    Remembered,
}

impl Action {
    pub fn logs(self) -> bool {
        matches!(self, Action::Log | Action::Ignore | Action::Map(_) | Action::Remembered)
    }
}

/// Which descriptors a rule applies to (`fd=` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdFilter {
    Sock,
    Tcp,
    Udp,
    Unix,
    Any,
}

impl FdFilter {
    pub const NAMES: [&'static str; 5] = ["sock", "tcp", "udp", "unix", "any"];
    pub const ALL: [FdFilter; 5] = [
        FdFilter::Sock,
        FdFilter::Tcp,
        FdFilter::Udp,
        FdFilter::Unix,
        FdFilter::Any,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn matches(self, kind: Kind) -> bool {
        match self {
            FdFilter::Any => true,
            FdFilter::Sock => kind.is_socket(),
            FdFilter::Tcp => kind.is_tcp(),
            FdFilter::Udp => kind.is_udp(),
            FdFilter::Unix => kind.is_unix(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub calls: CallSet,
    pub errnos: ErrnoSet,
    pub action: Action,
    pub fd: FdFilter,
    /// The rule as the user wrote it, for messages.
    pub text: Cow<'static, str>,
}

impl Rule {
    /// Whether this rule applies to a failure of `call` with `err`, ignoring the fd filter
    /// (which may need a syscall to evaluate, so it is checked last).
    pub fn matches_call(&self, call: Call, err: i32) -> bool {
        self.calls.contains(call) && self.errnos.matches(err)
    }
}

/// The rules used when `ERRSHIM_RULES` is not set.
pub const DEFAULT_RULES: &str = "close,shutdown:ENOTCONN:ignore";

/// `ERRSHIM_RULES`: rules that replace the default ones, or, after a leading `+`, rules added
/// after them (the first rule that matches decides, so the default suppression stays and the
/// added rules decide every other failure). Rule numbers in errors count from the first rule
/// written; in events, the default rule is rule 1 and the added ones follow.
pub fn parse_rules_or_additions(spec: &str) -> Result<Vec<Rule>, RuleError> {
    match spec.trim_start().strip_prefix('+') {
        Some(added) => {
            let mut all = DEFAULTS.to_vec();
            all.extend(parse_rules(added)?);
            Ok(all)
        }
        None => parse_rules(spec),
    }
}

/// `DEFAULT_RULES`, parsed (a unit test checks that they agree): the default configuration
/// needs no parsing and no allocation, in every process that starts.
pub static DEFAULTS: &[Rule] = &[Rule {
    calls: CallSet(1 << Call::Close as u32 | 1 << Call::Shutdown as u32),
    errnos: ErrnoSet::List(Cow::Borrowed(&[libc::ENOTCONN])),
    action: Action::Ignore,
    fd: FdFilter::Sock,
    text: Cow::Borrowed(DEFAULT_RULES),
}];

/// A rule that could not be parsed: which rule, which token, what is wrong, and the closest
/// valid name where there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based position of the rule among the non-empty rules.
    pub rule: usize,
    pub rule_text: String,
    pub token: String,
    pub problem: String,
    pub suggestion: Option<&'static str>,
    /// What to do instead, where a suggestion of a name does not say it.
    pub hint: Option<&'static str>,
}

impl RuleError {
    fn new(rule: usize, text: &str, token: &str, problem: &str, suggestion: Option<&'static str>) -> Self {
        RuleError {
            rule,
            rule_text: text.to_string(),
            token: token.to_string(),
            problem: problem.to_string(),
            suggestion,
            hint: None,
        }
    }

    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

const ACTION_NAMES: [&str; 6] = ["pass", "log", "ignore", "quiet", "map=", "remembered"];

fn parse_calls(n: usize, text: &str, field: &str) -> Result<CallSet, RuleError> {
    if field.trim() == "*" {
        return Ok(CallSet::ANY);
    }
    let mut set = 0;
    for tok in field.split(',').map(str::trim) {
        match Call::from_name(tok) {
            Some(c) => set |= c.bit(),
            None => {
                let names = Call::ALL
                    .iter()
                    .map(|c| c.name())
                    .chain(["__read_chk", "__recv_chk", "__recvfrom_chk"]);
                return Err(RuleError::new(
                    n,
                    text,
                    tok,
                    "unknown call",
                    suggest::closest(tok, names),
                ));
            }
        }
    }
    Ok(CallSet(set))
}

fn parse_errno(n: usize, text: &str, tok: &str) -> Result<i32, RuleError> {
    errno::parse(tok).ok_or_else(|| {
        let upper = tok.to_ascii_uppercase();
        RuleError::new(n, text, tok, "unknown errno", suggest::closest(&upper, errno::names()))
    })
}

fn parse_errnos(n: usize, text: &str, field: &str) -> Result<ErrnoSet, RuleError> {
    if field.trim() == "*" {
        return Ok(ErrnoSet::Any);
    }
    let list = field
        .split(',')
        .map(str::trim)
        .map(|tok| parse_errno(n, text, tok))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ErrnoSet::List(list.into()))
}

fn parse_action(n: usize, text: &str, field: &str) -> Result<Action, RuleError> {
    let field = field.trim();
    Ok(match field {
        "pass" => Action::Pass,
        "log" => Action::Log,
        "ignore" => Action::Ignore,
        "quiet" => Action::Quiet,
        "remembered" => Action::Remembered,
        _ => match field.strip_prefix("map=") {
            Some(e) => Action::Map(parse_errno(n, text, e.trim())?),
            None => {
                let head = field.split('=').next().unwrap_or(field);
                let s = suggest::closest(head, ACTION_NAMES.iter().map(|a| a.trim_end_matches('=')));
                let s = s.map(|a| if a == "map" { "map=ERRNO" } else { a });
                return Err(RuleError::new(n, text, field, "unknown action", s));
            }
        },
    })
}

fn parse_option(n: usize, text: &str, tok: &str) -> Result<FdFilter, RuleError> {
    let tok = tok.trim();
    match tok.split_once('=') {
        Some(("fd", v)) => match FdFilter::NAMES.iter().position(|&f| f == v.trim()) {
            Some(i) => Ok([
                FdFilter::Sock,
                FdFilter::Tcp,
                FdFilter::Udp,
                FdFilter::Unix,
                FdFilter::Any,
            ][i]),
            None => Err(RuleError::new(
                n,
                text,
                v,
                "unknown fd kind",
                suggest::closest(v, FdFilter::NAMES),
            )),
        },
        _ => {
            let key = tok.split('=').next().unwrap_or(tok);
            let s = suggest::closest(key, ["fd"]).map(|_| "fd=sock|tcp|udp|unix|any");
            Err(RuleError::new(n, text, tok, "unknown option", s))
        }
    }
}

fn parse_rule(n: usize, text: &str) -> Result<Rule, RuleError> {
    let fields: Vec<&str> = text.split(':').collect();
    if fields.len() < 3 {
        return Err(
            RuleError::new(n, text, text, "incomplete rule", None).hint("a rule is CALLS:ERRNOS:ACTION[:OPTION...]")
        );
    }
    let calls = parse_calls(n, text, fields[0])?;
    let errnos = parse_errnos(n, text, fields[1])?;
    let action = parse_action(n, text, fields[2])?;
    let mut fd = FdFilter::Sock;
    for opt in &fields[3..] {
        fd = parse_option(n, text, opt)?;
    }
    if action == Action::Remembered {
        if let Some(c) = calls.iter().find(|c| *c != Call::Getpeername) {
            let what = if calls == CallSet::ANY { "*" } else { c.name() };
            let problem = format!("action 'remembered' not allowed on {}", c.name());
            return Err(RuleError::new(n, text, what, &problem, None)
                .hint("it answers getpeername only: name getpeername alone in the rule"));
        }
    }
    if matches!(action, Action::Ignore | Action::Quiet) && calls != CallSet::ANY {
        if let Some(c) = calls.iter().find(|c| c.has_no_success_to_give()) {
            let problem = format!("action '{}' not allowed on {}", fields[2].trim(), c.name());
            let hint = if c == Call::Getpeername {
                "it has no success to give but an address: use remembered, log or map=ERRNO"
            } else {
                "it has no success to give (no connection made or accepted, no message received); use log or map=ERRNO"
            };
            return Err(RuleError::new(n, text, c.name(), &problem, None).hint(hint));
        }
    }
    if matches!(action, Action::Ignore | Action::Quiet) {
        if let Some(w) = calls.iter().find(|c| c.is_write_family()) {
            let what = if calls == CallSet::ANY { "*" } else { w.name() };
            let problem = format!("action '{}' not allowed on write-family call", fields[2].trim());
            return Err(RuleError::new(n, text, what, &problem, None).hint(
                "it would tell the program that unsent bytes were written; use log or map=ERRNO, or leave out write, writev, send, sendto, sendmsg, sendfile, splice, sendmmsg",
            ));
        }
    }
    Ok(Rule {
        calls,
        errnos,
        action,
        fd,
        text: text.trim().to_string().into(),
    })
}

/// The calls (a bit per `Call`) whose failure some rule may turn into a success (`ignore`,
/// `quiet`, `remembered`).
// Run by the constructor: placed with its code (see `lib.rs`).
#[allow(unsafe_code)]
#[link_section = ".text.errshim_startup"]
pub fn succeeding_calls(rules: &[Rule]) -> u32 {
    rules
        .iter()
        .filter(|r| matches!(r.action, Action::Ignore | Action::Quiet | Action::Remembered))
        .fold(0, |m, r| m | r.calls.bits())
}

/// Parses a whole `ERRSHIM_RULES` value. Empty rules (`;;`, a trailing `;`) are skipped; an
/// empty value gives no rules at all.
pub fn parse_rules(spec: &str) -> Result<Vec<Rule>, RuleError> {
    spec.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .enumerate()
        .map(|(i, r)| parse_rule(i + 1, r))
        .collect()
}

/// Whether `ignore`/`quiet` (a read that ends like end of file: 0) can be faithful on a
/// descriptor of this kind. On a datagram socket 0 is an empty datagram, with a sender the
/// kernel never reported: not something the kernel would return for a failure, so such a rule
/// does not apply there (nor where the kind is not known).
fn success_faithful(action: Action, call: Call, kind: impl FnOnce() -> Kind) -> bool {
    if !matches!(action, Action::Ignore | Action::Quiet) || !call.is_read_family() {
        return true;
    }
    let k = kind();
    !(k.is_udp() || matches!(k, Kind::UnixDgram | Kind::OtherSocket | Kind::Unknown))
}

/// The first rule that applies to `call` failing with `err` on a descriptor of kind `kind`.
/// `kind` is only evaluated for rules whose call and errno match, and whose filter the
/// failure itself does not settle (it may cost syscalls).
pub fn decide(rules: &[Rule], call: Call, err: i32, mut kind: impl FnMut() -> Kind) -> Option<(usize, &Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.matches_call(call, err)
                && (r.fd == FdFilter::Any
                    || (r.fd == FdFilter::Sock && call.proves_socket(err))
                    || r.fd.matches(kind()))
                && success_faithful(r.action, call, &mut kind)
        })
        .map(|(i, r)| (i + 1, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> RuleError {
        parse_rules(spec).unwrap_err()
    }

    #[test]
    fn default_rules_parse() {
        let r = parse_rules(DEFAULT_RULES).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].calls.contains(Call::Close) && r[0].calls.contains(Call::Shutdown));
        assert!(!r[0].calls.contains(Call::Read));
        assert_eq!(r[0].errnos, ErrnoSet::List(vec![libc::ENOTCONN].into()));
        assert_eq!(r, DEFAULTS, "the parsed and the built-in defaults agree");
        assert_eq!(r[0].action, Action::Ignore);
        assert_eq!(r[0].fd, FdFilter::Sock);
    }

    #[test]
    fn full_grammar() {
        let r = parse_rules(" read,__read_chk:ENOTCONN,104:map=ECONNRESET:fd=tcp ; *:*:log:fd=any;").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].calls.iter().collect::<Vec<_>>(), vec![Call::Read]);
        assert_eq!(
            r[0].errnos,
            ErrnoSet::List(vec![libc::ENOTCONN, libc::ECONNRESET].into())
        );
        assert_eq!(r[0].action, Action::Map(libc::ECONNRESET));
        assert_eq!(r[0].fd, FdFilter::Tcp);
        assert_eq!(r[1].calls, CallSet::ANY);
        assert_eq!(r[1].errnos, ErrnoSet::Any);
        assert_eq!(r[1].fd, FdFilter::Any);
        assert!(parse_rules("").unwrap().is_empty());
        assert!(parse_rules(" ; ").unwrap().is_empty());
    }

    #[test]
    fn errors_name_rule_token_and_suggestion() {
        let e = err("close:ENOTCONN:ignore;close,shutdown:ENOTCON:ignore");
        assert_eq!(
            (e.rule, e.token.as_str(), e.problem.as_str()),
            (2, "ENOTCON", "unknown errno")
        );
        assert_eq!(e.suggestion, Some("ENOTCONN"));
        let e = err("shutdwon:ENOTCONN:ignore");
        assert_eq!((e.token.as_str(), e.suggestion), ("shutdwon", Some("shutdown")));
        let e = err("close:ENOTCONN:ingore");
        assert_eq!((e.problem.as_str(), e.suggestion), ("unknown action", Some("ignore")));
        let e = err("close:ENOTCONN:mapp=EPIPE");
        assert_eq!(e.suggestion, Some("map=ERRNO"));
        let e = err("read:ENOTCONN:map=EPIPPE");
        assert_eq!((e.token.as_str(), e.suggestion), ("EPIPPE", Some("EPIPE")));
        let e = err("close:ENOTCONN:ignore:fd=tpc");
        assert_eq!((e.token.as_str(), e.suggestion), ("tpc", Some("tcp")));
        let e = err("close:ENOTCONN:ignore:df=tcp");
        assert_eq!(e.problem, "unknown option");
        let e = err("close:ENOTCONN");
        assert_eq!(e.problem, "incomplete rule");
        assert!(e.hint.unwrap().contains("CALLS:ERRNOS:ACTION"));
        assert_eq!(err("read:0:log").token, "0");
    }

    #[test]
    fn ignore_on_write_family_is_refused() {
        for spec in ["write:EPIPE:ignore", "read,send:EPIPE:quiet", "*:EPIPE:ignore"] {
            let e = err(spec);
            assert!(e.problem.contains("not allowed on write-family call"), "{spec}: {e:?}");
            assert!(e.hint.unwrap_or("").contains("unsent bytes"), "{spec}: {e:?}");
        }
        assert_eq!(err("*:EPIPE:ignore").token, "*");
        assert!(parse_rules("write:EPIPE:log;send:EPIPE:map=ECONNRESET").is_ok());
    }

    #[test]
    fn a_leading_plus_adds_rules_after_the_default() {
        let r = parse_rules_or_additions(" +*:*:log:fd=any").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[..1], *DEFAULTS);
        let d = decide(&r, Call::Shutdown, libc::ENOTCONN, || Kind::Tcp4);
        assert_eq!(
            d.map(|(i, r)| (i, r.action)),
            Some((1, Action::Ignore)),
            "the default still decides"
        );
        let d = decide(&r, Call::Read, libc::ECONNRESET, || Kind::Tcp4);
        assert_eq!(d.map(|(i, r)| (i, r.action)), Some((2, Action::Log)));
        assert_eq!(
            parse_rules_or_additions("*:*:log").unwrap().len(),
            1,
            "no '+': replaces"
        );
        assert_eq!(
            parse_rules_or_additions("+").unwrap(),
            DEFAULTS,
            "'+' alone: the default"
        );
        let e = parse_rules_or_additions("+*:ENOTCON:log").unwrap_err();
        assert_eq!((e.rule, e.token.as_str()), (1, "ENOTCON"));
    }

    #[test]
    fn first_match_wins_and_kind_is_lazy() {
        let rules =
            parse_rules("close:EBADF:log:fd=any;shutdown:ENOTCONN:pass:fd=unix;shutdown:ENOTCONN:ignore").unwrap();
        let mut probes = 0;
        let d = decide(&rules, Call::Close, libc::EBADF, || {
            probes += 1;
            Kind::NotOpen
        });
        assert_eq!(d.map(|(i, _)| i), Some(1));
        assert_eq!(probes, 0, "fd=any needs no probe");
        let d = decide(&rules, Call::Shutdown, libc::ENOTCONN, || Kind::UnixStream);
        assert_eq!(d.map(|(i, r)| (i, r.action)), Some((2, Action::Pass)));
        let d = decide(&rules, Call::Shutdown, libc::ENOTCONN, || Kind::Tcp4);
        assert_eq!(d.map(|(i, r)| (i, r.action)), Some((3, Action::Ignore)));
        assert!(decide(&rules, Call::Read, libc::ENOTCONN, || Kind::Tcp4).is_none());
        // The default rule's filter, fd=sock: a shutdown that failed with ENOTCONN was made on
        // a socket (anything else fails with ENOTSOCK), so the kind is not asked; a close
        // (ENOTCONN from a FUSE file whose daemon died) must ask.
        let defaults = parse_rules(DEFAULT_RULES).unwrap();
        let mut probes = 0;
        let d = decide(&defaults, Call::Shutdown, libc::ENOTCONN, || {
            probes += 1;
            Kind::NotSocket
        });
        assert_eq!((d.map(|(i, _)| i), probes), (Some(1), 0));
        assert!(decide(&defaults, Call::Close, libc::ENOTCONN, || Kind::NotSocket).is_none());
        assert!(decide(&defaults, Call::Close, libc::ENOTCONN, || Kind::Tcp4).is_some());
        assert!(Call::Send.proves_socket(libc::ECONNRESET) && !Call::Send.proves_socket(libc::EFAULT));
        assert!(
            !Call::Sendmsg.proves_socket(libc::EINVAL),
            "MSG_CMSG_COMPAT: EINVAL on any descriptor"
        );
        assert!(!Call::Write.proves_socket(libc::ECONNRESET) && !Call::Shutdown.proves_socket(libc::ENOTSOCK));
    }

    #[test]
    fn the_calls_seen_since_issue_16() {
        assert_eq!(Call::from_name("sendfile64"), Some(Call::Sendfile));
        for c in [Call::Sendfile, Call::Splice, Call::Sendmmsg, Call::Recvmmsg] {
            assert!(CallSet::ANY.contains(c), "{c:?} in *");
            assert!(c.takes_faults() && !c.in_fault_star(), "{c:?}");
        }
        assert!(
            !CallSet::ANY.contains(Call::Getpeername),
            "getpeername is named, not in *"
        );
        let r = parse_rules("getpeername:ENOTCONN:remembered;*:*:log").unwrap();
        assert_eq!(r[0].action, Action::Remembered);
        assert_eq!(succeeding_calls(&r), Call::Getpeername.bit());
        assert!(decide(&r, Call::Getpeername, libc::EBADF, || Kind::NotOpen).is_none());
        assert_eq!(
            decide(&r, Call::Recvmmsg, libc::ECONNREFUSED, || Kind::Udp4).map(|(i, _)| i),
            Some(2)
        );
        for (spec, token) in [
            ("getpeername,read:ENOTCONN:remembered", "read"),
            ("*:ENOTCONN:remembered", "*"),
            ("shutdown:ENOTCONN:remembered", "shutdown"),
        ] {
            let e = err(spec);
            assert_eq!(e.token, token, "{spec}");
            assert!(e.problem.contains("'remembered' not allowed"), "{spec}: {e:?}");
        }
        for spec in ["getpeername:ENOTCONN:ignore", "recvmmsg:ECONNREFUSED:quiet"] {
            assert!(err(spec).problem.contains("not allowed on"), "{spec}");
        }
        for spec in ["sendfile:EPIPE:ignore", "splice:EPIPE:quiet", "sendmmsg:EPIPE:ignore"] {
            assert!(err(spec).problem.contains("write-family"), "{spec}");
        }
    }

    #[test]
    fn a_read_never_ends_like_eof_on_a_datagram_socket() {
        let rules =
            parse_rules("recv,recvfrom,recvmsg,read:ECONNREFUSED:ignore:fd=any;*:ECONNREFUSED:log:fd=any").unwrap();
        for k in [
            Kind::Udp4,
            Kind::Udp6,
            Kind::UnixDgram,
            Kind::OtherSocket,
            Kind::Unknown,
        ] {
            let d = decide(&rules, Call::Recvfrom, libc::ECONNREFUSED, || k);
            assert_eq!(d.map(|(i, r)| (i, r.action)), Some((2, Action::Log)), "{k:?}");
        }
        for k in [Kind::Tcp4, Kind::UnixStream, Kind::UnixSeqpacket, Kind::NotSocket] {
            let d = decide(&rules, Call::Recv, libc::ECONNREFUSED, || k);
            assert_eq!(d.map(|(i, r)| (i, r.action)), Some((1, Action::Ignore)), "{k:?}");
        }
        let d = decide(&rules, Call::Shutdown, libc::ECONNREFUSED, || Kind::Udp4);
        assert_eq!(d.map(|(i, _)| i), Some(2));
    }
}
