//! Hot reload (SIGUSR1): re-read the `-c` file, validate it exactly as `-t`
//! does, and swap the new pools in between two events while clients stay
//! connected.
//!
//! Pools are matched by name. The reload happens in two phases so that a
//! failure changes nothing: first everything that can fail (reading and
//! validating the file, binding the listeners that are new), then the
//! changes themselves, which cannot fail:
//!
//! | change | what happens |
//! | --- | --- |
//! | new pool | it gets its listener (and preconnects if configured) |
//! | pool gone | listener closed at once; its clients get what they are owed, then are closed; its server connections close once their requests are answered |
//! | `listen` changed | new listener, old one closed; clients already connected are served to the end of what they sent, then closed |
//! | `redis` changed | a removal plus an addition |
//! | anything else | in place: clients stay; requests parsed from now on use the new settings; a server whose name, address and weight are unchanged keeps its connections, counters and ejection state; the others' connections close once drained |
//!
//! A listen address that moves from one pool to another (or stays with a
//! pool that is replaced) keeps its socket, so the port is never refused in
//! between. What a reload cannot change (the stats address and port, `-m`,
//! log settings) needs a restart.

use crate::conf::{self, Conf, PoolConf};
use crate::conn::{Conn, ConnId};
use crate::core::Context;
use crate::listener;
use crate::net::Listener;
use crate::topology::{
    connection_settings_changed, same_master, same_server, PoolId, Server, ServerId,
};
use std::collections::HashMap;

/// How one configured pool relates to the running ones.
enum Change {
    Add(PoolConf),
    /// Same name, same `redis`: updated where it stands.
    InPlace {
        id: PoolId,
        conf: PoolConf,
    },
    /// Same name, `redis` changed: the old one retires, a new one starts.
    Replace(PoolConf),
}

/// Where a pool's listener comes from in the apply phase.
enum Socket {
    Keep,
    Bound(Listener),
    /// The running listener of another pool, on the same address.
    Take(ConnId),
}

impl Context {
    /// Handles SIGUSR1 (signals that arrived together are one reload).
    pub fn reload(&mut self) {
        let Some(path) = self.settings.conf_path.clone() else {
            return;
        };
        let name = path.to_string_lossy().into_owned();
        let result = match Conf::load(&name) {
            Ok(c) => self.reload_with(c),
            Err(e) => Err(conf::one_line(&conf::describe(&e, &name))),
        };
        match result {
            Ok(summary) => {
                self.reloads += 1;
                crate::log_notice!("reloaded configuration from '{}': {}", name, summary);
            }
            Err(reason) => {
                self.reload_failures += 1;
                crate::log_error!("reload failed: {}", reason);
            }
        }
        self.publish_stats();
    }

