//! The modula table (docs/compatibility.md §5.4): each live server, in sorted order, fills
//! `weight` consecutive slots; a hash picks slot `hash % slots`.

use super::ServerSpec;

/// Slots as `(0, server index)` rows, the shape the continuum also has.
pub(crate) fn build(servers: &[ServerSpec]) -> Vec<(u32, u32)> {
    let mut slots = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        if server.live {
            // Server counts come from a config file; they never approach 2^32.
            slots.extend(std::iter::repeat_n(
                (0, index as u32),
                server.weight as usize,
            ));
        }
    }
    slots
}

pub(crate) fn dispatch(slots: &[(u32, u32)], hash: u32) -> Option<usize> {
    if slots.is_empty() {
        return None;
    }
    slots
        .get(hash as usize % slots.len())
        .map(|&(_, owner)| owner as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_fill_consecutive_slots() {
        let names: [&[u8]; 5] = [b"n2", b"n3", b"node1", b"node5", b"node10"];
        let weights = [1, 2, 1, 1, 3];
        let servers: Vec<ServerSpec> = names
            .iter()
            .zip(weights)
            .map(|(&name, weight)| ServerSpec {
                name,
                weight,
                live: true,
            })
            .collect();
        let slots = build(&servers);
        let owners: Vec<u32> = slots.iter().map(|&(_, s)| s).collect();
        assert_eq!(owners, [0, 1, 1, 2, 3, 4, 4, 4]);
        assert_eq!(dispatch(&slots, 0), Some(0));
        assert_eq!(dispatch(&slots, 7), Some(4));
        assert_eq!(dispatch(&slots, 8), Some(0));
        assert_eq!(dispatch(&slots, u32::MAX), Some(4));
        assert_eq!(dispatch(&[], 3), None);
    }

    #[test]
    fn dead_servers_drop_their_slots() {
        let servers = [
            ServerSpec {
                name: b"a",
                weight: 2,
                live: true,
            },
            ServerSpec {
                name: b"b",
                weight: 2,
                live: false,
            },
            ServerSpec {
                name: b"c",
                weight: 1,
                live: true,
            },
        ];
        let owners: Vec<u32> = build(&servers).iter().map(|&(_, s)| s).collect();
        assert_eq!(owners, [0, 0, 2]);
    }
}
