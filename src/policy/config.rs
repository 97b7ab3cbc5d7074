//! Every `ERRSHIM_*` environment variable, parsed from plain strings by pure functions. The
//! resulting `Config` is built once, in the constructor, and never changes afterwards.

use crate::policy::rules::{self, Rule, RuleError};
use crate::text::escape::{esc, Esc};
use crate::text::suggest;
use core::fmt;
use log::LevelFilter;

/// The table of variables: name, default, one-line meaning. The README documents the same set.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "ERRSHIM_RULES",
        rules::DEFAULT_RULES,
        "errno-handling rules, CALLS:ERRNOS:ACTION[:OPTION...];...",
    ),
    (
        "ERRSHIM_LOG",
        "stderr",
        "where events go: stderr, off, syslog[:PATH], journal[:PATH], or a file path containing '/'",
    ),
    (
        "ERRSHIM_FORMAT",
        "text",
        "event format: text (one line) or json (one object per line)",
    ),
    (
        "ERRSHIM_SUMMARY",
        "0",
        "1: at exit, event counts by call, errno, action and cause, and by peer; a duration (60s): also every so often",
    ),
    (
        "ERRSHIM_LOG_RATE",
        "10/5s",
        "event lines per kind (call, errno, rule): BURST/INTERVAL; 0: no limit",
    ),
    (
        "ERRSHIM_METRICS",
        "",
        "a file for Prometheus counters (%p: the pid), rewritten every interval and at exit",
    ),
    (
        "ERRSHIM_BACKTRACE",
        "0",
        "1: each event carries the caller's return addresses",
    ),
    (
        "ERRSHIM_COUNT",
        "0",
        "1: count bytes and note the last call per socket in the hooks (costs a few % per call)",
    ),
    (
        "ERRSHIM_FAULTS",
        "",
        "fault rules, CALLS:FAULT[:OPTION...];... (none by default)",
    ),
    (
        "ERRSHIM_SEED",
        "random",
        "seed for every random choice of the fault rules",
    ),
    ("ERRSHIM_CONTROL", "", "a file of fault rules, re-read when it changes"),
    (
        "ERRSHIM_CHECK_CALL",
        "",
        "errshim --check --call: a call to say each fault rule's verdict on, 'read fd=tcp port=80'",
    ),
    (
        "ERRSHIM_ONLY_CMDS",
        "",
        "comma list of program names: errshim acts only in these",
    ),
    (
        "ERRSHIM_SKIP_CMDS",
        "",
        "comma list of program names: errshim does not act in these",
    ),
    ("ERRSHIM_DISABLE", "0", "1: pure pass-through, nothing parsed or logged"),
    (
        "ERRSHIM_STRICT",
        "0",
        "1: a configuration error stops the program at startup with status 2",
    ),
    (
        "ERRSHIM_LOG_LEVEL",
        "warn",
        "errshim's own diagnostics: off, error, warn, info, debug",
    ),
    (
        "ERRSHIM_SECCOMP",
        "strict",
        "strict: no system call of errshim's own under a seccomp filter; trust: the filter the process started under allows them",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Off,
    /// A path, as bytes (paths need not be UTF-8); `%p` in it becomes the pid of the process
    /// that writes.
    File(Vec<u8>),
    /// A syslog socket (`/dev/log` unless another path is given): one datagram per event.
    Syslog(Vec<u8>),
    /// journald's native socket (`/run/systemd/journal/socket` unless another path is given):
    /// one datagram of fields per event.
    Journal(Vec<u8>),
}

/// At most `burst` lines per kind of event in each `interval_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub interval_ms: u64,
}

/// The default `ERRSHIM_LOG_RATE`: a storm stays at a few lines per second per kind, as
/// journald's own rate limit keeps a service's.
pub const DEFAULT_RATE: Rate = Rate {
    burst: 10,
    interval_ms: 5000,
};

/// How often metrics are written when `ERRSHIM_SUMMARY` gives no interval.
pub const METRICS_EVERY_MS: u64 = 60_000;

impl Config {
    /// How often a digest is due (summary lines, metrics), if ever while the program runs.
    pub fn digest_every_ms(&self) -> Option<u64> {
        self.summary_every_ms
            .or(self.metrics.as_ref().map(|_| METRICS_EVERY_MS))
    }

    /// Whether events are counted (for a summary or for metrics).
    pub fn counts(&self) -> bool {
        self.summary || self.metrics.is_some()
    }
}

/// An interval: a number and `ms`, `s`, `m` or `h` (`250ms`, `5s`, `1.5m`, `1h`), in
/// milliseconds, at least 1 ms and at most a week.
pub fn parse_interval(v: &str) -> Option<u64> {
    let ms = crate::policy::faults::scaled(v, &[("ms", 1.0), ("s", 1e3), ("m", 60e3), ("h", 3600e3)])?;
    (1.0..=7.0 * 86400e3).contains(&ms).then_some(ms as u64)
}

