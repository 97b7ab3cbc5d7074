//! Shared helpers for the integration tests: every test runs a real program as a child process
//! with liberrshim.so preloaded, and looks at what the program saw and what errshim logged.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `target/<profile>`, found from the test executable (`target/<profile>/deps/test-…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

/// liberrshim.so of the same profile as this test, built fresh once per test binary: cargo
/// does not rebuild a cdylib for integration tests (nothing links it), so a plain `cargo test`
/// would otherwise run against a stale or missing library.
///
/// `ERRSHIM_TEST_LIB=/path/liberrshim.so` runs the tests against another build instead (an
/// older commit's, to show that a regression test fails there).
pub fn lib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(other) = std::env::var_os("ERRSHIM_TEST_LIB").filter(|v| !v.is_empty()) {
                let p = PathBuf::from(other);
                assert!(p.exists(), "ERRSHIM_TEST_LIB={} does not exist", p.display());
                eprintln!("\n*** running against ERRSHIM_TEST_LIB={} ***\n", p.display());
                return p;
            }
            let dir = target_dir();
            let release = dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--lib", "--quiet"]).current_dir(manifest_dir());
            if release {
                cmd.arg("--release");
            }
            if let Some(target) = dir.parent() {
                cmd.env("CARGO_TARGET_DIR", target);
            }
            let status = cmd.status().expect("running cargo build");
            assert!(status.success(), "cargo build --lib failed");
            let p = dir.join("liberrshim.so");
            assert!(p.exists(), "{} is missing after cargo build", p.display());
            p
        })
        .clone()
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether an external tool is there. Missing outside CI: say so loudly and let the caller skip.
/// Missing in CI: fail, because CI must run everything.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(!in_ci(), "{tool} is required in CI (.ci/run installs it)");
        eprintln!("\n*** SKIPPED: '{tool}' is not installed; install it to run this test ***\n");
    }
    found
}

fn build_lock() -> &'static Mutex<()> {
    static L: OnceLock<Mutex<()>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(()))
}

/// Compiles `tests/fixtures/<name>.c` (with extra cc flags) once per test binary run, into
/// `target/<profile>/fixtures/`, and returns the path of the result.
pub fn cc(name: &str, out_name: &str, flags: &[&str]) -> PathBuf {
    let _g = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = manifest_dir().join("tests/fixtures").join(format!("{name}.c"));
    let dir = target_dir().join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(out_name);
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, ()>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    if built.lock().unwrap().contains_key(&out) {
        return out;
    }
    let tmp = dir.join(format!("{out_name}.tmp{}", std::process::id()));
    let status = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-g", "-pthread"])
        .args(flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("cc must be installed");
    assert!(status.success(), "compiling {} failed", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    built.lock().unwrap().insert(out.clone(), ());
    out
}

/// A C fixture built as an ordinary program (-O2).
pub fn program(name: &str) -> PathBuf {
    cc(name, name, &["-O2"])
}

/// A C fixture built as a shared library (`lib<name>.so`).
pub fn shared_lib(name: &str) -> PathBuf {
    cc(name, &format!("lib{name}.so"), &["-O2", "-shared", "-fPIC", "-ldl"])
}

pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// errshim's event lines on stderr.
    pub fn events(&self) -> Vec<&str> {
        events(&self.stderr)
    }

    /// Lines of stdout that start with `prefix`.
    pub fn out_lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "program failed:\n{}", self.describe());
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "exit={:?} signal={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Event lines in a text (stderr or a log file).
pub fn events(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("errshim 2")).collect()
}

pub struct Cmd {
    cmd: Command,
    preload: Vec<PathBuf>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
    stderr_file: Option<PathBuf>,
}

/// A command with no inherited ERRSHIM_* or LD_PRELOAD: each test sets exactly what it means.
/// But for one: `ERRSHIM_LOG_RATE=0`, since the tests count event lines; `tests/daemon.rs`
/// tests the rate limit itself (`Cmd::default_rate`).
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ERRSHIM_") || k == "LD_PRELOAD" {
            cmd.env_remove(k);
        }
    }
    cmd.env("ERRSHIM_LOG_RATE", "0");
    cmd
}

