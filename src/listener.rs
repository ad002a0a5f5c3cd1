//! Pool listeners: binding them (at start and on reload), accepting clients
//! under the connection limits, and backing off when descriptors run out.
//!
//! A client joins the pool of the listener that accepted it and keeps that
//! pool (by id) for its whole life, across reloads.

use crate::conf::{Listen, PoolConf};
use crate::conn::{Backoff, ClientConn, ClientRx, Conn, ConnId, ListenerConn};
use crate::core::Context;
use crate::net::{self, Listener, Stream};
use crate::timer::TimerEvent;
use crate::topology::PoolId;
use std::collections::VecDeque;

/// Connections accepted per turn of a listener (a loop iteration).
const ACCEPT_BUDGET: usize = 128;
/// How long to wait before accepting again after running out of files.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Binds a pool's listen address. The error text is the C binary's
/// (`bind on p <fd> to addr '<listen>' failed: <reason>`).
pub fn bind(conf: &PoolConf) -> Result<Listener, String> {
    match &conf.listen {
        Listen::Tcp(addr) => net::tcp_listen(*addr, conf.backlog, conf.reuseport)
            .map(Listener::Tcp)
            .map_err(|e| {
                format!(
                    "{} on p {} to addr '{}' failed: {}",
                    e.step,
                    e.fd,
                    conf.listen_str,
                    e.text()
                )
            }),
        Listen::Unix { path, perm } => {
            let _ = std::fs::remove_file(path);
            let l = mio::net::UnixListener::bind(path).map_err(|e| {
                format!(
                    "bind on p to addr '{}' failed: {}",
                    conf.listen_str,
                    net::strerror(e.raw_os_error().unwrap_or(0))
                )
            })?;
            if *perm != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*perm))
                    .map_err(|e| format!("chmod of '{path}' failed: {e}"))?;
            }
            Ok(Listener::Unix(l))
        }
    }
}

impl Context {
    /// Binds every configured pool's listener (at start).
    pub fn listen_all(&mut self) -> Result<(), String> {
        for pid in self.topo.order.clone() {
            let Some(pool) = self.topo.pool(pid) else {
                continue;
            };
            let sock = bind(&pool.conf)?;
            self.attach_listener(pid, sock)
                .map_err(|e| format!("registering listener failed: {e}"))?;
        }
        Ok(())
    }

    /// Makes `sock` the listener of pool `pid` and logs it as the C binary
    /// does.
    pub fn attach_listener(&mut self, pid: PoolId, sock: Listener) -> std::io::Result<ConnId> {
        let key = self.conns.insert(Conn::Listener(ListenerConn {
            sock,
            pool: pid,
            retry_pending: false,
            backoff: None,
            again: false,
        }));
        if let Err(e) = self.register(key) {
            self.conns.remove(key);
            return Err(e);
        }
        if let Some(p) = self.topo.pool_mut(pid) {
            p.listener = Some(key);
            crate::log_notice!(
                "p {} listening on '{}' in {} pool '{}' with {} servers",
                key,
                p.conf.listen_str,
                if p.conf.redis { "redis" } else { "memcache" },
                p.conf.name,
                p.servers.len()
            );
        }
        Ok(key)
    }

    /// Takes a listener out of the loop (it stays open) for reuse by a
    /// reload.
    pub fn detach_listener(&mut self, lid: ConnId) -> Option<Listener> {
        let mut conn = self.conns.remove(lid)?;
        self.deregister(&mut conn);
        match conn {
            Conn::Listener(l) => {
                if let Some(p) = self.topo.pool_mut(l.pool) {
                    if p.listener == Some(lid) {
                        p.listener = None;
                    }
                }
                Some(l.sock)
            }
            _ => None,
        }
    }

