#!/usr/bin/env python3
"""The benchmark behind scripts/bench: every server side by side, measured on
this machine in one run, printed as one table (docs/benchmarks.md).

Servers (--servers, comma-separated; default all):
  tlsport-erl   tlsportd driven by the Erlang library's modern API
  tlsport-py    tlsportd driven by the Python asyncio library
  tlsport-min   tlsportd with a minimal C++ controlling client
  otp-ssl       OTP's own ssl (the same Erlang program as tlsport-erl)
  py-asyncio    Python's own asyncio + ssl (the same program as tlsport-py)
  stunnel       stunnel4 in front of a plain C++ backend
  inproc        an in-process asio + OpenSSL server, one thread

Workloads (--workloads; default all, in this order): bulk, upload, echo,
handshake, resume, idle. The load generator is bench/loadgen (tlsport-loadgen)."""

import argparse
import datetime
import os
import platform
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("TLSPORT_BUILD", os.path.join(ROOT, "build"))
DAEMON = os.environ.get("TLSPORTD", os.path.join(BUILD, "daemon", "tlsportd"))
LOADGEN = os.path.join(BUILD, "bench", "loadgen", "tlsport-loadgen")
ERLANG_LIB = os.path.join(ROOT, "client-libs", "erlang", "_build", "default", "lib", "tlsport")
PY_SERVER = os.path.join(ROOT, "bench", "servers", "py_server.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SERVERS = ["tlsport-erl", "tlsport-py", "tlsport-min", "otp-ssl", "py-asyncio", "stunnel", "inproc"]
TITLES = {"tlsport-erl": "tlsport/erl", "tlsport-py": "tlsport/py", "tlsport-min": "tlsport/min",
          "otp-ssl": "OTP ssl", "py-asyncio": "asyncio+ssl", "stunnel": "stunnel",
          "inproc": "in-process"}
# Idle last: it leaves large heaps and tens of thousands of closed connections
# behind, which should not weigh on the rates of the others.
WORKLOADS = ["bulk", "upload", "echo", "handshake", "resume", "idle"]

SIZES = {
    "full": dict(idle=10000, pace=32, bulk_mb=256, conns=64, seconds=5.0, warmup=1.0,
                 hs_conns=16, hs_seconds=5.0, settle=2.0),
    "smoke": dict(idle=40, pace=8, bulk_mb=2, conns=4, seconds=0.3, warmup=0.1,
                  hs_conns=4, hs_seconds=0.3, settle=0.3),
}
TICK = os.sysconf("SC_CLK_TCK")
FD_RESERVE = 128


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes

def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(roots):
    """The roots and all their descendants."""
    kids = children_map()
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def proc_stat(pid):
    """(comm, utime + stime in ticks), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    return comm, int(fields[11]) + int(fields[12])


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def role(comm):
    """Which part of a server a process is: the TLS process or the rest."""
    return "tls" if comm in ("tlsportd", "stunnel4", "stunnel") else "app"


class Drain(threading.Thread):
    """Reads a pipe to its end, keeping the last lines (for error reports)."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []
        self.start()

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            self.lines = (self.lines + [raw.decode(errors="replace").rstrip()])[-20:]


class Server:
    """A server under test: its processes, its ports, and their costs."""

    def __init__(self, name, bench):
        self.name, self.bench = name, bench
        self.procs, self.drains = [], []
        self.echo = self.bulk = None
        self.restarts = 0

    def spawn(self, cmd, env=None, announce=True):
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        if not announce:
            self.drains.append(Drain(proc.stdout))
            return None
        deadline = time.monotonic() + 60
        buf = b""
        while not any(ln.startswith(b"PORTS") for ln in buf.split(b"\n")[:-1]):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"{self.name}: no PORTS line from {cmd[0]}: {buf[-400:]!r}")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                buf += chunk
        line = next(ln for ln in buf.decode().splitlines() if ln.startswith("PORTS"))
        self.drains.append(Drain(proc.stdout))
        ports = dict(kv.split("=") for kv in line.split()[1:])
        return int(ports["echo"]), int(ports["bulk"])

    def start(self):
        b = self.bench
        env = dict(os.environ, TLSPORTD=DAEMON)
        if self.name in ("tlsport-erl", "otp-ssl"):
            lib = "tlsport" if self.name == "tlsport-erl" else "ssl"
            call = f'tlsport_bench_server:main(["{lib}", "{b.cert}", "{b.key}"])'
            cmd = ["erl", "-noshell", *b.erl_flags, "-pa", os.path.join(ERLANG_LIB, "ebin"),
                   "-pa", os.path.join(ERLANG_LIB, "bench"), "-eval", call]
            self.echo, self.bulk = self.spawn(cmd, env)
        elif self.name in ("tlsport-py", "py-asyncio"):
            lib = "tlsport" if self.name == "tlsport-py" else "asyncio-ssl"
            self.echo, self.bulk = self.spawn([PYTHON, PY_SERVER, lib, b.cert, b.key], env)
        elif self.name == "tlsport-min":
            self.echo, self.bulk = self.spawn([LOADGEN, "serve-tlsportd", "--daemon", DAEMON,
                                               "--cert", b.cert, "--key", b.key], env)
        elif self.name == "inproc":
            self.echo, self.bulk = self.spawn([LOADGEN, "serve-tls", "--cert", b.cert, "--key", b.key])
        elif self.name == "stunnel":
            back_echo, back_bulk = self.spawn([LOADGEN, "serve-plain"])
            self.echo, self.bulk = free_port(), free_port()
            conf = os.path.join(b.dir, "stunnel.conf")
            with open(conf, "w") as f:
                f.write(stunnel_conf(b, self.echo, back_echo, self.bulk, back_bulk))
            self.spawn([b.stunnel, conf], announce=False)
            wait_listening([self.echo, self.bulk], self.procs[-1])

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def pids(self):
        return tree([p.pid for p in self.procs if p.poll() is None])

    def cpu(self):
        return {pid: s for pid in self.pids() if (s := proc_stat(pid)) is not None}

    def rss(self):
        """KiB by role (tls, app)."""
        out = {"tls": 0, "app": 0}
        for pid in self.pids():
            s = proc_stat(pid)
            if s is not None:
                out[role(s[0])] += proc_rss_kib(pid)
        return out

    def output(self):
        return " | ".join(line for d in self.drains for line in d.lines[-3:])

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs, self.drains = [], []


