//! Typed, generation-checked ids and the arena that hands them out.
//!
//! Everything the engine links to by reference (pools, servers,
//! connections, messages) lives in an [`Arena`] and is named by an
//! [`Id<T>`]: a slot index plus the generation of the value that was put
//! there. A slot is reused once its value is removed, and the reuse bumps
//! the generation, so an id kept by a queue, a timer or a peer after its
//! value went away is detected (lookups answer `None`) instead of reaching
//! whatever moved into the slot. The type parameter keeps a server id from
//! being used where a pool id is meant.
//!
//! Connection ids double as mio tokens ([`Id::token`]): the generation
//! travels with the event, so a readiness event for a connection closed
//! earlier in the same batch never reaches its successor.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use slab::Slab;
use std::fmt;
use std::marker::PhantomData;

/// The id of a `T` in an [`Arena<T>`].
pub struct Id<T> {
    idx: u32,
    gen: u32,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    fn new(idx: u32, gen: u32) -> Id<T> {
        Id {
            idx,
            gen,
            _kind: PhantomData,
        }
    }

    /// The slot, for logs (C nutcracker logs connection numbers).
    pub fn index(self) -> usize {
        self.idx as usize
    }

    /// The mio token carrying this id (slot in the low half, generation in
    /// the high half); [`Id::from_token`] reverses it.
    pub fn token(self) -> mio::Token {
        mio::Token(((self.gen as usize) << 32) | self.idx as usize)
    }

    pub fn from_token(t: mio::Token) -> Id<T> {
        Id::new((t.0 & 0xFFFF_FFFF) as u32, (t.0 >> 32) as u32)
    }
}

// Written out: derives would demand `T: Clone` and friends.
impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Id<T> {}
impl<T> PartialEq for Id<T> {
    fn eq(&self, o: &Self) -> bool {
        self.idx == o.idx && self.gen == o.gen
    }
}
impl<T> Eq for Id<T> {}
impl<T> PartialOrd for Id<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Id<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.idx, self.gen).cmp(&(o.idx, o.gen))
    }
}
impl<T> std::hash::Hash for Id<T> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.idx.hash(h);
        self.gen.hash(h);
    }
}
impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.idx, self.gen)
    }
}
impl<T> fmt::Display for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.idx)
    }
}

/// A slab whose slots remember the generation of their last value. `K`
/// names the ids: it is `T` unless the values are stored boxed
/// (`Arena<Box<Msg>, Msg>`), where moving one in and out of a slot should
/// cost a pointer, not the whole value.
///
/// A live value carries its generation in its slot, so a lookup is one
/// slab access; `gens` outlives the values (a vacant slot keeps the count
/// its next value continues from).
#[derive(Debug)]
pub struct Arena<T, K = T> {
    slab: Slab<(u32, T)>,
    gens: Vec<u32>,
    _kind: PhantomData<fn() -> K>,
}

impl<T, K> Default for Arena<T, K> {
    fn default() -> Self {
        Arena {
            slab: Slab::new(),
            gens: Vec::new(),
            _kind: PhantomData,
        }
    }
}

impl<T, K> Arena<T, K> {
    pub fn new() -> Arena<T, K> {
        Arena::default()
    }

    pub fn insert(&mut self, value: T) -> Id<K> {
        let idx = self.slab.vacant_key();
        if self.gens.len() <= idx {
            self.gens.resize(idx + 1, 0);
        }
        let gen = match self.gens.get_mut(idx) {
            Some(g) => {
                *g = g.wrapping_add(1);
                *g
            }
            None => 0,
        };
        self.slab.insert((gen, value));
        Id::new(idx as u32, gen)
    }

    pub fn contains(&self, id: Id<K>) -> bool {
        self.get(id).is_some()
    }

    pub fn get(&self, id: Id<K>) -> Option<&T> {
        match self.slab.get(id.idx as usize) {
            Some((gen, v)) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: Id<K>) -> Option<&mut T> {
        match self.slab.get_mut(id.idx as usize) {
            Some((gen, v)) if *gen == id.gen => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, id: Id<K>) -> Option<T> {
        if self.contains(id) {
            self.slab.try_remove(id.idx as usize).map(|(_, v)| v)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The live ids, in slot order.
    pub fn ids(&self) -> Vec<Id<K>> {
        self.iter().map(|(id, _)| id).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id<K>, &T)> + '_ {
        self.slab
            .iter()
            .map(|(idx, (gen, v))| (Id::new(idx as u32, *gen), v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_are_detected_after_reuse() {
        let mut a: Arena<&str> = Arena::new();
        let x = a.insert("x");
        assert_eq!(a.get(x), Some(&"x"));
        assert_eq!(a.remove(x), Some("x"));
        assert_eq!(a.get(x), None);
        let y = a.insert("y");
        assert_eq!(x.index(), y.index(), "the slot is reused");
        assert_ne!(x, y);
        assert_eq!(a.get(x), None, "the old id does not reach the new value");
        assert_eq!(a.remove(x), None);
        assert_eq!(a.get(y), Some(&"y"));
    }

    #[test]
    fn tokens_round_trip_with_their_generation() {
        let mut a: Arena<u8> = Arena::new();
        let first = a.insert(1);
        a.remove(first);
        let second = a.insert(2);
        let back: Id<u8> = Id::from_token(second.token());
        assert_eq!(back, second);
        assert_eq!(a.get(Id::from_token(first.token())), None);
        assert_eq!(a.ids(), vec![second]);
    }
}
