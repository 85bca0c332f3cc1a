//! Placement: which node hosts a new call. The caller's node does, unless it hosts
//! `threshold` calls or more; then the least-loaded live node does, if it is less loaded.
//!
//! ```
//! use sfu::signaling::relay::Placement;
//! let mut p = Placement::new(Some(100));
//! p.loads([("b".to_string(), 10), ("c".to_string(), 3)]);
//! assert_eq!(p.choose(50), None); // below the threshold: here
//! assert_eq!(p.choose(100).as_deref(), Some("c"));
//! ```
//!
//! Loads come from the node registry every heartbeat (2 s), so between two heartbeats each
//! choice counts one more call on the chosen node: a burst of calls spreads instead of all
//! landing on the node that was least loaded at the last heartbeat.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Placement {
    threshold: Option<u64>,
    /// Other live nodes and the calls each hosts (as last heard, plus what we sent since).
    others: HashMap<String, u64>,
}

impl Placement {
    /// `threshold`: calls hosted here from which new calls go elsewhere; `None`: always here.
    pub fn new(threshold: Option<u64>) -> Self {
        Self {
            threshold,
            others: HashMap::new(),
        }
    }

    /// The registry's view of the other live nodes (replaces the previous one).
    pub fn loads(&mut self, nodes: impl IntoIterator<Item = (String, u64)>) {
        self.others = nodes.into_iter().collect();
    }

    /// A node is gone: never place a call there.
    pub fn forget(&mut self, node: &str) {
        self.others.remove(node);
    }

    /// Where a new call goes when this node hosts `here` calls: `None` for here.
    pub fn choose(&mut self, here: u64) -> Option<String> {
        if self.threshold.is_none_or(|t| here < t) {
            return None;
        }
        // Least loaded; ties go to the smallest id, so every node picks alike.
        let (node, load) = self
            .others
            .iter_mut()
            .filter(|(_, load)| **load < here)
            .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)))?;
        *load += 1;
        Some(node.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(threshold: Option<u64>, others: &[(&str, u64)], here: u64) -> Option<String> {
        let mut p = Placement::new(threshold);
        p.loads(others.iter().map(|(n, l)| (n.to_string(), *l)));
        p.choose(here)
    }

    #[test]
    fn below_the_threshold_or_without_one_calls_stay_here() {
        assert_eq!(placed(Some(10), &[("b", 0)], 9), None);
        assert_eq!(placed(None, &[("b", 0)], 1_000_000), None);
        assert_eq!(placed(Some(0), &[], 5), None, "alone: here");
    }

    #[test]
    fn at_the_threshold_the_least_loaded_node_takes_the_call() {
        assert_eq!(
            placed(Some(10), &[("b", 7), ("c", 2), ("d", 9)], 10).as_deref(),
            Some("c")
        );
        assert_eq!(
            placed(Some(10), &[("c", 2), ("b", 2)], 10).as_deref(),
            Some("b"),
            "ties: smallest id"
        );
    }

    #[test]
    fn a_node_as_loaded_as_this_one_is_no_better() {
        assert_eq!(placed(Some(10), &[("b", 12), ("c", 12)], 12), None);
        assert_eq!(placed(Some(10), &[("b", 11)], 12).as_deref(), Some("b"));
    }

    #[test]
    fn a_burst_spreads_over_the_nodes_between_heartbeats() {
        let mut p = Placement::new(Some(1));
        p.loads([("b".to_string(), 0), ("c".to_string(), 0)]);
        let mut to = HashMap::new();
        for _ in 0..100 {
            if let Some(n) = p.choose(60) {
                *to.entry(n).or_insert(0) += 1;
            }
        }
        assert_eq!(to.get("b"), Some(&50));
        assert_eq!(to.get("c"), Some(&50));
        // Past this node's own load, the rest stay here.
        let mut p = Placement::new(Some(1));
        p.loads([("b".to_string(), 0)]);
        let away = (0..10).filter(|_| p.choose(5).is_some()).count();
        assert_eq!(away, 5);
    }

    #[test]
    fn a_lost_node_is_never_chosen() {
        let mut p = Placement::new(Some(1));
        p.loads([("b".to_string(), 0), ("c".to_string(), 5)]);
        p.forget("b");
        assert_eq!(p.choose(10).as_deref(), Some("c"));
        p.loads([]);
        assert_eq!(p.choose(10), None);
    }
}
