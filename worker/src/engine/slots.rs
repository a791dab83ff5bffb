//! Slot accounting shared by the engines: a model never runs more
//! generations than it has slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::changes::Changes;

/// A claim on one of a model's slots; dropping it frees the slot. Both are
/// status changes that `WatchStatus` pushes.
#[derive(Debug)]
pub struct SlotPermit {
    busy: Arc<AtomicU32>,
    changes: Changes,
}

impl SlotPermit {
    /// Claims a slot if fewer than `slots` are busy.
    pub fn try_claim(busy: &Arc<AtomicU32>, slots: u32, changes: &Changes) -> Option<Self> {
        busy.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < slots).then_some(n + 1)
        })
        .ok()
        .map(|_| {
            changes.bump();
            Self {
                busy: busy.clone(),
                changes: changes.clone(),
            }
        })
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.changes.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_slot_count_and_drops_free_them() {
        let busy = Arc::new(AtomicU32::new(0));
        let changes = Changes::default();
        let a = SlotPermit::try_claim(&busy, 2, &changes).unwrap();
        let _b = SlotPermit::try_claim(&busy, 2, &changes).unwrap();
        assert!(SlotPermit::try_claim(&busy, 2, &changes).is_none());
        assert_eq!(changes.revision(), 2, "a refused claim changes nothing");
        drop(a);
        assert_eq!(changes.revision(), 3);
        assert!(SlotPermit::try_claim(&busy, 2, &changes).is_some());
    }
}