def cpu_delta(before, after):
    """Seconds of CPU by role between two snapshots (new processes from 0)."""
    out = {"tls": 0.0, "app": 0.0}
    for pid, (comm, ticks) in after.items():
        start = before.get(pid, (comm, 0))[1]
        out[role(comm)] += (ticks - start) / TICK
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(ports, proc):
    deadline = time.monotonic() + 20
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("stunnel exited at start")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on {port}")
                time.sleep(0.05)


def stunnel_conf(b, echo, back_echo, bulk, back_bulk):
    services = ""
    for name, port, back in (("echo", echo, back_echo), ("bulk", bulk, back_bulk)):
        services += (f"[{name}]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{back}\n"
                     f"cert = {b.cert}\nkey = {b.key}\n")
    return ("foreground = yes\npid =\ndebug = 3\nsyslog = no\n"
            "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n" + services)


# ------------------------------------------------------------------ one measurement

class Failed(Exception):
    pass


def loadgen(bench, server, mode, port, args, idle=None):
    """Runs the load generator; returns (RESULT fields, CPU by role in the
    window between its marks). For idle, idle(proc, line) does the rest."""
    cmd = [LOADGEN, mode, "--port", str(port), *map(str, args)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    errors = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr.read().splitlines()),
                              daemon=True)
    reader.start()
    before = after = None
    result = {}
    try:
        for line in proc.stdout:
            word = line.split(" ", 1)[0]
            if line.startswith("MARK start"):
                before = server.cpu()
            elif line.startswith("MARK end"):
                after = server.cpu()
            elif word == "RESULT":
                result = dict(kv.split("=") for kv in line.split()[1:])
            elif word == "OPEN" and idle is not None:
                result = idle(proc, line)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    if proc.returncode != 0 or (not result and idle is None):
        why = errors[-1] if errors else f"exit status {proc.returncode}"
        if not server.alive():
            why = f"{server.name} died ({why}); its output: {server.output()}"
        raise Failed(why)
    cpu = cpu_delta(before, after) if before is not None and after is not None else None
    return result, cpu


