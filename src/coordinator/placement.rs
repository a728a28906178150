//! Where new partitions go: replica lists over the live brokers, balanced and rack-aware.
//!
//! [`place`] is pure: given the usable (registered, unfenced) brokers with their racks, how
//! many partitions, the replication factor and a start offset, it returns one replica list
//! per partition; the first replica is the partition's leader. It follows the spirit of
//! Kafka's replica placers (`StripedReplicaPlacer` in KRaft, the older rack-aware
//! `AdminUtils.assignReplicasToBrokers`), but deterministically, so that a test can state
//! the layout it expects:
//!
//! - The brokers are put in a rack-alternating order: racks sorted by name (brokers without
//!   a rack form one rack of their own), brokers sorted by id within a rack, then the first
//!   broker of each rack, the second of each rack, and so on. Without racks this is the
//!   brokers by id.
//! - Partition `i`'s leader is the broker at position `(start + i) mod n` of that order:
//!   leaders go round robin, so within one call every broker leads the same number of
//!   partitions, give or take one. The caller passes a start that moves on from topic to
//!   topic (the metadata passes the cluster's partition count), so successive small topics
//!   do not all begin on the same broker.
//! - Followers: the other brokers in the order `first + 1 + (shift + j) mod (n - 1)`, with a
//!   shift that grows by one every `n` partitions (Kafka's `nextReplicaShift`), so that the
//!   same sets of brokers are not chosen again and again. A follower is taken first from a
//!   rack the partition does not use yet (as long as there is one), then from any broker:
//!   every partition spans `min(rf, racks)` racks.
//!
//! Errors are Kafka's `InvalidReplicationFactorException` messages, in Kafka's order: a
//! factor below one, no usable broker, more replicas than brokers. What it does not do (yet):
//! place followers on fenced brokers (Kafka does when it must; here the caller gives only
//! unfenced brokers), or weigh the partitions that already exist on each broker.

use std::collections::BTreeMap;

/// Why no placement exists: Kafka's `InvalidReplicationFactorException` message (the caller
/// answers INVALID_REPLICATION_FACTOR with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError(pub String);

/// One replica list per partition (first replica = leader) for `partitions` partitions of
/// `replication_factor` replicas over `brokers` (`(node id, rack)`, distinct ids), starting
/// the leader round robin at `start`. Pure; see the module essay for the rule.
pub fn place(
    brokers: &[(i32, Option<&str>)],
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError(
            "Invalid replication factor 0: the replication factor must be positive.".into(),
        ));
    }
    if brokers.is_empty() {
        return Err(PlacementError("All brokers are currently fenced.".into()));
    }
    if replication_factor > brokers.len() {
        return Err(PlacementError(format!(
            "The target replication factor of {replication_factor} cannot be reached because \
             only {} broker(s) are registered.",
            brokers.len()
        )));
    }
    let order = rack_alternating(brokers);
    let n = order.len();
    let racks_total = {
        let mut racks: Vec<Option<&str>> = order.iter().map(|b| b.1).collect();
        racks.sort_unstable();
        racks.dedup();
        racks.len()
    };
    let mut out = Vec::with_capacity(partitions);
    for i in 0..partitions {
        let k = start.wrapping_add(i);
        let first = k % n;
        let shift = if n > 1 { (k / n) % (n - 1) } else { 0 };
        // The other brokers, each once, in the shifted order of the module essay.
        let followers = (0..n.saturating_sub(1)).map(|j| (first + 1 + (shift + j) % (n - 1)) % n);
        let mut chosen: Vec<usize> = Vec::with_capacity(replication_factor);
        chosen.push(first);
        let mut racks_used: Vec<Option<&str>> = vec![order[first].1];
        // First pass: new racks only, while some rack is unused.
        for index in followers.clone() {
            if chosen.len() == replication_factor || racks_used.len() == racks_total {
                break;
            }
            if !racks_used.contains(&order[index].1) {
                racks_used.push(order[index].1);
                chosen.push(index);
            }
        }
        // Second pass: any broker not chosen yet.
        for index in followers {
            if chosen.len() == replication_factor {
                break;
            }
            if !chosen.contains(&index) {
                chosen.push(index);
            }
        }
        assert_eq!(
            chosen.len(),
            replication_factor,
            "n >= rf brokers to choose from"
        );
        out.push(chosen.into_iter().map(|index| order[index].0).collect());
    }
    Ok(out)
}

