#!/usr/bin/env python3
"""The network path (docs/network.md): guests reach bypassd over gRPC (BYPASS_ENDPOINT=grpc://).

Cases (one ctest test each, label `network`):
  loopback SAMPLE   bypassd --listen grpc://127.0.0.1:PORT --insecure; SAMPLE's output through
                    the network identical to native; the session is listed as grpc and ends clean
  loopback-vulkaninfo  vulkaninfo over the network equals vulkaninfo through the local ICD but
                    for VK_KHR_external_memory_fd (no fd crosses a network)
  netns             bypassd in one network namespace, the guests in another (a veth pair), TLS
                    with a CA this test makes (openssl) and a bearer token: the samples
                    triangle, compute, texture and sync identical to native, vulkaninfo, the
                    identity in bypassctl; a wrong token, no token and a server certificate of
                    another CA refused with one line on both sides
  netns-client-cert bypassd requiring client certificates: one from the test CA opens a
                    session (its subject listed), one from another CA is refused
  hostile           a client that breaks the stream protocol (garbage, an oversized frame, no
                    hello, a bad hello, another schema, a reserved kind, silence) is refused
                    each time; bypassd and bypass-grpcd live on and serve a good guest after
  management        the gRPC management API through bypassctl: health SERVING; server reflection
                    on the management socket lists Management, health and reflection; sessions
                    lists a network guest (table and --json), also over TCP for an --admin's
                    token (another token and none refused); drain refuses a new guest and makes health
                    NOT_SERVING while it waits; end ID ends the live guest (VK_ERROR_DEVICE_LOST,
                    reason ended_by_operator) and the drain returns
  cut               the link goes down mid-frame: the guest gets VK_ERROR_DEVICE_LOST within a
                    second or two, bypassd ends the session and releases everything
  relay-sandbox     bypass-grpcd runs under seccomp (mode 2, on every thread), no_new_privs, no
                    core dumps, and serves a guest identical to native; run with --probe-sandbox
                    it finds exec, fork and inet sockets refused, UNIX sockets and threads allowed
  relay-user        with --worker-user nobody the relay runs as nobody in the sockets' group
                    (sandboxed), its sessions and management calls still recognised by pid, a
                    guest identical to native through it; killing bypassd ends it
  relay-restart     bypass-grpcd is killed (SIGKILL) under a running network guest: the guest
                    gets VK_ERROR_DEVICE_LOST, its session ends peer_gone, bypassd lives on,
                    starts a new relay (sandboxed too), and a new guest renders identical to native
  port-in-use       a second bypassd --listen on the port of a running one: its relay cannot
                    listen (no SO_REUSEPORT sharing), says so, and is retried with a back-off;
                    every network guest reaches the first server; once the first stops, the
                    second's relay binds the port and serves a guest identical to native
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

OUTPUT_ARGS = {
    "triangle": ["--frames", "3"],
    "compute": ["--frames", "2", "--elements", "1048576"],
    "texture": ["--frames", "2"],
    "sync": ["--frames", "1"],
}
TOKEN = "t0ken-for-the-network-test-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*argv, check_rc=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check_rc:
        check(r.returncode == 0, f"`{' '.join(argv)}` failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Netns:
    """Two network namespaces joined by a veth pair: host side .1, guest side .2."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.host, self.guest = f"bypnh{tag}", f"bypng{tag}"
        self.veth_h, self.veth_g = f"bvh{tag}", f"bvg{tag}"
        net = 10 + os.getpid() % 240
        self.host_ip, self.guest_ip = f"10.213.{net}.1", f"10.213.{net}.2"
        sh("ip", "netns", "add", self.host)
        sh("ip", "netns", "add", self.guest)
        sh(
            "ip",
            "link",
            "add",
            self.veth_h,
            "netns",
            self.host,
            "type",
            "veth",
            "peer",
            self.veth_g,
            "netns",
            self.guest,
        )
        for ns, dev, ip in ((self.host, self.veth_h, self.host_ip), (self.guest, self.veth_g, self.guest_ip)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def wrap(self, ns):
        return ["ip", "netns", "exec", ns]

    def close(self):
        for ns in (self.host, self.guest):
            sh("ip", "netns", "del", ns, check_rc=False)


@contextlib.contextmanager
def netns():
    n = Netns()
    try:
        yield n
    finally:
        harness.sweep_children()
        n.close()


class Pki:
    """A test CA, a server certificate for `ips`, client certificates; and a stranger CA."""

    def __init__(self, workdir, ips):
        self.dir = workdir
        self.ca_key, self.ca = self.path("ca.key"), self.path("ca.pem")
        self._ca("ca", "bypass test CA")
        self._ca("other-ca", "some other CA")
        san = ",".join(["DNS:localhost"] + [f"IP:{ip}" for ip in ips])
        self.server_cert, self.server_key = self.issue("server", "bypass test server", san, "ca")
        self.client_cert, self.client_key = self.issue("client", "guest-alice", None, "ca")
        self.other_client_cert, self.other_client_key = self.issue("stranger", "guest-mallory", None, "other-ca")
        self.other_ca = self.path("other-ca.pem")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name, cn):
        sh(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            self.path(f"{name}.key"),
            "-out",
            self.path(f"{name}.pem"),
        )

    def issue(self, name, cn, san, ca):
        key, csr, cert = self.path(f"{name}.key"), self.path(f"{name}.csr"), self.path(f"{name}.pem")
        sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", key, "-out", csr)
        ext = self.path(f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n")
            if san:
                f.write(f"subjectAltName={san}\n")
        sh(
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.path(f"{ca}.pem"),
            "-CAkey",
            self.path(f"{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            cert,
            "-extfile",
            ext,
        )
        return cert, key


class NetServer(Bypassd):
    """bypassd (optionally inside a network namespace) listening on grpc:// as well."""

    def __init__(self, workdir, listen, args=(), wrap=()):
        super().__init__(workdir, ["--listen", listen] + list(args))
        self.wrap = list(wrap)
        self.listen = listen

    def launch(self):
        """Starts bypassd without waiting for its relay (start() waits)."""
        self._log_file = open(self.log_path, "ab")
        argv = self.wrap + [harness.env_path("BYPASSD"), "--socket", self.socket, "--log-level", "debug"]
        self.proc = harness.spawn(
            argv + self.extra_args, harness.native_env(self.workdir), stdout=self._log_file, stderr=subprocess.STDOUT
        )
        return self

    def start(self, timeout=20.0):
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, f"bypassd exited {self.proc.returncode} while starting:\n{self.log_text()}")
            if os.path.exists(self.control) and "management API on" in self.log_text():
                return self
            time.sleep(0.05)
        raise harness.TestFailure(f"bypassd --listen did not come up:\n{self.log_text()}")

    def net_env(self, endpoint, **extra):
        env = harness.base_env(self.workdir)
        env["VK_DRIVER_FILES"] = harness.env_path("BYPASS_ICD_JSON")
        env["BYPASS_ENDPOINT"] = endpoint
        env["BYPASS_CONNECT_TIMEOUT_MS"] = "5000"
        env.update(extra)
        return env


def native_reference(name, workdir):
    out = os.path.join(workdir, f"{name}.native.out")
    r = harness.run_sample(
        name, harness.native_env(workdir), workdir, f"{name}.native", OUTPUT_ARGS[name] + ["--out", out]
    )
    harness.check_ok(r, f"native {name}")
    return out


def run_and_compare(server, name, env, workdir, wrap=(), tag="net"):
    native = native_reference(name, workdir)
    out = os.path.join(workdir, f"{name}.{tag}.out")
    argv = list(wrap) + [harness.sample_path(name)] + OUTPUT_ARGS[name] + ["--out", out]
    r = harness.run(argv, env, workdir, f"{name}.{tag}", 120)
    harness.check_ok(r, f"{name} over the network")
    harness.check_through_bypass(r, name)
    harness.check_same_file(native, out, f"{name}: network output vs native")
    log(f"{name}: {os.path.getsize(out)} bytes identical natively and over the network ({r.seconds:.2f} s)")
    return r


def wait_log(server, ready, timeout):
    """Polls bypassd's log until ready(text) or the timeout (bypassd must stay alive); returns
    the log's text. The caller checks what it needs of it."""
    deadline = time.monotonic() + timeout
    text = server.log_text()
    while time.monotonic() < deadline and not ready(text):
        server.check_alive()
        time.sleep(0.05)
        text = server.log_text()
    return text


def wait_no_sessions(server, what):
    return server.wait_stats(lambda s: s["sessions"] == [] and s["live_objects"] == 0, what)


def check_reads_ride_waits(server, env, workdir):
    """A small job's read barrier comes back with its wait (kCtlMemoryReadAfter): bypassd's
    session log counts the reads it answered behind their wait and the ones it skipped (the
    1M-element run above: its waits outlast bypassd's inline wait). Each frame is checked by
    the sample and the last compared with a native run."""
    args = ["--frames", "30", "--elements", "256"]
    native = os.path.join(workdir, "compute-small.native.out")
    harness.check_ok(
        harness.run_sample(
            "compute", harness.native_env(workdir), workdir, "compute-small.native", args + ["--out", native]
        ),
        "native compute, small",
    )
    out = os.path.join(workdir, "compute-small.net.out")
    r = harness.run([harness.sample_path("compute")] + args + ["--out", out], env, workdir, "compute-small.net", 120)
    harness.check_ok(r, "compute over the network, small")
    harness.check_same_file(native, out, "compute, small: network output vs native")
    text = wait_log(server, lambda t: len(re.findall(r"read behind their wait", t)) >= 2, 10)
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+) read behind their wait, (\d+) skipped", text)]
    check(len(counts) == 2, f"expected the two compute sessions' read counts in bypassd's log:\n{text[-3000:]}")
    (large_read, large_skipped), (small_read, small_skipped) = counts
    log(
        f"reads behind their wait: 1M elements {large_read} read, {large_skipped} skipped; 256 elements {small_read} read, {small_skipped} skipped"
    )
    check(large_read + large_skipped >= 2, f"the 1M-element run sent no read behind its waits: {counts}")
    check(small_read >= 1, f"no read of the small run came back with its wait: {counts}")