def run_workload(bench, server, workload):
    s = bench.sizes
    if workload in ("bulk", "upload"):
        n = int(s["bulk_mb"] * 1e6)
        r, _ = loadgen(bench, server, workload, server.bulk, ["--bytes", n])
        return {"mb_s": float(r["mb_s"])}
    if workload == "echo":
        r, cpu = loadgen(bench, server, "echo", server.echo,
                         ["--conns", s["conns"], "--warmup", s["warmup"], "--seconds", s["seconds"]])
        n = int(r["roundtrips"])
        out = {"rt_s": float(r["rt_s"]), "p50": int(r["p50_us"]), "p99": int(r["p99_us"])}
        if cpu is not None and n > 0:
            out.update(cpu_rt=(cpu["tls"] + cpu["app"]) * 1e6 / n,
                       cpu_rt_tls=cpu["tls"] * 1e6 / n, cpu_rt_app=cpu["app"] * 1e6 / n)
        return out
    if workload in ("handshake", "resume"):
        r, cpu = loadgen(bench, server, workload, server.echo,
                         ["--conns", s["hs_conns"], "--warmup", s["warmup"],
                          "--seconds", s["hs_seconds"]])
        n = int(r["handshakes"])
        out = {"hs_s": float(r["hs_s"]), "resumed": 100.0 * int(r["resumed"]) / max(1, n)}
        if cpu is not None and n > 0:
            out.update(cpu_hs=(cpu["tls"] + cpu["app"]) * 1e6 / n,
                       cpu_hs_tls=cpu["tls"] * 1e6 / n, cpu_hs_app=cpu["app"] * 1e6 / n)
        return out
    if workload == "idle":
        return run_idle(bench, server)
    raise ValueError(workload)


def run_idle(bench, server):
    s = bench.sizes
    n = bench.idle_for(server.name)
    time.sleep(s["settle"])
    base = server.rss()
    figures = {}

    def measure(proc, line):
        opened = int(line.split("open=")[1].split()[0])
        time.sleep(s["settle"])
        if not server.alive():
            proc.stdin.close()
            raise Failed(f"{server.name} died with {opened} of {n} connections open: "
                         f"{server.output()}")
        held = server.rss()
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.stdout.readline()  # CLOSED
        time.sleep(s["settle"] * 1.5)
        after = server.rss() if server.alive() else None
        per = {k: (held[k] - base[k]) / max(1, opened) for k in held}
        figures.update(kib=per["tls"] + per["app"], kib_tls=per["tls"], kib_app=per["app"],
                       opened=opened)
        if after is not None:
            grown = sum(held.values()) - sum(base.values())
            kept = sum(after.values()) - sum(base.values())
            figures.update(kept_mib=kept / 1024, kept_pct=100.0 * kept / grown if grown > 0 else 0.0)
        return {"ok": "1"}

    loadgen(bench, server, "idle", server.echo,
            ["--conns", n, "--pace", s["pace"], "--limit", bench.idle_limit], idle=measure)
    if figures.get("opened", 0) < n:
        bench.note(server.name, "idle",
                   f"only {figures.get('opened', 0)} of {n} connections could be opened")
    return figures


# ------------------------------------------------------------------ the table

