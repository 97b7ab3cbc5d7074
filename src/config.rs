//! Every `ERRSHIM_*` environment variable, parsed from plain strings by pure functions. The
//! resulting `Config` is built once, in the constructor, and never changes afterwards.

use crate::rules::{self, Rule, RuleError};
use crate::suggest;
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
        "where events go: stderr, off, syslog[:PATH], or a file path containing '/'",
    ),
    (
        "ERRSHIM_FORMAT",
        "text",
        "event format: text (one line) or json (one object per line)",
    ),
    (
        "ERRSHIM_SUMMARY",
        "0",
        "1: at exit, event counts by call, errno, action and cause, and by peer",
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
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Off,
    /// A path; `%p` in it becomes the pid of the process that writes.
    File(String),
    /// A syslog socket (`/dev/log` unless another path is given): one datagram per event.
    Syslog(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub rules: Vec<Rule>,
    pub log: LogDest,
    pub format: Format,
    pub summary: bool,
    pub backtrace: bool,
    /// `ERRSHIM_COUNT=1`: the hooks count bytes and note the last call per socket.
    pub count: bool,
    pub faults: crate::faults::FaultSet,
    /// None: pick one at startup (and say which).
    pub seed: Option<u64>,
    pub control: Option<String>,
    pub strict: bool,
    pub level: LevelFilter,
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errshim: config error: ")?;
        match &self.rule {
            Some(r) => write!(
                f,
                "{} '{}' in rule {} of {} ('{}')",
                r.problem, r.token, r.rule, self.var, r.rule_text
            )?,
            None => match &self.rule_text {
                Some((n, text)) => write!(
                    f,
                    "{} '{}' in rule {} of {} ('{}')",
                    self.problem, self.token, n, self.var, text
                )?,
                None => write!(f, "{} '{}' in {}", self.problem, self.token, self.var)?,
            },
        }
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean {s}?")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        write!(f, "; {}", self.fallback)
    }
}

