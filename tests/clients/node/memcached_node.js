'use strict';
// The npm `memcached` package at its default settings through a memcache
// pool. Parts:
//   stats  set/get, stats() answers, and get still works afterwards (a proxy
//          that answers ERROR and closes leaves later calls hanging)
//   flush  keys on every server, flush() answers, every key then misses
//          through the client and directly on each backend; set/get after
const net = require('net');
const Memcached = require('memcached');
const { run, prefix, TIMEOUT_MS } = require('./check');

const PARTS = ['stats', 'flush'];

// Calls a callback-style method, bounded: a hang fails the check.
function call(mc, method, ...args) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${method}(): no answer in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    mc[method](...args, (err, res) => { clearTimeout(t); if (err) reject(err); else resolve(res); });
  });
}

// `get key` straight to one memcached backend (never the proxy).
function rawGet(b, key) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const s = net.createConnection(b, () => s.write(`get ${key}\r\n`));
    s.setTimeout(TIMEOUT_MS, () => s.destroy(new Error('backend timeout')));
    s.on('data', (d) => {
      buf += d;
      if (buf.endsWith('END\r\n')) { s.destroy(); resolve(buf.startsWith('VALUE ') ? buf.split('\r\n')[1] : null); }
    });
    s.on('error', reject);
  });
}

async function onBackends(be, keys) {
  let n = 0;
  for (const k of keys) for (const b of be) if ((await rawGet(b, k)) !== null) n++;
  return n;
}

async function tryCheck(c, what, f) {
  try { return await f(); } catch (e) { c.fail(what, e); return undefined; }
}

async function stats(c, mc, px) {
  await tryCheck(c, 'set', async () => c.equal('set', await call(mc, 'set', px + 'k', 'v1', 0), true));
  await tryCheck(c, 'get', async () => c.equal('get', await call(mc, 'get', px + 'k'), 'v1'));
  await tryCheck(c, 'stats()', async () => {
    const res = await call(mc, 'stats');
    c.check('stats() answers with a result per server', Array.isArray(res) && res.length >= 1, JSON.stringify(res).slice(0, 200));
  });
  await tryCheck(c, 'get after stats()', async () => c.equal('get after stats()', await call(mc, 'get', px + 'k'), 'v1'));
  await tryCheck(c, 'set after stats()', async () => c.equal('set after stats()', await call(mc, 'set', px + 'k2', 'v2', 0), true));
}

async function flush(c, mc, px, be) {
  const keys = Array.from({ length: 40 }, (_, i) => `${i}.${px}`); // counter first: spreads
  await tryCheck(c, 'set keys', async () => {
    for (const k of keys) await call(mc, 'set', k, 'v', 0);
    c.check('set 40 keys', true);
  });
  if (be.length) {
    const per = await Promise.all(be.map(async (b) => { let n = 0; for (const k of keys) if ((await rawGet(b, k)) !== null) n++; return n; }));
    c.check(`keys spread over all ${be.length} backends`, per.every((x) => x > 0), JSON.stringify(per));
  }
  await tryCheck(c, 'flush()', async () => { await call(mc, 'flush'); c.check('flush() answers', true); });
  await tryCheck(c, 'get after flush()', async () => {
    const got = await call(mc, 'getMulti', keys);
    c.equal('every key misses after flush()', Object.keys(got || {}).length, 0);
  });
  if (be.length) c.equal('no key left on any backend after flush()', await onBackends(be, keys), 0);
  await tryCheck(c, 'set/get after flush()', async () => {
    await call(mc, 'set', px + 'after', 'x', 0);
    c.equal('set/get after flush()', await call(mc, 'get', px + 'after'), 'x');
  });
}

run(PARTS, async (c, args) => {
  const px = prefix('mc').replace(/:/g, '.');
  const parts = { stats, flush };
  for (const part of args.part) {
    console.log(`-- ${part}`);
    // A client per part: a part that wedges the connection does not hide
    // whether the next one works.
    const mc = new Memcached(`${args.host}:${args.port}`);
    await parts[part](c, mc, px, args.backends);
    mc.end();
  }
});