ROWS = [
    # (workload, key, label, format, with ratio rows)
    ("bulk", "mb_s", "bulk down (server sends), MB/s", "{:,.0f}", True),
    ("upload", "mb_s", "bulk up (server receives), MB/s", "{:,.0f}", True),
    ("echo", "rt_s", "echo, round trips/s", "{:,.0f}", True),
    ("echo", "p50", "echo p50 latency, us", "{:,}", True),
    ("echo", "p99", "echo p99 latency, us", "{:,}", True),
    ("echo", "cpu_rt", "echo server CPU per round trip, us", "{:.1f}", True),
    ("echo", "cpu_rt_tls", "  in tlsportd or stunnel", "{:.1f}", False),
    ("echo", "cpu_rt_app", "  in the other processes", "{:.1f}", False),
    ("handshake", "hs_s", "full handshakes/s", "{:,.0f}", True),
    ("handshake", "cpu_hs", "server CPU per full handshake, us", "{:,.0f}", True),
    ("handshake", "cpu_hs_tls", "  in tlsportd or stunnel", "{:,.0f}", False),
    ("handshake", "cpu_hs_app", "  in the other processes", "{:,.0f}", False),
    ("resume", "hs_s", "resumed handshakes/s", "{:,.0f}", True),
    ("resume", "resumed", "  of which resumed, %", "{:.0f}", False),
    ("resume", "cpu_hs", "server CPU per resumed handshake, us", "{:,.0f}", True),
    ("idle", "kib", "RSS per idle connection, KiB", "{:.1f}", True),
    ("idle", "kib_tls", "  in tlsportd or stunnel", "{:.1f}", False),
    ("idle", "kib_app", "  in the other processes", "{:.1f}", False),
    ("idle", "kept_mib", "RSS above baseline after close, MiB", "{:,.1f}", False),
    ("idle", "kept_pct", "  as % of the growth", "{:.0f}", False),
]


def render(bench):
    servers = bench.servers
    width = max(11, *(len(TITLES[s]) for s in servers)) + 2
    label_w = 38
    lines = []
    head = f"{'':<{label_w}}" + "".join(f"{TITLES[s]:>{width}}" for s in servers)
    lines.append(head)
    lines.append("-" * len(head))
    refs = [("in-process", "inproc"), ("OTP ssl", "otp-ssl")]
    for workload, key, label, fmt, ratios in ROWS:
        if workload not in bench.workloads:
            continue
        if workload == "idle":
            label = label.replace("idle connection", f"idle connection ({bench.idle:,})")
        if workload == "echo" and key == "rt_s":
            label = f"echo x{bench.sizes['conns']}, 100 B {{packet,2}}, rt/s"
        if workload == "handshake" and key == "hs_s":
            label = f"full TLS 1.3 handshakes/s ({bench.sizes['hs_conns']} at once)"
        cells = []
        for s in servers:
            v = bench.value(s, workload, key)
            mark = bench.mark(s, workload)
            if v is None:
                cells.append("FAIL" + mark if bench.failed(s, workload) else "-")
            else:
                cells.append(fmt.format(v) + mark)
        lines.append(f"{label:<{label_w}}" + "".join(f"{c:>{width}}" for c in cells))
        if not ratios:
            continue
        for ref_title, ref in refs:
            if ref not in servers:
                continue
            r = bench.value(ref, workload, key)
            cells = []
            for s in servers:
                v = bench.value(s, workload, key)
                cells.append("-" if v is None or not r else f"{v / r:.2f}x")
            lines.append(f"{'    / ' + ref_title:<{label_w}}" + "".join(f"{c:>{width}}" for c in cells))
    return lines


# ------------------------------------------------------------------ the run

