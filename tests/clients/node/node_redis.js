'use strict';
// node-redis (npm `redis`) at its default settings through the proxy: RESP3
// (it opens with HELLO 3, plus CLIENT SETINFO), and once more with the
// `name` and `database: 0` options people set. Parts: basic, multi, scan.
const { createClient } = require('redis');
const { run, prefix, Resp2, backendConns, where, splitKeys } = require('./check');

const PARTS = ['basic', 'multi', 'scan'];

// Bounds one promise: a hanging client fails the check instead of the run.
function within(ms, p, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function connect(c, args, opts, what) {
  // No reconnect loop: a refused handshake must show as an error now.
  const client = createClient({ url: `redis://${args.host}:${args.port}`, ...opts, socket: { reconnectStrategy: false } });
  let lastError = null;
  client.on('error', (e) => { lastError = e; });
  try {
    await within(10000, client.connect(), what);
    c.check(what, true);
    return client;
  } catch (e) {
    c.fail(what, lastError || e);
    try { client.destroy(); } catch (_) { /* already closed */ }
    return null;
  }
}

async function basic(c, args, px) {
  const r = await connect(c, args, {}, 'connect() at defaults');
  if (!r) return;
  try {
    const hello = await r.sendCommand(['HELLO', '3']);
    c.equal('HELLO 3 proto field', hello && hello.proto, 3);
    c.equal('SET', await r.set(px + 'k', 'v1'), 'OK');
    c.equal('GET', await r.get(px + 'k'), 'v1');
    c.equal('GET of a missing key is null', await r.get(px + 'missing'), null);
    await r.hSet(px + 'h', { f1: 'a', f2: 'b' });
    c.equal('HGETALL (a RESP3 map) as an object', await r.hGetAll(px + 'h'), { f1: 'a', f2: 'b' });
  } catch (e) { c.fail('basic commands', e); }
  r.destroy();

  const named = await connect(c, args, { name: 'nc-client-test', database: 0 }, 'connect() with name and database: 0');
  if (!named) return;
  try {
    c.equal('SET with name/database options', await named.set(px + 'n', 'v2'), 'OK');
    c.equal('GET with name/database options', await named.get(px + 'n'), 'v2');
    c.equal('CLIENT GETNAME is the name option', await named.sendCommand(['CLIENT', 'GETNAME']), 'nc-client-test');
  } catch (e) { c.fail('commands with name/database options', e); }
  named.destroy();
}

async function multi(c, args, px, be, proxy) {
  const r = await connect(c, args, {}, 'connect() at defaults');
  if (!r) return;
  const tag = `{${px}tx}`;
  try {
    const res = await r.multi().set(tag + 'a', '1').incr(tag + 'n').rPush(tag + 'l', 'x').exec();
    c.equal('multi().exec() results', res, ['OK', 1, 1]);
  } catch (e) { c.fail('multi().exec() with hash-tagged keys', e); }
  try {
    c.equal('transaction SET applied', await r.get(tag + 'a'), '1');
    c.equal('transaction INCR applied exactly once', await r.get(tag + 'n'), '1');
    c.equal('transaction RPUSH applied exactly once', await r.lLen(tag + 'l'), 1);
  } catch (e) { c.fail('reading the transaction back', e); }
  if (!be.length) { c.skip('cross-server multi', 'single server'); r.destroy(); return; }
  const [k1, k2] = await splitKeys(proxy, be, px + 'x');
  try {
    const res = await r.multi().set(k1, '1').set(k2, '2').exec();
    c.check('multi() over two servers is refused', false, `returned ${JSON.stringify(res)}`);
  } catch (e) {
    c.check('multi() over two servers is refused', true);
    console.log(`     error: ${e && e.message}`);
  }
  c.equal('refused multi wrote nothing on any backend', [await where(be, k1), await where(be, k2)], [[], []]);
  try {
    c.equal('connection usable after the refused multi', await r.set(px + 'after', 'ok'), 'OK');
  } catch (e) { c.fail('connection usable after the refused multi', e); }
  r.destroy();
}

async function scan(c, args, px, be) {
  const r = await connect(c, args, {}, 'connect() at defaults');
  if (!r) return;
  const n = 200;
  const want = new Set(Array.from({ length: n }, (_, i) => `nscan${i}.${px}`)); // counter first: spreads
  const pattern = `nscan*.${px}`;
  try {
    await Promise.all([...want].map((k) => r.set(k, '1')));
    if (be.length) {
      const per = await Promise.all(be.map(async (b) => (await b.cmd('KEYS', pattern)).length));
      c.check(`${n} keys spread over all ${be.length} backends`, per.every((x) => x > 0) && per.reduce((a, b) => a + b) === n, JSON.stringify(per));
    }
    for (const count of [undefined, 10]) {
      const what = count ? `scanIterator(COUNT ${count})` : 'scanIterator()';
      const got = [];
      for await (const keys of r.scanIterator(count ? { MATCH: pattern, COUNT: count } : { MATCH: pattern })) {
        got.push(...keys);
        if (got.length > 4 * n) break; // bounded: a cursor that never ends fails
      }
      const seen = new Set(got);
      c.check(`${what} visits every key exactly once`, got.length === n && [...want].every((k) => seen.has(k)),
        `${got.length} keys, ${seen.size} distinct, missing ${[...want].filter((k) => !seen.has(k)).length}`);
    }
  } catch (e) { c.fail('scan', e); }
  r.destroy();
}

run(PARTS, async (c, args) => {
  const px = prefix('node-redis');
  const be = await backendConns(args);
  const proxy = be.length ? await Resp2.connect(args.host, args.port) : null;
  const parts = { basic, multi, scan };
  for (const part of args.part) {
    console.log(`-- ${part}`);
    await parts[part](c, args, px, be, proxy);
  }
  for (const b of be) b.close();
  if (proxy) proxy.close();
});
