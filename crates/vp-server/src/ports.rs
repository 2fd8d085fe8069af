//! Free loopback ports for servers that another process starts and must name a port for in advance: the child
//! processes vpctl starts (`vpctl run`, `bench`, `overload` with port 0) and the servers the integration tests of
//! every crate spawn.
//!
//! A port found by binding port 0 lies in the kernel's ephemeral range, which is also where every outgoing
//! connection takes its local port; between closing the probe socket and the child's own bind, any client on the
//! machine (the aggregator's probes, a test's HTTP clients) may take it, and the child fails with "address already
//! in use". So ports are drawn at random from below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`),
//! where the kernel never hands out ports by itself, and kept only if a bind to them succeeds now.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// Ports this process handed out already: never handed out twice (the children may not have bound them yet).
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Lowest port drawn (below it lie the well-known and common registered services).
const FLOOR: u16 = 10_000;
/// Draws before giving up.
const TRIES: usize = 200;

/// The range to draw from, given the kernel's ephemeral range `(low, high)`: `[FLOOR, low)`, or above `high` when
/// the ephemeral range starts too low to leave room below it; `None` when neither side has 1,000 ports.
pub fn draw_range(ephemeral: (u16, u16)) -> Option<(u16, u16)> {
    let (low, high) = ephemeral;
    if low > FLOOR && low - FLOOR >= 1_000 {
        Some((FLOOR, low - 1))
    } else if high < u16::MAX && u16::MAX - high >= 1_000 {
        Some((high + 1, u16::MAX))
    } else {
        None
    }
}

/// Parses `/proc/sys/net/ipv4/ip_local_port_range` ("32768\t60999").
pub fn parse_ephemeral(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(low)), Some(Ok(high)), None) if low <= high => Some((low, high)),
        _ => None,
    }
}

fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| parse_ephemeral(&t))
        .unwrap_or((32_768, 60_999)) // Linux's default
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS's randomness per instance: enough to spread draws, no extra crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// A loopback port that is free now, outside the ephemeral range (see the module doc) and not handed out before
/// by this process; falls back to the kernel's choice (port 0) only when the ephemeral range leaves no room.
pub fn free_port() -> std::io::Result<u16> {
    if let Some((lo, hi)) = draw_range(ephemeral_range()) {
        let span = u64::from(hi - lo) + 1;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        let given = given.get_or_insert_with(HashSet::new);
        for _ in 0..TRIES {
            let port = lo + u16::try_from(random_u64() % span).unwrap_or(0);
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot find a free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_drawn_below_the_ephemeral_range_or_above_it() {
        assert_eq!(draw_range((32_768, 60_999)), Some((10_000, 32_767)));
        assert_eq!(draw_range((1_024, 60_999)), Some((61_000, 65_535)));
        assert_eq!(draw_range((10_500, 65_000)), None);
    }

    #[test]
    fn the_kernels_range_file_is_parsed_strictly() {
        assert_eq!(parse_ephemeral("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_ephemeral("40000 30000"), None);
        assert_eq!(parse_ephemeral("32768"), None);
        assert_eq!(parse_ephemeral("a b"), None);
        assert_eq!(parse_ephemeral("1 2 3"), None);
    }

    #[test]
    fn free_ports_are_bindable_distinct_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let port = free_port().expect("a free port");
            assert!(
                port < low || port > high || draw_range((low, high)).is_none(),
                "{port}"
            );
            assert!(seen.insert(port), "{port} handed out twice");
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }
}
