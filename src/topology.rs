//! The topology: which pools exist, which servers each has, and the table
//! that places a key on one of them. It is a value the engine consults on
//! every request and replaces, between two events, when a reload (or, later,
//! a failover) changes it.
//!
//! Pools and servers live in arenas and are named by generation-checked ids
//! ([`PoolId`], [`ServerId`]), so the connections, messages and timers that
//! refer to them detect one that went away. A server that leaves its pool
//! in a reload is *detached*: it takes no new request, and it is dropped
//! once its connections have drained. A pool removed by a reload is
//! *retired* likewise: it serves the clients it still has, then goes.
//!
//! Routing ([`Topology::route`]) is a pure lookup: it never rebuilds a
//! table as a side effect. Tables change only through [`Topology::rebuild`],
//! called when a server is ejected, when it passes its probe after its
//! retry time (`probe.rs`), and when a reload changes the pool. While a
//! server of the pool is ejected or being repaired, the pool carries a
//! [`PoolRepair`] (`repair.rs`): `route` then sends a key written during
//! the ejection to the server holding its newest value until it is moved
//! back, and [`Topology::route_for`] records such writes.

use crate::conf::{PoolConf, ServerAddr, ServerConf};
use crate::conn::ConnId;
use crate::hashkit::{self, Selector, ServerSpec};
use crate::id::{Arena, Id};
use crate::metrics::{PoolStats, ServerStats};
use crate::msg::MsgId;
use crate::repair::{Access, PoolRepair};
use std::time::Instant;

pub type PoolId = Id<Pool>;
pub type ServerId = Id<Server>;

pub struct Pool {
    pub conf: PoolConf,
    /// In sorted-name order, which is the table's server index order.
    pub servers: Vec<ServerId>,
    pub selector: Selector,
    pub listener: Option<ConnId>,
    pub nclients: usize,
    pub stats: PoolStats,
    /// Removed by a reload: no listener, no place in the stats; it serves
    /// the clients it still has and is dropped when the last one leaves.
    pub retired: bool,
    /// Ejection repair (`repair.rs`): present only while a server of the
    /// pool is ejected or being repaired, so routing costs nothing more
    /// in the steady state.
    pub repair: Option<Box<PoolRepair>>,
    /// The migration off `migrate_from:` (`migrate.rs`); `None` when the
    /// pool has no previous servers.
    pub migration: Option<Box<crate::migrate::Migration>>,
}

pub struct Server {
    pub pool: PoolId,
    pub conf: ServerConf,
    pub conns: Vec<ConnId>,
    /// Round-robin cursor over `conns` once all exist.
    pub rr: usize,
    pub failures: u32,
    /// Ejected: out of the table until it passes a probe after this time
    /// (`probe.rs`); `None` once it is back.
    pub next_retry: Option<Instant>,
    /// The probe asked of it now, while ejected.
    pub probe: Option<MsgId>,
    pub stats: ServerStats,
    /// Left its pool in a reload: no new requests; dropped once drained.
    pub detached: bool,
    /// Where a sentinel says this master is (`sentinels:` pools); new
    /// connections go there instead of `conf.addr`.
    pub master: Option<ServerAddr>,
}

impl Server {
    pub fn new(pool: PoolId, conf: ServerConf) -> Server {
        Server {
            pool,
            conf,
            conns: Vec::new(),
            rr: 0,
            failures: 0,
            next_retry: None,
            probe: None,
            stats: ServerStats::default(),
            detached: false,
            master: None,
        }
    }

    /// The address new connections go to.
    pub fn addr(&self) -> &ServerAddr {
        self.master.as_ref().unwrap_or(&self.conf.addr)
    }
}

#[derive(Default)]
pub struct Topology {
    /// Bumped by every change of placement, reloads included; a request
    /// records the generation it was routed under.
    pub generation: u64,
    pub pools: Arena<Pool>,
    pub servers: Arena<Server>,
    /// The configured (not retired) pools in configuration order: the
    /// order of the stats and of the listeners.
    pub order: Vec<PoolId>,
}

impl Topology {
    /// The topology of a freshly loaded configuration.
    pub fn new(pools: Vec<PoolConf>, now: Instant) -> Topology {
        let mut t = Topology::default();
        for pc in pools {
            let id = t.add_pool(pc, now);
            t.order.push(id);
        }
        t
    }

