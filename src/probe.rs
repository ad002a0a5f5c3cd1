//! The probe that decides whether an ejected server may rejoin its pool.
//!
//! nutcracker 0.5.0 lets an ejected server back into the table as soon as
//! its retry time passes, so the next client request is the probe, and it
//! fails if the server is still down. Here the retry timer
//! (`TimerEvent::ServerRetry`) starts a probe instead: a connection of the
//! proxy's own ([`crate::conn::ServerConn::private`], never given client
//! traffic) carrying AUTH and SELECT where configured, then `PING` (redis)
//! or `version` (memcached), with a deadline of the pool's `timeout` (1 s
//! when it has none). Only a good answer in time lets the server back, and
//! then through `repair.rs`, which first moves back the keys written
//! elsewhere during the outage; any failure (refused, reset, an error
//! reply, the deadline) keeps it out and restarts the retry wait. The
//! server stays out of the table (`next_retry` set) the whole time, so no
//! client request reaches it before it passed.
//!
//! The probe connection then stays open for the repair's requests to the
//! returning server, and is closed once those are done.

use crate::conn::Conn;
use crate::core::Context;
use crate::msg::{Internal, MsgId};
use crate::timer::TimerEvent;
use crate::topology::ServerId;
use std::time::{Duration, Instant};

/// The deadline of a probe (and of each repair step) when the pool has no
/// `timeout`.
const DEFAULT_PROBE_MS: u64 = 1000;

impl Context {
    /// How long the proxy's own requests to the servers of `s`'s pool may
    /// take: the pool's `timeout`, or 1 s.
    pub fn own_timeout(&self, s: ServerId) -> Duration {
        let ms = self
            .topo
            .server_pool(s)
            .and_then(|p| p.conf.timeout_ms)
            .unwrap_or(DEFAULT_PROBE_MS);
        Duration::from_millis(ms.max(1))
    }

    /// The retry time of ejected server `s` came: probe it. A timer entry
    /// left from an earlier wait (the wait restarted) is ignored.
    pub fn probe_start(&mut self, s: ServerId) {
        let Some(srv) = self.topo.server(s) else {
            return;
        };
        if srv.detached || srv.probe.is_some() || srv.next_retry.is_none_or(|t| t > Instant::now())
        {
            return;
        }
        let redis = self.topo.server_pool(s).is_none_or(|p| p.conf.redis);
        let sk = match self.private_conn(s) {
            Ok(sk) => sk,
            Err(errno) => {
                self.probe_failed(s, crate::net::strerror(errno).as_ref());
                return;
            }
        };
        let mid = if redis {
            self.internal_msg(&[b"PING"], Internal::Probe)
        } else {
            self.internal_raw(b"version\r\n", Internal::Probe)
        };
        if let Some(srv) = self.topo.server_mut(s) {
            srv.probe = Some(mid);
        }
        let after = self.own_timeout(s);
        self.queue_internal(sk, s, mid, Some(after));
    }

    /// The reply to probe `mid` of server `s`: `+PONG` (any status) or
    /// `VERSION ...` passes; anything else is a failure.
    pub fn probe_reply(&mut self, s: ServerId, mid: MsgId, raw: &[u8]) {
        let Some(srv) = self.topo.server(s) else {
            return;
        };
        if srv.probe != Some(mid) {
            return;
        }
        let redis = self.topo.server_pool(s).is_none_or(|p| p.conf.redis);
        let good = if redis {
            raw.first() == Some(&b'+')
        } else {
            raw.starts_with(b"VERSION ")
        };
        if !good {
            let text = String::from_utf8_lossy(raw.get(..raw.len().min(80)).unwrap_or(raw));
            self.probe_failed(s, text.trim_end());
            return;
        }
        if let Some(srv) = self.topo.server_mut(s) {
            srv.probe = None;
            srv.failures = 0;
        }
        self.repair_rejoin(s);
    }

    /// Probe `mid` got no answer (the connection failed or its deadline
    /// passed).
    pub fn probe_lost(&mut self, s: ServerId, mid: MsgId) {
        if self
            .topo
            .server(s)
            .is_some_and(|srv| srv.probe == Some(mid))
        {
            self.probe_failed(s, "no answer");
        }
    }

    /// The probe failed: the server stays out for another
    /// `server_retry_timeout`, and its probe connection is closed.
    pub fn probe_failed(&mut self, s: ServerId, why: &str) {
        let Some(retry) = self
            .topo
            .server_pool(s)
            .map(|p| p.conf.server_retry_timeout_ms)
        else {
            return;
        };
        let at = self.now + Duration::from_millis(retry);
        let Some(srv) = self.topo.server_mut(s) else {
            return;
        };
        srv.probe = None;
        srv.next_retry = Some(at);
        let pname = srv.conf.pname.clone();
        crate::log_warn!(
            "server '{}' failed its probe ({}): ejected for {} more msec",
            pname,
            why,
            retry
        );
        self.timers.schedule(at, TimerEvent::ServerRetry(s));
        self.repair_ejected_again(s);
        self.drain_private(s);
    }

    /// Marks the proxy's own connections to `s` draining: they take nothing
    /// more and close once their requests are answered.
    pub fn drain_private(&mut self, s: ServerId) {
        let Some(srv) = self.topo.server(s) else {
            return;
        };
        for &k in &srv.conns {
            if let Some(Conn::Server(c)) = self.conns.get_mut(k) {
                if c.private {
                    c.draining = true;
                    crate::core::queue_once(&mut c.dirty, &mut self.dirty_servers, k);
                }
            }
        }
    }

    /// The reply to one of the proxy's own probe or repair requests.
    pub fn own_reply(&mut self, s: ServerId, mid: MsgId, kind: Internal, raw: &[u8]) {
        match kind {
            Internal::Probe => self.probe_reply(s, mid, raw),
            Internal::Repair(owner) => self.repair_reply(owner, mid, raw),
            _ => {}
        }
    }

    /// One of the proxy's own requests failed with its connection.
    pub fn own_failed(&mut self, s: ServerId, mid: MsgId, kind: Internal) {
        match kind {
            Internal::Probe => self.probe_lost(s, mid),
            Internal::Repair(owner) => self.repair_lost(owner, mid),
            _ => {}
        }
    }
}
