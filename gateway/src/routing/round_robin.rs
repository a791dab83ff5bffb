//! Replicas in turn, whatever their load: the baseline the other policies
//! are measured against.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, RoutingPolicy};
use crate::context::RequestContext;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoutingPolicy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn rank<'a>(
        &self,
        _ctx: &RequestContext,
        mut candidates: Vec<Candidate<'a>>,
    ) -> Vec<Candidate<'a>> {
        if candidates.is_empty() {
            return candidates;
        }
        candidates.sort_by(|a, b| a.worker.cmp(b.worker));
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        candidates.rotate_left(turn);
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::testing::{candidate, context, order};

    #[test]
    fn each_replica_in_turn() {
        let policy = RoundRobin::default();
        let all = || vec![candidate("b", 4, 0), candidate("a", 4, 4)];
        let firsts: Vec<String> = (0..4)
            .map(|_| order(&policy.rank(&context(None), all()))[0].to_owned())
            .collect();
        assert_eq!(firsts, ["a", "b", "a", "b"]);
    }
}
