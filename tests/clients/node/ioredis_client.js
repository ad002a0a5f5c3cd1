'use strict';
// ioredis at its default settings through the proxy. ioredis 6 opens with
// HELLO 3 (RESP3 by default; on NOPROTO it goes on in RESP2), then its ready
// check sends INFO and holds every command until INFO answers.
// Parts: basic (connect + get/set), multi, pipeline, eval.
const Redis = require('ioredis');
const { run, prefix, Resp2, backendConns, where, splitKeys } = require('./check');

const PARTS = ['basic', 'multi', 'pipeline', 'eval'];

function within(ms, p, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function connect(c, args) {
  // Defaults, except that a failed start must not retry for minutes.
  const r = new Redis({ host: args.host, port: args.port, maxRetriesPerRequest: 1, retryStrategy: () => null });
  let lastError = null;
  r.on('error', (e) => { lastError = e; });
  try {
    await within(10000, new Promise((resolve, reject) => {
      r.once('ready', resolve);
      r.once('end', () => reject(lastError || new Error('connection ended before ready')));
    }), 'ready');
    c.check('connects and passes the INFO ready check', true);
    return r;
  } catch (e) {
    c.fail('connects and passes the INFO ready check', lastError || e);
    r.disconnect();
    return null;
  }
}

async function basic(c, r, px) {
  c.equal('set', await r.set(px + 'k', 'v1'), 'OK');
  c.equal('get', await r.get(px + 'k'), 'v1');
  c.equal('get of a missing key is null', await r.get(px + 'missing'), null);
  const info = await r.info('server');
  c.check('info() has redis_version', /redis_version:/.test(info), info.slice(0, 200));
}

async function multi(c, r, px) {
  const tag = `{${px}tx}`;
  const res = await r.multi().set(tag + 'a', '1').incr(tag + 'n').exec();
  c.equal('multi().exec() results', res, [[null, 'OK'], [null, 1]]);
  c.equal('transaction SET applied', await r.get(tag + 'a'), '1');
  c.equal('transaction INCR applied exactly once', await r.get(tag + 'n'), '1');
}

async function pipeline(c, r, px, be, proxy) {
  const keys = be.length ? await splitKeys(proxy, be, px + 'p', be.length) : [0, 1, 2, 3].map((i) => `${i}.${px}p`);
  const p = r.pipeline();
  keys.forEach((k, i) => p.set(k, `v${i}`));
  keys.forEach((k) => p.get(k));
  const res = await p.exec();
  c.equal(`pipeline() over ${keys.length} servers`, res,
    [...keys.map(() => [null, 'OK']), ...keys.map((_, i) => [null, `v${i}`])]);
  if (be.length) {
    const placed = await Promise.all(keys.map((k) => where(be, k)));
    c.equal('pipelined keys each on its own backend', placed.map((x) => x.length), keys.map(() => 1));
  }
}

async function evalPart(c, r, px) {
  await r.set(px + 'e', 'ev');
  c.equal('eval with one key', await r.eval("return redis.call('GET', KEYS[1])", 1, px + 'e'), 'ev');
  // defineCommand runs EVALSHA and falls back to EVAL on NOSCRIPT.
  r.defineCommand('ncGet', { numberOfKeys: 1, lua: "return redis.call('GET', KEYS[1])" });
  c.equal('defineCommand script (EVALSHA, EVAL fallback)', await r.ncGet(px + 'e'), 'ev');
  c.equal('defineCommand script again (EVALSHA)', await r.ncGet(px + 'e'), 'ev');
}

run(PARTS, async (c, args) => {
  const px = prefix('ioredis');
  const be = await backendConns(args);
  const proxy = be.length ? await Resp2.connect(args.host, args.port) : null;
  const r = await connect(c, args);
  if (r) {
    const parts = { basic, multi, pipeline, eval: evalPart };
    for (const part of args.part) {
      console.log(`-- ${part}`);
      try {
        await within(30000, parts[part](c, r, px, be, proxy), part);
      } catch (e) { c.fail(`${part}: unexpected error`, e); }
    }
    r.disconnect();
  }
  for (const b of be) b.close();
  if (proxy) proxy.close();
});