class Bench:
    def __init__(self, args):
        self.sizes = dict(SIZES["smoke" if args.smoke else "full"])
        for key in ("idle", "pace", "bulk_mb", "conns", "seconds", "warmup", "hs_conns",
                    "hs_seconds", "settle"):
            v = getattr(args, key)
            if v is not None:
                self.sizes[key] = v
        self.smoke = args.smoke
        self.servers = pick(args.servers, SERVERS, "server")
        self.workloads = pick(args.workloads, WORKLOADS, "workload")
        self.erl_flags = (args.erl_flags or os.environ.get("TLSPORT_BENCH_ERL_FLAGS", "")).split()
        self.results, self.failures, self.notes, self.footnotes = {}, {}, {}, []
        self.idle = int(self.sizes["idle"])
        self.idle_cap = {}  # server -> fewer idle connections, when the fd limit says so
        self.idle_limit = 240 if not args.smoke else 60
        self.stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
        self.dir = tempfile.mkdtemp(prefix="tlsport-bench-")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")

    def idle_for(self, server):
        return self.idle_cap.get(server, self.idle)

    def value(self, server, workload, key):
        return self.results.get((server, workload), {}).get(key)

    def failed(self, server, workload):
        return (server, workload) in self.failures

    def note(self, server, workload, text):
        self.footnotes.append(text if server is None else f"{TITLES[server]}, {workload}: {text}")
        self.notes.setdefault((server, workload), []).append(len(self.footnotes))

    def mark(self, server, workload):
        numbers = self.notes.get((server, workload))
        return "[" + ",".join(map(str, numbers)) + "]" if numbers else ""


def pick(arg, known, what):
    if not arg:
        return list(known)
    chosen = [x.strip() for x in arg.split(",") if x.strip()]
    for x in chosen:
        if x not in known:
            sys.exit(f"unknown {what} {x!r}; known: {', '.join(known)}")
    return [x for x in known if x in chosen]


