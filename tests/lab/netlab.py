#!/usr/bin/env python3
"""errshim's network lab: a client, a middlebox and a server, each in a network namespace of
its own, joined by veth pairs, with nftables on the middlebox. Each scenario makes the real
kernel fail a real connection the way paths fail in production (silent drops, an RST or ICMP
from the path, a NAT that forgot the flow, keepalive death, a full accept queue), runs the
client under errshim, and prints what the client saw and what errshim logged, as JSON.

    netlab.py list
    netlab.py run SCENARIO [--family 4|6] [--lib PATH] [--rules RULES] [--keep]
                  [--plain] [--faults SPEC]

--plain runs the same programs without the path's condition: server and client in one
namespace, over its loopback (errshim replay's test: --faults makes the failures instead).

Needs root (namespaces), iproute2, nftables, conntrack. Nothing leaves the namespaces: the
addresses are private (10.231.0.0/16, fd00:e5::/32) and only exist inside them.

Synchronisation is by the programs' own lines and the kernel's state, never by sleeping: the
server says "listening" once it listens, the client says "ready" once its connection carries
data and waits for "go" on its stdin, which the lab writes after it changed the path; a full
accept queue is waited for in the kernel's listener statistics (ss).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PORT = 8080

ADDR = {
    4: {"client": "10.231.1.2", "mb_c": "10.231.1.1", "mb_s": "10.231.2.1", "server": "10.231.2.2", "plen": 24},
    6: {"client": "fd00:e5:1::2", "mb_c": "fd00:e5:1::1", "mb_s": "fd00:e5:2::1", "server": "fd00:e5:2::2", "plen": 64},
}

# What a scenario does. `before`: nft rules on the middlebox's forward chain before the client
# starts; `then`: rules added (and commands run on the middlebox) once the client is ready;
# `client`: the client's options; `expect`: what the kernel gives the program and what errshim
# names, asserted by the tests (tests/lab.rs) and by `run --check`.
SCENARIOS = {
    "blackhole": {
        "about": "the path drops every packet both ways; the client has TCP_USER_TIMEOUT=1000",
        "then": ["meta l4proto tcp drop"],
        "client": ["--user-timeout", "1000", "--after", "send-recv"],
        "expect": {"recv": "ETIMEDOUT", "cause": "timeout_user"},
    },
    "drop-to-server": {
        "about": "the path drops the client's packets to the server (retransmission timeout, net.ipv4.tcp_retries2=2)",
        "then": ['iifname "m0" tcp dport %d drop' % PORT],
        "client": ["--after", "send-recv"],
        "expect": {"recv": "ETIMEDOUT", "cause": "timeout_retransmit"},
    },
    "drop-to-client": {
        "about": "the path drops the server's packets to the client: its ACKs never come back",
        "then": ['iifname "m1" tcp sport %d drop' % PORT],
        "client": ["--after", "send-recv"],
        "expect": {"recv": "ETIMEDOUT", "cause": "timeout_retransmit"},
    },
    "keepalive": {
        "about": "an idle connection whose path goes silent; keepalive 1 s / 1 s / 1 probe",
        "then": ["meta l4proto tcp drop"],
        "client": ["--keepalive", "1/1/1", "--after", "recv"],
        "expect": {"recv": "ETIMEDOUT", "cause": "timeout_keepalive"},
    },
    "middlebox-rst": {
        "about": "a firewall on the path answers the client's next segment with an RST",
        "then": ['iifname "m0" tcp dport %d reject with tcp reset' % PORT],
        "client": ["--after", "send-recv"],
        "expect": {"recv": "ECONNRESET", "cause": "peer_reset"},
    },
    "icmp-host": {
        "about": "the path answers the SYN with ICMP host unreachable",
        "before": ['iifname "m0" tcp dport %d reject with icmpx type host-unreachable' % PORT],
        "client": [],
        "expect": {"connect": "EHOSTUNREACH", "cause": "unreachable"},
    },
    "icmp-admin": {
        "about": "the path answers the SYN with ICMP administratively prohibited",
        "before": ['iifname "m0" tcp dport %d reject with icmpx type admin-prohibited' % PORT],
        "client": [],
        # ICMPv6's "administratively prohibited" is EACCES (icmpv6_err_convert)
        "expect": {"connect": {4: "EHOSTUNREACH", 6: "EACCES"}, "cause": "unreachable"},
    },
    "icmp-port": {
        "about": "the path answers the SYN with ICMP port unreachable (what a host with no listener does for UDP)",
        "before": ['iifname "m0" tcp dport %d reject with icmpx type port-unreachable' % PORT],
        "client": [],
        "expect": {"connect": "ECONNREFUSED", "cause": "connect_failed"},
    },
    "icmp-established": {
        "about": "an established connection whose path starts answering with ICMP host unreachable; TCP_USER_TIMEOUT=1000",
        "then": ['iifname "m0" tcp dport %d reject with icmpx type host-unreachable' % PORT],
        "client": ["--user-timeout", "1000", "--after", "send-recv"],
        "expect": {"recv": "EHOSTUNREACH", "cause": "unreachable"},
    },
    "nat-forgets": {
        "about": "a NAT (masquerade) drops the flow's conntrack state mid-connection and drops what it no longer knows; TCP_USER_TIMEOUT=1000",
        "nat": True,
        "then": ["ct state invalid drop"],
        "flush_conntrack": True,
        "client": ["--user-timeout", "1000", "--after", "send-recv"],
        "expect": {"recv": "ETIMEDOUT", "cause": "timeout_user"},
    },
    "backlog": {
        "about": "the server's accept queue is full (listen backlog 0, one connection never accepted): the SYN is dropped and the connect times out (net.ipv4.tcp_syn_retries=1)",
        "server": ["--backlog", "0", "--no-accept"],
        "filler": True,
        "client": [],
        "expect": {"connect": "ETIMEDOUT", "cause": "connect_failed"},
    },
}


class Fatal(Exception):
    pass


# Where the plain lab's server listens: the namespace's own loopback.
PLAIN_ADDR = {4: "127.0.0.1", 6: "::1"}


def sh(argv, check=True, ns=None, **kw):
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kw)
    if check and p.returncode != 0:
        raise Fatal("%s failed (%d): %s" % (" ".join(argv), p.returncode, p.stderr.strip()))
    return p


def missing_tools():
    return [t for t in ("ip", "nft", "conntrack", "ss") if not shutil.which(t)]


class Lab:
    """Three namespaces: C (client) -- M (middlebox) -- S (server)."""

    def __init__(self, family):
        self.family = family
        self.a = ADDR[family]
        tag = "%x%x" % (os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFF)
        self.ns = {"c": "eslc" + tag, "m": "eslm" + tag, "s": "esls" + tag}
        self.made = []  # the namespaces this lab made: only those are deleted

    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()

    def setup(self):
        c, m, s = self.ns["c"], self.ns["m"], self.ns["s"]
        for n in (c, m, s):
            sh(["ip", "netns", "add", n])
            self.made.append(n)
            # No duplicate address detection: an address is usable at once (a tentative
            # link-local address would hold neighbour discovery back for a second or two).
            sh(["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"], ns=n)
        # Forwarding before any interface exists (turning it on later resets every
        # interface's IPv6 state).
        sh(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], ns=m)
        # Each end is made inside its namespace: names need only be unique there.
        sh(["ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "m0", "netns", m])
        sh(["ip", "link", "add", "m1", "netns", m, "type", "veth", "peer", "name", "s0", "netns", s])
        a, plen, v6 = self.a, self.a["plen"], self.family == 6
        dad = ["nodad"] if v6 else []
        for ns, dev, addr in ((c, "c0", a["client"]), (m, "m0", a["mb_c"]), (m, "m1", a["mb_s"]), (s, "s0", a["server"])):
            sh(["ip", "addr", "add", "%s/%d" % (addr, plen), "dev", dev] + dad, ns=ns)
            sh(["ip", "link", "set", dev, "up"], ns=ns)
        for ns in (c, m, s):
            sh(["ip", "link", "set", "lo", "up"], ns=ns)
        fam = ["-6"] if v6 else []
        sh(["ip"] + fam + ["route", "add", "default", "via", a["mb_c"]], ns=c)
        sh(["ip"] + fam + ["route", "add", "default", "via", a["mb_s"]], ns=s)
        # Fast, bounded timeouts on the client: retransmissions give up after about 1.4 s
        # (tcp_retries2=2), an unanswered SYN after 3 s (tcp_syn_retries=1).
        sh(["sysctl", "-qw", "net.ipv4.tcp_retries2=2", "net.ipv4.tcp_syn_retries=1"], ns=c)
        self.wait_links()
        sh(["nft", "add table inet lab; add chain inet lab path { type filter hook forward priority 0; policy accept; }"], ns=m)

    def wait_links(self):
        """Until every veth carries traffic: the kernel turns a link's carrier on (and gives it
        a real queue instead of `noop`, which drops everything) in its link watch work, up to
        a second after `ip link set up`; a SYN sent before would be lost and retransmitted."""
        deadline = time.monotonic() + 10
        want = {self.ns["c"]: ["c0"], self.ns["m"]: ["m0", "m1"], self.ns["s"]: ["s0"]}
        while want:
            for ns in list(want):
                out = sh(["ip", "-o", "link", "show"], ns=ns).stdout
                ready = [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()
                         if "state UP" in l and "qdisc noop" not in l]
                want[ns] = [d for d in want[ns] if d not in ready]
                if not want[ns]:
                    del want[ns]
            if want:
                if time.monotonic() > deadline:
                    raise Fatal("links not up: %s" % want)
                time.sleep(0.01)  # polling the kernel's state

    def nft_rules(self, rules):
        for r in rules:
            sh(["nft", "add rule inet lab path " + r], ns=self.ns["m"])

    def nat(self):
        m = self.ns["m"]
        sh(["nft", 'add table inet labnat; add chain inet labnat post { type nat hook postrouting priority 100; }; add rule inet labnat post oifname "m1" masquerade'], ns=m)
        # Conntrack exists now: a segment of a flow it no longer knows is "invalid" (not
        # picked up mid-stream as a new flow).
        sh(["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"], ns=m)

    def flush_conntrack(self):
        for fam in ("ipv4", "ipv6"):
            # exit 1 with "0 flow entries" for the family not in use
            sh(["conntrack", "-F", "-f", fam], ns=self.ns["m"], check=False)

    def teardown(self):
        while self.made:
            sh(["ip", "netns", "del", self.made.pop()], check=False)


class PlainLab(Lab):
    """One namespace, its loopback up: the client and the server with nothing between them."""

    def __init__(self, family):
        self.family = family
        self.a = {"server": PLAIN_ADDR[family]}
        n = "eslp%x%x" % (os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFF)
        self.ns = {"c": n, "m": n, "s": n}
        self.made = []

    def __enter__(self):
        sh(["ip", "netns", "add", self.ns["c"]])
        self.made.append(self.ns["c"])
        sh(["ip", "link", "set", "lo", "up"], ns=self.ns["c"])
        return self


def read_line(p, what, deadline):
    """The next line of a child's stdout, or Fatal when it ends or the deadline passes."""
    import select

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fatal("%s: no line before the deadline" % what)
        r, _, _ = select.select([p.stdout], [], [], left)
        if r:
            line = p.stdout.readline()
            if not line:
                raise Fatal("%s ended (exit %s): %s" % (what, p.poll(), p.stderr.read() if p.stderr else ""))
            return line.strip()


