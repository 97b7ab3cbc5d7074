//! A call that succeeds costs no extra system call: errshim's syscalls are a constant at
//! startup, whatever the number of successful calls the program makes, through every hooked
//! entry point (tests/fixtures/pingpong.c), `accept(fd, NULL, NULL)` given errshim's buffer
//! included. Also on the careful path: with the hooks counting bytes (`ERRSHIM_COUNT=1`) and
//! with a fault rule consulted on every call that never fires.

mod common;
use common::*;

/// Number of system calls strace saw the program make; `preload`: errshim's variables, None
/// for no errshim.
fn syscalls(preload: Option<&[&str]>, n: u32) -> usize {
    let dir = TempDir::new("strace");
    let out = dir.path("trace");
    let mut c = Cmd::new("strace").args(["-f", "-qq", "-o"]).arg_path(&out);
    if let Some(vars) = preload {
        c = c.args(["-E"]).args([format!("LD_PRELOAD={}", lib().display())]);
        for v in vars {
            c = c.args(["-E", v]);
        }
    }
    let r = c.arg_path(&program("pingpong")).args([n.to_string()]).run();
    r.assert_ok();
    assert_eq!(r.stdout, "ok\n");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("resumed>"))
        .count()
}

#[test]
fn successful_calls_make_no_extra_syscalls() {
    if !require_tool("strace") {
        return;
    }
    let (bare_small, bare_big) = (syscalls(None, 50), syscalls(None, 550));
    // 500 extra rounds: 21 calls on each of two connections (the read and write families,
    // sendfile, sendfile64, splice, the mmsg calls, getpeername, getsockopt(SO_ERROR)), 6 churn
    // calls, 5 for a connection accepted with no address wanted (accept, accept4).
    assert!(
        bare_big - bare_small >= 500 * 50,
        "the fixture makes the calls: {bare_small} -> {bare_big}"
    );
    let configs: [&[&str]; 3] = [
        &[],
        &["ERRSHIM_COUNT=1"],
        &["ERRSHIM_FAULTS=*:ECONNRESET:nth=1000000000000"],
    ];
    for vars in configs {
        let (shim_small, shim_big) = (syscalls(Some(vars), 50), syscalls(Some(vars), 550));
        assert_eq!(
            shim_big - shim_small,
            bare_big - bare_small,
            "{vars:?}: errshim must add no syscall per successful call (bare {bare_small}->{bare_big}, errshim {shim_small}->{shim_big})"
        );
        assert!(
            shim_small >= bare_small,
            "{vars:?}: errshim's constant startup cost: {}",
            shim_small - bare_small
        );
    }
}
