"""coredis at its default settings (RESP3 only: it opens with HELLO 3)
through the proxy: SET/GET, a null, HGETALL as a dict, and scan_iter() over
every server visiting each key exactly once."""

import asyncio

import coredis

from nc_check import backend_conns, parse_args, prefix, run

PARTS = ["basic", "scan"]


async def basic(c, r, args, px, be):
    k = px + "k"
    c.equal("SET", await r.set(k, "v1"), True)
    c.equal("GET", await r.get(k), b"v1")
    c.equal("GET of a missing key is None", await r.get(px + "missing"), None)
    h = px + "h"
    await r.hset(h, {"f1": "a", "f2": "b"})
    c.equal("HGETALL returns a dict", dict(await r.hgetall(h)), {b"f1": b"a", b"f2": b"b"})
    c.equal("DEL", await r.delete([k]), 1)


async def scan(c, r, args, px, be):
    n = 120
    # Counter first so the keys spread over all servers (see split_keys).
    want = {f"cscan{i}.{px}".encode() for i in range(n)}
    for k in want:
        await r.set(k, "1")
    if be:
        per = [len(b.cmd("KEYS", "cscan*." + px)) for b in be]
        c.check(f"{n} keys spread over all {len(be)} backends", sum(per) == n and all(per), repr(per))
    got = []
    async for k in r.scan_iter(match="cscan*." + px):
        got.append(k)
        if len(got) > 4 * n:  # bounded: a cursor that never ends fails
            break
    c.check("scan_iter() visits every key exactly once", set(got) == want and len(got) == n,
            f"{len(got)} keys, missing {len(want - set(got))}, extra {len(set(got) - want)}")


async def main_async(c, args):
    px = prefix("coredis")
    be = backend_conns(args)
    r = coredis.Redis(host=args.host, port=args.port, connect_timeout=10, stream_timeout=10)
    async with r:
        for part in args.part:
            print(f"-- {part}", flush=True)
            try:
                await asyncio.wait_for(globals()[part](c, r, args, px, be), 60)
            except (coredis.exceptions.RedisError, OSError, asyncio.TimeoutError) as e:
                c.fail(f"{part}: unexpected error", e)


if __name__ == "__main__":
    a = parse_args(PARTS)
    run(lambda c: asyncio.run(main_async(c, a)))