def case_loopback(workdir, name):
    check(name in OUTPUT_ARGS, f"unknown sample {name}")
    port = free_port()
    server = NetServer(workdir, f"grpc://127.0.0.1:{port}", ["--insecure"]).start()
    env = server.net_env(f"grpc://127.0.0.1:{port}", BYPASS_INSECURE="1")
    run_and_compare(server, name, env, workdir)
    if name == "compute":
        check_reads_ride_waits(server, env, workdir)
    stats = wait_no_sessions(server, "the network session to end")
    check(stats["ended"], f"no ended session listed: {stats}")
    check(all(harness.is_clean(e) for e in stats["ended"]), f"a network session did not end clean: {stats['ended']}")
    check("relayed to bypassd" in server.log_text(), "bypass-grpcd relayed nothing")
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


def vulkaninfo(env, workdir, tag, wrap=()):
    r = harness.run(
        list(wrap) + [harness.env_path("BYPASS_VULKANINFO")], harness.unsanitized_guest_env(env), workdir, tag, 60
    )
    harness.check_ok(r, f"vulkaninfo {tag}")
    return r.stdout


def check_vulkaninfo(local, remote):
    """Equal but for VK_KHR_external_memory_fd, which needs fds and so is not offered remotely."""
    a = [line for line in local.splitlines() if "VK_KHR_external_memory_fd" not in line]
    b = remote.splitlines()
    norm = [lambda x: x if "count =" not in x else x.split("count =")[0]]
    a2, b2 = [norm[0](x) for x in a], [norm[0](x) for x in b]
    check(
        a2 == b2,
        "vulkaninfo over the network differs from the local ICD's:\n"
        + harness.text_diff("\n".join(a2), "\n".join(b2), "local", "network"),
    )


