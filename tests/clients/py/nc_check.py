"""Shared helpers of the client scenario scripts (tests/clients/py/*.py).

Every check prints one line, `ok   <what>` or `FAIL <what>: <detail>`, and the
script ends with `checks ok=N failed=M` and exits 1 when anything failed, 2
when the scenario could not run at all (an exception escaped). tests/clients.rs
reads these lines. Only the standard library is used here, so the helpers work
with every client library under test.
"""

import argparse
import os
import socket
import sys
import traceback
import uuid

# Every socket a script opens itself gets this timeout: a proxy that never
# answers fails the check instead of hanging the script.
TIMEOUT = 10.0


class Checks:
    def __init__(self):
        self.ok = 0
        self.failed = 0

    def check(self, what, cond, detail=""):
        if cond:
            self.ok += 1
            print(f"ok   {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {what}: {detail}", flush=True)
        return cond

    def equal(self, what, got, want):
        return self.check(what, got == want, f"got {got!r}, want {want!r}")

    def fail(self, what, exc):
        return self.check(what, False, f"{type(exc).__name__}: {exc}")

    def skip(self, what, why):
        print(f"skip {what}: {why}", flush=True)

    def finish(self):
        print(f"checks ok={self.ok} failed={self.failed}", flush=True)
        sys.exit(1 if self.failed or not self.ok else 0)


def parse_args(parts, extra=None):
    """--host/--port of the proxy (or a plain server), --backends: the
    comma-separated host:port list of the servers behind the proxy (empty:
    a single plain server, checks that need the pool's layout are skipped),
    --part: which scenario parts to run (default all)."""
    p = argparse.ArgumentParser()
    p.add_argument("--host", default=os.environ.get("NC_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("NC_PORT", "22121")))
    p.add_argument("--backends", default=os.environ.get("NC_BACKENDS", ""))
    p.add_argument("--part", action="append", choices=parts)
    if extra:
        extra(p)
    a = p.parse_args()
    a.backends = [hp for hp in a.backends.split(",") if hp]
    a.backends = [(h, int(port)) for h, port in (hp.rsplit(":", 1) for hp in a.backends)]
    a.part = a.part or list(parts)
    for h, _ in [(a.host, a.port)] + a.backends:
        # The suite talks to servers it started itself, on loopback only.
        if not (h == "localhost" or h.startswith("127.") or h == "::1"):
            sys.exit(f"refusing non-loopback address {h}")
    return a


def run(main, *args):
    """Runs main(checks, *args); an escaped exception counts as a failure."""
    c = Checks()
    try:
        main(c, *args)
    except Exception as e:  # noqa: BLE001 - report anything, then fail
        traceback.print_exc()
        print(f"FAIL scenario aborted: {type(e).__name__}: {e}", flush=True)
        print(f"checks ok={c.ok} failed={c.failed + 1}", flush=True)
        sys.exit(2)
    c.finish()


def prefix(tag):
    """A key prefix unique to this run, so reruns against a long-lived plain
    server never see an earlier run's keys."""
    return f"nct:{tag}:{uuid.uuid4().hex[:8]}:"


class Resp2:
    """A tiny RESP2 client straight to one backend (never the proxy), used
    to look at where the proxy put things. Independent of the libraries
    under test on purpose."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("backend closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("backend closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))
        return self._reply()


def backend_conns(args):
    return [Resp2(h, p) for h, p in args.backends]


def where(backends, key):
    """Indexes of the backends that hold `key`."""
    return [i for i, b in enumerate(backends) if b.cmd("EXISTS", key) == 1]


def split_keys(set_via_proxy, backends, pfx, n=2, tries=200):
    """Names of `n` keys that the proxy places on `n` different backends,
    found by writing probe keys through the proxy (plain SET works on every
    proxy version) and looking them up on the backends; the probes are
    deleted again. This needs no copy of the proxy's hash function."""
    found = {}
    for i in range(tries):
        # The counter goes first: the proxy's default hash (fnv1a_64, cut to
        # 32 bits) barely moves when only the last bytes of a key change, so
        # keys differing only at the end would all land on one server.
        key = f"{i}.{pfx}"
        set_via_proxy(key)
        idx = where(backends, key)
        for b in backends:
            b.cmd("DEL", key)
        if len(idx) == 1 and idx[0] not in found:
            found[idx[0]] = key
            if len(found) == n:
                return list(found.values())
    raise RuntimeError(f"found keys on only {len(found)} backends after {tries} probes")