    /// Adds a pool and its servers (not to `order`: the caller places it).
    pub fn add_pool(&mut self, conf: PoolConf, now: Instant) -> PoolId {
        let selector = Selector::build(conf.distribution, &[]);
        let servers = conf.servers.clone();
        let pid = self.pools.insert(Pool {
            conf,
            servers: Vec::new(),
            selector,
            listener: None,
            nclients: 0,
            stats: PoolStats::default(),
            retired: false,
            repair: None,
            migration: None,
        });
        let ids: Vec<ServerId> = servers
            .into_iter()
            .map(|sc| self.servers.insert(Server::new(pid, sc)))
            .collect();
        if let Some(p) = self.pools.get_mut(pid) {
            p.servers = ids;
        }
        self.rebuild(pid, now);
        pid
    }

    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id)
    }

    pub fn pool_mut(&mut self, id: PoolId) -> Option<&mut Pool> {
        self.pools.get_mut(id)
    }

    pub fn server(&self, id: ServerId) -> Option<&Server> {
        self.servers.get(id)
    }

    pub fn server_mut(&mut self, id: ServerId) -> Option<&mut Server> {
        self.servers.get_mut(id)
    }

    /// The pool configuration a server is governed by.
    pub fn server_pool(&self, id: ServerId) -> Option<&Pool> {
        self.servers.get(id).and_then(|s| self.pools.get(s.pool))
    }

    /// The server for `key` in pool `pid` (the placement of the
    /// compatibility notes, section 4). `Err` is the errno the request
    /// fails with: no live server.
    pub fn route(&self, pid: PoolId, key: &[u8]) -> Result<ServerId, i32> {
        let pool = self.pools.get(pid).ok_or(libc::EINVAL)?;
        if pool.selector.is_empty() {
            return Err(libc::ECONNREFUSED);
        }
        let idx = hashkit::select(
            &pool.selector,
            pool.conf.hash,
            pool.conf.hash_tag,
            key,
            pool.servers.len(),
        )
        .ok_or(libc::ECONNREFUSED)?;
        let s = pool.servers.get(idx).copied().ok_or(libc::ECONNREFUSED)?;
        // A key written elsewhere while its owner was ejected stays there
        // until it is moved back (`repair.rs`).
        match &pool.repair {
            Some(rep) => Ok(rep.pinned(idx, key).unwrap_or(s)),
            None => Ok(s),
        }
    }

    /// [`route`](Self::route) for a request that `access`es the key: a
    /// write routed away from an ejected owner is remembered, so the owner
    /// is repaired before it serves the key again (`repair.rs`).
    pub fn route_for(&mut self, pid: PoolId, key: &[u8], access: Access) -> Result<ServerId, i32> {
        let s = self.route(pid, key)?;
        if access == Access::Read {
            return Ok(s);
        }
        if let Some(pool) = self.pools.get_mut(pid) {
            if let Some(rep) = pool.repair.as_mut() {
                let conf = &pool.conf;
                rep.record(conf, &pool.servers, key, s, access);
            }
        }
        Ok(s)
    }

    /// Rebuilds a pool's table from its live servers. Returns the earliest
    /// retry time of a server still ejected, for the caller's timer.
    pub fn rebuild(&mut self, pid: PoolId, _now: Instant) -> Option<Instant> {
        let servers = &self.servers;
        let pool = self.pools.get_mut(pid)?;
        let mut next = None::<Instant>;
        let eject = pool.conf.auto_eject_hosts;
        let specs: Vec<ServerSpec> = pool
            .servers
            .iter()
            .filter_map(|&s| servers.get(s))
            .map(|srv| {
                // An ejected server comes back only through its probe,
                // which clears `next_retry` (`probe.rs`).
                let live = !eject || srv.next_retry.is_none();
                if let (false, Some(t)) = (live, srv.next_retry) {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
                ServerSpec {
                    name: srv.conf.name.as_bytes(),
                    weight: srv.conf.weight,
                    live,
                }
            })
            .collect();
        pool.selector = Selector::build(pool.conf.distribution, &specs);
        self.generation += 1;
        next
    }

    /// Open server connections' reservation against the open-file limit.
    pub fn reserved_fds(&self) -> usize {
        self.order
            .iter()
            .filter_map(|&p| self.pools.get(p))
            .map(|p| {
                // Two sentinel connections per pool that has sentinels.
                let sentinel = if p.conf.sentinels.is_empty() { 0 } else { 2 };
                p.conf.server_connections as usize * p.servers.len() + 1 + sentinel
            })
            .sum()
    }
}

/// Whether two configurations of a server describe the same backend, so the
/// server keeps its connections, counters and ejection state across a
/// reload (its position in the YAML list does not matter).
pub fn same_server(a: &ServerConf, b: &ServerConf) -> bool {
    a.name == b.name && a.addr == b.addr && a.weight == b.weight && a.pname == b.pname
}

/// In a pool that follows sentinels, a server whose master a sentinel has
/// located is the same backend across a reload when its name and weight
/// are: its configured address is only where it started.
pub fn same_master(srv: &Server, b: &ServerConf, pool: &PoolConf) -> bool {
    !pool.sentinels.is_empty()
        && srv.master.is_some()
        && srv.conf.name == b.name
        && srv.conf.weight == b.weight
}

/// Settings under which an existing server connection was set up; when one
/// changes, connections made under the old value must not take new work.
pub fn connection_settings_changed(old: &PoolConf, new: &PoolConf) -> bool {
    old.redis_auth != new.redis_auth
        || old.redis_db != new.redis_db
        || old.tcpkeepalive != new.tcpkeepalive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::Conf;

    fn conf(yaml: &str) -> Vec<PoolConf> {
        match Conf::parse_str(yaml, "t.yml") {
            Ok(c) => c.pools,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn routes_by_name_and_detects_stale_pools() {
        let now = Instant::now();
        let mut t = Topology::new(
            conf("a:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1 x\n   - 127.0.0.1:3:1 y\n"),
            now,
        );
        let pid = t.order[0];
        let s = t.route(pid, b"key").expect("routed");
        assert!(t.server(s).is_some());
        let gen = t.generation;
        let _ = t.rebuild(pid, now);
        assert!(t.generation > gen);
        let removed = t.pools.remove(pid);
        assert!(removed.is_some());
        assert_eq!(t.route(pid, b"key"), Err(libc::EINVAL));
    }
}
