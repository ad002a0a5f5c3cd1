"""redis-py 8 through the proxy, at the library's default settings (RESP3,
its default connection pool, its default parser). Modes:

  --api sync|asyncio     redis.Redis or redis.asyncio.Redis
  --parser hiredis       the default once hiredis is installed (it is here)
  --parser python        the pure-Python RESP3 parser, what a plain
                         `pip install redis` without hiredis gets; this is the
                         one setting that differs from the defaults

Every part is written once as a coroutine; `w()` awaits what the asyncio
client returns and passes the sync client's values through.
"""

import asyncio
import inspect
import itertools

import redis
import redis.asyncio
from redis._parsers import _AsyncRESP3Parser, _RESP3Parser

from nc_check import TIMEOUT, Resp2, backend_conns, parse_args, prefix, run, split_keys, where

PARTS = ["basic", "info", "transaction", "lock", "script", "scan"]


async def w(x):
    return await x if inspect.isawaitable(x) else x


def client(args):
    kw = {"host": args.host, "port": args.port, "socket_timeout": TIMEOUT,
          "socket_connect_timeout": TIMEOUT}
    mod = redis if args.api == "sync" else redis.asyncio
    if args.parser == "python":
        # The parser is a connection pool setting, not a client one.
        kw["parser_class"] = _RESP3Parser if args.api == "sync" else _AsyncRESP3Parser
        return mod.Redis(connection_pool=mod.ConnectionPool(**kw))
    return mod.Redis(**kw)


async def a_connection(r):
    pool = r.connection_pool
    conn = await w(pool.get_connection())
    await w(conn.connect())
    return conn


async def basic(c, r, args, px, be):
    conn = await a_connection(r)
    if hasattr(conn, "handshake_metadata"):  # the sync connection keeps it
        md = conn.handshake_metadata or {}
        c.equal("handshake HELLO 3 answered with proto 3", md.get(b"proto", md.get("proto")), 3)
    parser = type(conn._parser).__name__
    want = "Hiredis" if args.parser == "hiredis" else "RESP3"
    c.check(f"connection uses the {args.parser} parser", want in parser, parser)
    await w(r.connection_pool.release(conn))
    hello = await w(r.execute_command("HELLO", 3))
    c.check("HELLO 3 reply is a map", isinstance(hello, dict), repr(hello))
    if isinstance(hello, dict):
        c.equal("HELLO 3 proto field", hello.get(b"proto"), 3)

    k = px + "k"
    c.equal("SET", await w(r.set(k, "v1")), True)
    c.equal("GET", await w(r.get(k)), b"v1")
    c.equal("DEL", await w(r.delete(k)), 1)
    c.equal("GET after DEL is None (RESP3 null)", await w(r.get(k)), None)
    c.equal("GET of a missing key is None", await w(r.get(px + "missing")), None)

    # Keys on every backend when the pool layout is known, else just several.
    if be:
        keys = split_keys(args.proxy_raw, be, px + "m", n=len(be))
    else:
        keys = [px + f"m{i}" for i in range(4)]
    for i, k in enumerate(keys):
        await w(r.set(k, f"val{i}"))
    got = await w(r.mget(keys + [px + "nope"]))
    c.equal(f"MGET over {len(keys)} keys on different servers",
            got, [f"val{i}".encode() for i in range(len(keys))] + [None])

    h = px + "h"
    await w(r.hset(h, mapping={"f1": "a", "f2": "b"}))
    c.equal("HGETALL returns a dict", await w(r.hgetall(h)), {b"f1": b"a", b"f2": b"b"})
    c.equal("HGETALL of a missing hash is {}", await w(r.hgetall(px + "nohash")), {})


async def info(c, r, args, px, be):
    i = await w(r.info())
    c.check("INFO has redis_version", isinstance(i, dict) and "redis_version" in i,
            repr(i)[:200])
    c.equal("PING", await w(r.ping()), True)
    c.equal("ECHO", await w(r.echo("hello")), b"hello")


async def transaction(c, r, args, px, be):
    tag = "{" + px + "tx}"
    a, n, lst = tag + "a", tag + "n", tag + "l"
    p = r.pipeline()  # transaction=True is the default
    p.set(a, "1")
    p.incr(n)
    p.rpush(lst, "x")
    res = await w(p.execute())
    c.equal("MULTI/EXEC pipeline results", res, [True, 1, 1])
    c.equal("transaction SET applied", await w(r.get(a)), b"1")
    c.equal("transaction INCR applied exactly once", await w(r.get(n)), b"1")
    c.equal("transaction RPUSH applied exactly once", await w(r.llen(lst)), 1)
    if be:
        c.check("hash-tagged keys share one server",
                len({tuple(where(be, k)) for k in (a, n, lst)}) == 1, "")

    if not be:
        c.skip("cross-server transaction", "single server")
        return
    k1, k2 = split_keys(args.proxy_raw, be, px + "x")
    p = r.pipeline()
    p.set(k1, "1")
    p.set(k2, "2")
    try:
        res = await w(p.execute())
        c.check("transaction over two servers is refused", False, f"returned {res!r}")
    except redis.RedisError as e:
        c.check("transaction over two servers is refused", True)
        print(f"     error: {type(e).__name__}: {e}")
    c.equal("refused transaction wrote nothing on any backend",
            [where(be, k1), where(be, k2)], [[], []])
    # The connection must still work after the refusal.
    c.equal("connection usable after the refused transaction",
            await w(r.set(px + "after", "ok")), True)