/// `BURST/INTERVAL` (`10/5s`), or `0` for no limit.
pub fn parse_rate(v: &str) -> Result<Option<Rate>, &'static str> {
    let v = v.trim();
    if v == "0" {
        return Ok(None);
    }
    let (b, i) = v
        .split_once('/')
        .ok_or("expected BURST/INTERVAL (e.g. 10/5s) or 0, got")?;
    let burst: u32 = b
        .trim()
        .parse()
        .map_err(|_| "expected a whole number of lines before '/', got")?;
    let interval_ms = parse_interval(i).ok_or("expected an interval after '/' (ms, s, m or h: e.g. 5s), got")?;
    if burst == 0 {
        return Err("expected at least 1 line in at least 1ms (0 alone turns the limit off), got");
    }
    Ok(Some(Rate { burst, interval_ms }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub rules: std::borrow::Cow<'static, [Rule]>,
    pub log: LogDest,
    pub format: Format,
    pub summary: bool,
    /// `ERRSHIM_SUMMARY=DURATION`: also a digest every so often (milliseconds).
    pub summary_every_ms: Option<u64>,
    /// `ERRSHIM_LOG_RATE`; None: no limit.
    pub log_rate: Option<Rate>,
    /// `ERRSHIM_METRICS`: the metrics file's path, as bytes (`%p`: the pid).
    pub metrics: Option<Vec<u8>>,
    pub backtrace: bool,
    /// `ERRSHIM_COUNT=1`: the hooks count bytes and note the last call per socket.
    pub count: bool,
    /// The fault rules, on the heap when there are any (the set is large, and the default
    /// configuration is built on every process start).
    pub faults: Option<Box<crate::policy::faults::FaultSet>>,
    /// None: pick one at startup (and say which).
    pub seed: Option<u64>,
    /// The control file's path, as bytes.
    pub control: Option<Vec<u8>>,
    /// `ERRSHIM_CHECK_CALL` (`errshim --check --call`): the description, and the call.
    pub check_call: Option<(String, crate::policy::faults::CallProbe)>,
    pub strict: bool,
    pub level: LevelFilter,
    /// `ERRSHIM_SECCOMP=trust`.
    pub trust_seccomp: bool,
}

/// One problem with one variable. Displayed as the single line errshim prints on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub rule: Option<RuleError>,
    /// For fault rules: (rule number, rule text).
    pub rule_text: Option<(usize, String)>,
    pub token: String,
    pub problem: String,
    pub suggestion: Option<String>,
    pub hint: Option<String>,
    /// What errshim does instead, e.g. "using the default 'stderr'".
    pub fallback: String,
}

impl ConfigError {
    fn new(var: &str, token: &str, problem: &str, fallback: &str) -> Self {
        ConfigError {
            var: var.to_string(),
            rule: None,
            rule_text: None,
            token: token.to_string(),
            problem: problem.to_string(),
            suggestion: None,
            hint: None,
            fallback: fallback.to_string(),
        }
    }

    fn suggest(mut self, s: Option<&str>) -> Self {
        self.suggestion = s.map(str::to_string);
        self
    }

    fn hint(mut self, h: Option<String>) -> Self {
        self.hint = h;
        self
    }
}

impl fmt::Display for ConfigError {
    /// One line: everything quoted from the environment is escaped (`escape`), so that no value
    /// can break the line or forge another.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errshim: config error: ")?;
        let var = esc(&self.var);
        match &self.rule {
            Some(r) => write!(
                f,
                "{} '{}' in rule {} of {var} ('{}')",
                esc(&r.problem),
                esc(&r.token),
                r.rule,
                esc(&r.rule_text)
            )?,
            None => match &self.rule_text {
                Some((n, text)) => write!(
                    f,
                    "{} '{}' in rule {n} of {var} ('{}')",
                    esc(&self.problem),
                    esc(&self.token),
                    esc(text)
                )?,
                None => write!(f, "{} '{}' in {var}", esc(&self.problem), esc(&self.token))?,
            },
        }
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean {}?", esc(s))?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {}", esc(h))?;
        }
        write!(f, "; {}", esc(&self.fallback))
    }
}

/// A boolean variable's value: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off` (any case,
/// blanks around it), empty for false; None for anything else. Allocates nothing (the
/// constructor asks it about `ERRSHIM_DISABLE` before anything else).
pub fn truth(value: &[u8]) -> Option<bool> {
    let v = value.trim_ascii();
    let is = |w: &str| v.eq_ignore_ascii_case(w.as_bytes());
    if ["1", "true", "yes", "on"].into_iter().any(is) {
        Some(true)
    } else if v.is_empty() || ["0", "false", "no", "off"].into_iter().any(is) {
        Some(false)
    } else {
        None
    }
}