def case_loopback_vulkaninfo(workdir, _):
    port = free_port()
    server = NetServer(workdir, f"grpc://127.0.0.1:{port}", ["--insecure"]).start()
    local_env = server.guest_env()
    local_env["BYPASS_MEMORY"] = "shadow"
    local = vulkaninfo(local_env, workdir, "local")
    remote = vulkaninfo(server.net_env(f"grpc://127.0.0.1:{port}", BYPASS_INSECURE="1"), workdir, "network")
    check("bypass (" in remote, "vulkaninfo over the network did not see the bypass device")
    check_vulkaninfo(local, remote)
    log(f"vulkaninfo: {len(remote.splitlines())} lines, equal to the local ICD's but for VK_KHR_external_memory_fd")
    # gRPC is loaded (through the ICD's network plugin) only into guests of a grpc:// endpoint.
    for tag, guest_env, want in (
        ("local", local_env, False),
        ("network", server.net_env(f"grpc://127.0.0.1:{port}", BYPASS_INSECURE="1"), True),
    ):
        run = harness.Running(
            [harness.sample_path("triangle"), "--frames", "100000"], guest_env, workdir, f"maps-{tag}"
        )
        deadline = time.monotonic() + 15
        maps = ""
        while time.monotonic() < deadline and "bypass_icd" not in maps:
            time.sleep(0.1)
            with open(f"/proc/{run.pid}/maps") as f:
                maps = f.read()
        time.sleep(0.3)
        with open(f"/proc/{run.pid}/maps") as f:
            maps = f.read()
        harness.stop_process(run.proc)
        check("bypass_icd" in maps, f"{tag} guest: the ICD was not loaded")
        check(("libgrpc" in maps) == want, f"{tag} guest: libgrpc {'not ' if want else ''}loaded")
    log("gRPC's libraries are loaded into the network guest only, not into a local one")
    wait_no_sessions(server, "vulkaninfo's sessions to end")
    check(server.stop() == 0, "bypassd did not exit 0")


def refused(server, env, workdir, tag, expect_guest, expect_server, wrap):
    before = server.log_text().count(expect_server) if expect_server else 0
    r = harness.run(list(wrap) + [harness.sample_path("triangle"), "--frames", "1"], env, workdir, tag, 60)
    check(r.returncode != 0, f"{tag}: the guest was not refused:\n{r.describe()}")
    lines = [line for line in r.stderr.splitlines() if line.startswith("bypass: ")]
    parts = expect_guest if isinstance(expect_guest, tuple) else (expect_guest,)
    lines = [line for line in lines if all(p in line for p in parts)]
    check(lines, f"{tag}: expected a line with {' and '.join(map(repr, parts))}:\n{r.describe()}")
    if expect_server:
        deadline = time.monotonic() + 5
        while server.log_text().count(expect_server) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        check(
            server.log_text().count(expect_server) > before,
            f"{tag}: bypassd's log has no new line with {expect_server!r}",
        )
    log(f"{tag}: refused: {lines[0]}")


