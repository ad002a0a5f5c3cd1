//! The engine's one timer facility: request deadlines, server retries,
//! accept back-off and periodic work, all delivered to the loop as
//! [`TimerEvent`]s.
//!
//! Request deadlines are by far the most numerous, and every request of a
//! pool gets the same timeout, so they enter a *lane* per timeout value in
//! order: the front of a lane is its earliest entry and adding or expiring
//! one is O(1). A reload may change a pool's timeout; the new value simply
//! gets its own lane, and the old lane empties as its requests finish.
//! Everything else (a handful of entries at a time) sits in one binary
//! heap.
//!
//! Entries are never removed early. A deadline names its message by a
//! generation-checked id and carries the instant it was set for; when it
//! comes due the engine checks that the message still exists and still
//! waits for that deadline, and otherwise drops the entry.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::conn::ConnId;
use crate::msg::MsgId;
use crate::topology::{PoolId, ServerId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Something the loop must do at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerEvent {
    /// A request's deadline (the instant it was set for, to tell it from a
    /// later deadline of the same message).
    Deadline(MsgId, Instant),
    /// An ejected server's retry time has come: it is probed (`probe.rs`).
    ServerRetry(ServerId),
    /// The repair of a returning server waited after a failed step; it
    /// goes on (`repair.rs`).
    RepairNext(ServerId),
    /// Accept again on a listener after running out of descriptors.
    AcceptRetry(ConnId),
    /// A pool's sentinel client: connect, time out or refresh (the instant
    /// tells a current entry from a stale one, see `sentinel.rs`).
    Sentinel(PoolId, Instant),
    /// The background mover of a pool's migration takes its next batch
    /// (`migrate.rs`).
    MigrateTick(PoolId),
}

#[derive(Debug, Default)]
pub struct Timers {
    lanes: Vec<(Duration, VecDeque<(Instant, MsgId)>)>,
    heap: BinaryHeap<Reverse<(Instant, TimerEvent)>>,
}

impl Timers {
    /// A deadline `after` from `now` for message `mid`; returns its instant.
    pub fn deadline(&mut self, now: Instant, after: Duration, mid: MsgId) -> Instant {
        let at = now + after;
        let lane = match self.lanes.iter_mut().position(|(d, _)| *d == after) {
            Some(i) => i,
            None => {
                self.lanes.push((after, VecDeque::new()));
                self.lanes.len() - 1
            }
        };
        if let Some((_, q)) = self.lanes.get_mut(lane) {
            q.push_back((at, mid));
        }
        at
    }

    pub fn schedule(&mut self, at: Instant, ev: TimerEvent) {
        self.heap.push(Reverse((at, ev)));
    }

    /// When the earliest entry is due.
    pub fn next_due(&self) -> Option<Instant> {
        let lanes = self
            .lanes
            .iter()
            .filter_map(|(_, q)| q.front().map(|&(at, _)| at));
        let heap = self.heap.peek().map(|Reverse((at, _))| *at);
        lanes.chain(heap).min()
    }

    /// The next entry due at `now` or earlier, if any (earliest lane or heap
    /// entry first).
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerEvent> {
        let mut best: Option<(Instant, Option<usize>)> = None;
        for (i, (_, q)) in self.lanes.iter().enumerate() {
            if let Some(&(at, _)) = q.front() {
                if at <= now && best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, Some(i)));
                }
            }
        }
        if let Some(Reverse((at, _))) = self.heap.peek() {
            if *at <= now && best.is_none_or(|(b, _)| *at < b) {
                best = Some((*at, None));
            }
        }
        match best? {
            (_, Some(i)) => {
                let (at, mid) = self.lanes.get_mut(i)?.1.pop_front()?;
                Some(TimerEvent::Deadline(mid, at))
            }
            (_, None) => self.heap.pop().map(|Reverse((_, ev))| ev),
        }
    }

    /// Lanes whose timeout no pool uses any more and that emptied are
    /// dropped, so a long run of reloads does not pile them up.
    pub fn prune(&mut self) {
        self.lanes.retain(|(_, q)| !q.is_empty());
    }

    /// Entries waiting (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.lanes.iter().map(|(_, q)| q.len()).sum::<usize>() + self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::id::Arena;
    use crate::msg::Msg;

    #[test]
    fn lanes_and_heap_come_out_in_time_order() {
        let mut msgs: Arena<Msg> = Arena::new();
        let (a, b, c) = (
            msgs.insert(Msg::new()),
            msgs.insert(Msg::new()),
            msgs.insert(Msg::new()),
        );
        let t0 = Instant::now();
        let mut t = Timers::default();
        let at_a = t.deadline(t0, Duration::from_millis(30), a);
        let at_b = t.deadline(t0, Duration::from_millis(10), b);
        let at_c = t.deadline(t0 + Duration::from_millis(1), Duration::from_millis(30), c);
        let conn = ConnId::from_token(mio::Token(7));
        t.schedule(
            t0 + Duration::from_millis(20),
            TimerEvent::AcceptRetry(conn),
        );
        assert_eq!(t.next_due(), Some(at_b));
        assert_eq!(t.pop_due(t0), None, "nothing due yet");
        let late = t0 + Duration::from_secs(1);
        assert_eq!(t.pop_due(late), Some(TimerEvent::Deadline(b, at_b)));
        assert_eq!(t.pop_due(late), Some(TimerEvent::AcceptRetry(conn)));
        assert_eq!(t.pop_due(late), Some(TimerEvent::Deadline(a, at_a)));
        assert_eq!(t.pop_due(late), Some(TimerEvent::Deadline(c, at_c)));
        assert_eq!(t.pop_due(late), None);
        t.prune();
        assert!(t.is_empty());
    }
}
