"""redis-tools through the proxy, as people run them:

  benchmark  `redis-benchmark -n 200 -q` with no -t, so its whole default
             test list runs, starting with PING_INLINE (inline commands);
             exit 0 and a result line for every test
  pipe       `redis-cli --pipe` mass insertion of 1000 SETs generated here
             in RESP; exit 0, "errors: 0, replies: 1000", and every key
             reads back with its value
"""

import re
import subprocess

from nc_check import Resp2, backend_conns, parse_args, prefix, run

PARTS = ["benchmark", "pipe"]

# redis-benchmark 7's default tests, in the order it runs them (its -q
# output names them so; "LPUSH (needed to benchmark LRANGE)" is a setup run).
DEFAULT_TESTS = [
    "PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP",
    "SADD", "HSET", "SPOP", "ZADD", "ZPOPMIN", "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)", "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)", "LRANGE_600 (first 600 elements)", "MSET (10 keys)",
]


def benchmark(c, args, px, be):
    cmd = ["redis-benchmark", "-h", args.host, "-p", str(args.port), "-n", "200", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # -q rewrites a progress line with \r and ends each test with \n.
    lines = [seg.strip() for seg in re.split(r"[\r\n]", r.stdout) if seg.strip()]
    done = [m.group(1) for m in (re.match(r"^(.+?): [0-9.]+ requests per second", s) for s in lines) if m]
    c.check("redis-benchmark exits 0", r.returncode == 0,
            f"exit {r.returncode}; stderr: {r.stderr.strip()[:300]}; last: {lines[-1:]}")
    c.equal("redis-benchmark ran every default test", done, DEFAULT_TESTS)
    # "WARNING: Could not fetch server CONFIG" is fine: a proxy has no CONFIG
    # (redis-benchmark then just skips its config report).
    errors = [s for s in lines + r.stderr.splitlines() if "rror" in s or "ERR" in s]
    c.equal("redis-benchmark printed no error", errors[:3], [])


def resp(*words):
    out = [f"*{len(words)}\r\n"]
    for w in words:
        out.append(f"${len(w.encode())}\r\n{w}\r\n")
    return "".join(out)


def pipe(c, args, px, be):
    n = 1000
    keys = [f"pipe{i}.{px}" for i in range(n)]
    data = "".join(resp("SET", k, f"v{i}") for i, k in enumerate(keys)).encode()
    cmd = ["redis-cli", "-h", args.host, "-p", str(args.port), "--pipe"]
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    c.check("redis-cli --pipe exits 0", r.returncode == 0, f"exit {r.returncode}: {out.strip()[-300:]}")
    c.check(f"redis-cli --pipe reports errors: 0, replies: {n}", f"errors: 0, replies: {n}" in out,
            out.strip()[-300:])
    proxy = Resp2(args.host, args.port)
    got = [proxy.cmd("GET", k) for k in keys]
    bad = [k for i, (k, v) in enumerate(zip(keys, got)) if v != f"v{i}".encode()]
    c.equal("every piped key reads back with its value", len(bad), 0)
    if be:
        c.equal("each piped key is on exactly one backend",
                sum(b.cmd("EXISTS", *keys) for b in be), n)


def main(c, args):
    px = prefix("tools")
    be = backend_conns(args)
    for part in args.part:
        print(f"-- {part}", flush=True)
        globals()[part](c, args, px, be)


if __name__ == "__main__":
    a = parse_args(PARTS)
    run(main, a)
