"""python-memcached through a memcache pool at its default settings, plus
the libmemcached command line tools (memcflush, memcstat) pointed at the
proxy. Parts:

  flush   set/get over keys on every server, flush_all(), then every key
          misses, through the client AND directly on each backend
  tools   memcflush --servers=<proxy> exits 0 and empties every backend;
          memcstat --servers=<proxy> exits 0 and prints stats we can parse
"""

import socket
import subprocess

import memcache

from nc_check import TIMEOUT, parse_args, prefix, run

PARTS = ["flush", "tools"]


class Mc:
    """ASCII protocol straight to one memcached backend (never the proxy)."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.f = self.sock.makefile("rb")

    def cmd(self, line, data=None):
        self.sock.sendall(line.encode() + b"\r\n" + (data + b"\r\n" if data is not None else b""))

    def set(self, key, value):
        self.cmd(f"set {key} 0 0 {len(value)}", value.encode())
        return self.f.readline().strip()

    def get(self, key):
        self.cmd(f"get {key}")
        line = self.f.readline()
        if line.startswith(b"VALUE "):
            n = int(line.split()[3])
            data = self.f.read(n + 2)[:n]
            self.f.readline()  # END
            return data
        return None


def keys_everywhere(be, px, n=40):
    return [f"{i}.{px}" for i in range(n)]  # counter first: spreads over servers


def on_backends(be, keys):
    return sum(1 for k in keys for b in be if b.get(k) is not None)


def flush(c, args, px, be):
    mc = memcache.Client([f"{args.host}:{args.port}"])
    keys = keys_everywhere(be, px)
    c.check("set() of 40 keys", all(mc.set(k, "v" + k) for k in keys), "a set returned false")
    c.check("get() returns every value", all(mc.get(k) == "v" + k for k in keys), "")
    if be:
        per = [sum(1 for k in keys if b.get(k) is not None) for b in be]
        c.check(f"keys spread over all {len(be)} backends", all(per), repr(per))
    mc.flush_all()
    c.equal("get() misses every key after flush_all()", [k for k in keys if mc.get(k) is not None], [])
    if be:
        c.equal("no key left on any backend after flush_all()", on_backends(be, keys), 0)
    # python-memcached marks a server dead after an error and then misses
    # everything quietly: a fresh set/get proves the proxy is still served.
    c.equal("set() after flush_all()", bool(mc.set(px + "after", "x")), True)
    c.equal("get() after flush_all()", mc.get(px + "after"), "x")
    mc.disconnect_all()


def tools(c, args, px, be):
    mc = memcache.Client([f"{args.host}:{args.port}"])
    keys = keys_everywhere(be, px)
    for k in keys:
        mc.set(k, "v")
    mc.disconnect_all()
    servers = f"--servers={args.host}:{args.port}"
    r = subprocess.run(["memcflush", servers], capture_output=True, text=True, timeout=60)
    c.check("memcflush exits 0", r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}")
    if be:
        c.equal("no key left on any backend after memcflush", on_backends(be, keys), 0)
    r = subprocess.run(["memcstat", servers], capture_output=True, text=True, timeout=60)
    c.check("memcstat exits 0", r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}")
    # memcstat prints "Server: host (port)" and then "\t name: value" lines.
    stats = {}
    for line in r.stdout.splitlines():
        if line.startswith("\t") and ":" in line:
            k, v = line.strip().split(":", 1)
            stats[k.strip()] = v.strip()
    c.check("memcstat names the server", "Server:" in r.stdout, r.stdout[:200])
    c.check("memcstat prints stats (version and more)", "version" in stats and len(stats) >= 3,
            repr(stats)[:300] or r.stdout[:300])


def main(c, args):
    px = prefix("mc").replace(":", ".")
    be = [Mc(h, p) for h, p in args.backends]
    for part in args.part:
        print(f"-- {part}", flush=True)
        globals()[part](c, args, px, be)


if __name__ == "__main__":
    a = parse_args(PARTS)
    run(main, a)
