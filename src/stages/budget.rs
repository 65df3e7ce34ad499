//! The memory budget for part buffers (`[pipeline] memory_budget`): all uploads together hold at most
//! this many bytes in parts being filled or in flight, whatever their number and size. Without it each
//! upload adds `(part_concurrency + 1) × part_size`, so eight large files at once held eight times that.
//!
//! A part is reserved whole before its first byte is buffered and released when its upload ends, so an
//! upload waiting for room holds none: no two uploads can each hold half of what the other needs.

use crate::internal_events::InternalEvent;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by every uploader worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// Room for one part; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: MemoryBudget,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.permit.take());
        crate::internal_events::PartMemoryHeld { bytes: self.budget.reserved_bytes() }.emit();
    }
}

impl MemoryBudget {
    /// A budget of `bytes` (counted in KiB, so one reservation may be up to 4 TiB).
    pub fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        MemoryBudget { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// A budget that never waits (unit tests and benches of one stage).
    pub fn unlimited() -> Self {
        Self::new(u64::from(u32::MAX) * 1024)
    }

    /// Waits until `bytes` fit, then holds them. A part larger than the whole budget (a huge file's
    /// enlarged part size) takes the whole budget rather than waiting forever.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let kib = u32::try_from((bytes as u64).div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total_kib);
        let permit = self.kib.clone().acquire_many_owned(kib).await.ok();
        crate::internal_events::PartMemoryHeld { bytes: self.reserved_bytes() }.emit();
        Reservation { permit, budget: self.clone() }
    }

    /// Bytes reserved now.
    pub fn reserved_bytes(&self) -> u64 {
        u64::from(self.total_kib - self.kib.available_permits() as u32) * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_reservation_waits_for_room_and_dropping_one_makes_it() {
        let budget = MemoryBudget::new(10 << 20);
        let a = budget.reserve(6 << 20).await;
        let _b = budget.reserve(4 << 20).await;
        assert_eq!(budget.reserved_bytes(), 10 << 20);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a part was buffered beyond the budget");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(budget.reserved_bytes(), 5 << 20);
    }

    #[tokio::test]
    async fn a_part_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let budget = MemoryBudget::new(8 << 20);
        let whole = tokio::time::timeout(Duration::from_secs(5), budget.reserve(64 << 20)).await.unwrap();
        assert_eq!(budget.reserved_bytes(), 8 << 20);
        drop(whole);
        assert_eq!(budget.reserved_bytes(), 0);
    }
}
