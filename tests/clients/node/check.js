'use strict';
// Shared helpers of the Node client scenario scripts (tests/clients/node/*.js);
// the Node twin of ../py/nc_check.py, with the same output: one line per check,
// `ok   <what>` or `FAIL <what>: <detail>`, then `checks ok=N failed=M`; exit 1
// on a failed check, 2 when the scenario aborted, 3 on the watchdog.
// Only Node's standard library is used here.

const net = require('net');
const crypto = require('crypto');

// Every socket opened here gets this timeout, and the whole script a
// watchdog: a client library that hangs fails the scenario, never the suite.
const TIMEOUT_MS = 10000;
const WATCHDOG_MS = 90000;

class Checks {
  constructor() { this.ok = 0; this.failed = 0; }
  check(what, cond, detail = '') {
    if (cond) { this.ok++; console.log(`ok   ${what}`); }
    else { this.failed++; console.log(`FAIL ${what}: ${detail}`); }
    return cond;
  }
  equal(what, got, want) {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    return this.check(what, g === w, `got ${g}, want ${w}`);
  }
  fail(what, err) {
    // Some libraries reject with things that are not Errors (booleans, arrays).
    const d = err instanceof Error ? `${err.name}: ${err.message}` : `non-Error rejection ${JSON.stringify(err)}`;
    return this.check(what, false, d);
  }
  skip(what, why) { console.log(`skip ${what}: ${why}`); }
}

function parseArgs(parts) {
  const a = { host: '127.0.0.1', port: 22121, backends: [], part: [] };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--host') a.host = v;
    else if (k === '--port') a.port = Number(v);
    else if (k === '--backends') a.backends = v.split(',').filter(Boolean).map((hp) => {
      const j = hp.lastIndexOf(':');
      return { host: hp.slice(0, j), port: Number(hp.slice(j + 1)) };
    });
    else if (k === '--part' && parts.includes(v)) a.part.push(v);
    else throw new Error(`bad argument ${k} ${v} (parts: ${parts.join(' ')})`);
  }
  if (!a.part.length) a.part = parts.slice();
  for (const { host } of [a, ...a.backends]) {
    // The suite talks to servers it started itself, on loopback only.
    if (!(host === 'localhost' || host.startsWith('127.') || host === '::1')) {
      throw new Error(`refusing non-loopback address ${host}`);
    }
  }
  return a;
}

// Runs async main(checks, args) with the watchdog; prints the summary and
// exits with the status described above.
function run(parts, main) {
  const c = new Checks();
  const dog = setTimeout(() => {
    console.log(`FAIL watchdog: scenario still running after ${WATCHDOG_MS} ms (a client hung)`);
    console.log(`checks ok=${c.ok} failed=${c.failed + 1}`);
    process.exit(3);
  }, WATCHDOG_MS);
  dog.unref();
  let args;
  Promise.resolve()
    .then(() => { args = parseArgs(parts); return main(c, args); })
    .then(() => {
      console.log(`checks ok=${c.ok} failed=${c.failed}`);
      process.exit(c.failed || !c.ok ? 1 : 0);
    }, (err) => {
      console.log(`FAIL scenario aborted: ${err && err.stack}`);
      console.log(`checks ok=${c.ok} failed=${c.failed + 1}`);
      process.exit(2);
    });
}

// A key prefix unique to this run.
function prefix(tag) { return `nct:${tag}:${crypto.randomBytes(4).toString('hex')}:`; }

// A tiny RESP2 client straight to one redis backend (or the proxy for plain
// commands), independent of the libraries under test on purpose.
class Resp2 {
  static connect(host, port) {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host, port }, () => resolve(new Resp2(s)));
      s.setTimeout(TIMEOUT_MS, () => s.destroy(new Error('RESP2 socket timeout')));
      s.once('error', reject);
    });
  }
  constructor(sock) {
    this.sock = sock; this.buf = Buffer.alloc(0); this.waiters = [];
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.pump(); });
    sock.on('error', (e) => { for (const w of this.waiters.splice(0)) w.reject(e); });
    sock.on('close', () => {
      for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
    });
  }
  // Parses one reply at `at`; returns [value, next] or null when incomplete.
  parse(at) {
    const nl = this.buf.indexOf('\r\n', at);
    if (nl < 0) return null;
    const kind = String.fromCharCode(this.buf[at]);
    const rest = this.buf.toString('utf8', at + 1, nl);
    const next = nl + 2;
    if (kind === '+') return [rest, next];
    if (kind === '-') return [new Error(rest), next];
    if (kind === ':') return [Number(rest), next];
    if (kind === '$') {
      const n = Number(rest);
      if (n < 0) return [null, next];
      if (this.buf.length < next + n + 2) return null;
      return [this.buf.toString('utf8', next, next + n), next + n + 2];
    }
    if (kind === '*') {
      const n = Number(rest);
      if (n < 0) return [null, next];
      const out = [];
      let pos = next;
      for (let i = 0; i < n; i++) {
        const r = this.parse(pos);
        if (!r) return null;
        out.push(r[0]); pos = r[1];
      }
      return [out, pos];
    }
    return [new Error(`unexpected reply ${rest}`), next];
  }
  pump() {
    while (this.waiters.length) {
      const r = this.parse(0);
      if (!r) return;
      this.buf = this.buf.subarray(r[1]);
      const w = this.waiters.shift();
      if (r[0] instanceof Error) w.reject(r[0]); else w.resolve(r[0]);
    }
  }
  cmd(...words) {
    const parts = [`*${words.length}\r\n`];
    for (const w of words) { const b = Buffer.from(String(w)); parts.push(`$${b.length}\r\n`, b, '\r\n'); }
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.sock.write(Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p)))));
    });
  }
  close() { this.sock.destroy(); }
}

async function backendConns(args) {
  return Promise.all(args.backends.map((b) => Resp2.connect(b.host, b.port)));
}

// Indexes of the backends that hold `key`.
async function where(backends, key) {
  const out = [];
  for (let i = 0; i < backends.length; i++) if ((await backends[i].cmd('EXISTS', key)) === 1) out.push(i);
  return out;
}

// Names of `n` keys the proxy places on `n` different backends, found by
// writing probe keys through the proxy (plain RESP2 SET) and looking for
// them on the backends; the counter goes first because the proxy's default
// hash barely moves when only a key's last bytes change. See nc_check.py.
async function splitKeys(proxy, backends, pfx, n = 2, tries = 200) {
  const found = new Map();
  for (let i = 0; i < tries; i++) {
    const key = `${i}.${pfx}`;
    await proxy.cmd('SET', key, 'probe');
    const idx = await where(backends, key);
    for (const b of backends) await b.cmd('DEL', key);
    if (idx.length === 1 && !found.has(idx[0])) {
      found.set(idx[0], key);
      if (found.size === n) return [...found.values()];
    }
  }
  throw new Error(`found keys on only ${found.size} backends after ${tries} probes`);
}

module.exports = { Checks, parseArgs, run, prefix, Resp2, backendConns, where, splitKeys, TIMEOUT_MS };
