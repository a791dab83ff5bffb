//! The replica with the smallest share of busy slots; ties go to more free
//! slots, then to the lowest worker id.

use super::{Candidate, RoutingPolicy};
use crate::context::RequestContext;

#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLoaded;

impl RoutingPolicy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn rank<'a>(
        &self,
        _ctx: &RequestContext,
        mut candidates: Vec<Candidate<'a>>,
    ) -> Vec<Candidate<'a>> {
        sort_by_load(&mut candidates);
        candidates
    }

    fn best<'a>(
        &self,
        _ctx: &RequestContext,
        candidates: Vec<Candidate<'a>>,
    ) -> Option<Candidate<'a>> {
        least_loaded_free(candidates)
    }
}

/// Least loaded first; ties go to more free slots, then the lowest id (a
/// total order: worker ids are unique).
fn by_load(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.load_cmp(b)
        .then(b.free.cmp(&a.free))
        .then_with(|| a.worker.cmp(b.worker))
}

pub(super) fn sort_by_load(candidates: &mut [Candidate]) {
    candidates.sort_by(by_load);
}

/// The first of [`sort_by_load`]'s order that has a free slot, in one pass.
pub(super) fn least_loaded_free(candidates: Vec<Candidate<'_>>) -> Option<Candidate<'_>> {
    candidates
        .into_iter()
        .filter(|c| c.free > 0)
        .min_by(by_load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::testing::{candidate, context, order};

    #[test]
    fn the_least_loaded_share_first() {
        let ranked = LeastLoaded.rank(
            &context(None),
            vec![
                candidate("a", 4, 3),
                candidate("b", 8, 4),
                candidate("c", 2, 0),
                candidate("d", 4, 2),
            ],
        );
        assert_eq!(order(&ranked), ["c", "b", "d", "a"]);
    }
}