    /// Closes a pool's listener: new connections are refused from now on.
    pub fn close_listener(&mut self, pid: PoolId) {
        let Some(lid) = self.topo.pool(pid).and_then(|p| p.listener) else {
            return;
        };
        // The path comes from the socket: a reload may already have given
        // the pool its new `listen`.
        if let Some(Listener::Unix(l)) = self.detach_listener(lid) {
            if let Some(path) = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
            {
                drop(l);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Accepts what the backlog holds, at most [`ACCEPT_BUDGET`] per turn
    /// (the rest in the next iteration, through `ready_again`).
    pub fn accept(&mut self, lk: ConnId) {
        let mut budget = ACCEPT_BUDGET;
        loop {
            let Some(Conn::Listener(l)) = self.conns.get_mut(lk) else {
                return;
            };
            if l.retry_pending || l.again {
                return;
            }
            if budget == 0 {
                l.again = true;
                self.ready_again.push(lk);
                return;
            }
            budget -= 1;
            let pid = l.pool;
            let sock = match l.sock.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or memory: the pending connections
                    // stay in the backlog; try again shortly (an edge-
                    // triggered listener would not tell us again). One retry
                    // per listener, however many accepts failed, and one log
                    // line per episode, however long it lasts.
                    let now = self.now;
                    if let Some(Conn::Listener(l)) = self.conns.get_mut(lk) {
                        l.retry_pending = true;
                        match &mut l.backoff {
                            Some(b) => b.failures += 1,
                            None => {
                                crate::log_error!(
                                    "accept on p {} failed: {}; retrying every {} msec until it works",
                                    lk,
                                    crate::log::strerror(&e),
                                    ACCEPT_RETRY.as_millis()
                                );
                                l.backoff = Some(Backoff {
                                    since: now,
                                    failures: 1,
                                    refused: 0,
                                });
                            }
                        }
                    }
                    self.timers
                        .schedule(self.now + ACCEPT_RETRY, TimerEvent::AcceptRetry(lk));
                    return;
                }
            };
            if self.nclients >= self.max_clients {
                let now = self.now;
                let (n, max) = (self.nclients, self.max_clients);
                if let Some(Conn::Listener(l)) = self.conns.get_mut(lk) {
                    match &mut l.backoff {
                        Some(b) => b.refused += 1,
                        None => {
                            crate::log_warn!(
                                "client connections {} exceed the limit {} of open files; refusing until some close",
                                n,
                                max
                            );
                            l.backoff = Some(Backoff {
                                since: now,
                                failures: 0,
                                refused: 1,
                            });
                        }
                    }
                }
                drop(sock);
                continue;
            }
            self.backoff_over(lk);
            let Some(pool) = self.topo.pool(pid) else {
                return;
            };
            let limit = pool.conf.client_connections as usize;
            if limit > 0 && pool.nclients >= limit {
                crate::log_warn!(
                    "client connections {} exceed limit {} in pool '{}'",
                    pool.nclients,
                    limit,
                    pool.conf.name
                );
                drop(sock);
                continue;
            }
            if let Stream::Tcp(t) = &sock {
                let _ = t.set_nodelay(true);
                if pool.conf.tcpkeepalive {
                    let _ = net::set_int_opt(sock.fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
                }
            }
            let key = self.conns.insert(Conn::Client(ClientConn {
                sock,
                pool: pid,
                rx: ClientRx::default(),
                outq: VecDeque::new(),
                wsent: Default::default(),
                eof: false,
                closing: false,
                quit: false,
                authed: false,
                held: 0,
                paused: false,
                hup: false,
                retiring: false,
                proto: Default::default(),
                name: None,
                id: self.total_conns + 1,
                tx: None,
                again: false,
                dirty: false,
                deferred: false,
                defer_since: None,
                partial: 0,
                splitting: None,
            }));
            if self.register(key).is_err() {
                let _ = self.conns.remove(key);
                continue;
            }
            self.nclients += 1;
            if let Some(pool) = self.topo.pool_mut(pid) {
                pool.nclients += 1;
                pool.stats.client_connections += 1;
            }
        }
    }

    /// A client was accepted and kept: the back-off episode,
    /// if one was under way, ends, with one line saying what it cost.
    fn backoff_over(&mut self, lk: ConnId) {
        let now = self.now;
        let Some(Conn::Listener(l)) = self.conns.get_mut(lk) else {
            return;
        };
        let Some(b) = l.backoff.take() else {
            return;
        };
        crate::log_notice!(
            "accept on p {} works again after {} msec: {} failed accepts, {} connections refused over the open-file limit",
            lk,
            now.saturating_duration_since(b.since).as_millis(),
            b.failures,
            b.refused
        );
    }
}