def case_netns(workdir, _):
    with netns() as n:
        pki = Pki(workdir, [n.host_ip])
        tokens = os.path.join(workdir, "tokens")
        with open(tokens, "w") as f:
            f.write(f"# name token\nalice {TOKEN}\n")
        endpoint = f"grpc://{n.host_ip}:7443"
        server = NetServer(
            workdir,
            f"grpc://{n.host_ip}:7443",
            ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--token-file", tokens],
            wrap=n.wrap(n.host),
        ).start()
        env = server.net_env(endpoint, BYPASS_TLS_CA=pki.ca, BYPASS_TOKEN=TOKEN)
        guest = n.wrap(n.guest)
        for name in OUTPUT_ARGS:
            run_and_compare(server, name, env, workdir, wrap=guest)
        # A long enough run to see the session listed with who opened it and from where.
        run = harness.Running(guest + [harness.sample_path("triangle"), "--frames", "2000"], env, workdir, "listed")
        stats = server.wait_stats(lambda s: any(x.get("transport") == "grpc" for x in s["sessions"]), "a grpc session")
        live = next(x for x in stats["sessions"] if x.get("transport") == "grpc")
        check(live["identity"] == "token:alice", f"identity {live['identity']!r}, expected token:alice")
        check(n.guest_ip in live["address"], f"address {live['address']!r} does not name {n.guest_ip}")
        log(f"listed: {json.dumps(live)}")
        harness.stop_process(run.proc)
        wait_no_sessions(server, "the listed session to end")
        # vulkaninfo across the namespaces
        remote = vulkaninfo(env, workdir, "netns-vulkaninfo", wrap=guest)
        check("bypass (" in remote, "vulkaninfo over the network did not see the bypass device")
        # Refusals: one line on each side.
        refused(
            server,
            server.net_env(endpoint, BYPASS_TLS_CA=pki.ca, BYPASS_TOKEN="wrong-token-0123456789"),
            workdir,
            "wrong-token",
            "not in --token-file",
            "not in --token-file",
            guest,
        )
        refused(
            server,
            server.net_env(endpoint, BYPASS_TLS_CA=pki.ca),
            workdir,
            "no-token",
            "no bearer token",
            "no bearer token",
            guest,
        )
        refused(
            server,
            server.net_env(endpoint, BYPASS_TLS_CA=pki.other_ca, BYPASS_TOKEN=TOKEN),
            workdir,
            "wrong-ca",
            (f"cannot reach bypassd at {endpoint}", f"the TLS handshake with {n.host_ip}:7443 failed"),
            None,  # the guest refuses the server: the server is not told why
            guest,
        )
        wait_no_sessions(server, "no session after the refusals")
        check(server.stop() == 0, "bypassd did not exit 0")


def case_netns_client_cert(workdir, _):
    with netns() as n:
        pki = Pki(workdir, [n.host_ip])
        endpoint = f"grpc://{n.host_ip}:7444"
        server = NetServer(
            workdir,
            endpoint,
            ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-client-ca", pki.ca],
            wrap=n.wrap(n.host),
        ).start()
        guest = n.wrap(n.guest)
        env = server.net_env(
            endpoint, BYPASS_TLS_CA=pki.ca, BYPASS_TLS_CERT=pki.client_cert, BYPASS_TLS_KEY=pki.client_key
        )
        run = harness.Running(guest + [harness.sample_path("triangle"), "--frames", "2000"], env, workdir, "cert")
        stats = server.wait_stats(lambda s: any(x.get("transport") == "grpc" for x in s["sessions"]), "a grpc session")
        live = next(x for x in stats["sessions"] if x.get("transport") == "grpc")
        check(live["identity"] == "cert:guest-alice", f"identity {live['identity']!r}, expected cert:guest-alice")
        harness.stop_process(run.proc)
        wait_no_sessions(server, "the session to end")
        stranger = server.net_env(
            endpoint, BYPASS_TLS_CA=pki.ca, BYPASS_TLS_CERT=pki.other_client_cert, BYPASS_TLS_KEY=pki.other_client_key
        )
        tls_failed = (f"cannot reach bypassd at {endpoint}", f"the TLS handshake with {n.host_ip}:7444 failed")
        refused(server, stranger, workdir, "stranger-cert", tls_failed, "refused a TLS client", guest)
        nocert = server.net_env(endpoint, BYPASS_TLS_CA=pki.ca)
        refused(server, nocert, workdir, "no-cert", tls_failed, "refused a TLS client", guest)
        check(server.stop() == 0, "bypassd did not exit 0")