def raise_fd_limit(bench):
    """Soft limit to the hard one (and the hard one up, as root); fewer idle
    connections for a server whose need the limit cannot hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # stunnel holds both ends of each connection: two descriptors.
    need = (2 if "stunnel" in bench.servers else 1) * bench.idle + FD_RESERVE
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                ceiling = int(f.read())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, ceiling), min(need, ceiling)))
        except (OSError, ValueError):
            pass  # no CAP_SYS_RESOURCE: the hard limit stays
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if "idle" not in bench.workloads:
        return soft
    for server in bench.servers:
        per_conn = 2 if server == "stunnel" else 1
        if soft == resource.RLIM_INFINITY or per_conn * bench.idle + FD_RESERVE <= soft:
            continue
        fit = max(1, (soft - FD_RESERVE) // per_conn)
        bench.idle_cap[server] = fit
        bench.note(server, "idle", f"open-file limit {soft} holds {fit} idle connections in it, "
                                   f"not {bench.idle}: measured with {fit}; raise the hard limit "
                                   f"(ulimit -Hn as root, limits.conf) to "
                                   f"{per_conn * bench.idle + FD_RESERVE} for the full count")
        log(f"warning: {bench.footnotes[-1]}")
    return soft


def versions(bench):
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    otp = run(["erl", "-noshell", "-eval",
               'io:format("~s", [erlang:system_info(otp_release)]), halt().'])
    daemon = run([DAEMON, "--version"]).split("\n")[0]
    ssl_v = run(["openssl", "version"])
    stunnel = "?"
    if bench.stunnel:
        out = subprocess.run([bench.stunnel, "-version"], capture_output=True, text=True).stderr
        stunnel = next((ln.split()[1] for ln in out.splitlines() if ln.startswith("stunnel ")), "?")
    py = run([PYTHON, "-c", "import platform; print(platform.python_version())"])
    return (f"tlsportd {daemon or '?'}, OTP {otp}, Python {py}, {ssl_v}, stunnel {stunnel}, "
            f"{os.cpu_count()} cores, Linux {platform.release()}")


def make_cert(bench):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost", "-days", "2",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", bench.key, "-out", bench.cert], check=True, capture_output=True)


def main():
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds in all; fails on any failure")
    p.add_argument("--servers", help="comma-separated, from: " + ", ".join(SERVERS))
    p.add_argument("--workloads", help="comma-separated, from: " + ", ".join(WORKLOADS))
    p.add_argument("--idle", type=int, help="idle connections (full: 10000)")
    p.add_argument("--pace", type=int, help="idle connections opened at once (32)")
    p.add_argument("--bulk-mb", type=float, help="MB sent or received in bulk (256)")
    p.add_argument("--conns", type=int, help="echo connections (64)")
    p.add_argument("--seconds", type=float, help="echo measurement seconds (5)")
    p.add_argument("--warmup", type=float, help="echo and handshake warm-up seconds (1)")
    p.add_argument("--hs-conns", type=int, help="handshakes at once (16)")
    p.add_argument("--hs-seconds", type=float, help="handshake measurement seconds (5)")
    p.add_argument("--settle", type=float, help="seconds to wait before reading memory (2)")
    p.add_argument("--erl-flags", help="emulator flags for both Erlang servers, e.g. '+sbwt none'")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args()

    bench = Bench(args)
    for path in (DAEMON, LOADGEN):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: run scripts/build.sh (scripts/bench does)")
    if "stunnel" in bench.servers and not bench.stunnel:
        sys.exit("stunnel4 is not installed (scripts/install-deps.sh installs it)")
    limit = raise_fd_limit(bench)
    make_cert(bench)
    started = time.monotonic()
    header = [f"tlsport benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}, loopback, {versions(bench)}",
              f"sizes: {bench.sizes}, open-file limit {limit}, "
              f"Erlang flags: {' '.join(bench.erl_flags) or '(defaults)'}"]
    for line in header:
        log(line)

    live = {}
    try:
        for name in bench.servers:
            live[name] = Server(name, bench)
            try:
                live[name].start()
            except (RuntimeError, OSError) as e:
                log(f"{name}: cannot start: {e}")
        # Warm every server once, then each workload on every server in turn.
        for name, server in live.items():
            if server.alive():
                try:
                    loadgen(bench, server, "echo", server.echo,
                            ["--conns", 8, "--warmup", 0, "--seconds", 0.5 if not bench.smoke else 0.1])
                except Failed as e:
                    log(f"{name}: warm-up failed: {e}")
        for workload in bench.workloads:
            for name, server in live.items():
                if not server.alive():
                    server.stop()
                    server.restarts += 1
                    if server.restarts > 3:
                        bench.failures[(name, workload)] = "not running"
                        continue
                    log(f"{name}: restarting it (it is not running)")
                    try:
                        server.start()
                        loadgen(bench, server, "echo", server.echo,
                                ["--conns", 8, "--warmup", 0, "--seconds", 0.1])
                    except (RuntimeError, OSError, Failed) as e:
                        bench.failures[(name, workload)] = str(e)
                        bench.note(name, workload, f"could not be started: {e}")
                        continue
                t0 = time.monotonic()
                try:
                    figures = run_workload(bench, server, workload)
                    bench.results[(name, workload)] = figures
                    shown = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in figures.items())
                    log(f"[{workload}] {name}: {shown} ({time.monotonic() - t0:.1f} s)")
                except Failed as e:
                    bench.failures[(name, workload)] = str(e)
                    bench.note(name, workload, str(e)[:300])
                    log(f"[{workload}] {name}: FAILED: {e}")
    finally:
        for server in live.values():
            server.stop()
        shutil.rmtree(bench.dir, ignore_errors=True)

    lines = header + [""] + render(bench) + [""]
    lines.append("Rates are per second; every '/ X' row is this server's figure divided by X's. "
                 "CPU: utime+stime of every process")
    lines.append("of the server (/proc/PID/stat) in the measured window; RSS: VmRSS growth of "
                 "every process while the idle")
    lines.append("connections are held, per connection. tlsport/min: tlsportd with a minimal "
                 "C++ client (the daemon's ceiling).")
    for i, text in enumerate(bench.footnotes, 1):
        lines.append(f"[{i}] {text}")
    lines.append(f"({time.monotonic() - started:.0f} s)")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    if bench.smoke and bench.failures:
        log(f"smoke: {len(bench.failures)} measurement(s) failed")
        return 1
    if bench.smoke:
        missing = [(s, w) for s in bench.servers for w in bench.workloads
                   if (s, w) not in bench.results]
        if missing:
            log(f"smoke: no figures for {missing}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
