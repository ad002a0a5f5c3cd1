//! The stats thread: its own mio loop on the stats socket, the connection
//! state machine, and the engine's handle that publishes snapshots to it.

use super::*;

/// What both threads share: the newest published snapshot and the stop flag.
pub(super) struct Shared {
    latest: Mutex<Option<Snapshot>>,
    stop: AtomicBool,
}

impl Shared {
    /// A panic elsewhere while holding the lock leaves a valid `Option`
    /// behind, so poisoning is ignored.
    fn latest(&self) -> MutexGuard<'_, Option<Snapshot>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's handle on the stats thread. Dropping it stops the thread.
pub struct StatsServer {
    shared: Arc<Shared>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl StatsServer {
    /// Binds `addr`:`port` (SO_REUSEADDR only, see the module docs) and
    /// spawns the stats thread. `addr` is resolved with `ToSocketAddrs`
    /// (first result). On a bind failure the error reads
    /// `bind on m <fd> to stats server addr '<addr>:<port>' failed: <strerror>`.
    pub fn start(
        addr: &str,
        port: u16,
        interval_ms: u64,
        initial: Snapshot,
    ) -> Result<StatsServer, String> {
        let mut listener = stats_listen(addr, port)?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("stats server addr '{addr}:{port}': {}", strerror(&e)))?;
        let poll = Poll::new()
            .map_err(|e| format!("stats: creating the event loop failed: {}", strerror(&e)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("stats: registering the listener failed: {}", strerror(&e)))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| format!("stats: creating the waker failed: {}", strerror(&e)))?;
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let worker = Worker {
            poll,
            listener,
            conns: Slab::with_capacity(MAX_CONNS),
            shared: Arc::clone(&shared),
            interval: Duration::from_millis(interval_ms.max(1)),
            retry_accept: false,
            view: View {
                current: initial,
                source: crate::daemon::hostname(),
                started: Instant::now(),
            },
        };
        let thread = std::thread::Builder::new()
            .name("nc-stats".to_string())
            .spawn(move || worker.run())
            .map_err(|e| format!("stats: spawning the stats thread failed: {}", strerror(&e)))?;
        Ok(StatsServer {
            shared,
            waker,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the published figures; no I/O, only a short lock. The
    /// previous snapshot is dropped after the lock is released.
    pub fn publish(&self, snap: Snapshot) {
        let old = self.shared.latest().replace(snap);
        drop(old);
    }

    /// Stops the thread, closing the listener and every stats connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            // The thread still sees the flag at its next timeout.
            crate::log_warn!("stats: waking the stats thread failed: {}", strerror(&e));
        }
        if thread.join().is_err() {
            crate::log_error!("stats: the stats thread panicked");
        }
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// socket, SO_REUSEADDR (not SO_REUSEPORT: the port is not shared with
/// another instance), bind, listen, with the C binary's messages.
pub(super) fn stats_listen(addr: &str, port: u16) -> Result<TcpListener, String> {
    let sa = (addr, port)
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "resolve of stats server addr '{addr}:{port}' failed: {}",
                strerror(&e)
            )
        })?
        .next()
        .ok_or_else(|| {
            format!("resolve of stats server addr '{addr}:{port}' failed: no address")
        })?;
    crate::net::tcp_listen(sa, BACKLOG as u32, false).map_err(|e| match e.step {
        "bind" | "listen" => format!(
            "{} on m {} to stats server addr '{addr}:{port}' failed: {}",
            e.step,
            e.fd,
            e.text()
        ),
        step => format!("{step} on m {} failed: {}", e.fd, e.text()),
    })
}

/// The figures as the stats thread last saw them, and how to answer.
pub(super) struct View {
    current: Snapshot,
    source: String,
    started: Instant,
}

impl View {
    fn json(&self) -> String {
        let uptime = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        render_json(
            &self.current,
            &self.source,
            env!("CARGO_PKG_VERSION"),
            uptime,
            now,
        )
    }