    /// Applies a validated configuration; `Err` (nothing changed) when a
    /// new listener cannot be bound. `Ok` carries the one-line summary.
    pub fn reload_with(&mut self, conf: Conf) -> Result<String, String> {
        let running: HashMap<String, PoolId> = self
            .topo
            .order
            .iter()
            .filter_map(|&id| self.topo.pool(id).map(|p| (p.conf.name.clone(), id)))
            .collect();
        let mut changes = Vec::new();
        for pc in conf.pools {
            let change = match running
                .get(&pc.name)
                .and_then(|&id| self.topo.pool(id).map(|p| (id, p.conf.redis == pc.redis)))
            {
                None => Change::Add(pc),
                Some((id, true)) => Change::InPlace { id, conf: pc },
                Some((_, false)) => Change::Replace(pc),
            };
            changes.push(change);
        }
        let kept: Vec<PoolId> = changes
            .iter()
            .filter_map(|c| match c {
                Change::InPlace { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        let removed: Vec<PoolId> = self
            .topo
            .order
            .iter()
            .copied()
            .filter(|id| !kept.contains(id))
            .collect();

        // Phase 1: sockets. A listener whose pool keeps its address stays;
        // one that is given up may be taken over by a pool that wants the
        // same address; everything else is bound now.
        let mut free: Vec<(crate::conf::Listen, ConnId)> = Vec::new();
        for &id in &self.topo.order {
            let Some(p) = self.topo.pool(id) else {
                continue;
            };
            let stays = changes.iter().any(|c| {
                matches!(c, Change::InPlace { id: i, conf } if *i == id && conf.listen == p.conf.listen)
            });
            if let (false, Some(l)) = (stays, p.listener) {
                free.push((p.conf.listen.clone(), l));
            }
        }
        let mut sockets = Vec::with_capacity(changes.len());
        for c in &changes {
            let (pc, current) = match c {
                Change::Add(pc) | Change::Replace(pc) => (pc, None),
                Change::InPlace { id, conf } => (conf, self.topo.pool(*id).map(|p| &p.conf.listen)),
            };
            if current == Some(&pc.listen) {
                sockets.push(Socket::Keep);
                continue;
            }
            if let Some(i) = free.iter().position(|(l, _)| *l == pc.listen) {
                sockets.push(Socket::Take(free.swap_remove(i).1));
                continue;
            }
            match listener::bind(pc) {
                Ok(l) => sockets.push(Socket::Bound(l)),
                // Dropping `sockets` closes what was bound so far.
                Err(e) => return Err(e),
            }
        }

        // Phase 2: apply; nothing below can fail.
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        let removed_names: Vec<String> = removed
            .iter()
            .filter_map(|&id| self.topo.pool(id).map(|p| p.conf.name.clone()))
            .collect();
        // Take the sockets that move before any listener is closed.
        let mut taken: HashMap<ConnId, Listener> = HashMap::new();
        for s in &sockets {
            if let Socket::Take(lid) = s {
                if let Some(l) = self.detach_listener(*lid) {
                    taken.insert(*lid, l);
                }
            }
        }
        for id in removed {
            self.retire_pool(id);
        }
        let mut order = Vec::with_capacity(changes.len());
        for (change, socket) in changes.into_iter().zip(sockets) {
            let (id, relisten) = match change {
                Change::Add(pc) | Change::Replace(pc) => {
                    added.push(pc.name.clone());
                    (self.topo.add_pool(pc, self.now), true)
                }
                Change::InPlace { id, conf } => {
                    let relisten = !matches!(socket, Socket::Keep);
                    if self.update_pool(id, conf) || relisten {
                        if let Some(p) = self.topo.pool(id) {
                            changed.push(p.conf.name.clone());
                        }
                    }
                    (id, relisten)
                }
            };
            order.push(id);
            if relisten {
                // Clients accepted on the old address finish and go.
                let old_clients = self.pool_clients(id);
                self.close_listener(id);
                let sock = match socket {
                    Socket::Bound(l) => Some(l),
                    Socket::Take(lid) => taken.remove(&lid),
                    Socket::Keep => None,
                };
                if let Some(sock) = sock {
                    if let Err(e) = self.attach_listener(id, sock) {
                        crate::log_error!("registering listener failed: {}", e);
                    }
                }
                for ck in old_clients {
                    self.client_retire(ck);
                }
            }
            self.preconnect(id);
            self.migrate_configure(id);
        }
        self.topo.order = order;
        self.topo.generation += 1;
        self.max_clients = self.client_limit();
        self.timers.prune();
        self.sentinel_sync();
        Ok(format!(
            "{} pools, added: {}, removed: {}, changed: {}",
            self.topo.order.len(),
            list(&added),
            list(&removed_names),
            list(&changed)
        ))
    }

    fn pool_clients(&self, pid: PoolId) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter_map(|(id, c)| match c {
                Conn::Client(c) if c.pool == pid => Some(id),
                _ => None,
            })
            .collect()
    }

    /// A pool left the configuration: no listener, no place in the stats;
    /// its clients are served what they sent, then closed.
    fn retire_pool(&mut self, pid: PoolId) {
        self.close_listener(pid);
        if let Some(p) = self.topo.pool_mut(pid) {
            p.retired = true;
        }
        for ck in self.pool_clients(pid) {
            self.client_retire(ck);
        }
        self.pool_gone_check(pid);
    }

    /// Updates a pool in place; true if anything changed.
    fn update_pool(&mut self, pid: PoolId, conf: PoolConf) -> bool {
        let Some(pool) = self.topo.pool(pid) else {
            return false;
        };
        if pool.conf == conf {
            return false;
        }
        let reconnect = connection_settings_changed(&pool.conf, &conf);
        let old_servers = pool.servers.clone();
        let mut servers: Vec<ServerId> = Vec::with_capacity(conf.servers.len());
        for sc in &conf.servers {
            let found = old_servers.iter().copied().find(|&s| {
                self.topo.server(s).is_some_and(|srv| {
                    (same_server(&srv.conf, sc) || same_master(srv, sc, &conf))
                        && !servers.contains(&s)
                })
            });
            let id = match found {
                Some(s) => {
                    if let Some(srv) = self.topo.server_mut(s) {
                        srv.conf = sc.clone();
                        if !conf.auto_eject_hosts {
                            srv.next_retry = None;
                            srv.failures = 0;
                        }
                    }
                    s
                }
                None => self.topo.servers.insert(Server::new(pid, sc.clone())),
            };
            servers.push(id);
        }
        let max = conf.server_connections.max(1) as usize;
        if servers != old_servers || pool_placement_changed(&conf, self.topo.pool(pid)) {
            self.repair_reset(pid);
        }
        if let Some(p) = self.topo.pool_mut(pid) {
            p.conf = conf;
            p.servers = servers.clone();
        }
        for s in old_servers {
            if !servers.contains(&s) {
                if let Some(srv) = self.topo.server_mut(s) {
                    srv.detached = true;
                }
                self.drain_server(s, 0);
            } else if reconnect {
                self.drain_server(s, 0);
            } else {
                self.drain_server(s, max);
            }
        }
        self.rebuild_pool(pid);
        true
    }

    /// Marks all but the first `keep` live connections of a server as
    /// draining, and closes those that are idle already.
    pub fn drain_server(&mut self, s: ServerId, keep: usize) {
        let Some(srv) = self.topo.server(s) else {
            return;
        };
        let mut live = 0;
        let mut idle = Vec::new();
        for &k in &srv.conns.clone() {
            if let Some(Conn::Server(c)) = self.conns.get_mut(k) {
                if c.draining {
                    continue;
                }
                live += 1;
                if live > keep {
                    c.draining = true;
                    if c.idle() {
                        idle.push(k);
                    }
                }
            }
        }
        for k in idle {
            self.server_close(k, 0, false);
        }
        self.server_gone_check(s);
    }

    /// A retired pool whose last client left: its servers drain and go.
    pub fn pool_gone_check(&mut self, pid: PoolId) {
        let Some(p) = self.topo.pool(pid) else {
            return;
        };
        if !p.retired || p.nclients > 0 {
            return;
        }
        let servers = p.servers.clone();
        for &s in &servers {
            if let Some(srv) = self.topo.server_mut(s) {
                srv.detached = true;
            }
            self.drain_server(s, 0);
        }
        let all_gone = servers.iter().all(|&s| self.topo.server(s).is_none());
        if all_gone {
            self.topo.pools.remove(pid);
        }
    }

    /// A detached server with no connection left is forgotten (and its
    /// retired pool with it, once that has nothing left either).
    pub fn server_gone_check(&mut self, s: ServerId) {
        let Some(srv) = self.topo.server(s) else {
            return;
        };
        if !srv.detached || !srv.conns.is_empty() {
            return;
        }
        let pid = srv.pool;
        self.topo.servers.remove(s);
        if self.topo.pool(pid).is_some_and(|p| p.retired) {
            self.pool_gone_check(pid);
        }
    }
}

/// Whether a reload changes where keys are placed (their owners), which
/// the ejection repair of the pool depends on (`repair.rs`).
fn pool_placement_changed(new: &PoolConf, old: Option<&crate::topology::Pool>) -> bool {
    old.is_none_or(|p| {
        p.conf.hash != new.hash
            || p.conf.hash_tag != new.hash_tag
            || p.conf.distribution != new.distribution
            || p.conf.redis != new.redis
            || !new.eject_repair
    })
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(" ")
    }
}
