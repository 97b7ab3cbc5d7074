//! Real hosts that exposed errshim bugs: unmodified servers from Debian's packages, each run
//! without and with errshim (`LD_PRELOAD`), on loopback, in its own temporary directory, with
//! its own free port. Each test asserts what must not differ between the two runs; they are
//! regression tests for bugs reproduced on the build before the fix, where they fail.
//!
//! - `sshd_seccomp_sandbox_survives_failing_socket_calls`: OpenSSH's pre-authentication child
//!   runs under a seccomp filter that kills the process (SIGSYS) on any system call it does not
//!   allow. A client that resets during the key exchange makes that child's `read()` fail; with
//!   `ERRSHIM_RULES='*:*:log:fd=any'`, errshim's handling of that event called getsockopt(2),
//!   which the filter does not allow (syscall 55 in the kernel's audit record), and the child
//!   died of SIGSYS instead of logging "Connection reset by".
//! - `nginx_daemon_releases_callers_pipes` and `self_daemonizing_program_releases_callers_pipes`:
//!   a caller that captures a daemon's output (`out=$(nginx)`) reads both pipes to end of file;
//!   errshim kept a high duplicate of the original stderr in the daemon, which the daemon's
//!   close-everything loop could not close, so the caller hung as long as the daemon lived.
//! - `nginx_workers_that_drop_privileges_still_log`: nginx workers run as nobody; with
//!   `ERRSHIM_LOG=<root-owned dir>/errshim-%p.log` they could not create their per-pid file, and
//!   every event of every worker was lost.
//! - `postgres_backends_without_events_write_no_summary`: PostgreSQL forks a backend per
//!   connection; with `ERRSHIM_SUMMARY=1` every one of them wrote a summary of 0 events, in a
//!   file of its own.
//! - `apache_prefork_children_that_drop_privileges_still_log`: the same per-pid log check as for
//!   nginx, with Apache's prefork children (www-data).
//!
//! Packages (`.ci/run`): openssh-server and openssh-client, nginx-light, postgresql, apache2-bin;
//! gcc for the fixtures `subreaper.c` and `daemonize.c`. The tests run as root (sshd's
//! privilege separation, nginx's and Apache's `user`, PostgreSQL as nobody).

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// State letter and parent pid of `pid`, from /proc/<pid>/stat.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live process (a zombie has finished: it only waits to be reaped).
fn alive(pid: i32) -> bool {
    matches!(stat_of(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live descendant of `root` (children, their children, ...), from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| match stat_of(p) {
            Some((s, ppid)) if s != 'Z' && s != 'X' => Some((p, ppid)),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(p, ppid) in &table {
            if ppid == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}

/// The direct live children of `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = all_pids()
        .into_iter()
        .filter(|&p| matches!(stat_of(p), Some((s, ppid)) if ppid == pid && s != 'Z'))
        .collect();
    v.sort();
    v
}

/// The command line of `pid`, arguments joined with spaces.
fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()
}

/// A field of /proc/<pid>/status (`Uid`, `Seccomp`, ...), the text after the colon.
fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The real uid of `pid`.
fn uid_of(pid: i32) -> Option<u32> {
    status_field(pid, "Uid")?.split_whitespace().next()?.parse().ok()
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety requirement; the pids are processes this test started.
    unsafe { libc::kill(pid, sig) };
}

/// Polls `f` every 10 ms until it gives a value, for at most `within`: a watchdog around a
/// readiness signal (a pid file, a log line, a process state), never a guess at a duration.
fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every process whose command line contains `marker` (a test's own temporary directory
/// with a trailing slash: every server started here names a file in it in its arguments) and
/// all their descendants (workers, backends, per-connection processes that called setsid), and
/// repeats until none is left.
fn kill_marked(marker: &str) {
    let me = std::process::id() as i32;
    for _ in 0..50 {
        let mut victims = BTreeSet::new();
        for p in all_pids() {
            if p != me && alive(p) && cmdline(p).contains(marker) {
                victims.insert(p);
                victims.extend(descendants(p));
            }
        }
        victims.remove(&me);
        if victims.is_empty() {
            return;
        }
        for &v in &victims {
            signal(v, libc::SIGCONT);
            signal(v, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cleans up a test's processes on every exit path, a panic included: the processes that name
/// the test's directory and their descendants, then the test's own children (reaped).
struct Cleanup {
    marker: String,
    children: Vec<Child>,
}

impl Cleanup {
    fn new(dir: &TempDir) -> Cleanup {
        Cleanup {
            // With the trailing slash: ".../x-1/" is not a prefix of ".../x-12/...".
            marker: format!("{}/", dir.0.display()),
            children: Vec::new(),
        }
    }

    /// Keeps `child` to be killed and reaped at the end; returns its index.
    fn adopt(&mut self, child: Child) -> usize {
        self.children.push(child);
        self.children.len() - 1
    }

    fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    /// Waits (bounded) for child `i` to exit on its own.
    fn wait_exit(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let c = &mut self.children[i];
        poll(within, || c.try_wait().ok().flatten())
    }

    /// Kills everything now (used between retries on another port).
    fn kill_all(&mut self) {
        kill_marked(&self.marker);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Preloads errshim into `cmd` with the variables `env`.
fn with_errshim(cmd: &mut Command, env: &[(&str, String)]) {
    cmd.env("LD_PRELOAD", lib()).env("ERRSHIM_LOG_RATE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// stdin from /dev/null, stdout and stderr appended to files, its own process group.
fn to_files(cmd: &mut Command, out: &Path, err: &Path) {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    cmd.stdin(Stdio::null())
        .stdout(open(out))
        .stderr(open(err))
        .process_group(0);
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `GET path` over HTTP/1.0: (status, body).
fn http_get(port: u16, path: &str) -> Result<(u32, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("receive: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// A program at one of `paths`, else found on PATH (absolute); None after a loud skip message
/// (a failure in CI) when it is missing.
fn find_tool(name: &str, paths: &[&str]) -> Option<PathBuf> {
    if let Some(p) = paths.iter().map(Path::new).find(|p| p.exists()) {
        return Some(p.to_path_buf());
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && found.starts_with('/') {
        return Some(PathBuf::from(found));
    }
    require_tool(name);
    None
}

/// uid and primary gid of a user (getpwnam_r: the tests run in parallel threads).
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: a NUL-terminated name, a passwd and a buffer owned here, with the buffer's size.
    let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

fn group_exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: an all-zero group is a valid value for getgrnam_r to fill.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as for getpwnam_r above.
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut found) };
    rc == 0 && !found.is_null()
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// These tests start servers as root that drop privileges; as another user they cannot run.
fn require_root(what: &str) -> bool {
    if !is_root() {
        assert!(!in_ci(), "{what} must run as root in CI");
        eprintln!("\n*** SKIPPED: {what} needs root ***\n");
    }
    is_root()
}

/// errshim's per-process log files (`errshim-<pid>.log`) in `dir`: pid to content.
fn errshim_files(dir: &Path) -> BTreeMap<i32, String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let p = e.ok()?.path();
                let name = p.file_name()?.to_str()?.to_string();
                let pid = name.strip_prefix("errshim-")?.strip_suffix(".log")?.parse().ok()?;
                Some((pid, read(&p)))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// The files in `dir`, for failure messages.
fn listing(dir: &Path) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let m = e.metadata().ok()?;
                Some(format!(
                    "{} (uid {}, mode {:o}, {} bytes)",
                    e.file_name().to_string_lossy(),
                    m.uid(),
                    m.mode() & 0o7777,
                    m.len()
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.is_empty() {
        "(no files)".into()
    } else {
        v.join(", ")
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// 1. OpenSSH's seccomp sandbox
// ---------------------------------------------------------------------------------------------

const SSH_LOGINS: usize = 5;
const SSH_RESETS: usize = 5;

struct SshTools {
    sshd: PathBuf,
    ssh: PathBuf,
    keygen: PathBuf,
    subreaper: PathBuf,
}

/// What one sshd run showed.
struct SshdRun {
    /// Each login's exit code and stderr.
    logins: Vec<(Option<i32>, String)>,
    /// The client ports of the connections that reset during the key exchange.
    reset_ports: Vec<u16>,
    /// How many of those connections had a process under a seccomp filter (`Seccomp: 2` in
    /// /proc/<pid>/status) while the key exchange was under way.
    sandboxed: usize,
    /// The subreaper's report: how every orphaned process of sshd's tree ended.
    reaped: String,
    /// sshd's own log (`-E`, LogLevel DEBUG3).
    log: String,
    /// Whether liberrshim.so was mapped in the listening sshd.
    mapped: bool,
    errshim_logs: BTreeMap<i32, String>,
    /// Connections that never finished (their processes still there after 20 s).
    stuck: Vec<String>,
}

fn keygen(tools: &SshTools, path: &Path) {
    let out = clean_command(&tools.keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "errshim-real-hosts", "-f"])
        .arg(path)
        .output()
        .expect("running ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn sshd_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey {d}/host_key\n\
         PidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         PermitRootLogin yes\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         LogLevel DEBUG3\n"
    )
}

/// A client that gets as far as the server's first binary packet (its KEXINIT, sent by the
/// pre-authentication child once its seccomp filter is attached), sees whether a process of
/// that connection runs under a seccomp filter, and resets. The child is then blocked reading
/// from the client, so its read() fails with ECONNRESET, inside the sandbox. Returns the
/// client's port and whether a sandboxed process was seen.
fn reset_during_kex(port: u16, listener: i32) -> Result<(u16, bool), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let client_port = s.local_addr().unwrap().port();
    // The server's identification line, byte by byte (nothing follows it until ours is sent).
    let mut banner = Vec::new();
    let mut b = [0u8; 1];
    while !banner.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(1) => banner.push(b[0]),
            other => return Err(format!("reading the banner: {other:?} after {banner:?}")),
        }
    }
    if !banner.starts_with(b"SSH-2.0-") {
        return Err(format!("banner {:?}", String::from_utf8_lossy(&banner)));
    }
    s.write_all(b"SSH-2.0-errshim_real_hosts_reset\r\n")
        .map_err(|e| format!("sending the banner: {e}"))?;
    let mut packet_start = [0u8; 5];
    s.read_exact(&mut packet_start)
        .map_err(|e| format!("reading the server's first packet: {e}"))?;
    let sandboxed = poll(Duration::from_secs(5), || {
        descendants(listener)
            .into_iter()
            .any(|p| status_field(p, "Seccomp").as_deref() == Some("2"))
            .then_some(())
    })
    .is_some();
    abort_connection(s);
    Ok((client_port, sandboxed))
}

/// One login with the client key, running `true` (the client is never preloaded).
fn ssh_login(tools: &SshTools, dir: &TempDir, port: u16) -> (Option<i32>, String) {
    let key = dir.path("client_key");
    let r = Cmd::new(&tools.ssh)
        .args(["-F", "/dev/null", "-i"])
        .arg_path(&key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=20",
            "-p",
            &port.to_string(),
            "root@127.0.0.1",
            "true",
        ])
        .timeout(Duration::from_secs(60))
        .run();
    (r.code, r.stderr)
}

/// sshd (`-D -e -f <config> -E <log>`) under the subreaper, without or with errshim
/// (`ERRSHIM_RULES='*:*:log:fd=any'`, `ERRSHIM_LOG=<dir>/errshim-%p.log`): five times, a client
/// that resets during the key exchange, then a login. Each connection is waited for until all
/// its processes are gone.
fn run_sshd(tools: &SshTools, shim: bool) -> SshdRun {
    let dir = TempDir::new(if shim { "sshd-shim" } else { "sshd-bare" });
    keygen(tools, &dir.path("host_key"));
    keygen(tools, &dir.path("client_key"));
    std::fs::copy(dir.path("client_key.pub"), dir.path("authorized_keys")).unwrap();
    chmod(&dir.path("authorized_keys"), 0o600);
    let conf = dir.path("sshd_config");
    let log = dir.path("sshd.log");
    let reaped = dir.path("reaped.txt");
    let errshim_log = dir.path("errshim-%p.log").display().to_string();
    let mut cleanup = Cleanup::new(&dir);

    let (listener, port) = on_free_port(|port| {
        std::fs::write(&conf, sshd_config(&dir.0, port)).unwrap();
        for stale in [dir.path("sshd.pid"), reaped.clone(), log.clone()] {
            let _ = std::fs::remove_file(stale);
        }
        let mut cmd = clean_command(&tools.subreaper);
        cmd.arg(&reaped)
            .arg(&tools.sshd)
            .args(["-D", "-e", "-f"])
            .arg(&conf)
            .arg("-E")
            .arg(&log);
        if shim {
            cmd.env("SUBREAPER_PRELOAD", lib())
                .env("ERRSHIM_RULES", "*:*:log:fd=any")
                .env("ERRSHIM_LOG", &errshim_log);
        }
        to_files(&mut cmd, &dir.path("sshd.stdout"), &dir.path("sshd.stderr"));
        cleanup.adopt(cmd.spawn().expect("starting sshd under the subreaper"));
        // Ready: sshd writes its pid file once it listens, and logs "Server listening".
        let ready = poll(Duration::from_secs(20), || {
            if read(&reaped).contains(" main") {
                return Some(None);
            }
            let pid: i32 = read(&dir.path("sshd.pid")).trim().parse().ok()?;
            let listening = format!("Server listening on 127.0.0.1 port {port}.");
            (alive(pid) && read(&log).contains(&listening)).then_some(Some(pid))
        });
        match ready {
            Some(Some(pid)) => Some(pid),
            Some(None) if read(&log).contains("Address already in use") => {
                cleanup.kill_all();
                None
            }
            _ => panic!(
                "sshd did not start (port {port}):\n--- sshd.log ---\n{}\n--- subreaper ---\n{}\n--- stderr ---\n{}",
                tail(&read(&log), 30),
                read(&reaped),
                read(&dir.path("sshd.stderr"))
            ),
        }
    });
    let maps = std::fs::read_to_string(format!("/proc/{listener}/maps")).unwrap_or_default();
    let mapped = maps.contains("liberrshim");

    let idle = |what: String, stuck: &mut Vec<String>| {
        if poll(Duration::from_secs(20), || {
            descendants(listener).is_empty().then_some(())
        })
        .is_none()
        {
            let left: Vec<String> = descendants(listener)
                .into_iter()
                .map(|p| format!("{p} ({})", cmdline(p)))
                .collect();
            stuck.push(format!("{what}: processes left {left:?}"));
        }
    };
    let (mut logins, mut reset_ports, mut sandboxed, mut stuck) = (Vec::new(), Vec::new(), 0, Vec::new());
    for i in 0..SSH_LOGINS.max(SSH_RESETS) {
        if i < SSH_RESETS {
            match reset_during_kex(port, listener) {
                Ok((p, sb)) => {
                    reset_ports.push(p);
                    sandboxed += sb as usize;
                }
                Err(e) => panic!("reset client {i}: {e}\n{}", tail(&read(&log), 40)),
            }
            idle(format!("reset connection {i}"), &mut stuck);
        }
        if i < SSH_LOGINS {
            logins.push(ssh_login(tools, &dir, port));
            idle(format!("login {i}"), &mut stuck);
        }
    }

    // Stop: SIGTERM to the listener; the subreaper exits once the whole tree is gone.
    signal(listener, libc::SIGTERM);
    if cleanup.wait_exit(0, Duration::from_secs(20)).is_none() {
        stuck.push("sshd did not stop on SIGTERM".into());
    }
    SshdRun {
        logins,
        reset_ports,
        sandboxed,
        reaped: read(&reaped),
        log: read(&log),
        mapped,
        errshim_logs: errshim_files(&dir.0),
        stuck,
    }
}

/// The lines of sshd's log that tell how pre-authentication children ended.
fn sshd_log_summary(log: &str) -> String {
    log.lines()
        .filter(|l| {
            [
                "Connection reset",
                "Killing privsep child",
                "signal",
                "preauth child",
                "monitor_read_log",
                "fatal",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// OpenSSH's seccomp sandbox (Debian's sshd, privilege separation): sshd started as root on
/// 127.0.0.1 with a temporary host key, a temporary authorized key for root, `UsePAM no`,
/// `LogLevel DEBUG3`, under a subreaper that reports every orphaned process's wait status (a
/// pre-authentication child whose monitor exits before reaping it ends there). Five clients
/// reset the connection during the key exchange, while the pre-authentication child, under its
/// seccomp filter, waits for their KEXINIT; five logins (`ssh -i key root@127.0.0.1 true`, the
/// client not preloaded) alternate with them.
///
/// Without errshim and with it (`ERRSHIM_RULES='*:*:log:fd=any'`, `ERRSHIM_LOG=<dir>/
/// errshim-%p.log`, sshd only): the sandbox is seccomp's (sshd's log says "preparing seccomp
/// filter sandbox" for every connection, and each reset connection had a process with
/// `Seccomp: 2` in /proc), every login exits 0, no process of sshd's tree was killed by SIGSYS
/// (signal 31), sshd's log has no "terminated by signal", "killed by signal" or "exited on
/// signal", and every reset is logged by the pre-authentication child itself as "Connection
/// reset by 127.0.0.1 port N [preauth]" (it lived to see its read fail). The build before the
/// fix made the sandboxed child die of SIGSYS at its first failing socket call.
#[test]
fn sshd_seccomp_sandbox_survives_failing_socket_calls() {
    if !require_root("sshd (privilege separation, root login)") {
        return;
    }
    let (Some(sshd), Some(ssh), Some(keygen)) = (
        find_tool("sshd", &["/usr/sbin/sshd"]),
        find_tool("ssh", &["/usr/bin/ssh"]),
        find_tool("ssh-keygen", &["/usr/bin/ssh-keygen"]),
    ) else {
        return;
    };
    // sshd's privilege separation directory (Debian's service creates it at boot).
    if !Path::new("/run/sshd").exists() {
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        chmod(Path::new("/run/sshd"), 0o755);
    }
    let tools = SshTools {
        sshd,
        ssh,
        keygen,
        subreaper: program("subreaper"),
    };
    let start = Instant::now();
    let runs = [run_sshd(&tools, false), run_sshd(&tools, true)];
    for (r, tag) in runs.iter().zip(["without errshim", "with errshim"]) {
        let context = format!(
            "--- how the children ended (subreaper) ---\n{}--- sshd.log (excerpt) ---\n{}\n--- errshim logs ---\n{:#?}",
            r.reaped,
            sshd_log_summary(&r.log),
            r.errshim_logs
        );
        assert!(r.stuck.is_empty(), "{tag}: {:#?}\n{context}", r.stuck);
        let sandboxes = r
            .log
            .matches("ssh_sandbox_init: preparing seccomp filter sandbox")
            .count();
        assert!(
            sandboxes >= SSH_LOGINS + SSH_RESETS && r.log.contains("attaching seccomp filter program [preauth]"),
            "{tag}: sshd did not use its seccomp sandbox for every connection ({sandboxes}):\n{context}"
        );
        assert_eq!(
            r.sandboxed, SSH_RESETS,
            "{tag}: a process with 'Seccomp: 2' during each key exchange\n{context}"
        );
        for (i, (code, stderr)) in r.logins.iter().enumerate() {
            assert_eq!(*code, Some(0), "{tag}: login {i} failed: {stderr}\n{context}");
        }
        let sigsys: Vec<&str> = r.reaped.lines().filter(|l| l.contains(" signal=31")).collect();
        assert!(
            sigsys.is_empty(),
            "{tag}: {} sshd process(es) killed by SIGSYS (the seccomp filter's kill): {sigsys:?}\n{context}",
            sigsys.len()
        );
        for bad in ["terminated by signal", "killed by signal", "exited on signal"] {
            assert!(!r.log.contains(bad), "{tag}: sshd's log says '{bad}'\n{context}");
        }
        for p in &r.reset_ports {
            let line = format!("Connection reset by 127.0.0.1 port {p} [preauth]");
            assert!(
                r.log.contains(&line),
                "{tag}: no '{line}': the sandboxed child did not live to report the reset\n{context}"
            );
        }
    }
    let [bare, shim] = runs;
    assert!(!bare.mapped && bare.errshim_logs.is_empty());
    assert!(shim.mapped, "liberrshim.so is not mapped in sshd");
    eprintln!(
        "sshd: {:?}; {SSH_LOGINS} logins and {SSH_RESETS} resets in the seccomp sandbox per run; with errshim: {} \
         per-process log files, {} events; subreaper (with errshim): {:?}",
        start.elapsed(),
        shim.errshim_logs.len(),
        shim.errshim_logs.values().map(|t| events(t).len()).sum::<usize>(),
        shim.reaped.lines().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Daemons and the caller that captures their output
// ---------------------------------------------------------------------------------------------

/// How long the caller may wait for end of file on the launcher's pipes once the launcher has
/// exited (without errshim it is immediate).
const EOF_WITHIN: Duration = Duration::from_secs(10);

/// What the caller of a self-daemonizing launcher saw.
struct Captured {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    /// Time from the launcher's exit to end of file on both pipes; None: not within EOF_WITHIN.
    eof_after: Option<Duration>,
    /// When there was no end of file: the processes that still held the pipes' write ends.
    holders: Vec<String>,
}

/// The inode of the pipe behind descriptor `fd`.
fn pipe_inode(fd: i32) -> u64 {
    std::fs::metadata(format!("/proc/self/fd/{fd}"))
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// The processes (other than this one) with a descriptor on one of the pipes `inodes`.
fn pipe_holders(inodes: &[u64]) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for p in all_pids().into_iter().filter(|&p| p != me) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            if inodes.iter().any(|i| t == format!("pipe:[{i}]")) {
                v.push(format!(
                    "pid {p} ({}) fd {} -> {t}",
                    cmdline(p),
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    v
}

/// Runs `cmd` the way `out=$(cmd 2>&1)` or `subprocess.run(capture_output=True)` does: stdout
/// and stderr are pipes read to end of file. When there is no end of file within EOF_WITHIN of
/// the launcher's exit, notes who holds the pipes, calls `stop` (which must end the daemon),
/// and collects what was written.
fn capture(mut cmd: Command, stop: &dyn Fn()) -> Captured {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting the launcher");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let inodes = [pipe_inode(out.as_raw_fd()), pipe_inode(err.as_raw_fd())];
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        let _ = tx.send(());
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        let _ = tx2.send(());
        v
    });
    let status = poll(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let exited = Instant::now();
    let deadline = exited + EOF_WITHIN;
    let mut eofs = 0;
    while eofs < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
        eofs += 1;
    }
    let eof_after = (eofs == 2).then(|| exited.elapsed());
    let mut holders = Vec::new();
    if eof_after.is_none() {
        holders = pipe_holders(&inodes);
        stop();
    }
    Captured {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        eof_after,
        holders,
    }
}

/// The three ways each daemon runs: no preload, errshim's defaults (events to stderr), and
/// errshim with events to a file.
const DAEMON_MODES: [&str; 3] = [
    "without errshim",
    "with errshim (defaults)",
    "with errshim, ERRSHIM_LOG=<file>",
];

fn daemon_env(mode: usize, dir: &TempDir) -> Option<Vec<(&'static str, String)>> {
    match mode {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(vec![("ERRSHIM_LOG", dir.path("errshim.log").display().to_string())]),
    }
}

/// The pid in a pid file, once it is there and names a live process.
fn pid_from(file: &Path, within: Duration) -> Option<i32> {
    poll(within, || {
        let pid: i32 = read(file).trim().parse().ok()?;
        alive(pid).then_some(pid)
    })
}

fn nginx_daemon_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon on;\n\
         master_process on;\n\
         worker_processes 1;\n\
         user root;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       location / {{ return 200 \"daemon ok\\n\"; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// One run of nginx as a daemon whose launcher's output is captured; Err: what went wrong.
fn nginx_daemon_once(nginx: &Path, mode: usize) -> Result<Duration, String> {
    let tag = DAEMON_MODES[mode];
    let dir = TempDir::new("nginx-daemon");
    let conf = dir.path("nginx.conf");
    let pidfile = dir.path("nginx.pid");
    let cleanup = Cleanup::new(&dir);
    for attempt in 1..=5 {
        let port = free_port();
        std::fs::write(&conf, nginx_daemon_conf(&dir.0, port)).unwrap();
        let _ = std::fs::remove_file(dir.path("error.log"));
        let mut cmd = clean_command(nginx);
        cmd.arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path("error.log"));
        if let Some(env) = daemon_env(mode, &dir) {
            with_errshim(&mut cmd, &env);
        }
        let marker = cleanup.marker.clone();
        let got = capture(cmd, &|| kill_marked(&marker));
        let error_log = read(&dir.path("error.log"));
        let context = format!(
            "--- launcher stdout ---\n{}\n--- launcher stderr ---\n{}\n--- error.log ---\n{}",
            got.stdout,
            got.stderr,
            tail(&error_log, 20)
        );
        if error_log.contains("Address already in use") && attempt < 5 {
            kill_marked(&cleanup.marker);
            continue;
        }
        let Some(eof_after) = got.eof_after else {
            return Err(format!(
                "{tag}: the caller got no end of file on nginx's stdout and stderr within {EOF_WITHIN:?} after the \
                 launcher exited ({:?}); the pipes were still held by:\n  {}\n{context}",
                got.status,
                got.holders.join("\n  ")
            ));
        };
        if !got.status.is_some_and(|s| s.success()) {
            return Err(format!("{tag}: nginx's launcher: {:?}\n{context}", got.status));
        }
        let pid = pid_from(&pidfile, Duration::from_secs(10))
            .ok_or_else(|| format!("{tag}: no running nginx daemon in {}\n{context}", pidfile.display()))?;
        match http_get(port, "/") {
            Ok((200, body)) if body == "daemon ok\n" => {}
            other => return Err(format!("{tag}: the daemon answered {other:?}\n{context}")),
        }
        // kill -QUIT $(cat pidfile), and wait until the pid is gone.
        signal(pid, libc::SIGQUIT);
        if poll(Duration::from_secs(20), || (!alive(pid)).then_some(())).is_none() {
            return Err(format!(
                "{tag}: nginx {pid} still running 20 s after SIGQUIT\n{context}"
            ));
        }
        return Ok(eof_after);
    }
    Err(format!("{tag}: no free port in 5 tries"))
}

/// nginx as a daemon (`daemon on; master_process on;`, no `-g 'daemon off;'`), started by a
/// caller that captures its stdout and stderr in pipes and reads both to end of file, as
/// `out=$(nginx ...)` does: without errshim, with errshim's defaults, and with
/// `ERRSHIM_LOG=<file>`. Each time: end of file on both pipes within 10 s of the launcher's
/// exit (0), the daemon really running (its pid file names a live process that answers a
/// request), and gone after `kill -QUIT $(cat pidfile)`. The build before the fix kept a
/// duplicate of the launcher's stderr open in the daemon, so the caller waited for as long as
/// nginx ran.
#[test]
fn nginx_daemon_releases_callers_pipes() {
    let Some(nginx) = find_tool("nginx", &["/usr/sbin/nginx"]) else {
        return;
    };
    let results: Vec<Result<Duration, String>> =
        (0..DAEMON_MODES.len()).map(|m| nginx_daemon_once(&nginx, m)).collect();
    eprintln!("nginx daemon, time to end of file after the launcher's exit: {results:?}");
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{}",
        failures.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
    );
}

/// One run of the self-daemonizing fixture; Err: what went wrong.
fn self_daemon_once(daemonize: &Path, mode: usize) -> Result<Duration, String> {
    let tag = DAEMON_MODES[mode];
    let dir = TempDir::new("self-daemon");
    let pidfile = dir.path("daemon.pid");
    let cleanup = Cleanup::new(&dir);
    let mut cmd = clean_command(daemonize);
    cmd.arg(&pidfile).arg("60");
    if let Some(env) = daemon_env(mode, &dir) {
        with_errshim(&mut cmd, &env);
    }
    let marker = cleanup.marker.clone();
    let got = capture(cmd, &|| kill_marked(&marker));
    let context = format!(
        "--- launcher stdout ---\n{}\n--- launcher stderr ---\n{}",
        got.stdout, got.stderr
    );
    let Some(eof_after) = got.eof_after else {
        return Err(format!(
            "{tag}: the caller got no end of file on the launcher's stdout and stderr within {EOF_WITHIN:?} after it \
             exited ({:?}); the daemon (fork, setsid, 0-2 to /dev/null, close() of every other descriptor) still \
             held them:\n  {}\n{context}",
            got.status,
            got.holders.join("\n  ")
        ));
    };
    if !got.status.is_some_and(|s| s.success())
        || !got.stdout.contains("daemonize: launcher pid")
        || !got.stderr.contains("daemonize: launcher pid")
    {
        return Err(format!("{tag}: launcher {:?}\n{context}", got.status));
    }
    let pid = pid_from(&pidfile, Duration::from_secs(10))
        .ok_or_else(|| format!("{tag}: no running daemon in {}\n{context}", pidfile.display()))?;
    signal(pid, libc::SIGTERM);
    if poll(Duration::from_secs(20), || (!alive(pid)).then_some(())).is_none() {
        return Err(format!("{tag}: daemon {pid} still running after SIGTERM"));
    }
    Ok(eof_after)
}

/// The same with a classic self-daemonizing C program (`tests/fixtures/daemonize.c`: fork,
/// setsid, fork, 0/1/2 to /dev/null, close() of every other descriptor up to the limit, then
/// running for a minute): the caller capturing the launcher's output gets end of file at once
/// (within 10 s) and the daemon is running; without errshim and with it (defaults, and
/// `ERRSHIM_LOG=<file>`).
#[test]
fn self_daemonizing_program_releases_callers_pipes() {
    let daemonize = program("daemonize");
    let results: Vec<Result<Duration, String>> = (0..DAEMON_MODES.len())
        .map(|m| self_daemon_once(&daemonize, m))
        .collect();
    eprintln!("self-daemonizing program, time to end of file after the launcher's exit: {results:?}");
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{}",
        failures.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. nginx workers that drop privileges
// ---------------------------------------------------------------------------------------------

/// How many times the recipe makes a worker's shutdown() fail with ENOTCONN.
const WORKER_RECIPES: usize = 6;
const NGINX_WORKERS: usize = 2;
const SHUTDOWN_FAILED: &str = "shutdown() failed (107: Transport endpoint is not connected)";

fn nginx_workers_conf(dir: &Path, port: u16, group: &str) -> String {
    let d = dir.display();
    format!(
        "user nobody {group};\n\
         worker_processes {NGINX_WORKERS};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       lingering_close always;\n\
         \x20       location = /early {{ return 200 \"early\\n\"; }}\n\
         \x20       location / {{ return 200 \"hello\\n\"; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// Sends SIGCONT to the stopped workers when dropped, whatever happened.
struct Stopped(Vec<i32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for &p in &self.0 {
            signal(p, libc::SIGCONT);
        }
    }
}

/// The socket inode of the server's side of the loopback TCP connection from `client` (the
/// client's port) to `server` (the server's port), from /proc/net/tcp, while it is established.
fn server_socket(server: u16, client: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok();
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (local, remote, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
        (port_of(local)? == server && port_of(remote)? == client).then(|| format!("socket:[{inode}]"))
    })
}

/// Whether one of `pids` holds a descriptor on `socket` (`socket:[inode]`).
fn holds(pids: &[i32], socket: &str) -> bool {
    pids.iter().any(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == socket))
        })
    })
}

/// Waits (bounded) until none of `pids` holds `socket` any more: the server has finished with
/// that connection.
fn wait_closed(pids: &[i32], socket: &str) -> bool {
    poll(Duration::from_secs(15), || (!holds(pids, socket)).then_some(())).is_some()
}

/// Makes a worker's own shutdown(SHUT_WR) fail with ENOTCONN: a POST with half of its body
/// sent, which nginx answers at once (`return`); nginx then waits for the rest of the body to
/// discard it before its lingering close. Every worker is stopped (SIGSTOP, seen as state T),
/// the client sends the rest and resets the connection, the workers continue: the one that has
/// the connection reads the rest of the body (queued before the RST), finishes the request and
/// calls shutdown(SHUT_WR) on a socket the RST has already closed. Returns the server side's
/// socket (`socket:[inode]`).
fn post_then_reset(port: u16, workers: &[i32]) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let half = "x".repeat(40);
    write!(
        s,
        "POST /early HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 80\r\n\r\n{half}"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"early\n") {
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&answer)
                ))
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("waiting for the answer: {e}")),
        }
    }
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("answer {:?}", String::from_utf8_lossy(&answer)));
    }
    let client = s.local_addr().unwrap().port();
    let socket = server_socket(port, client).ok_or("the connection is not in /proc/net/tcp")?;
    let stopped = Stopped(workers.to_vec());
    for &w in workers {
        signal(w, libc::SIGSTOP);
    }
    if poll(Duration::from_secs(10), || {
        workers
            .iter()
            .all(|&w| stat_of(w).map(|s| s.0) == Some('T'))
            .then_some(())
    })
    .is_none()
    {
        return Err("the workers did not stop".into());
    }
    s.write_all(half.as_bytes()).map_err(|e| format!("send: {e}"))?;
    abort_connection(s);
    drop(stopped);
    Ok(socket)
}

struct WorkersRun {
    error_log: String,
    stderr: String,
    master: i32,
    workers: Vec<i32>,
    logs: BTreeMap<i32, String>,
    log_dir: PathBuf,
    log_dir_listing: String,
}

/// nginx started as root with `user nobody nogroup;` and two workers (`daemon off;`), without
/// or with errshim (`ERRSHIM_LOG=<dir>/errshim-%p.log`, the directory root's, mode 0755): the
/// recipe of `post_then_reset` WORKER_RECIPES times, each time until the worker has closed the
/// connection; one more request; a graceful stop (SIGQUIT).
fn run_nginx_workers(nginx: &Path, group: &str, shim: bool) -> WorkersRun {
    let dir = TempDir::new(if shim { "nginx-users-shim" } else { "nginx-users-bare" });
    chmod(&dir.0, 0o755);
    let log_dir = dir.path("errshim");
    std::fs::create_dir(&log_dir).unwrap();
    chown(&log_dir, 0, 0);
    chmod(&log_dir, 0o755);
    let conf = dir.path("nginx.conf");
    let (out, err) = (dir.path("nginx.stdout"), dir.path("nginx.stderr"));
    let error_log = dir.path("error.log");
    let mut cleanup = Cleanup::new(&dir);
    let describe = |extra: &str| {
        format!(
            "{extra}\n--- nginx stderr ---\n{}\n--- error.log ---\n{}",
            read(&err),
            tail(&read(&error_log), 30)
        )
    };

    let ((master, workers), port) = on_free_port(|port| {
        std::fs::write(&conf, nginx_workers_conf(&dir.0, port, group)).unwrap();
        let _ = std::fs::remove_file(&error_log);
        let mut cmd = clean_command(nginx);
        cmd.arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .args(["-g", "daemon off;"]);
        if shim {
            with_errshim(
                &mut cmd,
                &[("ERRSHIM_LOG", log_dir.join("errshim-%p.log").display().to_string())],
            );
        }
        to_files(&mut cmd, &out, &err);
        let child = cleanup.adopt(cmd.spawn().expect("starting nginx"));
        let master = cleanup.child(child).id() as i32;
        // Ready: both workers forked and running as nobody.
        let ready = poll(Duration::from_secs(20), || {
            if !alive(master) {
                return Some(None);
            }
            let w = children_of(master);
            (w.len() == NGINX_WORKERS && w.iter().all(|&p| uid_of(p) == Some(65534))).then_some(Some(w))
        });
        match ready {
            Some(Some(w)) => Some((master, w)),
            Some(None) if read(&error_log).contains("Address already in use") => {
                cleanup.kill_all();
                None
            }
            _ => panic!("{}", describe("nginx did not start two workers as nobody")),
        }
    });

    for i in 0..WORKER_RECIPES {
        let socket =
            post_then_reset(port, &workers).unwrap_or_else(|e| panic!("{}", describe(&format!("recipe {i}: {e}"))));
        assert!(
            wait_closed(&workers, &socket),
            "{}",
            describe(&format!("recipe {i}: the worker kept {socket} open"))
        );
    }
    match http_get(port, "/") {
        Ok((200, body)) if body == "hello\n" => {}
        other => panic!("{}", describe(&format!("last request: {other:?}"))),
    }
    signal(master, libc::SIGQUIT);
    let status = cleanup.wait_exit(0, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        describe(&format!("nginx's exit: {status:?}"))
    );
    WorkersRun {
        error_log: read(&error_log),
        stderr: read(&err),
        master,
        workers,
        logs: errshim_files(&log_dir),
        log_dir_listing: listing(&log_dir),
        log_dir,
    }
}

/// Suppressed shutdown() failures that errshim logged for `pid` in its own file.
fn suppressed_shutdowns(logs: &BTreeMap<i32, String>, pid: i32, comm: &str) -> usize {
    let who = format!(" pid={pid} tid={pid} comm={comm} shutdown(fd=");
    logs.get(&pid)
        .map(|text| {
            events(text)
                .iter()
                .filter(|e| e.contains(&who) && e.contains(", SHUT_WR) = -1 ENOTCONN -> ignored, returned 0"))
                .count()
        })
        .unwrap_or(0)
}

/// nginx workers that drop privileges: the master starts as root with `user nobody nogroup;`
/// and two workers; clients POST half a body, nginx answers, and the client resets after
/// sending the rest while the workers are stopped, which makes a worker's own shutdown(SHUT_WR)
/// fail with ENOTCONN (six times). Without errshim nginx's error log shows at least six
/// `shutdown() failed (107: ...)`; with errshim (`ERRSHIM_LOG=<dir>/errshim-%p.log`, the
/// directory root's, mode 0755) it shows none (the workers' failures were suppressed), and
/// errshim's per-pid files of the workers (pids of processes running as nobody, not the
/// master's) hold at least six `shutdown(fd=N, SHUT_WR) = -1 ENOTCONN -> ignored` events, each
/// with the worker's pid. The build before the fix could not create a worker's file once the
/// worker had become nobody, and lost every event of every worker.
#[test]
fn nginx_workers_that_drop_privileges_still_log() {
    if !require_root("nginx with 'user nobody'") {
        return;
    }
    let Some(nginx) = find_tool("nginx", &["/usr/sbin/nginx"]) else {
        return;
    };
    assert!(
        user_ids("nobody").is_some_and(|(u, _)| u == 65534),
        "no user nobody (65534)"
    );
    let group = if group_exists("nogroup") { "nogroup" } else { "nobody" };
    let start = Instant::now();
    let bare = run_nginx_workers(&nginx, group, false);
    let shim = run_nginx_workers(&nginx, group, true);
    for (r, tag) in [(&bare, "without errshim"), (&shim, "with errshim")] {
        for bad in ["[alert]", "[crit]", "[emerg]", "exited on signal"] {
            assert!(!r.error_log.contains(bad), "{tag}: {bad}\n{}", r.error_log);
        }
    }
    let failed = |log: &str| log.matches(SHUTDOWN_FAILED).count();
    assert!(
        failed(&bare.error_log) >= WORKER_RECIPES,
        "without errshim the recipe makes the workers' shutdown() fail {WORKER_RECIPES} times:\n{}",
        bare.error_log
    );
    assert!(bare.logs.is_empty());
    assert_eq!(
        failed(&shim.error_log),
        0,
        "with errshim the workers' shutdown() failures are suppressed:\n{}",
        shim.error_log
    );
    let per_worker: Vec<(i32, usize)> = shim
        .workers
        .iter()
        .map(|&w| (w, suppressed_shutdowns(&shim.logs, w, "nginx")))
        .collect();
    let logged: usize = per_worker.iter().map(|(_, n)| n).sum();
    assert!(
        logged >= WORKER_RECIPES,
        "{logged} of the workers' {WORKER_RECIPES} suppressed shutdown() failures reached their per-pid files \
         (workers {:?} running as nobody, master {}): in {} (root's, 0755): {}\n--- nginx stderr ---\n{}\n--- the \
         files ---\n{:#?}",
        shim.workers,
        shim.master,
        shim.log_dir.display(),
        shim.log_dir_listing,
        tail(&shim.stderr, 20),
        shim.logs
    );
    for (pid, text) in &shim.logs {
        for e in events(text) {
            assert!(e.contains(&format!(" pid={pid} ")), "errshim-{pid}.log: {e}");
        }
    }
    eprintln!(
        "nginx workers as nobody: {:?}; without errshim {} '{SHUTDOWN_FAILED}'; with errshim {} in nginx's log, and \
         per worker (pid, events logged): {per_worker:?}; files: {}",
        start.elapsed(),
        failed(&bare.error_log),
        failed(&shim.error_log),
        shim.log_dir_listing
    );
}

// ---------------------------------------------------------------------------------------------
// 4. PostgreSQL: a backend per connection, and ERRSHIM_SUMMARY=1
// ---------------------------------------------------------------------------------------------

/// How long each `pgbench -C` run lasts, in seconds.
const PGBENCH_SECONDS: &str = "5";

/// Debian's PostgreSQL binaries: the newest /usr/lib/postgresql/<version>/bin with postgres,
/// initdb and pgbench; else the directory of `postgres` on PATH (symlinks resolved).
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| ["postgres", "initdb", "pgbench"].iter().all(|b| d.join(b).exists());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    has_all(&bin).then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let postgres = find_tool("postgres", &[])?;
    let dir = std::fs::canonicalize(&postgres).ok()?.parent()?.to_path_buf();
    if has_all(&dir) {
        Some(dir)
    } else {
        require_tool("pgbench");
        None
    }
}

/// A command run as the unprivileged user `ids`, as PostgreSQL insists.
fn as_user(program: &Path, ids: (u32, u32)) -> Command {
    let mut cmd = clean_command(program);
    // With uid set, std also drops the supplementary groups (setgroups(0)) when run as root.
    cmd.uid(ids.0).gid(ids.1);
    for k in ["PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"] {
        cmd.env_remove(k);
    }
    cmd
}

/// Starts the postmaster on a free port and waits until it accepts connections; returns the
/// port and its index in `cleanup`.
fn start_postgres(
    bin: &Path,
    ids: (u32, u32),
    dir: &TempDir,
    cleanup: &mut Cleanup,
    env: Option<&[(&str, String)]>,
    tag: &str,
) -> (u16, usize) {
    let log = dir.path(&format!("postgres-{tag}.log"));
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = as_user(&bin.join("postgres"), ids);
        cmd.arg("-D")
            .arg(dir.path("data"))
            .arg("-k")
            .arg(dir.path("sock"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=20", "-c", "logging_collector=off"])
            .current_dir(&dir.0);
        if let Some(env) = env {
            with_errshim(&mut cmd, env);
        }
        let _ = std::fs::remove_file(&log);
        to_files(&mut cmd, &log, &log);
        let i = cleanup.adopt(cmd.spawn().expect("starting postgres"));
        let ready = poll(Duration::from_secs(30), || {
            let text = read(&log);
            if text.contains("database system is ready to accept connections") {
                return Some(true);
            }
            cleanup.child(i).try_wait().ok().flatten().map(|_| false)
        });
        match ready {
            Some(true) => return (port, i),
            Some(false) if read(&log).contains("Address already in use") => {
                let _ = cleanup.child(i).wait();
            }
            _ => panic!("postgres did not start:\n{}", read(&log)),
        }
    }
    panic!("postgres: no free port in 5 tries:\n{}", read(&log));
}

/// Fast shutdown (SIGINT) of the postmaster, waited for.
fn stop_postgres(cleanup: &mut Cleanup, i: usize, log: &Path) {
    let pid = cleanup.child(i).id() as i32;
    signal(pid, libc::SIGINT);
    let status = cleanup.wait_exit(i, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "postgres exit {status:?}:\n{}",
        tail(&read(log), 20)
    );
}

/// `pgbench` against 127.0.0.1:`port` (not preloaded): its stdout.
fn pgbench(bin: &Path, port: u16, args: &[&str]) -> String {
    let r = Cmd::new(bin.join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "bench"])
        .args(args)
        .args(["postgres"])
        .timeout(Duration::from_secs(120))
        .run();
    assert_eq!(r.code, Some(0), "pgbench {args:?}:\n{}", r.describe());
    r.stdout
}

/// (connections per second, transactions) from `pgbench -C`'s report.
fn pgbench_rate(out: &str) -> (f64, u64) {
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's report:\n{out}"));
    let n = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench's report:\n{out}"));
    (tps, n)
}

/// PostgreSQL (Debian's package, run as nobody, a temporary cluster with `initdb`, on 127.0.0.1
/// and a temporary unix socket directory) under `pgbench -C -S` (a new connection, hence a new
/// backend process, for every transaction; two clients, five seconds): first without errshim
/// (with `pgbench -i`), then with errshim (`ERRSHIM_SUMMARY=1`, `ERRSHIM_LOG=<dir>/
/// errshim-%p.log`, a directory nobody may write). Every backend exits normally; none has an
/// event under the default rules. Asserts that errshim wrote no summary for a process without
/// events, and at most one file per process that logged an event: here, no file at all
/// (the build before the fix wrote one file with `events=0` per backend, thousands). Prints
/// the connections per second without and with errshim and their ratio (no assertion).
#[test]
fn postgres_backends_without_events_write_no_summary() {
    if !require_root("PostgreSQL run as nobody") {
        return;
    }
    let Some(bin) = postgres_bin_dir() else {
        return;
    };
    let ids = user_ids("nobody").expect("user nobody");
    let start = Instant::now();
    let dir = TempDir::new("postgres");
    chmod(&dir.0, 0o755);
    for (sub, mode) in [("data", 0o700), ("sock", 0o755), ("errshim", 0o755)] {
        std::fs::create_dir(dir.path(sub)).unwrap();
        chown(&dir.path(sub), ids.0, ids.1);
        chmod(&dir.path(sub), mode);
    }
    let mut cleanup = Cleanup::new(&dir);
    let init = as_user(&bin.join("initdb"), ids)
        .arg("-D")
        .arg(dir.path("data"))
        .args(["-U", "bench", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        .current_dir(&dir.0)
        .output()
        .expect("running initdb");
    assert!(
        init.status.success(),
        "initdb as nobody (the temporary directory and {} must be reachable by nobody):\n{}{}",
        lib().display(),
        String::from_utf8_lossy(&init.stdout),
        String::from_utf8_lossy(&init.stderr)
    );
    let bench = ["-C", "-S", "-c", "2", "-j", "2", "-T", PGBENCH_SECONDS];

    let (port, pg) = start_postgres(&bin, ids, &dir, &mut cleanup, None, "bare");
    pgbench(&bin, port, &["-i", "-q", "-s", "1"]);
    let (bare_rate, bare_n) = pgbench_rate(&pgbench(&bin, port, &bench));
    stop_postgres(&mut cleanup, pg, &dir.path("postgres-bare.log"));

    let elog = dir.path("errshim");
    let env = [
        ("ERRSHIM_SUMMARY", "1".to_string()),
        ("ERRSHIM_LOG", elog.join("errshim-%p.log").display().to_string()),
    ];
    let (port, pg) = start_postgres(&bin, ids, &dir, &mut cleanup, Some(&env), "shim");
    let pid = cleanup.child(pg).id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(
        maps.contains("liberrshim"),
        "liberrshim.so is not mapped in the postmaster"
    );
    let (shim_rate, shim_n) = pgbench_rate(&pgbench(&bin, port, &bench));
    stop_postgres(&mut cleanup, pg, &dir.path("postgres-shim.log"));

    let files = errshim_files(&elog);
    let with_events = files.values().filter(|t| !events(t).is_empty()).count();
    let empty_summaries: Vec<&str> = files
        .values()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with("errshim summary pid=") && l.contains(" events=0 "))
        .collect();
    eprintln!(
        "postgres ({}): pgbench -C, {bare_n} connections at {bare_rate:.1}/s without errshim, {shim_n} at \
         {shim_rate:.1}/s with ERRSHIM_SUMMARY=1 (ratio {:.3}); {} errshim log files, {with_events} with events, {} \
         summaries of 0 events; {:?}",
        bin.display(),
        shim_rate / bare_rate,
        files.len(),
        empty_summaries.len(),
        start.elapsed()
    );
    let sample = files
        .iter()
        .next()
        .map(|(p, t)| format!("errshim-{p}.log:\n{t}"))
        .unwrap_or_default();
    assert!(
        empty_summaries.is_empty(),
        "{} processes without a single event wrote a summary ({shim_n} connections, each a backend); for \
         example {sample}",
        empty_summaries.len()
    );
    assert!(
        files.len() <= with_events,
        "{} errshim log files for {with_events} processes that logged an event; for example {sample}",
        files.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Apache's prefork children that drop privileges
// ---------------------------------------------------------------------------------------------

const APACHE_RESETS: usize = 6;
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

fn apache_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "ServerRoot {d}\n\
         DefaultRuntimeDir {d}/run\n\
         PidFile {d}/run/httpd.pid\n\
         LoadModule mpm_prefork_module {APACHE_MODULES}/mod_mpm_prefork.so\n\
         LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so\n\
         Listen 127.0.0.1:{port}\n\
         ServerName localhost\n\
         User www-data\n\
         Group www-data\n\
         ErrorLog {d}/error.log\n\
         LogLevel info\n\
         DocumentRoot {d}/www\n\
         KeepAlive On\n\
         KeepAliveTimeout 15\n\
         StartServers 2\n\
         MinSpareServers 2\n\
         MaxSpareServers 4\n\
         MaxRequestWorkers 8\n"
    )
}

/// A keep-alive request answered in full, then an RST while the child waits for the next
/// request: its read fails with ECONNRESET, the connection ends, and the lingering close's
/// shutdown(SHUT_WR) fails with ENOTCONN (the RST has closed the socket). Returns once the
/// child no longer holds the connection's socket.
fn keepalive_then_reset(port: u16, master: i32) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"hello apache\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&answer))),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("waiting for the answer: {e}")),
        }
    }
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("answer {:?}", String::from_utf8_lossy(&answer)));
    }
    let client = s.local_addr().unwrap().port();
    let socket = server_socket(port, client).ok_or("the connection is not in /proc/net/tcp")?;
    abort_connection(s);
    if wait_closed(&descendants(master), &socket) {
        Ok(())
    } else {
        Err(format!("the child kept {socket} open"))
    }
}

struct ApacheRun {
    error_log: String,
    master: i32,
    children: BTreeSet<i32>,
    logs: BTreeMap<i32, String>,
    log_dir: PathBuf,
    log_dir_listing: String,
    stderr: String,
    /// Without errshim: the children's failing shutdown() calls, as strace saw them.
    strace_enotconn: usize,
}

/// Apache (prefork MPM, started as root, `User www-data`, `-DFOREGROUND`): without errshim
/// under `strace -f -e trace=shutdown` (to see the real shutdown() calls fail), or with errshim
/// (`ERRSHIM_LOG=<dir>/errshim-%p.log`, the directory root's, mode 0755); APACHE_RESETS times
/// `keepalive_then_reset`; a stop (SIGTERM).
fn run_apache(apache: &Path, strace: &Path, shim: bool) -> ApacheRun {
    let dir = TempDir::new(if shim { "apache-shim" } else { "apache-bare" });
    chmod(&dir.0, 0o755);
    for sub in ["www", "run", "errshim"] {
        std::fs::create_dir(dir.path(sub)).unwrap();
        chmod(&dir.path(sub), 0o755);
    }
    std::fs::write(dir.path("www/hello.txt"), "hello apache\n").unwrap();
    chmod(&dir.path("www/hello.txt"), 0o644);
    let log_dir = dir.path("errshim");
    let conf = dir.path("httpd.conf");
    let pidfile = dir.path("run/httpd.pid");
    let (out, err) = (dir.path("apache.stdout"), dir.path("apache.stderr"));
    let error_log = dir.path("error.log");
    let trace = dir.path("strace.txt");
    let mut cleanup = Cleanup::new(&dir);
    let describe = |extra: &str| {
        format!(
            "{extra}\n--- apache stderr ---\n{}\n--- error.log ---\n{}",
            read(&err),
            tail(&read(&error_log), 30)
        )
    };
    let ((master, top), port) = on_free_port(|port| {
        std::fs::write(&conf, apache_conf(&dir.0, port)).unwrap();
        let _ = std::fs::remove_file(&error_log);
        let _ = std::fs::remove_file(&pidfile);
        let mut cmd = if shim {
            let mut c = clean_command(apache);
            with_errshim(
                &mut c,
                &[("ERRSHIM_LOG", log_dir.join("errshim-%p.log").display().to_string())],
            );
            c
        } else {
            let mut c = clean_command(strace);
            c.args(["-f", "-qq", "-e", "trace=shutdown", "-o"])
                .arg(&trace)
                .arg(apache);
            c
        };
        cmd.arg("-f").arg(&conf).arg("-DFOREGROUND");
        to_files(&mut cmd, &out, &err);
        let top = cleanup.adopt(cmd.spawn().expect("starting apache2"));
        // Ready: the pid file, and the first children running as www-data.
        let www_data = user_ids("www-data").map(|(u, _)| u);
        let ready = poll(Duration::from_secs(20), || {
            if cleanup.child(top).try_wait().ok().flatten().is_some() {
                return Some(None);
            }
            let pid: i32 = read(&pidfile).trim().parse().ok()?;
            let kids = children_of(pid);
            (alive(pid) && kids.len() >= 2 && kids.iter().all(|&k| uid_of(k) == www_data)).then_some(Some(pid))
        });
        match ready {
            Some(Some(pid)) => Some((pid, top)),
            Some(None) if read(&error_log).contains("Address already in use") => {
                cleanup.kill_all();
                None
            }
            _ => panic!("{}", describe("apache2 did not start its children as www-data")),
        }
    });
    let mut children: BTreeSet<i32> = children_of(master).into_iter().collect();
    for i in 0..APACHE_RESETS {
        if let Err(e) = keepalive_then_reset(port, master) {
            panic!("{}", describe(&format!("connection {i}: {e}")));
        }
        children.extend(children_of(master));
    }
    signal(master, libc::SIGTERM);
    let status = cleanup.wait_exit(top, Duration::from_secs(30));
    assert!(status.is_some(), "{}", describe("apache2 did not stop on SIGTERM"));
    let strace_enotconn = read(&trace)
        .lines()
        .filter(|l| l.contains("shutdown(") && l.contains("SHUT_WR") && l.contains("= -1 ENOTCONN"))
        .count();
    ApacheRun {
        error_log: read(&error_log),
        master,
        children,
        logs: errshim_files(&log_dir),
        log_dir_listing: listing(&log_dir),
        log_dir,
        stderr: read(&err),
        strace_enotconn,
    }
}

/// Apache's prefork children that drop privileges: the master starts as root, its children run
/// as www-data; six clients make a keep-alive request and reset the connection while the child
/// waits for the next one, which makes the child's lingering-close shutdown(SHUT_WR) fail with
/// ENOTCONN. Without errshim (under strace, since Apache does not log that failure) strace shows
/// at least six failing shutdown() calls; with errshim (`ERRSHIM_LOG=<dir>/errshim-%p.log`, the
/// directory root's, mode 0755) the children's per-pid files (pids of the master's children,
/// not the master's) hold at least six `shutdown(fd=N, SHUT_WR) = -1 ENOTCONN -> ignored`
/// events with `comm=apache2`. Both: no child died of a signal. The build before the fix lost
/// every event of the children, which could not create their files once they ran as www-data.
#[test]
fn apache_prefork_children_that_drop_privileges_still_log() {
    if !require_root("apache2 with 'User www-data'") {
        return;
    }
    let (Some(apache), Some(strace)) = (
        find_tool("apache2", &["/usr/sbin/apache2"]),
        find_tool("strace", &["/usr/bin/strace"]),
    ) else {
        return;
    };
    if !Path::new(APACHE_MODULES).join("mod_mpm_prefork.so").exists() {
        assert!(
            !in_ci(),
            "{APACHE_MODULES}/mod_mpm_prefork.so is required in CI (apache2-bin)"
        );
        eprintln!("\n*** SKIPPED: no {APACHE_MODULES}/mod_mpm_prefork.so (apache2-bin) ***\n");
        return;
    }
    assert!(user_ids("www-data").is_some(), "no user www-data");
    let start = Instant::now();
    let bare = run_apache(&apache, &strace, false);
    let shim = run_apache(&apache, &strace, true);
    for (r, tag) in [(&bare, "without errshim"), (&shim, "with errshim")] {
        for bad in ["exit signal", "[core:alert]", "[core:emerg]", "AH00052"] {
            assert!(!r.error_log.contains(bad), "{tag}: {bad}\n{}", r.error_log);
        }
    }
    assert!(
        bare.strace_enotconn >= APACHE_RESETS,
        "without errshim the children's shutdown() fails {APACHE_RESETS} times (strace saw {})",
        bare.strace_enotconn
    );
    assert!(bare.logs.is_empty());
    let per_child: Vec<(i32, usize)> = shim
        .children
        .iter()
        .map(|&c| (c, suppressed_shutdowns(&shim.logs, c, "apache2")))
        .filter(|(_, n)| *n > 0)
        .collect();
    let logged: usize = per_child.iter().map(|(_, n)| n).sum();
    assert!(
        logged >= APACHE_RESETS,
        "{logged} of the children's {APACHE_RESETS} suppressed shutdown() failures reached their per-pid files \
         (children {:?} running as www-data, master {}): in {} (root's, 0755): {}\n--- apache stderr ---\n{}\n--- \
         the files ---\n{:#?}",
        shim.children,
        shim.master,
        shim.log_dir.display(),
        shim.log_dir_listing,
        tail(&shim.stderr, 20),
        shim.logs
    );
    for (pid, text) in &shim.logs {
        for e in events(text) {
            assert!(e.contains(&format!(" pid={pid} ")), "errshim-{pid}.log: {e}");
        }
    }
    eprintln!(
        "apache prefork as www-data: {:?}; without errshim strace saw {} failing shutdown(); with errshim, per child \
         (pid, events logged): {per_child:?}; files: {}",
        start.elapsed(),
        bare.strace_enotconn,
        shim.log_dir_listing
    );
}
