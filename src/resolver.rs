//! Server host names, resolved off the event loop.
//!
//! A server named by host name is resolved at each connect, as 0.5.0 does,
//! but 0.5.0 calls getaddrinfo inside its event loop: a slow or unreachable
//! DNS server stalls every client of every pool for as long as the lookup
//! takes (seconds per attempt). Here a connect to a host name asks this
//! module and returns at once; the connection waits, unregistered and with
//! its requests queued (their `timeout:` running), until a worker thread
//! has the answer and wakes the loop through a [`mio::Waker`]. Address
//! literals never come here and connect as before.
//!
//! A few workers share the queue, so one name that hangs does not hold up
//! the others. Answers are handed back by ticket; the loop drops those
//! whose connection closed meanwhile.

use mio::{Registry, Token, Waker};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

/// Lookups that may run at once.
const WORKERS: usize = 4;

/// Resolves `host:port` to its first address, or says why not (the
/// resolver's own words).
pub type LookupFn = fn(&str, u16) -> Result<SocketAddr, String>;

/// The system resolver (getaddrinfo), first result.
pub fn system_lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "No address associated with hostname".to_string()),
        Err(e) => {
            let text = e.to_string();
            Err(
                match text.strip_prefix("failed to lookup address information: ") {
                    Some(gai) => gai.to_string(),
                    None => text,
                },
            )
        }
    }
}

/// An answer: the ticket [`Resolver::ask`] gave, and the address or why
/// there is none.
pub type Answer = (u64, Result<SocketAddr, String>);

struct Job {
    ticket: u64,
    host: String,
    port: u16,
}

pub struct Resolver {
    jobs: Sender<Job>,
    queue: Arc<Mutex<Receiver<Job>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
    waker: Arc<Waker>,
    lookup: LookupFn,
    workers: usize,
    next: u64,
}

impl Resolver {
    /// A resolver whose answers wake `registry`'s poll with `token`.
    /// No thread starts before the first question.
    pub fn new(registry: &Registry, token: Token, lookup: LookupFn) -> std::io::Result<Resolver> {
        let (jobs, queue) = mpsc::channel();
        Ok(Resolver {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            answers: Arc::new(Mutex::new(Vec::new())),
            waker: Arc::new(Waker::new(registry, token)?),
            lookup,
            workers: 0,
            next: 0,
        })
    }

    /// Starts resolving `host:port`; the answer comes from
    /// [`Resolver::answers`] with the ticket returned. `Err` when no
    /// worker could be started (the caller fails the connect).
    pub fn ask(&mut self, host: &str, port: u16) -> Result<u64, String> {
        if self.workers < WORKERS {
            // One more worker per question until there are enough: most
            // proxies never start one.
            self.spawn_worker()?;
        }
        self.next += 1;
        let job = Job {
            ticket: self.next,
            host: host.to_string(),
            port,
        };
        self.jobs
            .send(job)
            .map_err(|_| "resolver workers are gone".to_string())?;
        Ok(self.next)
    }

    fn spawn_worker(&mut self) -> Result<(), String> {
        let queue = Arc::clone(&self.queue);
        let answers = Arc::clone(&self.answers);
        let waker = Arc::clone(&self.waker);
        let lookup = self.lookup;
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || loop {
                // The lock is held only to take a job; a lookup runs
                // without it, so workers resolve side by side.
                let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok(job) = job else {
                    // The resolver was dropped: the proxy is exiting.
                    return;
                };
                let answer = lookup(&job.host, job.port);
                answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((job.ticket, answer));
                let _ = waker.wake();
            })
            .map_err(|e| format!("cannot start a resolver thread: {e}"))?;
        self.workers += 1;
        Ok(())
    }

    /// The answers that came since the last call.
    pub fn answers(&self, out: &mut Vec<Answer>) {
        out.append(&mut self.answers.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::{Duration, Instant};

    fn slow_lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
        match host {
            "slow" => {
                std::thread::sleep(Duration::from_secs(2));
                Ok(SocketAddr::from(([127, 0, 0, 2], port)))
            }
            "fast" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
            _ => Err("Name or service not known".into()),
        }
    }

    /// Waits on `poll` until `want` answers are in (bounded).
    fn collect(poll: &mut Poll, r: &Resolver, want: usize) -> Vec<Answer> {
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while got.len() < want {
            assert!(Instant::now() < until, "only {got:?} after 10 s");
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            r.answers(&mut got);
        }
        got
    }

    /// Asking never waits for the lookup, a slow name does not hold up a
    /// fast one, failures carry the resolver's reason, and each answer
    /// comes back under its own ticket, waking the poll.
    #[test]
    fn answers_come_back_by_ticket_without_waiting() {
        let mut poll = Poll::new().unwrap();
        let mut r = Resolver::new(poll.registry(), Token(7), slow_lookup).unwrap();
        let t0 = Instant::now();
        let slow = r.ask("slow", 6379).unwrap();
        let fast = r.ask("fast", 6380).unwrap();
        let bad = r.ask("nonexistent", 1).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(1500), "ask waited");
        let first = collect(&mut poll, &r, 2);
        assert!(
            first.iter().all(|(t, _)| *t != slow),
            "the slow name came before the others: {first:?}"
        );
        let mut all = first;
        all.extend(collect(&mut poll, &r, 1));
        all.sort_by_key(|(t, _)| *t);
        assert_eq!(
            all,
            vec![
                (slow, Ok(SocketAddr::from(([127, 0, 0, 2], 6379)))),
                (fast, Ok(SocketAddr::from(([127, 0, 0, 1], 6380)))),
                (bad, Err("Name or service not known".to_string())),
            ]
        );
    }

    #[test]
    fn system_lookup_of_an_address_literal() {
        assert_eq!(
            system_lookup("127.0.0.1", 11211),
            Ok(SocketAddr::from(([127, 0, 0, 1], 11211)))
        );
        // Longer than a DNS label may be: refused before any query.
        let name = format!("{}.invalid", "x".repeat(64));
        assert!(system_lookup(&name, 1).is_err());
    }
}