/// The brokers in rack-alternating order (see the module essay). Panics on a node id given
/// twice (a caller's bug: it passes the registered brokers, keyed by id).
fn rack_alternating<'a>(brokers: &[(i32, Option<&'a str>)]) -> Vec<(i32, Option<&'a str>)> {
    let mut by_rack: BTreeMap<Option<&'a str>, Vec<i32>> = BTreeMap::new();
    for &(id, rack) in brokers {
        by_rack.entry(rack).or_default().push(id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(brokers.len());
    for depth in 0..deepest {
        for (rack, ids) in &by_rack {
            if let Some(&id) = ids.get(depth) {
                order.push((id, *rack));
            }
        }
    }
    let mut ids: Vec<i32> = order.iter().map(|b| b.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), brokers.len(), "broker ids must be distinct");
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn plain(ids: &[i32]) -> Vec<(i32, Option<&'static str>)> {
        ids.iter().map(|&id| (id, None)).collect()
    }

    fn leader_counts(placed: &[Vec<i32>]) -> BTreeMap<i32, usize> {
        let mut counts = BTreeMap::new();
        for replicas in placed {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        counts
    }

    /// Twelve partitions over three brokers: four leaders each, round robin from the start.
    #[test]
    fn twelve_partitions_spread_evenly_over_three_brokers() {
        let placed = place(&plain(&[0, 1, 2]), 12, 1, 0).unwrap();
        assert_eq!(placed.len(), 12);
        assert_eq!(placed[0], vec![0]);
        assert_eq!(placed[1], vec![1]);
        assert_eq!(placed[2], vec![2]);
        assert!(leader_counts(&placed).values().all(|&c| c == 4));
        let later = place(&plain(&[0, 1, 2]), 1, 1, 13).unwrap();
        assert_eq!(later, vec![vec![1]], "the start moves the first leader");
    }

    #[test]
    fn kafkas_refusals_in_kafkas_order() {
        let e = |r: Result<Vec<Vec<i32>>, PlacementError>| r.unwrap_err().0;
        assert_eq!(
            e(place(&plain(&[0]), 1, 0, 0)),
            "Invalid replication factor 0: the replication factor must be positive."
        );
        assert_eq!(e(place(&[], 1, 1, 0)), "All brokers are currently fenced.");
        assert_eq!(
            e(place(&plain(&[0, 1]), 1, 3, 0)),
            "The target replication factor of 3 cannot be reached because only 2 broker(s) \
             are registered."
        );
    }

    /// Racks a, a, b, b, c: replicas of three alternate racks; leaders alternate racks too.
    #[test]
    fn racks_alternate() {
        let brokers = [
            (0, Some("a")),
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("b")),
            (4, Some("c")),
        ];
        let rack_of: BTreeMap<i32, &str> =
            brokers.iter().map(|&(id, r)| (id, r.unwrap())).collect();
        let placed = place(&brokers, 10, 3, 0).unwrap();
        for replicas in &placed {
            let racks: BTreeSet<&str> = replicas.iter().map(|id| rack_of[id]).collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
        let leaders: Vec<&str> = placed.iter().take(3).map(|r| rack_of[&r[0]]).collect();
        assert_eq!(leaders, vec!["a", "b", "c"]);
    }

    #[test]
    fn one_broker_holds_everything() {
        assert_eq!(
            place(&plain(&[7]), 3, 1, 5).unwrap(),
            vec![vec![7], vec![7], vec![7]]
        );
    }

    fn brokers_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(i32, Option<u8>)>> {
        use proptest::prelude::*;
        proptest::collection::btree_map(0..50i32, proptest::option::of(0..4u8), 1..12)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Every partition gets rf distinct brokers of the input; leader counts differ by at
        /// most one; with racks every partition spans min(rf, racks) racks.
        #[test]
        fn placements_are_valid_balanced_and_rack_aware(
            brokers in brokers_strategy(),
            partitions in 0usize..60,
            rf_seed in 1usize..12,
            start in 0usize..1000,
        ) {
            let names = ["r0", "r1", "r2", "r3"];
            let input: Vec<(i32, Option<&str>)> = brokers
                .iter()
                .map(|&(id, r)| (id, r.map(|r| names[usize::from(r)])))
                .collect();
            let rf = 1 + (rf_seed - 1) % input.len();
            let placed = place(&input, partitions, rf, start).unwrap();
            proptest::prop_assert_eq!(placed.len(), partitions);
            let rack_of: BTreeMap<i32, Option<&str>> = input.iter().copied().collect();
            let racks_total = rack_of.values().collect::<BTreeSet<_>>().len();
            for replicas in &placed {
                proptest::prop_assert_eq!(replicas.len(), rf);
                let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
                proptest::prop_assert_eq!(distinct.len(), rf);
                proptest::prop_assert!(replicas.iter().all(|id| rack_of.contains_key(id)));
                let racks: BTreeSet<Option<&str>> = replicas.iter().map(|id| rack_of[id]).collect();
                proptest::prop_assert_eq!(racks.len(), rf.min(racks_total), "{:?}", replicas);
            }
            if partitions > 0 {
                let counts = leader_counts(&placed);
                let max = counts.values().max().copied().unwrap_or(0);
                // Brokers that lead nothing count as zero.
                let min = if counts.len() < input.len() { 0 } else { counts.values().min().copied().unwrap_or(0) };
                proptest::prop_assert!(max - min <= 1, "leaders {:?}", counts);
            }
        }
    }
}
