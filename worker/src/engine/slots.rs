//! Slot accounting shared by the engines: a model never runs more
//! generations than it has slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A claim on one of a model's slots; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotPermit {
    busy: Arc<AtomicU32>,
}

impl SlotPermit {
    /// Claims a slot if fewer than `slots` are busy.
    pub fn try_claim(busy: &Arc<AtomicU32>, slots: u32) -> Option<Self> {
        busy.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < slots).then_some(n + 1)
        })
        .ok()
        .map(|_| Self { busy: busy.clone() })
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_slot_count_and_drops_free_them() {
        let busy = Arc::new(AtomicU32::new(0));
        let a = SlotPermit::try_claim(&busy, 2).unwrap();
        let _b = SlotPermit::try_claim(&busy, 2).unwrap();
        assert!(SlotPermit::try_claim(&busy, 2).is_none());
        drop(a);
        assert!(SlotPermit::try_claim(&busy, 2).is_some());
    }
}