def wait_queue_full(lab, deadline):
    """Until the server's listener has a connection waiting in its accept queue (ss: Recv-Q of
    a LISTEN socket is the queue's length)."""
    while time.monotonic() < deadline:
        out = sh(["ss", "-Htln", "sport = :%d" % PORT], ns=lab.ns["s"]).stdout.split()
        if len(out) >= 2 and out[1].isdigit() and int(out[1]) >= 1:
            return
        time.sleep(0.01)  # polling the kernel's state, not waiting for it to change by itself
    raise Fatal("the accept queue did not fill")


def run(name, family=4, lib=None, rules=None, keep=False, fmt="json", plain=False, faults=None):
    sc = SCENARIOS[name]
    if plain:
        # The program's own options stay; the path's and the server's conditions go.
        sc = {"about": sc["about"] + " (plain: without the condition)", "expect": sc["expect"],
              "client": sc["client"]}
    tmp = tempfile.mkdtemp(prefix="errshim-lab-")
    log = os.path.join(tmp, "errshim.json")
    py = sys.executable or "python3"
    deadline = time.monotonic() + 60
    procs = []
    try:
        with (PlainLab if plain else Lab)(family) as lab:
            a = lab.a
            if sc.get("nat"):
                lab.nat()
            lab.nft_rules(sc.get("before", []))
            server = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns["s"], py, os.path.join(HERE, "labserver.py"), a["server"], str(PORT)]
                + sc.get("server", []),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
            procs.append(server)
            if read_line(server, "the server", deadline) != "listening":
                raise Fatal("the server did not say listening")
            if sc.get("filler"):
                filler = subprocess.Popen(
                    ["ip", "netns", "exec", lab.ns["c"], py, os.path.join(HERE, "labclient.py"), a["server"], str(PORT), "--hold"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
                procs.append(filler)
                said = read_line(filler, "the filler", deadline)
                if said != "connected":
                    raise Fatal("the filler did not connect: %s" % said)
                wait_queue_full(lab, deadline)
            env = dict(os.environ)
            if lib:
                env["LD_PRELOAD"] = os.path.abspath(lib)
                env["ERRSHIM_FORMAT"] = fmt
                env["ERRSHIM_LOG"] = log
                env["ERRSHIM_LOG_RATE"] = "0"
                if faults:
                    env["ERRSHIM_FAULTS"] = faults
                if rules:
                    env["ERRSHIM_RULES"] = rules
                else:
                    env.pop("ERRSHIM_RULES", None)
            client = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns["c"], py, os.path.join(HERE, "labclient.py"), a["server"], str(PORT)]
                + sc["client"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
            procs.append(client)
            first = read_line(client, "the client", deadline)
            if first == "ready":
                lab.nft_rules(sc.get("then", []))
                if sc.get("flush_conntrack"):
                    lab.flush_conntrack()
                client.stdin.write("go\n")
                client.stdin.flush()
                first = read_line(client, "the client", deadline)
            try:
                program = json.loads(first)
            except ValueError:
                raise Fatal("the client said %r" % first)
            client.wait(timeout=max(1, deadline - time.monotonic()))
            err = client.stderr.read()
            events, lines = [], []
            if os.path.exists(log):
                with open(log) as f:
                    for line in f:
                        line = line.strip()
                        lines.append(line)
                        if fmt == "json" and line.startswith("{"):
                            events.append(json.loads(line))
            return {
                "scenario": name,
                "family": family,
                "about": sc["about"],
                "expect": sc["expect"],
                "program": program,
                "client_exit": client.returncode,
                "client_stderr": err[-2000:],
                "events": events,
                "lines": lines,
            }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def check(result):
    """What the scenario expects, against what happened: a list of complaints."""
    bad = []
    exp, prog = result["expect"], result["program"]
    for call in ("connect", "recv"):
        want = exp.get(call)
        if isinstance(want, dict):
            want = want.get(result["family"], want.get(str(result["family"])))
        if want and prog.get(call) != want:
            bad.append("%s gave %s, expected %s" % (call, prog.get(call), want))
    shut = [e for e in result["events"] if e.get("call") == "shutdown"]
    if result.get("preloaded", True):
        if not shut:
            bad.append("errshim logged no shutdown event")
        elif shut[0].get("cause") != exp["cause"]:
            bad.append("errshim named %s, expected %s" % (shut[0].get("cause"), exp["cause"]))
    return bad


def on_signal(signum, _frame):
    """A lab killed by SIGTERM, SIGINT or SIGHUP still removes its namespaces and children
    (the `finally` blocks run on the way out)."""
    raise SystemExit(128 + signum)


def main():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    ap = argparse.ArgumentParser(description="errshim's network lab (needs root)")
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("list", help="the scenarios")
    r = sub.add_parser("run", help="run one scenario, print the result as JSON")
    r.add_argument("scenario", choices=sorted(SCENARIOS))
    r.add_argument("--family", type=int, choices=(4, 6), default=4)
    r.add_argument("--lib", default=os.path.join(ROOT, "target", "release", "liberrshim.so"),
                   help="liberrshim.so to preload into the client ('' for none)")
    r.add_argument("--rules", help="ERRSHIM_RULES for the client (default: errshim's default)")
    r.add_argument("--format", choices=("json", "text"), default="json", help="ERRSHIM_FORMAT (text: the lines only)")
    r.add_argument("--keep", action="store_true", help="keep the temporary directory with errshim's log")
    r.add_argument("--check", action="store_true", help="exit 1 unless the result is what the scenario expects")
    r.add_argument("--plain", action="store_true", help="without the condition: one namespace, over loopback")
    r.add_argument("--faults", help="ERRSHIM_FAULTS for the client")
    args = ap.parse_args()
    if args.cmd == "list":
        for n in sorted(SCENARIOS):
            print("%-18s %s" % (n, SCENARIOS[n]["about"]))
        return 0
    if args.cmd != "run":
        ap.print_help()
        return 2
    if os.geteuid() != 0:
        print("netlab: needs root (network namespaces)", file=sys.stderr)
        return 2
    miss = missing_tools()
    if miss:
        print("netlab: missing %s (apt-get install iproute2 nftables conntrack)" % ", ".join(miss), file=sys.stderr)
        return 2
    try:
        res = run(args.scenario, args.family, args.lib or None, args.rules, args.keep, args.format,
                  args.plain, args.faults)
    except Fatal as e:
        print("netlab: %s" % e, file=sys.stderr)
        return 2
    res["preloaded"] = bool(args.lib)
    print(json.dumps(res, indent=1, sort_keys=True))
    if args.check:
        bad = check(res)
        for b in bad:
            print("netlab: %s" % b, file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