fn bool_var(name: &str, value: &str, errors: &mut Vec<ConfigError>) -> bool {
    match truth(value.as_bytes()) {
        Some(b) => b,
        None => {
            errors.push(ConfigError::new(
                name,
                value,
                "expected 1 or 0, got",
                "treating it as 0",
            ));
            false
        }
    }
}

/// How the configuration reads the environment: a variable's value as bytes, if set (values
/// need not be UTF-8; paths are kept as bytes, text variables must be UTF-8).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<Vec<u8>>;

/// Outside bytes as error text: as they are when they are UTF-8 (`Display` escapes control
/// characters), else escaped now.
fn shown(b: &[u8]) -> String {
    match core::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => Esc(b).to_string(),
    }
}

/// A text variable's value; a value that is not UTF-8 is an error (named, escaped) and counts
/// as unset.
fn text(get: Lookup, name: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    let v = get(name)?;
    match String::from_utf8(v) {
        Ok(s) => Some(s),
        Err(e) => {
            let shown = Esc(e.as_bytes()).to_string();
            errors.push(ConfigError::new(name, &shown, "not UTF-8 text", "using its default"));
            None
        }
    }
}

/// Whether `ERRSHIM_DISABLE` turns errshim off. Checked before anything else is parsed.
pub fn disabled(get: Lookup) -> bool {
    get("ERRSHIM_DISABLE").is_some_and(|v| bool_var("ERRSHIM_DISABLE", &String::from_utf8_lossy(&v), &mut Vec::new()))
}

fn cmd_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|s| s.trim_ascii())
        .filter(|s| !s.is_empty())
}

/// Whether errshim acts in a process called `names` (its `comm` and the basename of its
/// argv[0], as bytes), by `ERRSHIM_ONLY_CMDS` / `ERRSHIM_SKIP_CMDS`. Both set is a
/// configuration error (reported by `from_lookup`); errshim then acts everywhere.
pub fn acts_in(get: Lookup, names: &[&[u8]]) -> bool {
    let only = get("ERRSHIM_ONLY_CMDS").filter(|v| cmd_list(v).next().is_some());
    let skip = get("ERRSHIM_SKIP_CMDS").filter(|v| cmd_list(v).next().is_some());
    let listed = |v: &[u8]| cmd_list(v).any(|c| names.iter().any(|n| !n.is_empty() && *n == c));
    match (only, skip) {
        (Some(o), None) => listed(&o),
        (None, Some(s)) => !listed(&s),
        _ => true,
    }
}

/// Parses `ERRSHIM_LOG`; on error, the hint and the closest keyword.
pub fn parse_log(value: &[u8]) -> Result<LogDest, (String, Option<&'static str>)> {
    let v = value.trim_ascii();
    match v {
        b"" | b"stderr" => Ok(LogDest::Stderr),
        b"off" => Ok(LogDest::Off),
        b"syslog" => Ok(LogDest::Syslog(b"/dev/log".to_vec())),
        _ if v.starts_with(b"syslog:") && v.len() > 7 => Ok(LogDest::Syslog(v[7..].to_vec())),
        b"journal" => Ok(LogDest::Journal(b"/run/systemd/journal/socket".to_vec())),
        _ if v.starts_with(b"journal:") && v.len() > 8 => Ok(LogDest::Journal(v[8..].to_vec())),
        _ if v.contains(&b'/') => Ok(LogDest::File(v.to_vec())),
        _ => Err((
            "ERRSHIM_LOG is stderr, off, syslog[:PATH], journal[:PATH], or a file path containing '/' (e.g. ./errshim.log)"
                .to_string(),
            suggest::closest(&String::from_utf8_lossy(v), ["stderr", "off", "syslog", "journal"]),
        )),
    }
}

pub fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "" | "warn" | "warning" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

impl Config {
    /// The fault rules of `ERRSHIM_FAULTS` (none by default).
    pub fn fault_set(&self) -> &crate::policy::faults::FaultSet {
        self.faults
            .as_deref()
            .unwrap_or(&crate::policy::faults::FaultSet::EMPTY)
    }

    /// The configuration with every variable at its default (no rule parsing beyond the
    /// built-in default rule).
    #[link_section = ".text.errshim_startup"]
    pub fn defaults() -> Config {
        Config {
            rules: std::borrow::Cow::Borrowed(rules::DEFAULTS),
            log: LogDest::Stderr,
            format: Format::Text,
            summary: false,
            summary_every_ms: None,
            log_rate: Some(DEFAULT_RATE),
            metrics: None,
            backtrace: false,
            count: false,
            faults: None,
            seed: None,
            control: None,
            check_call: None,
            strict: false,
            level: LevelFilter::Warn,
            trust_seccomp: false,
        }
    }
}