fn bool_var(name: &str, value: &str, errors: &mut Vec<ConfigError>) -> bool {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => true,
        "" | "0" | "false" | "no" | "off" => false,
        _ => {
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

/// Whether `ERRSHIM_DISABLE` turns errshim off. Checked before anything else is parsed.
pub fn disabled(get: &dyn Fn(&str) -> Option<String>) -> bool {
    get("ERRSHIM_DISABLE").is_some_and(|v| bool_var("ERRSHIM_DISABLE", &v, &mut Vec::new()))
}

fn cmd_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Whether errshim acts in a process called `names` (its `comm` and the basename of its
/// argv[0]), by `ERRSHIM_ONLY_CMDS` / `ERRSHIM_SKIP_CMDS`. Both set is a configuration error
/// (reported by `from_lookup`); errshim then acts everywhere.
pub fn acts_in(get: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> bool {
    let only = get("ERRSHIM_ONLY_CMDS").filter(|v| cmd_list(v).next().is_some());
    let skip = get("ERRSHIM_SKIP_CMDS").filter(|v| cmd_list(v).next().is_some());
    let listed = |v: &str| cmd_list(v).any(|c| names.iter().any(|n| !n.is_empty() && *n == c));
    match (only, skip) {
        (Some(o), None) => listed(&o),
        (None, Some(s)) => !listed(&s),
        _ => true,
    }
}

/// In secure-execution mode (setuid, setgid, file capabilities: `getauxval(AT_SECURE)`), like
/// glibc with its own debugging variables, errshim opens no file and watches no file the
/// environment names: it logs to stderr (or syslog) only. Returns what was dropped.
pub fn restrict_for_secure_mode(cfg: &mut Config) -> Vec<&'static str> {
    let mut dropped = Vec::new();
    if let LogDest::File(_) = cfg.log {
        cfg.log = LogDest::Stderr;
        dropped.push("ERRSHIM_LOG file path (logging to stderr)");
    }
    if cfg.control.take().is_some() {
        dropped.push("ERRSHIM_CONTROL");
    }
    dropped
}

/// Parses `ERRSHIM_LOG`; on error, the hint and the closest keyword.
pub fn parse_log(value: &str) -> Result<LogDest, (String, Option<&'static str>)> {
    match value.trim() {
        "" | "stderr" => Ok(LogDest::Stderr),
        "off" => Ok(LogDest::Off),
        "syslog" => Ok(LogDest::Syslog("/dev/log".to_string())),
        v if v.starts_with("syslog:") && v.len() > 7 => Ok(LogDest::Syslog(v[7..].to_string())),
        v if v.contains('/') => Ok(LogDest::File(v.to_string())),
        v => Err((
            "ERRSHIM_LOG is stderr, off, syslog, syslog:PATH, or a file path containing '/' (e.g. ./errshim.log)"
                .to_string(),
            suggest::closest(v, ["stderr", "off", "syslog"]),
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

/// Builds the configuration from a variable lookup and the names of all variables that are
/// set. Never fails: each bad variable yields one error and falls back to its default.
pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>, set_names: &[String]) -> (Config, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let known = || VARIABLES.iter().map(|(v, _, _)| *v);

    for name in set_names.iter().filter(|n| n.starts_with("ERRSHIM_")) {
        if !known().any(|v| v == name) {
            errors.push(
                ConfigError::new(name, name, "unknown variable", "ignoring it")
                    .suggest(suggest::closest(name, known())),
            );
        }
    }

    let default_rules = || rules::parse_rules(rules::DEFAULT_RULES).unwrap_or_default();
    let rules = match get("ERRSHIM_RULES") {
        None => default_rules(),
        Some(spec) => rules::parse_rules(&spec).unwrap_or_else(|e| {
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
            let e = ConfigError::new("ERRSHIM_LOG", &v, "unknown destination", "using the default 'stderr'");
            errors.push(e.suggest(s).hint(Some(hint)));
            LogDest::Stderr
        }),
    };

    let strict = get("ERRSHIM_STRICT").is_some_and(|v| bool_var("ERRSHIM_STRICT", &v, &mut errors));
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
    let summary = get("ERRSHIM_SUMMARY").is_some_and(|v| bool_var("ERRSHIM_SUMMARY", &v, &mut errors));
    let backtrace = get("ERRSHIM_BACKTRACE").is_some_and(|v| bool_var("ERRSHIM_BACKTRACE", &v, &mut errors));
    let count = get("ERRSHIM_COUNT").is_some_and(|v| bool_var("ERRSHIM_COUNT", &v, &mut errors));

    let faults = match get("ERRSHIM_FAULTS") {
        None => crate::faults::FaultSet::EMPTY,
        Some(spec) => crate::faults::parse(&spec).unwrap_or_else(|e| {
            let mut err = ConfigError::new("ERRSHIM_FAULTS", e.token.as_str(), e.problem, "injecting no faults");
            err.suggestion = e.suggestion.map(str::to_string);
            err.rule_text = Some((e.rule, e.rule_text.as_str().to_string()));
            errors.push(err);
            crate::faults::FaultSet::EMPTY
        }),
    };
    let seed = get("ERRSHIM_SEED").and_then(|v| match v.trim().parse::<u64>() {
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
    let control = get("ERRSHIM_CONTROL").filter(|v| !v.trim().is_empty());

    let format = match get("ERRSHIM_FORMAT").as_deref().map(str::trim) {
        None | Some("") | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(v) => {
            let e = ConfigError::new("ERRSHIM_FORMAT", v, "unknown format", "using the default 'text'");
            errors.push(e.suggest(suggest::closest(v, ["text", "json"])));
            Format::Text
        }
    };

    let level = match get("ERRSHIM_LOG_LEVEL") {
        None => LevelFilter::Warn,
        Some(v) => parse_level(&v).unwrap_or_else(|| {
            let levels = ["off", "error", "warn", "info", "debug"];
            let e = ConfigError::new("ERRSHIM_LOG_LEVEL", &v, "unknown level", "using the default 'warn'");
            errors.push(e.suggest(suggest::closest(&v, levels)));
            LevelFilter::Warn
        }),
    };

    // Parsed for its errors only; `disabled()` decides before this function runs.
    if let Some(v) = get("ERRSHIM_DISABLE") {
        bool_var("ERRSHIM_DISABLE", &v, &mut errors);
    }

    (
        Config {
            rules,
            log,
            format,
            summary,
            backtrace,
            count,
            faults,
            seed,
            control,
            strict,
            level,
        },
        errors,
    )
}

impl Config {
    /// The effective configuration, one line per item, for `ERRSHIM_LOG_LEVEL=info` and
    /// `scripts/errshim --check`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match &self.log {
            LogDest::Stderr => "log: stderr".to_string(),
            LogDest::Off => "log: off (rules still apply)".to_string(),
            LogDest::File(p) => format!("log: file {p}"),
            LogDest::Syslog(p) => format!("log: syslog socket {p}"),
        });
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
                    .map(|&e| crate::errno::Name(e).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let what = match r.action {
                rules::Action::Pass => "leave the result, log nothing".to_string(),
                rules::Action::Log => "leave the result, log an event".to_string(),
                rules::Action::Ignore => "report success (0) and log an event".to_string(),
                rules::Action::Quiet => "report success (0), log nothing".to_string(),
                rules::Action::Map(e) => {
                    format!("fail with {} instead, log an event", crate::errno::Name(e))
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
        for (i, r) in self.faults.rules().iter().enumerate() {
            out.push(format!("fault rule {}: {}", i + 1, crate::faults::explain(r)));
        }
        if let Some(c) = &self.control {
            out.push(format!(
                "fault rules from the control file {c} (re-read when it changes, checked at most every 100 ms)"
            ));
        }
        if !self.faults.rules().is_empty() || self.control.is_some() {
            out.push(match self.seed {
                Some(s) => format!("seed: {s}"),
                None => "seed: random, chosen at startup and logged".to_string(),
            });
        }
        out.push(format!("strict: {}", if self.strict { "on" } else { "off" }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> (Config, Vec<ConfigError>) {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let names: Vec<String> = map.keys().cloned().collect();
        from_lookup(&|k| map.get(k).cloned(), &names)
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
            LogDest::Syslog("/dev/log".into())
        );
        assert_eq!(
            parse(&[("ERRSHIM_LOG", "syslog:/run/x.sock")]).0.log,
            LogDest::Syslog("/run/x.sock".into())
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
            LogDest::File("/tmp/e-%p.log".into())
        );
        let (c, e) = parse(&[("ERRSHIM_LOG", "stdrr")]);
        assert_eq!(c.log, LogDest::Stderr);
        assert_eq!(e[0].suggestion.as_deref(), Some("stderr"));
        assert!(e[0].to_string().contains("ERRSHIM_LOG"));
    }

    #[test]
    fn other_variables() {
        fn only(v: &'static str) -> impl Fn(&str) -> Option<String> {
            move |k| (k == "ERRSHIM_ONLY_CMDS").then(|| v.to_string())
        }
        assert!(acts_in(&only("nginx,redis-server"), &["nginx", "nginx"]));
        assert!(!acts_in(&only("nginx"), &["bash", "bash"]));
        assert!(
            acts_in(&only("longprogramname"), &["longprogramnam", "longprogramname"]),
            "argv[0] beats 15-byte comm"
        );
        fn skip(v: &'static str) -> impl Fn(&str) -> Option<String> {
            move |k| (k == "ERRSHIM_SKIP_CMDS").then(|| v.to_string())
        }
        assert!(!acts_in(&skip("sh, bash"), &["bash", "bash"]));
        assert!(acts_in(&skip("sh,bash"), &["nginx", "nginx"]));
        assert!(acts_in(&|_| None, &["x", "x"]));
        let (_, e) = parse(&[("ERRSHIM_ONLY_CMDS", "a"), ("ERRSHIM_SKIP_CMDS", "b")]);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string()
                .contains("cannot be set together with 'ERRSHIM_SKIP_CMDS' in ERRSHIM_ONLY_CMDS"),
            "{}",
            e[0]
        );
        let (mut c, _) = parse(&[("ERRSHIM_LOG", "/tmp/x.log"), ("ERRSHIM_CONTROL", "/tmp/f")]);
        assert_eq!(restrict_for_secure_mode(&mut c).len(), 2);
        assert_eq!((c.log, c.control), (LogDest::Stderr, None));
        let (c, e) = parse(&[
            ("ERRSHIM_FAULTS", "read:ECONNRESET:p=0.5"),
            ("ERRSHIM_SEED", "7"),
            ("ERRSHIM_CONTROL", "/tmp/f"),
        ]);
        assert!(e.is_empty());
        assert_eq!((c.faults.n, c.seed, c.control.as_deref()), (1, Some(7), Some("/tmp/f")));
        let (c, e) = parse(&[("ERRSHIM_FAULTS", "read:EIO;write:ECONNRESTE")]);
        assert_eq!(c.faults.n, 0);
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
        assert!(disabled(&|k| (k == "ERRSHIM_DISABLE").then(|| "1".to_string())));
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
}