async def lock(c, r, args, px, be):
    name = px + "lock"
    lk = r.lock(name)
    c.equal("Lock.acquire(blocking=False)", await w(lk.acquire(blocking=False)), True)
    c.equal("lock key holds the token", await w(r.get(name)), lk.local.token)
    other = r.lock(name)
    c.equal("a second Lock cannot acquire", await w(other.acquire(blocking=False)), False)
    c.equal("Lock.owned()", await w(lk.owned()), True)
    # release() runs a Lua script by EVALSHA and falls back to SCRIPT LOAD
    # on NOSCRIPT, which is what fails without SCRIPT LOAD support.
    try:
        await w(lk.release())
        c.check("Lock.release()", True)
    except redis.RedisError as e:
        c.fail("Lock.release()", e)
    c.equal("lock key gone after release", await w(r.exists(name)), 0)
    lk2 = r.lock(name, timeout=30)
    c.equal("Lock with timeout acquires after release", await w(lk2.acquire(blocking=False)), True)
    try:
        await w(lk2.extend(10))
        c.check("Lock.extend()", True)
    except redis.RedisError as e:
        c.fail("Lock.extend()", e)
    try:
        await w(lk2.release())
        c.check("second Lock.release()", True)
    except redis.RedisError as e:
        c.fail("second Lock.release()", e)


async def script(c, r, args, px, be):
    s = r.register_script("return redis.call('GET', KEYS[1])")
    # A key on every server: each server needs the script.
    if be:
        keys = split_keys(args.proxy_raw, be, px + "s", n=len(be))
    else:
        keys = [px + f"s{i}" for i in range(4)]
    for i, k in enumerate(keys):
        await w(r.set(k, f"sv{i}"))
    want = [f"sv{i}".encode() for i in range(len(keys))]

    async def call_all(what):
        try:
            c.equal(what, [await w(s(keys=[k])) for k in keys], want)
        except redis.RedisError as e:
            c.fail(what, e)

    await call_all("registered script on keys of every server")
    c.equal("SCRIPT FLUSH", await w(r.script_flush()), True)
    # After the flush EVALSHA answers NOSCRIPT; redis-py then runs SCRIPT
    # LOAD and retries, which must reach the server that owns the key.
    await call_all("script after SCRIPT FLUSH (NOSCRIPT fallback)")
    try:
        c.equal("SCRIPT EXISTS after the fallback", await w(r.script_exists(s.sha)), [True])
        c.equal("SCRIPT LOAD returns the sha", await w(r.script_load(s.script)), s.sha)
    except redis.RedisError as e:
        c.fail("SCRIPT EXISTS / SCRIPT LOAD", e)


async def scan(c, r, args, px, be):
    n = 200
    # Distinct names that vary at the front (see split_keys) so they spread
    # over every server; the shared suffix is this run's own.
    want = {f"scan{i}.{px}".encode() for i in range(n)}
    pattern = "scan*." + px
    p = r.pipeline(transaction=False)
    for k in want:
        p.set(k, "1")
    await w(p.execute())
    if be:
        per = [len(b.cmd("KEYS", pattern)) for b in be]
        c.check(f"{n} keys spread over all {len(be)} backends", sum(per) == n and all(per), repr(per))
    # Bounded: a cursor that never returns to 0 must not loop forever.
    limit = 4 * n + 100
    for count in (None, 10):
        what = "scan_iter()" if count is None else f"scan_iter(count={count})"
        if args.api == "sync":
            got = list(itertools.islice(r.scan_iter(match=pattern, count=count), limit))
        else:
            got = []
            async for k in r.scan_iter(match=pattern, count=count):
                got.append(k)
                if len(got) >= limit:
                    break
        c.equal(f"{what} returns {n} keys", len(got), n)
        c.check(f"{what} visits every key exactly once", set(got) == want and len(got) == n,
                f"missing {len(want - set(got))}, extra {len(set(got) - want)}, "
                f"duplicates {len(got) - len(set(got))}")


async def main_async(c, args):
    px = prefix("py-" + args.api)
    be = backend_conns(args)
    args.proxy_raw = Resp2(args.host, args.port) if be else None
    if args.proxy_raw:
        orig = args.proxy_raw
        # split_keys wants a setter: plain RESP2 SET straight to the proxy.
        args.proxy_raw = lambda k, o=orig: o.cmd("SET", k, "probe")
    r = client(args)
    try:
        for part in args.part:
            print(f"-- {part}", flush=True)
            try:
                await globals()[part](c, r, args, px, be)
            except (redis.RedisError, OSError) as e:
                c.fail(f"{part}: unexpected error", e)
    finally:
        await w(r.aclose() if args.api == "asyncio" else r.close())


def extra(p):
    p.add_argument("--api", choices=["sync", "asyncio"], default="sync")
    p.add_argument("--parser", choices=["hiredis", "python"], default="hiredis")


if __name__ == "__main__":
    a = parse_args(PARTS, extra)
    run(lambda c: asyncio.run(main_async(c, a)))
