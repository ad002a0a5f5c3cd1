//! The memcached ASCII protocol (docs/compatibility.md §8): a request parser and a reply
//! parser. Both are pure and resumable, like the redis ones: fed a
//! connection's bytes piece by piece, they report absolute stream offsets
//! and copy no payload.

pub mod request;
pub mod response;