    fn respond(&self, answer: Answer) -> Vec<u8> {
        match answer {
            Answer::Raw => self.json().into_bytes(),
            Answer::Ok {
                metrics: false,
                head,
            } => http_response("200 OK", "", JSON_TYPE, self.json().as_bytes(), head),
            Answer::Ok {
                metrics: true,
                head,
            } => {
                let uptime = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
                let text = render_prometheus(
                    &self.current,
                    &self.source,
                    env!("CARGO_PKG_VERSION"),
                    uptime,
                );
                http_response("200 OK", "", PROMETHEUS_TYPE, text.as_bytes(), head)
            }
            Answer::NotFound { head } => {
                http_response("404 Not Found", "", "text/plain", b"not found\n", head)
            }
            Answer::BadMethod => http_response(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "text/plain",
                b"method not allowed\n",
                false,
            ),
            Answer::BadRequest => {
                http_response("400 Bad Request", "", "text/plain", b"bad request\n", false)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Reading,
    Writing,
    Draining,
}

pub(super) enum Next {
    Keep,
    Close,
}

pub(super) struct Conn {
    sock: TcpStream,
    state: State,
    inbuf: Vec<u8>,
    eof: bool,
    out: Vec<u8>,
    sent: usize,
    /// When silence means "send the raw JSON".
    quiet_until: Instant,
    /// When the connection is closed whatever its state.
    deadline: Instant,
    /// When it is closed if still reading its request head.
    head_by: Instant,
}

impl Conn {
    fn new(sock: TcpStream, now: Instant) -> Conn {
        Conn {
            sock,
            state: State::Reading,
            inbuf: Vec::new(),
            eof: false,
            out: Vec::new(),
            sent: 0,
            quiet_until: now + QUIET,
            deadline: now + CONN_DEADLINE,
            head_by: now + HEAD_DEADLINE,
        }
    }

    /// Past its deadline, or still reading its head past the head's.
    fn expired(&self, now: Instant) -> bool {
        now >= self.deadline || (self.state == State::Reading && now >= self.head_by)
    }

    /// Waiting on the quiet timer: no line read yet, so silence may still
    /// turn into the raw JSON.
    fn undecided(&self) -> bool {
        self.state == State::Reading && !self.eof && !self.inbuf.contains(&b'\n')
    }

    /// Runs the state machine as far as the socket allows. Each arm either
    /// returns or moves to a later state, so the loop ends.
    fn advance(&mut self, now: Instant, view: &View) -> Next {
        loop {
            match self.state {
                State::Reading => {
                    if self.fill().is_err() {
                        return Next::Close;
                    }
                    let quiet_over = now >= self.quiet_until;
                    let Some(answer) = classify(&self.inbuf, self.eof, quiet_over) else {
                        return Next::Keep;
                    };
                    self.out = view.respond(answer);
                    self.state = State::Writing;
                }
                State::Writing => match self.flush() {
                    Ok(true) => {
                        // The peer sees EOF now, before the lingering close.
                        let _ = self.sock.shutdown(Shutdown::Write);
                        self.out = Vec::new();
                        self.inbuf = Vec::new();
                        self.deadline = self.deadline.min(now + LINGER);
                        self.state = State::Draining;
                    }
                    Ok(false) => return Next::Keep,
                    Err(_) => return Next::Close,
                },
                State::Draining => {
                    return match self.discard() {
                        Ok(false) => Next::Keep,
                        Ok(true) | Err(_) => Next::Close,
                    }
                }
            }
        }
    }

    /// Reads until WouldBlock, EOF, or [`MAX_HEAD`] bytes.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 2048];
        while !self.eof && self.inbuf.len() < MAX_HEAD {
            let want = (MAX_HEAD - self.inbuf.len()).min(chunk.len());
            let Some(dst) = chunk.get_mut(..want) else {
                break;
            };
            match self.sock.read(dst) {
                Ok(0) => self.eof = true,
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes until done (`true`) or WouldBlock (`false`).
    fn flush(&mut self) -> io::Result<bool> {
        while let Some(rest) = self.out.get(self.sent..).filter(|r| !r.is_empty()) {
            match self.sock.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads and drops input; `true` at EOF.
    fn discard(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 2048];
        for _ in 0..DRAIN_READS {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// The stats thread: its own poll, the listener, the connections.
pub(super) struct Worker {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    shared: Arc<Shared>,
    interval: Duration,
    /// The last accept failed (e.g. EMFILE) with connections maybe still
    /// queued; edge-triggered readiness will not repeat, so retry each turn.
    retry_accept: bool,
    view: View,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log_error!("stats: event loop failed: {}", strerror(&e));
                    return;
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            // After the poll, so a snapshot published before a client
            // connected is the one that client sees.
            if let Some(snap) = self.shared.latest().take() {
                self.view.current = snap;
            }
            let now = Instant::now();
            let mut accept = self.retry_accept;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => accept = true,
                    WAKER => {}
                    Token(key) => self.drive(key, now),
                }
            }
            if accept {
                self.accept(now);
            }
            self.expire(now);
        }
    }

    fn next_timeout(&self, now: Instant) -> Duration {
        let mut next = now + self.interval;
        for (_, c) in self.conns.iter() {
            next = next.min(c.deadline);
            if c.state == State::Reading {
                next = next.min(c.head_by);
            }
            if c.undecided() {
                next = next.min(c.quiet_until);
            }
        }
        next.saturating_duration_since(now)
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Next::Close = conn.advance(now, &self.view) {
            self.close(key);
        }
    }

    fn accept(&mut self, now: Instant) {
        self.retry_accept = false;
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        // The oldest still reading its head makes room.
                        let oldest = self
                            .conns
                            .iter()
                            .filter(|(_, c)| c.state == State::Reading)
                            .min_by_key(|(_, c)| c.head_by)
                            .map(|(k, _)| k);
                        match oldest {
                            Some(k) => self.close(k),
                            None => continue,
                        }
                    }
                    let entry = self.conns.vacant_entry();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut sock, Token(entry.key()), interest)
                    {
                        crate::log_warn!(
                            "stats: registering a connection failed: {}",
                            strerror(&e)
                        );
                        continue;
                    }
                    entry.insert(Conn::new(sock, now));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::log_warn!("stats: accept failed: {}", strerror(&e));
                    self.retry_accept = true;
                    return;
                }
            }
        }
    }

    /// Closes connections past their deadline and answers undecided ones
    /// whose quiet time is over.
    fn expire(&mut self, now: Instant) {
        let mut closing = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if conn.expired(now) {
                closing.push(key);
            } else if conn.undecided() && now >= conn.quiet_until {
                if let Next::Close = conn.advance(now, &self.view) {
                    closing.push(key);
                }
            }
        }
        for key in closing {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
    }
}