/// Builds the configuration from a variable lookup and the names of all variables that are
/// set. Never fails: each bad variable yields one error and falls back to its default.
pub fn from_lookup(get: Lookup, set_names: &[Vec<u8>]) -> (Config, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let known = || VARIABLES.iter().map(|(v, _, _)| *v);

    for name in set_names.iter().filter(|n| n.starts_with(b"ERRSHIM_")) {
        if !known().any(|v| v.as_bytes() == name.as_slice()) {
            let shown = shown(name);
            errors.push(
                ConfigError::new(&shown, &shown, "unknown variable", "ignoring it")
                    .suggest(suggest::closest(&shown, known())),
            );
        }
    }

    let default_rules = || std::borrow::Cow::Borrowed(rules::DEFAULTS);
    let rules = match text(get, "ERRSHIM_RULES", &mut errors) {
        None => default_rules(),
        Some(spec) => rules::parse_rules_or_additions(&spec)
            .map(std::borrow::Cow::Owned)
            .unwrap_or_else(|e| {
                let fallback = format!("using the default rules '{}'", rules::DEFAULT_RULES);
                let mut err = ConfigError::new("ERRSHIM_RULES", &e.token, &e.problem, &fallback)
                    .suggest(e.suggestion)
                    .hint(e.hint.map(str::to_string));
                err.rule = Some(e);
                errors.push(err);
                default_rules()
            }),
    };

    let log = match get("ERRSHIM_LOG") {
        None => LogDest::Stderr,
        Some(v) => parse_log(&v).unwrap_or_else(|(hint, s)| {
            let shown = shown(&v);
            let e = ConfigError::new(
                "ERRSHIM_LOG",
                &shown,
                "unknown destination",
                "using the default 'stderr'",
            );
            errors.push(e.suggest(s).hint(Some(hint)));
            LogDest::Stderr
        }),
    };

    let flag =
        |name: &str, errors: &mut Vec<ConfigError>| text(get, name, errors).is_some_and(|v| bool_var(name, &v, errors));
    let strict = flag("ERRSHIM_STRICT", &mut errors);
    let nonempty = |k: &str| get(k).is_some_and(|v| cmd_list(&v).next().is_some());
    if nonempty("ERRSHIM_ONLY_CMDS") && nonempty("ERRSHIM_SKIP_CMDS") {
        let e = ConfigError::new(
            "ERRSHIM_ONLY_CMDS",
            "ERRSHIM_SKIP_CMDS",
            "cannot be set together with",
            "acting in every process",
        );
        errors.push(e.hint(Some("set one of them".to_string())));
    }
    // ERRSHIM_SUMMARY: a boolean, or a duration (a digest every so often, and at exit).
    let (summary, summary_every_ms) = match text(get, "ERRSHIM_SUMMARY", &mut errors) {
        None => (false, None),
        Some(v) => match parse_interval(&v) {
            Some(ms) => (true, Some(ms)),
            None => (bool_var("ERRSHIM_SUMMARY", &v, &mut errors), None),
        },
    };
    let log_rate = match text(get, "ERRSHIM_LOG_RATE", &mut errors) {
        None => Some(DEFAULT_RATE),
        Some(v) => parse_rate(&v).unwrap_or_else(|problem| {
            let e = ConfigError::new("ERRSHIM_LOG_RATE", v.trim(), problem, "using the default '10/5s'");
            errors.push(e);
            Some(DEFAULT_RATE)
        }),
    };
    let metrics = get("ERRSHIM_METRICS").filter(|v| !v.trim_ascii().is_empty());
    if let Some(m) = metrics.as_ref().filter(|m| !m.contains(&b'/')) {
        let shown = shown(m);
        errors.push(
            ConfigError::new(
                "ERRSHIM_METRICS",
                &shown,
                "expected a file path containing '/', got",
                "writing no metrics",
            )
            .hint(Some("e.g. /var/lib/node_exporter/errshim-%p.prom".to_string())),
        );
    }
    let metrics = metrics.filter(|m| m.contains(&b'/'));
    let backtrace = flag("ERRSHIM_BACKTRACE", &mut errors);
    let count = flag("ERRSHIM_COUNT", &mut errors);

    let faults = text(get, "ERRSHIM_FAULTS", &mut errors).map(|spec| {
        Box::new(crate::policy::faults::parse(&spec).unwrap_or_else(|e| {
            let mut err = ConfigError::new("ERRSHIM_FAULTS", e.token.as_str(), e.problem, "injecting no faults");
            err.suggestion = e.suggestion.map(str::to_string);
            err.rule_text = Some((e.rule, e.rule_text.as_str().to_string()));
            errors.push(err);
            crate::policy::faults::FaultSet::EMPTY
        }))
    });
    let seed = text(get, "ERRSHIM_SEED", &mut errors).and_then(|v| match v.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            errors.push(ConfigError::new(
                "ERRSHIM_SEED",
                &v,
                "expected a whole number, got",
                "using a random seed",
            ));
            None
        }
    });
    let control = get("ERRSHIM_CONTROL").filter(|v| !v.trim_ascii().is_empty());
    let check_call =
        text(get, "ERRSHIM_CHECK_CALL", &mut errors).and_then(|v| match crate::policy::faults::parse_probe(&v) {
            Ok(p) => Some((v.trim().to_string(), p)),
            Err((problem, token, suggestion)) => {
                let e = ConfigError::new("ERRSHIM_CHECK_CALL", &token, problem, "saying no verdict");
                errors.push(e.suggest(suggestion));
                None
            }
        });

    let format = match text(get, "ERRSHIM_FORMAT", &mut errors).as_deref().map(str::trim) {
        None | Some("") | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(v) => {
            let e = ConfigError::new("ERRSHIM_FORMAT", v, "unknown format", "using the default 'text'");
            errors.push(e.suggest(suggest::closest(v, ["text", "json"])));
            Format::Text
        }
    };

    let level = match text(get, "ERRSHIM_LOG_LEVEL", &mut errors) {
        None => LevelFilter::Warn,
        Some(v) => parse_level(&v).unwrap_or_else(|| {
            let levels = ["off", "error", "warn", "info", "debug"];
            let e = ConfigError::new("ERRSHIM_LOG_LEVEL", &v, "unknown level", "using the default 'warn'");
            errors.push(e.suggest(suggest::closest(&v, levels)));
            LevelFilter::Warn
        }),
    };

    let trust_seccomp = match text(get, "ERRSHIM_SECCOMP", &mut errors).as_deref().map(str::trim) {
        None | Some("") | Some("strict") => false,
        Some("trust") => true,
        Some(v) => {
            let e = ConfigError::new("ERRSHIM_SECCOMP", v, "unknown mode", "using the default 'strict'");
            errors.push(e.suggest(suggest::closest(v, ["strict", "trust"])));
            false
        }
    };

    // Parsed for its errors only; `disabled()` decides before this function runs.
    if let Some(v) = text(get, "ERRSHIM_DISABLE", &mut errors) {
        bool_var("ERRSHIM_DISABLE", &v, &mut errors);
    }

    (
        Config {
            rules,
            log,
            format,
            summary,
            summary_every_ms,
            log_rate,
            metrics,
            backtrace,
            count,
            faults,
            seed,
            control,
            check_call,
            strict,
            level,
            trust_seccomp,
        },
        errors,
    )
}