impl Cmd {
    /// A child with no inherited ERRSHIM_* or LD_PRELOAD variables.
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        Cmd {
            cmd: clean_command(program),
            preload: Vec::new(),
            timeout: Duration::from_secs(60),
            stdin: None,
            stderr_file: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg_path(mut self, p: &Path) -> Cmd {
        self.cmd.arg(p);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }

    /// errshim's own default rate limit of lines, not the tests' `ERRSHIM_LOG_RATE=0`.
    pub fn default_rate(mut self) -> Cmd {
        self.cmd.env_remove("ERRSHIM_LOG_RATE");
        self
    }

    /// Preloads liberrshim.so.
    pub fn shim(mut self) -> Cmd {
        self.preload.insert(0, lib());
        self
    }

    /// Preloads another library after errshim.
    pub fn also_preload(mut self, lib: PathBuf) -> Cmd {
        self.preload.push(lib);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn stdin(mut self, data: &[u8]) -> Cmd {
        self.stdin = Some(data.to_vec());
        self
    }

    /// The child's stderr is this file instead of a pipe (which errshim, never blocking, may
    /// find full and drop lines into when the child writes faster than the test reads); `Run`'s
    /// stderr is the file's content.
    pub fn stderr_file(mut self, path: &Path) -> Cmd {
        self.stderr_file = Some(path.to_path_buf());
        self
    }

    pub fn run(mut self) -> Run {
        use std::os::unix::process::ExitStatusExt;
        if !self.preload.is_empty() {
            let v: Vec<String> = self.preload.iter().map(|p| p.display().to_string()).collect();
            self.cmd.env("LD_PRELOAD", v.join(":"));
        }
        self.cmd.stdout(Stdio::piped());
        match &self.stderr_file {
            Some(p) => self.cmd.stderr(std::fs::File::create(p).expect("stderr file")),
            None => self.cmd.stderr(Stdio::piped()),
        };
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        // Its own process group, so the watchdog can kill grandchildren that hold the pipes.
        std::os::unix::process::CommandExt::process_group(&mut self.cmd, 0);
        let mut child = self.cmd.spawn().expect("spawn");
        if let Some(data) = self.stdin.take() {
            use std::io::Write;
            let mut si = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = si.write_all(&data);
            });
        }
        let mut so = child.stdout.take().unwrap();
        let se = child.stderr.take();
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut se) = se {
                let _ = se.read_to_end(&mut v);
            }
            v
        });
        // A watchdog, not synchronisation: a hung child fails the test instead of hanging it.
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if start.elapsed() > self.timeout {
                // SAFETY: signals the process group this function created.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
                let err = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
                panic!(
                    "child timed out after {:?} (deadlock?)\nstdout:\n{out}\nstderr:\n{err}",
                    self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = t_err.join().unwrap();
        if let Some(p) = &self.stderr_file {
            err = std::fs::read(p).unwrap_or_default();
        }
        Run {
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }
}

/// A fresh temporary directory under target/, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = target_dir()
            .join("tmp")
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Parses the fixture output format "<scenario> <step> ret=<r> errno=<n>" into (ret, errno).
pub fn result_of(run: &Run, scenario_step: &str) -> (i64, i32) {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{scenario_step} ret=")))
        .unwrap_or_else(|| panic!("no '{scenario_step}' in output:\n{}", run.describe()));
    let field = |k: &str| -> i64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line}"))
    };
    (field("ret="), field("errno=") as i32)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server on a free port: `start(port)` returns the started server, or None when it
/// failed because another process took the port between choosing it and the server's bind
/// (having stopped what it started), and panics on any other failure. Tries 5 ports.
pub fn on_free_port<T>(mut start: impl FnMut(u16) -> Option<T>) -> (T, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(server) = start(port) {
            return (server, port);
        }
    }
    panic!("the port was taken before the server could bind it, 5 times in a row")
}

/// Aborts a connection: SO_LINGER {on, 0 s}, then close, which sends an RST.
pub fn abort_connection(s: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket this function owns and a linger structure of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
    drop(s);
}
