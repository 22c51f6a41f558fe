//! RTP/RTCP port pairs from a configured range.
//!
//! RTP takes an even port and RTCP the next odd one (RFC 3550 §11). Allocation is
//! round-robin rather than lowest-free so a just-released port is not handed to the next
//! call while stray packets from the previous call may still be arriving.

use std::sync::Arc;

use parking_lot::Mutex;

struct AllocatorState {
    first_rtp_port: u16,
    in_use: Vec<bool>,
    next_index: usize,
}

/// Hands out [`PortLease`]s; cheap to clone and share between calls.
#[derive(Clone)]
pub struct PortAllocator {
    state: Arc<Mutex<AllocatorState>>,
}

impl std::fmt::Debug for PortAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("PortAllocator")
            .field("first_rtp_port", &state.first_rtp_port)
            .field("pairs", &state.in_use.len())
            .field("in_use", &state.in_use.iter().filter(|used| **used).count())
            .finish()
    }
}

impl PortAllocator {
    /// Uses every even port `p` with `low <= p` and `p + 1 <= high`. An empty or inverted
    /// range yields an allocator that never allocates.
    pub fn new(low: u16, high: u16) -> Self {
        let first = low.saturating_add(low % 2);
        let pairs = if high > first {
            ((high - first) as usize).div_ceil(2)
        } else {
            0
        };
        PortAllocator {
            state: Arc::new(Mutex::new(AllocatorState {
                first_rtp_port: first,
                in_use: vec![false; pairs],
                next_index: 0,
            })),
        }
    }

    /// Reserves the next free pair, or `None` when the range is exhausted. Binding can still
    /// fail if another process holds the port; drop that lease and allocate again.
    pub fn allocate(&self) -> Option<PortLease> {
        let mut state = self.state.lock();
        let pairs = state.in_use.len();
        for step in 0..pairs {
            let index = (state.next_index + step) % pairs;
            if !state.in_use[index] {
                state.in_use[index] = true;
                state.next_index = (index + 1) % pairs;
                let rtp_port = state.first_rtp_port + (index as u16) * 2;
                return Some(PortLease {
                    rtp_port,
                    state: Arc::clone(&self.state),
                });
            }
        }
        None
    }

    /// Pairs currently leased.
    pub fn in_use(&self) -> usize {
        self.state
            .lock()
            .in_use
            .iter()
            .filter(|used| **used)
            .count()
    }

    /// Total pairs in the range.
    pub fn capacity(&self) -> usize {
        self.state.lock().in_use.len()
    }
}

/// An RTP port and the RTCP port after it, returned to the allocator on drop.
pub struct PortLease {
    rtp_port: u16,
    state: Arc<Mutex<AllocatorState>>,
}

impl std::fmt::Debug for PortLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortLease")
            .field("rtp_port", &self.rtp_port)
            .finish()
    }
}

impl PortLease {
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }

    pub fn rtcp_port(&self) -> u16 {
        self.rtp_port + 1
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        let index = ((self.rtp_port - state.first_rtp_port) / 2) as usize;
        if let Some(slot) = state.in_use.get_mut(index) {
            *slot = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_even_ports_with_rtcp_next() {
        let allocator = PortAllocator::new(10001, 10008);
        let leases: Vec<PortLease> = std::iter::from_fn(|| allocator.allocate()).collect();
        let ports: Vec<u16> = leases.iter().map(PortLease::rtp_port).collect();
        assert_eq!(ports, vec![10002, 10004, 10006]);
        assert!(
            leases
                .iter()
                .all(|lease| lease.rtcp_port() == lease.rtp_port() + 1)
        );
        assert_eq!(allocator.in_use(), 3);
    }

    #[test]
    fn released_on_drop_and_reused_round_robin() {
        let allocator = PortAllocator::new(20000, 20005);
        let first = allocator.allocate().expect("free");
        let second = allocator.allocate().expect("free");
        assert_eq!((first.rtp_port(), second.rtp_port()), (20000, 20002));
        drop(first);
        assert_eq!(allocator.in_use(), 1);
        // Round robin: 20004 before re-using 20000.
        let fourth = allocator.allocate().expect("free");
        assert_eq!(fourth.rtp_port(), 20004);
        let third = allocator.allocate().expect("20000 free again");
        assert_eq!(third.rtp_port(), 20000);
        assert!(allocator.allocate().is_none());
        drop(second);
        assert_eq!(allocator.allocate().map(|l| l.rtp_port()), Some(20002));
    }

    #[test]
    fn empty_and_inverted_ranges_never_allocate() {
        assert!(PortAllocator::new(5000, 5000).allocate().is_none());
        assert!(PortAllocator::new(6000, 5000).allocate().is_none());
        assert!(PortAllocator::new(65535, 65535).allocate().is_none());
        assert_eq!(PortAllocator::new(65534, 65535).capacity(), 1);
    }
}