impl Config {
    /// The effective configuration, one line per item, for `ERRSHIM_LOG_LEVEL=info` and
    /// `scripts/errshim --check`.
    /// When `ERRSHIM_RULES` replaced the default rules so that shutdown's ENOTCONN is no longer
    /// suppressed (the trap of writing `*:*:log` to see more), what to say at startup. Not for
    /// rules set empty on purpose (pure pass-through).
    pub fn replaced_default(&self) -> Option<&'static str> {
        if self.rules.is_empty() || self.rules.starts_with(rules::DEFAULTS) {
            return None;
        }
        let decided = rules::decide(&self.rules, rules::Call::Shutdown, libc::ENOTCONN, || {
            crate::sys::socket::Kind::Tcp4
        });
        // Suppressed, or decided by a rule that names shutdown or ENOTCONN itself (not only
        // `*:*`): what the user meant.
        let meant = decided.is_some_and(|(_, r)| {
            matches!(r.action, rules::Action::Ignore | rules::Action::Quiet)
                || r.calls != rules::CallSet::ANY
                || matches!(&r.errnos, rules::ErrnoSet::List(_))
        });
        (!meant).then_some(
            "ERRSHIM_RULES replaces the default rules: shutdown's ENOTCONN is no longer suppressed \
             (a leading '+' adds rules to the default instead: ERRSHIM_RULES='+...')",
        )
    }

    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match &self.log {
            LogDest::Stderr => "log: stderr".to_string(),
            LogDest::Off => "log: off (rules still apply)".to_string(),
            LogDest::File(p) => format!("log: file {}", Esc(p)),
            LogDest::Syslog(p) => format!("log: syslog socket {}", Esc(p)),
            LogDest::Journal(p) => format!("log: journald socket {} (native protocol)", Esc(p)),
        });
        out.push(match self.log_rate {
            Some(r) => format!(
                "log rate: at most {} line(s) per kind of event every {} ms",
                r.burst, r.interval_ms
            ),
            None => "log rate: no limit".to_string(),
        });
        if let Some(ms) = self.summary_every_ms {
            out.push(format!("digest: every {ms} ms while the program runs"));
        }
        if let Some(m) = &self.metrics {
            out.push(format!("metrics: {}", Esc(m)));
        }
        out.push(format!(
            "format: {}; summary at exit: {}; backtraces: {}; per-call byte counts: {}",
            if self.format == Format::Json { "json" } else { "text" },
            if self.summary { "on" } else { "off" },
            if self.backtrace { "on" } else { "off" },
            if self.count { "on" } else { "off" }
        ));
        if self.rules.is_empty() {
            out.push("rules: none (pure pass-through)".to_string());
        }
        for (i, r) in self.rules.iter().enumerate() {
            let calls: Vec<&str> = r.calls.iter().map(|c| c.name()).collect();
            let calls = if r.calls == rules::CallSet::ANY {
                "any call".to_string()
            } else {
                calls.join(",")
            };
            let errnos = match &r.errnos {
                rules::ErrnoSet::Any => "any errno".to_string(),
                rules::ErrnoSet::List(l) => l
                    .iter()
                    .map(|&e| crate::sys::errno::Name(e).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let what = match r.action {
                rules::Action::Pass => "leave the result, log nothing".to_string(),
                rules::Action::Log => "leave the result, log an event".to_string(),
                rules::Action::Ignore => "report success (0) and log an event".to_string(),
                rules::Action::Quiet => "report success (0), log nothing".to_string(),
                rules::Action::Map(e) => {
                    format!("fail with {} instead, log an event", crate::sys::errno::Name(e))
                }
                rules::Action::Remembered => {
                    "answer with the peer remembered from accept or connect where it still describes the socket, log an event".to_string()
                }
            };
            out.push(format!(
                "rule {}: {} failing with {} on fd={}: {}",
                i + 1,
                calls,
                errnos,
                r.fd.name(),
                what
            ));
        }
        for (i, r) in self.fault_set().rules().iter().enumerate() {
            out.push(format!("fault rule {}: {}", i + 1, crate::policy::faults::explain(r)));
        }
        if let Some((text, call)) = &self.check_call {
            for (i, r) in self.fault_set().rules().iter().enumerate() {
                let verdict = crate::policy::faults::verdict(r, call);
                out.push(format!("fault rule {} on '{}': {verdict}", i + 1, esc(text)));
            }
        }
        if let Some(c) = &self.control {
            out.push(format!(
                "fault rules from the control file {} (re-read when it changes, checked at most every 100 ms)",
                Esc(c)
            ));
        }
        if !self.fault_set().rules().is_empty() || self.control.is_some() {
            out.push(match self.seed {
                Some(s) => format!("seed: {s}"),
                None => "seed: random, chosen at startup and logged".to_string(),
            });
        }
        out.push(format!("strict: {}", if self.strict { "on" } else { "off" }));
        out.push(format!(
            "seccomp: {}",
            if self.trust_seccomp {
                "trust the filter the process started under"
            } else {
                "strict (no system call of errshim's own under any seccomp filter)"
            }
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_intervals() {
        assert_eq!(parse_interval("250ms"), Some(250));
        assert_eq!(parse_interval("1.5m"), Some(90_000));
        assert_eq!(parse_interval("1h"), Some(3_600_000));
        for bad in ["", "5", "5parsecs", "0s", "8d", "-1s"] {
            assert_eq!(parse_interval(bad), None, "{bad:?}");
        }
        assert_eq!(parse_rate("0"), Ok(None));
        assert_eq!(
            parse_rate(" 3/1h "),
            Ok(Some(Rate {
                burst: 3,
                interval_ms: 3_600_000
            }))
        );
        for bad in ["10", "0/5s", "x/5s", "10/5", "10/"] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
        let get = |k: &str| match k {
            "ERRSHIM_SUMMARY" => Some(b"60s".to_vec()),
            "ERRSHIM_METRICS" => Some(b"/tmp/m-%p.prom".to_vec()),
            _ => None,
        };
        let (c, errors) = from_lookup(&get, &[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(c.summary && c.summary_every_ms == Some(60_000));
        assert_eq!(c.digest_every_ms(), Some(60_000));
        assert_eq!(c.log_rate, Some(DEFAULT_RATE));
        assert!(c.counts());
    }
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> (Config, Vec<ConfigError>) {
        parse_bytes(
            &vars
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect::<Vec<_>>(),
        )
    }

    fn parse_bytes(vars: &[(&[u8], &[u8])]) -> (Config, Vec<ConfigError>) {
        let map: HashMap<Vec<u8>, Vec<u8>> = vars.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let names: Vec<Vec<u8>> = map.keys().cloned().collect();
        from_lookup(&|k| map.get(k.as_bytes()).cloned(), &names)
    }

    #[test]
    fn defaults() {
        let (c, e) = parse(&[]);
        assert!(e.is_empty());
        assert_eq!(c.rules, rules::parse_rules(rules::DEFAULT_RULES).unwrap());
        assert_eq!(c.log, LogDest::Stderr);
        assert!(!c.strict);
        assert_eq!(c.level, LevelFilter::Warn);
    }

    #[test]
    fn empty_rules_mean_none() {
        let (c, e) = parse(&[("ERRSHIM_RULES", "")]);
        assert!(e.is_empty() && c.rules.is_empty());
    }

    #[test]
    fn bad_rules_fall_back_with_one_line() {
        let (c, e) = parse(&[("ERRSHIM_RULES", "close,shutdown:ENOTCON:ignore")]);
        assert_eq!(c.rules, rules::parse_rules(rules::DEFAULT_RULES).unwrap());
        assert_eq!(e.len(), 1);
        let line = e[0].to_string();
        assert!(
            line.contains("unknown errno 'ENOTCON' in rule 1 of ERRSHIM_RULES"),
            "{line}"
        );
        assert!(line.contains("did you mean ENOTCONN?"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn log_destinations() {
        assert_eq!(
            parse(&[("ERRSHIM_LOG", "syslog")]).0.log,
            LogDest::Syslog(b"/dev/log".to_vec())
        );
        assert_eq!(
            parse(&[("ERRSHIM_LOG", "syslog:/run/x.sock")]).0.log,
            LogDest::Syslog(b"/run/x.sock".to_vec())
        );
        let (c, e) = parse(&[
            ("ERRSHIM_FORMAT", "jsno"),
            ("ERRSHIM_SUMMARY", "1"),
            ("ERRSHIM_BACKTRACE", "yes"),
            ("ERRSHIM_COUNT", "1"),
        ]);
        assert_eq!(
            (c.format, c.summary, c.backtrace, c.count),
            (Format::Text, true, true, true)
        );
        assert_eq!(e[0].suggestion.as_deref(), Some("json"));
        assert!(!parse(&[]).0.count, "per-call counts are off by default");
        let (c, e) = parse(&[("ERRSHIM_COUNT", "on please")]);
        assert!(!c.count);
        assert!(e[0].to_string().contains("ERRSHIM_COUNT"), "{}", e[0]);
        assert_eq!(parse(&[("ERRSHIM_FORMAT", "json")]).0.format, Format::Json);
        assert_eq!(parse(&[("ERRSHIM_LOG", "off")]).0.log, LogDest::Off);
        assert_eq!(
            parse(&[("ERRSHIM_LOG", "/tmp/e-%p.log")]).0.log,
            LogDest::File(b"/tmp/e-%p.log".to_vec())
        );
        let (c, e) = parse(&[("ERRSHIM_LOG", "stdrr")]);
        assert_eq!(c.log, LogDest::Stderr);
        assert_eq!(e[0].suggestion.as_deref(), Some("stderr"));
        assert!(e[0].to_string().contains("ERRSHIM_LOG"));
    }

    #[test]
    fn other_variables() {
        fn only(v: &'static str) -> impl Fn(&str) -> Option<Vec<u8>> {
            move |k| (k == "ERRSHIM_ONLY_CMDS").then(|| v.as_bytes().to_vec())
        }
        assert!(acts_in(&only("nginx,redis-server"), &[b"nginx", b"nginx"]));
        assert!(!acts_in(&only("nginx"), &[b"bash", b"bash"]));
        assert!(
            acts_in(&only("longprogramname"), &[b"longprogramnam", b"longprogramname"]),
            "argv[0] beats 15-byte comm"
        );
        fn skip(v: &'static str) -> impl Fn(&str) -> Option<Vec<u8>> {
            move |k| (k == "ERRSHIM_SKIP_CMDS").then(|| v.as_bytes().to_vec())
        }
        assert!(!acts_in(&skip("sh, bash"), &[b"bash", b"bash"]));
        assert!(acts_in(&skip("sh,bash"), &[b"nginx", b"nginx"]));
        assert!(acts_in(&|_| None, &[b"x", b"x"]));
        let (_, e) = parse(&[("ERRSHIM_ONLY_CMDS", "a"), ("ERRSHIM_SKIP_CMDS", "b")]);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string()
                .contains("cannot be set together with 'ERRSHIM_SKIP_CMDS' in ERRSHIM_ONLY_CMDS"),
            "{}",
            e[0]
        );
        let (c, e) = parse(&[
            ("ERRSHIM_FAULTS", "read:ECONNRESET:p=0.5"),
            ("ERRSHIM_SEED", "7"),
            ("ERRSHIM_CONTROL", "/tmp/f"),
        ]);
        assert!(e.is_empty());
        assert_eq!(
            (c.fault_set().n, c.seed, c.control.as_deref()),
            (1, Some(7), Some(&b"/tmp/f"[..]))
        );
        let (c, e) = parse(&[("ERRSHIM_FAULTS", "read:EIO;write:ECONNRESTE")]);
        assert_eq!(c.fault_set().n, 0);
        let line = e[0].to_string();
        assert!(
            line.contains("'ECONNRESTE' in rule 2 of ERRSHIM_FAULTS ('write:ECONNRESTE'); did you mean ECONNRESET?"),
            "{line}"
        );
        let (_, e) = parse(&[("ERRSHIM_SEED", "x")]);
        assert_eq!(e[0].var, "ERRSHIM_SEED");
        let (c, e) = parse(&[("ERRSHIM_STRICT", "1"), ("ERRSHIM_LOG_LEVEL", "info")]);
        assert!(e.is_empty() && c.strict && c.level == LevelFilter::Info);
        let (_, e) = parse(&[("ERRSHIM_LOG_LEVEL", "inof")]);
        assert_eq!(e[0].suggestion.as_deref(), Some("info"));
        let (_, e) = parse(&[("ERRSHIM_STRICT", "maybe")]);
        assert_eq!(e[0].var, "ERRSHIM_STRICT");
        let (_, e) = parse(&[("ERRSHIM_RULSE", "")]);
        assert_eq!(
            (e[0].problem.as_str(), e[0].suggestion.as_deref()),
            ("unknown variable", Some("ERRSHIM_RULES"))
        );
        assert!(disabled(&|k| (k == "ERRSHIM_DISABLE").then(|| b"1".to_vec())));
        assert!(!disabled(&|_| None));
    }

    #[test]
    fn describe_mentions_every_rule() {
        let (c, _) = parse(&[("ERRSHIM_RULES", "read:ENOTCONN:map=ECONNRESET:fd=tcp;*:*:log")]);
        let d = c.describe().join("\n");
        assert!(
            d.contains("rule 1: read failing with ENOTCONN on fd=tcp: fail with ECONNRESET"),
            "{d}"
        );
        assert!(d.contains("rule 2: any call failing with any errno on fd=sock"), "{d}");
    }

    #[test]
    fn bytes_and_escapes() {
        // A path is bytes: 0xff stays 0xff.
        let (c, e) = parse_bytes(&[
            (b"ERRSHIM_LOG", b"/tmp/e\xff-%p.log"),
            (b"ERRSHIM_CONTROL", b"/tmp/\xfe"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.log, LogDest::File(b"/tmp/e\xff-%p.log".to_vec()));
        assert_eq!(c.control.as_deref(), Some(&b"/tmp/\xfe"[..]));
        // Text that is not UTF-8: one error naming the variable, the value escaped.
        let (c, e) = parse_bytes(&[(b"ERRSHIM_RULES", b"close:\xff:ignore")]);
        assert_eq!(c.rules, rules::parse_rules(rules::DEFAULT_RULES).unwrap());
        let line = e[0].to_string();
        assert!(
            line.contains("not UTF-8 text 'close:\\xff:ignore' in ERRSHIM_RULES"),
            "{line}"
        );
        // A newline in a value cannot forge a line of errshim's diagnostics.
        let (_, e) = parse(&[("ERRSHIM_FORMAT", "text\nerrshim: error: forged")]);
        let line = e[0].to_string();
        assert!(
            !line.contains('\n') && line.contains("text\\x0aerrshim: error: forged"),
            "{line}"
        );
        let (_, e) = parse(&[("ERRSHIM_RULES", "close:EBADF:log\r\nerrshim: x")]);
        assert!(!e[0].to_string().contains(['\n', '\r']), "{}", e[0]);
        let (_, e) = parse_bytes(&[(b"ERRSHIM_\x1b[2J", b"1")]);
        let line = e[0].to_string();
        assert!(line.contains("unknown variable 'ERRSHIM_\\x1b[2J'"), "{line}");
        // ERRSHIM_SECCOMP
        assert!(parse(&[("ERRSHIM_SECCOMP", "trust")]).0.trust_seccomp);
        assert!(!parse(&[]).0.trust_seccomp);
        let (_, e) = parse(&[("ERRSHIM_SECCOMP", "trsut")]);
        assert_eq!(e[0].suggestion.as_deref(), Some("trust"));
    }
}