def case_idle(workdir, _):
    """A guest that makes no call for a while keeps its device: nothing of the guest waits in gRPC
    then, and the keepalive watchdog used to close a connection whose ping answer went unread
    (the device was lost after 0.7 s idle)."""
    port = free_port()
    server = NetServer(workdir, f"grpc://127.0.0.1:{port}", ["--insecure"]).start()
    env = server.net_env(f"grpc://127.0.0.1:{port}", BYPASS_INSECURE="1")
    proc = subprocess.Popen(
        [harness.env_path("BYPASS_PROBE"), "hold"],
        env=env,
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        said = []
        while not said or said[-1].strip() not in ("ready", ""):
            said.append(proc.stdout.readline())
        check(said[-1].strip() == "ready", "the probe did not get a device:\n" + "".join(said))
        idle_s = 3.0
        time.sleep(idle_s)
        stats = server.stats()
        check(any(x.get("transport") == "grpc" for x in stats["sessions"]), f"the idle guest's session ended: {stats}")
        proc.stdin.close()
        out = proc.stdout.read()
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check(rc == 0 and "vkDeviceWaitIdle: VK_SUCCESS" in out, f"after {idle_s} s idle the guest got (exit {rc}):\n{out}")
    log(f"a guest idle for {idle_s} s kept its device: {out.strip().splitlines()[-1]}")
    wait_no_sessions(server, "the session to end")
    check(server.stop() == 0, "bypassd did not exit 0")


def case_cut(workdir, _):
    with netns() as n:
        endpoint = f"grpc://{n.host_ip}:7445"
        server = NetServer(workdir, endpoint, ["--insecure"], wrap=n.wrap(n.host)).start()
        env = server.net_env(endpoint, BYPASS_INSECURE="1")
        guest = n.wrap(n.guest)
        run = harness.Running(guest + [harness.sample_path("triangle"), "--frames", "100000"], env, workdir, "cut")
        stats = server.wait_stats(lambda s: any(x["records"] > 1000 for x in s["sessions"]), "frames flowing")
        sid = next(x["id"] for x in stats["sessions"] if x["records"] > 1000)
        check(run.proc.poll() is None, "the guest ended before the cut")
        cut_at = time.monotonic()
        sh("ip", "-n", n.guest, "link", "set", n.veth_g, "down")
        r = run.wait(timeout=20)
        lost_after = time.monotonic() - cut_at
        check(r.returncode != 0, f"the guest went on after the cut:\n{r.describe()}")
        check("VK_ERROR_DEVICE_LOST" in r.stdout + r.stderr, f"no VK_ERROR_DEVICE_LOST after the cut:\n{r.describe()}")
        check(lost_after < 3.0, f"the guest took {lost_after:.2f} s to see the cut (keepalive 0.2 + 0.5 s)")
        log(f"cut: the guest got VK_ERROR_DEVICE_LOST {lost_after:.2f} s after the link went down")
        stats, ended = server.wait_ended(sid, "the cut session to end on the host", timeout=20)
        log(f"cut: host session {sid} ended: {ended['reason']}, {ended['objects']} objects released")
        check(ended["reason"] == "peer_gone", f"expected peer_gone for session {sid}: {json.dumps(stats)}")
        server.check_alive("after the cut")
        check(server.stop() == 0, "bypassd did not exit 0")


def ctl(server, *args, ok=(0,), env=None):
    r = subprocess.run(
        [harness.env_path("BYPASSCTL"), "--control", server.control] + list(args),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    check(r.returncode in ok, f"bypassctl {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def case_management(workdir, _):
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    tokens = os.path.join(workdir, "tokens")
    with open(tokens, "w") as f:
        f.write(f"alice {TOKEN}\nbob {TOKEN}-bob\n")
    server = NetServer(workdir, endpoint, ["--insecure", "--token-file", tokens, "--admin", "alice"]).start()
    check(ctl(server, "health").stdout.strip() == "SERVING", "health is not SERVING at start")
    # gRPC server reflection on the management socket: the services a generic client finds there.
    r = harness.run(
        [harness.env_path("BYPASS_NET_REFLECTION"), "unix:" + server.socket + ".grpc"],
        os.environ.copy(),
        workdir,
        "reflection",
        30,
    )
    services = set(r.stdout.split())
    wanted = {
        "bypass.net.fb.Management",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    check(r.returncode == 0 and wanted <= services, f"reflection listed {sorted(services)}:\n{r.describe()}")
    log(f"reflection on the management socket lists: {', '.join(sorted(services))}")
    env = server.net_env(endpoint, BYPASS_INSECURE="1", BYPASS_TOKEN=TOKEN)
    run = harness.Running([harness.sample_path("triangle"), "--frames", "100000"], env, workdir, "long")
    # (the ICD's short first session, for the instance extensions, must be gone)
    server.wait_stats(
        lambda s: len(s["sessions"]) == 1 and s["sessions"][0]["objects"] > 0 and s["sessions"][0].get("transport"),
        "the network session",
    )
    table = ctl(server, "sessions").stdout
    check("grpc" in table and "127.0.0.1" in table and "IDENTITY" in table, f"sessions table:\n{table}")
    listed = json.loads(ctl(server, "--json", "sessions").stdout)
    check(len(listed["sessions"]) == 1 and not listed["draining"], f"sessions --json: {listed}")
    live = listed["sessions"][0]
    check(live["transport"] == "grpc" and live["objects"] > 0, f"sessions --json: {live}")
    log(f"sessions:\n{table.rstrip()}")
    # The same API on the network port: for an --admin's token only.
    tcp = ["--management", endpoint]
    admin = dict(os.environ, BYPASS_INSECURE="1", BYPASS_TOKEN=TOKEN)
    remote = json.loads(ctl(server, *tcp, "--json", "sessions", env=admin).stdout)
    check([s["id"] for s in remote["sessions"]] == [live["id"]], f"sessions over TCP: {remote}")
    # bob is no --admin: his own network sessions only; he may end those, not alice's, and not drain.
    bob = dict(admin, BYPASS_TOKEN=TOKEN + "-bob")
    check(json.loads(ctl(server, *tcp, "--json", "sessions", env=bob).stdout)["sessions"] == [], "bob sees alice's")
    bob_run = harness.Running(
        [harness.sample_path("triangle"), "--frames", "100000"],
        server.net_env(endpoint, BYPASS_INSECURE="1", BYPASS_TOKEN=TOKEN + "-bob"),
        workdir,
        "bob",
    )
    server.wait_stats(
        lambda s: any(x.get("identity") == "token:bob" and x["objects"] > 0 for x in s["sessions"]), "bob's session"
    )
    mine = json.loads(ctl(server, *tcp, "--json", "sessions", env=bob).stdout)["sessions"]
    check(len(mine) == 1 and mine[0]["identity"] == "token:bob", f"bob's view: {mine}")
    bob_stats = json.loads(ctl(server, *tcp, "--json", "stats", env=bob).stdout)
    check([x["identity"] for x in bob_stats["sessions"]] == ["token:bob"], f"bob's stats: {bob_stats}")
    r = ctl(server, *tcp, "end", str(live["id"]), env=bob, ok=(1,))
    check(f"no live session {live['id']}" in r.stdout + r.stderr, f"bob ending alice's session: {r.stdout}{r.stderr}")
    r = ctl(server, *tcp, "drain", env=bob, ok=(1,))
    check("not an --admin" in r.stderr, f"bob draining: {r.stderr}")
    ctl(server, *tcp, "end", str(mine[0]["id"]), env=bob)
    r = bob_run.wait(timeout=20)
    check("an operator ended the session" in r.stderr, f"bob's guest, ended by bob:\n{r.describe()}")
    check(server.stats()["sessions"][0]["id"] == live["id"], "alice's session should be live still")
    r = ctl(server, *tcp, "sessions", env=dict(admin, BYPASS_TOKEN=""), ok=(1,))
    check("no bearer token" in r.stderr, f"no token over TCP: {r.stderr}")
    check(ctl(server, *tcp, "health", env=admin).stdout.strip() == "SERVING", "health over TCP")
    log(
        "management over TCP: alice (--admin) lists every session; bob sees, stats and ends only his own, "
        "cannot end alice's or drain; no token is refused; health SERVING"
    )
    drain = subprocess.Popen(
        [harness.env_path("BYPASSCTL"), "--control", server.control, "drain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 10
    while ctl(server, "health", ok=(0, 3)).stdout.strip() != "NOT_SERVING" and time.monotonic() < deadline:
        time.sleep(0.05)
    check(ctl(server, "health", ok=(3,)).stdout.strip() == "NOT_SERVING", "health is not NOT_SERVING while draining")
    check(drain.poll() is None, "drain returned while a session was live")
    refused(server, env, workdir, "while-draining", "draining", "draining", ())
    check(json.loads(ctl(server, "--json", "sessions").stdout)["draining"], "sessions does not say draining")
    ctl(server, "end", str(live["id"]))
    r = run.wait(timeout=20)
    check(r.returncode != 0 and "VK_ERROR_DEVICE_LOST" in r.stdout + r.stderr, f"the ended guest:\n{r.describe()}")
    check("an operator ended the session" in r.stderr, f"the guest was not told why:\n{r.describe()}")
    out, _ = drain.communicate(timeout=20)
    check(drain.returncode == 0 and "drained" in out, f"drain exited {drain.returncode}: {out}")
    stats = server.stats()
    check(
        any(e["reason"] == "ended_by_operator" for e in stats["ended"]),
        f"no ended_by_operator session: {stats['ended']}",
    )
    check(stats["draining"] and stats["sessions"] == [], f"after the drain: {stats}")
    log(f"drain: {out.strip()}; health NOT_SERVING; the ended guest saw VK_ERROR_DEVICE_LOST")
    check(server.stop() == 0, "bypassd did not exit 0")


def case_hostile(workdir, _):
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    server = NetServer(workdir, endpoint, ["--insecure", "--send-timeout", "1000"]).start()
    for mode in ("garbage", "oversized", "no-hello", "bad-hello", "old-schema", "reserved-kind", "silent"):
        r = harness.run([harness.env_path("BYPASS_NET_HOSTILE"), endpoint, mode], os.environ.copy(), workdir, mode, 30)
        check(r.returncode == 0, f"hostile {mode}: the server did not refuse it as it should:\n{r.describe()}")
        log(r.stdout.strip())
        server.check_alive(f"after the hostile client's {mode}")
    r = harness.run(
        [harness.env_path("BYPASS_NET_HOSTILE"), endpoint, "old-schema"], os.environ.copy(), workdir, "v", 30
    )
    check("schema" in r.stdout, f"the version refusal does not name the schemas: {r.stdout}")
    # A client that asks for replies and reads none: bypassd ends its session (--send-timeout),
    # the relay cancels the stream; neither holds more memory than the rings and gRPC's window.
    relay = int(re.search(r"bypass-grpcd pid (\d+)", server.log_text()).group(1))
    r = harness.run(
        [harness.env_path("BYPASS_NET_HOSTILE"), endpoint, "stop-reading"], os.environ.copy(), workdir, "stall", 60
    )
    check(r.returncode == 0, f"stop-reading: the stream was not ended:\n{r.describe()}")
    log(r.stdout.strip())
    server.wait_stats(
        lambda s: s["sessions"] == [] and any(e["reason"] == "send_timeout" for e in s["ended"]),
        "the stalled session to end with send_timeout",
    )
    with open(f"/proc/{relay}/status") as f:
        hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) // 1024
    check(hwm < 256, f"bypass-grpcd's peak resident memory reached {hwm} MiB for a stalled client")
    log(f"stop-reading: session ended with send_timeout; bypass-grpcd's peak resident memory {hwm} MiB")
    run_and_compare(server, "triangle", server.net_env(endpoint, BYPASS_INSECURE="1"), workdir)
    wait_no_sessions(server, "no session left after the hostile clients")
    check(server.stop() == 0, "bypassd did not exit 0")


def relay_pids(server):
    return [int(p) for p in re.findall(r"bypass-grpcd pid (\d+)", server.log_text())]


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)


def check_relay_sandboxed(pid):
    status = proc_status(pid)
    check(status["Seccomp"].strip() == "2", f"bypass-grpcd (pid {pid}) Seccomp {status['Seccomp'].strip()}, not 2")
    check(status["NoNewPrivs"].strip() == "1", f"bypass-grpcd (pid {pid}) NoNewPrivs {status['NoNewPrivs'].strip()}")
    threads = os.listdir(f"/proc/{pid}/task")
    for tid in threads:
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                check("Seccomp:\t2" in f.read(), f"bypass-grpcd thread {tid} is not under the filter")
    with open(f"/proc/{pid}/limits") as f:
        core = next(line for line in f if line.startswith("Max core file size"))
    check(core.split()[4:6] == ["0", "0"], f"bypass-grpcd may dump core: {core.strip()}")
    return len(threads)


def case_relay_sandbox(workdir, _):
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    server = NetServer(workdir, endpoint, ["--insecure"]).start()
    relay = relay_pids(server)[-1]
    threads = check_relay_sandboxed(relay)
    log(f"bypass-grpcd pid {relay}: Seccomp 2 on all {threads} threads, NoNewPrivs 1, no core dumps")
    run_and_compare(server, "triangle", server.net_env(endpoint, BYPASS_INSECURE="1"), workdir)
    check_relay_sandboxed(relay)
    wait_no_sessions(server, "the sandboxed relay's session to end")
    check(server.stop() == 0, "bypassd did not exit 0")
    # What the filter refuses, tried from inside by the relay itself.
    grpcd = os.path.join(os.path.dirname(harness.env_path("BYPASSD")), "bypass-grpcd")
    probe_log = os.path.join(workdir, "probe.log")
    out = open(probe_log, "wb")
    proc = harness.spawn(
        [
            grpcd,
            "--socket",
            os.path.join(workdir, "none"),
            "--management",
            os.path.join(workdir, "probe.grpc"),
            "--probe-sandbox",
        ],
        os.environ.copy(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    try:
        deadline = time.monotonic() + 20
        text = ""
        while "probe thread" not in text and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            with open(probe_log) as f:
                text = f.read()
    finally:
        harness.stop_process(proc)
    want = {
        "execve": "Operation not permitted",
        "fork": "Operation not permitted",
        "socket(AF_INET)": "Operation not permitted",
        "socket(AF_UNIX)": "allowed",
        "thread": "allowed",
    }
    for what, outcome in want.items():
        check(f"probe {what}: {outcome}" in text, f"--probe-sandbox: expected `{what}: {outcome}`:\n{text}")
    log("--probe-sandbox: " + "; ".join(f"{k} {v}" for k, v in want.items()))


def case_relay_user(workdir, _):
    """A root bypassd with --worker-user runs the relay as that user (in the sockets' group), after
    it bound its port: the process facing the network holds no root. bypassd knows it by its pid:
    its sessions are network sessions, its management calls see everything; and it still ends
    with bypassd (a change of user clears the parent-death signal; it is armed again)."""
    os.chmod(workdir, 0o755)  # the relay, as nobody, reaches the sockets in it
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    server = NetServer(
        workdir, endpoint, ["--insecure", "--worker-user", "nobody", "--socket-group", "nogroup"]
    ).start()
    relay = relay_pids(server)[-1]
    status = proc_status(relay)
    uids, gids = status["Uid"].split(), status["Gid"].split()
    check(uids == ["65534"] * 4, f"bypass-grpcd should run as nobody: Uid {uids}")
    check(gids == ["65534"] * 4, f"bypass-grpcd should run in the sockets' group nogroup: Gid {gids}")
    check_relay_sandboxed(relay)
    check("serving as nobody (uid 65534, gid 65534)" in server.log_text(), "the relay should log whom it serves as")
    env = server.net_env(endpoint, BYPASS_INSECURE="1")
    run = harness.Running([harness.sample_path("triangle"), "--frames", "100000"], env, workdir, "long")
    server.wait_stats(
        lambda s: any(x.get("transport") == "grpc" and x["objects"] > 0 for x in s["sessions"]),
        "the network session, listed as grpc",
    )
    listed = json.loads(ctl(server, "--json", "sessions").stdout)  # through the relay's management API
    check(any(x["transport"] == "grpc" for x in listed["sessions"]), f"management sessions: {listed}")
    run.proc.kill()
    run.wait(timeout=20)
    wait_no_sessions(server, "the killed guest's session to end")
    run_and_compare(server, "triangle", env, workdir)
    log(f"bypass-grpcd pid {relay} as nobody/nogroup, sandboxed; a guest identical to native through it")
    # bypassd killed outright: the relay goes with it.
    server.proc.kill()
    server.proc.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{relay}") and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if proc_status(relay)["State"].split()[0] == "Z":
                break
        time.sleep(0.05)
    gone = not os.path.exists(f"/proc/{relay}") or proc_status(relay)["State"].split()[0] == "Z"
    check(gone, f"bypass-grpcd (pid {relay}) outlived bypassd")
    log("bypassd killed: the relay ended with it")


def case_relay_restart(workdir, _):
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    server = NetServer(workdir, endpoint, ["--insecure"]).start()
    env = server.net_env(endpoint, BYPASS_INSECURE="1")
    old = relay_pids(server)[-1]
    run = harness.Running([harness.sample_path("triangle"), "--frames", "100000"], env, workdir, "under-relay")
    flowing = server.wait_stats(
        lambda s: any(x.get("transport") == "grpc" and x["records"] > 100 for x in s["sessions"]), "frames flowing"
    )
    sid = next(x["id"] for x in flowing["sessions"] if x["records"] > 100)
    os.kill(old, 9)
    r = run.wait(timeout=20)
    check(r.returncode != 0, f"the guest went on after its relay died:\n{r.describe()}")
    check("VK_ERROR_DEVICE_LOST" in r.stdout + r.stderr, f"no VK_ERROR_DEVICE_LOST:\n{r.describe()}")
    stats, ended = server.wait_ended(sid, "the relayed session to end")
    check(ended["reason"] == "peer_gone", f"expected peer_gone for session {sid}: {json.dumps(stats)}")
    server.check_alive("after its relay died")
    text = wait_log(server, lambda t: t.count("management API on") >= 2, 20)
    check(f"bypass-grpcd (pid {old}) exited (signal 9)" in text, f"no line for the relay's death:\n{text}")
    new = relay_pids(server)[-1]
    check(new != old and "restarted (restart 1)" in text, f"the relay was not restarted:\n{text}")
    check(text.count("management API on") >= 2, f"the new relay did not come up:\n{text}")
    check_relay_sandboxed(new)
    log(f"relay {old} killed: the guest got VK_ERROR_DEVICE_LOST, its session ended peer_gone; relay {new} serves")
    run_and_compare(server, "triangle", env, workdir, tag="after-restart")
    wait_no_sessions(server, "the session through the new relay to end")
    check(server.stop() == 0, "bypassd did not exit 0")


def case_port_in_use(workdir, _):
    port = free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    dirs = [os.path.join(workdir, name) for name in ("first", "second")]
    for d in dirs:
        os.mkdir(d)
    first = NetServer(dirs[0], endpoint, ["--insecure"]).start()
    second = NetServer(dirs[1], endpoint, ["--insecure"]).launch()
    text = wait_log(second, lambda t: "restarting it in" in t, 20)
    check(f"cannot listen on 127.0.0.1:{port}" in text, f"the second relay did not say it cannot listen:\n{text}")
    check("exited (status 1)" in text and "restarting it in" in text, f"no back-off for the relay:\n{text}")
    check("management API on" not in text, f"the second relay came up on a port in use:\n{text}")
    log(f"second bypassd on port {port}: its relay cannot listen, and is retried")
    # Every guest's connections (the loader's short session, then its own) reach the first
    # server, none the second: with SO_REUSEPORT the kernel would have shared them out.
    env = first.net_env(endpoint, BYPASS_INSECURE="1")
    for i in range(3):
        r = harness.run_sample("triangle", env, dirs[0], f"first-{i}", ["--frames", "2"])
        harness.check_ok(r, f"guest {i} on port {port}")
    stats = wait_no_sessions(first, "the guests' sessions to end")
    check(
        len(stats["ended"]) >= 3,
        f"the first server saw {len(stats['ended'])} sessions of 3 guests: {json.dumps(stats)}",
    )
    theirs = second.stats()
    check(theirs["sessions"] == [] and theirs["ended"] == [], f"the second server got guests: {json.dumps(theirs)}")
    second.check_alive("with its relay failing")
    # The port free again: the second's relay binds it at its next try and serves.
    check(first.stop() == 0, "the first bypassd did not exit 0")
    text = wait_log(second, lambda t: "management API on" in t, 30)
    check("management API on" in text, f"the second relay never came up:\n{text}")
    log("the first bypassd stopped: the second's relay took the port")
    run_and_compare(second, "triangle", second.net_env(endpoint, BYPASS_INSECURE="1"), dirs[1], tag="second")
    wait_no_sessions(second, "the session through the second server to end")
    check(second.stop() == 0, "the second bypassd did not exit 0")


if __name__ == "__main__":
    sys.exit(
        harness.main(
            {
                "loopback": case_loopback,
                "loopback-vulkaninfo": case_loopback_vulkaninfo,
                "netns": case_netns,
                "netns-client-cert": case_netns_client_cert,
                "cut": case_cut,
                "idle": case_idle,
                "hostile": case_hostile,
                "management": case_management,
                "relay-sandbox": case_relay_sandbox,
                "relay-user": case_relay_user,
                "relay-restart": case_relay_restart,
                "port-in-use": case_port_in_use,
            }
        )
    )
