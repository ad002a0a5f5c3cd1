"""Two-key commands whose keys live on two different servers of the pool:
COPY, LMOVE, RPOPLPUSH, SMOVE. The proxy can only send a command to one
server, so it must refuse it with an error naming the cross-server condition
(like redis cluster's CROSSSLOT) instead of running it on the first key's
server, which writes the destination to the wrong server and loses it.

Spoken in plain RESP2 over a socket (nc_check.Resp2): this row is about the
proxy's routing, not about a client library. With no --backends (a single
plain redis-server) the same commands must simply succeed, which checks the
script's own command syntax.
"""

import re

from nc_check import Resp2, backend_conns, parse_args, prefix, run, split_keys, where

PARTS = ["copy", "lmove", "rpoplpush", "smove"]
CROSS = re.compile(r"cross|crossslot|different (server|node|slot)|same (server|node|slot)", re.I)

# part -> (setup of src, the command, check that src is untouched, result on one server)
CASES = {
    "copy": (["SET", "{s}", "v"], ["COPY", "{s}", "{d}"], (["GET", "{s}"], b"v"), 1),
    "lmove": (["RPUSH", "{s}", "a", "b"], ["LMOVE", "{s}", "{d}", "LEFT", "RIGHT"],
              (["LLEN", "{s}"], 2), b"a"),
    "rpoplpush": (["RPUSH", "{s}", "a", "b"], ["RPOPLPUSH", "{s}", "{d}"],
                  (["LLEN", "{s}"], 2), b"b"),
    "smove": (["SADD", "{s}", "m"], ["SMOVE", "{s}", "{d}", "m"], (["SCARD", "{s}"], 1), 1),
}


def main(c, args):
    px = prefix("cross")
    proxy = Resp2(args.host, args.port)
    be = backend_conns(args)
    for part in args.part:
        print(f"-- {part}", flush=True)
        setup, command, (probe, untouched), single = CASES[part]
        if be:
            src, dst = split_keys(lambda k: proxy.cmd("SET", k, "probe"), be, px + part)
        else:
            src, dst = px + part + ".src", px + part + ".dst"

        def fill(words):
            return [w.replace("{s}", src).replace("{d}", dst) for w in words]

        proxy.cmd(*fill(setup))
        try:
            reply, err = proxy.cmd(*fill(command)), None
        except RuntimeError as e:
            reply, err = None, str(e)
        name = command[0]
        if not be:
            c.equal(f"{name} on one server", reply, single)
            c.equal(f"{name} wrote the destination", proxy.cmd("EXISTS", dst), 1)
            continue
        c.check(f"{name} across two servers is refused", err is not None, f"replied {reply!r}")
        if err is not None:
            print(f"     error: {err}", flush=True)
            c.check(f"{name} error names the cross-server condition", bool(CROSS.search(err)), err)
        c.equal(f"{name} destination written on no backend", where(be, dst), [])
        owner = where(be, src)
        c.equal(f"{name} source still on its one backend", len(owner), 1)
        if len(owner) == 1:
            c.equal(f"{name} source untouched", be[owner[0]].cmd(*fill(probe)), untouched)
        c.equal(f"{name}: connection still usable", proxy.cmd("PING"), "PONG")


if __name__ == "__main__":
    a = parse_args(PARTS)
    run(main, a)
