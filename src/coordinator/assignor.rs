//! Server-side partition assignors of KIP-848 consumer groups (`group.consumer.assignors`):
//! `uniform` (the default) and `range`. Pure functions of the members' subscriptions, the
//! subscribed topics' partition counts and the previous target assignment.
//!
//! - `uniform`: balances the partition count across members (within one partition of each
//!   other when every member subscribes to the same topics), and is sticky: a partition stays
//!   with its previous target owner unless that owner no longer subscribes to its topic or has
//!   too many. Kafka's `UniformAssignor` has the same goals; its exact placement differs.
//! - `range`: per topic, the subscribed members in member-id order get contiguous ranges, the
//!   first `partitions % members` one partition more (Kafka's range assignor without its
//!   stickiness: a membership change can move more partitions than needed).
//!
//! Both are deterministic: the same inputs give the same target assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

/// Partitions per topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignors served, default first (Kafka's `group.consumer.assignors` default order).
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as an assignor sees it.
#[derive(Clone, Debug)]
pub struct AssignorMember<'a> {
    pub member_id: &'a str,
    /// Topic ids the member subscribes to (existing topics only).
    pub topics: BTreeSet<Uuid>,
}

/// Runs the assignor named `name` (one of [`ASSIGNORS`]; anything else runs `uniform`).
/// `topics` holds every subscribed topic's partition count; `previous` the previous target.
pub fn assign(
    name: &str,
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    match name {
        "range" => range(members, topics),
        _ => uniform(members, topics, previous),
    }
}

fn range(
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for (&topic, &partitions) in topics {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.member_id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let n = subscribers.len() as i32;
        let (base, extra) = (partitions / n, partitions % n);
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let count = base + i32::from((i as i32) < extra);
            if count > 0 {
                let set = out
                    .get_mut(*member)
                    .expect("subscriber is a member")
                    .entry(topic)
                    .or_default();
                set.extend(next..next + count);
            }
            next += count;
        }
        assert_eq!(next, partitions);
    }
    out
}

// Long: one algorithm (keep previous owners, fill, balance) over index vectors that its three
// steps share; split, each step would take five of them.
fn uniform(
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.member_id).collect();
    ids.sort_unstable();
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let subscriptions: Vec<&BTreeSet<Uuid>> = ids
        .iter()
        .map(|id| {
            &members
                .iter()
                .find(|m| m.member_id == *id)
                .expect("member")
                .topics
        })
        .collect();
    // Every partition of a topic someone subscribes to, in (topic, partition) order.
    let partitions: Vec<(Uuid, i32)> = topics
        .iter()
        .filter(|(t, _)| subscriptions.iter().any(|s| s.contains(t)))
        .flat_map(|(&t, &n)| (0..n.max(0)).map(move |p| (t, p)))
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; partitions.len()];
    let mut counts = vec![0usize; ids.len()];
    // Stickiness: keep the previous owner where it still fits.
    for (i, (t, p)) in partitions.iter().enumerate() {
        for (member, assignment) in previous {
            let Some(&m) = index.get(member.as_str()) else {
                continue;
            };
            if subscriptions[m].contains(t) && assignment.get(t).is_some_and(|s| s.contains(p)) {
                owner[i] = Some(m);
                counts[m] += 1;
                break;
            }
        }
    }
    let least_loaded = |counts: &[usize], topic: &Uuid| -> Option<usize> {
        (0..counts.len())
            .filter(|&m| subscriptions[m].contains(topic))
            .min_by_key(|&m| (counts[m], m))
    };
    for (i, (t, _)) in partitions.iter().enumerate() {
        if owner[i].is_none() {
            if let Some(m) = least_loaded(&counts, t) {
                owner[i] = Some(m);
                counts[m] += 1;
            }
        }
    }
    // Balance: move a partition from a member that has two more than the least loaded member
    // that could take it. Each move lowers the sum of squared counts, so this ends.
    loop {
        let mut moved = false;
        for (i, (t, _)) in partitions.iter().enumerate() {
            let Some(from) = owner[i] else { continue };
            let Some(to) = least_loaded(&counts, t) else {
                continue;
            };
            if counts[from] > counts[to] + 1 {
                owner[i] = Some(to);
                counts[from] -= 1;
                counts[to] += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut out: BTreeMap<String, Assignment> = ids
        .iter()
        .map(|id| (id.to_string(), Assignment::new()))
        .collect();
    for (i, (t, p)) in partitions.iter().enumerate() {
        if let Some(m) = owner[i] {
            out.get_mut(ids[m])
                .expect("member")
                .entry(*t)
                .or_default()
                .insert(*p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn members<'a>(ids: &[&'a str], topics: &[Uuid]) -> Vec<AssignorMember<'a>> {
        ids.iter()
            .map(|id| AssignorMember {
                member_id: id,
                topics: topics.iter().copied().collect(),
            })
            .collect()
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    /// Every partition is assigned exactly once.
    fn check_complete(out: &BTreeMap<String, Assignment>, topics: &BTreeMap<Uuid, i32>) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t} {p} assigned twice");
                }
            }
        }
        let total: i32 = topics.values().sum();
        assert_eq!(seen.len(), total as usize);
    }

    #[test]
    fn uniform_balances_and_is_sticky() {
        let topics: BTreeMap<Uuid, i32> = [(topic(1), 6), (topic(2), 3)].into();
        let ts = [topic(1), topic(2)];
        let two = assign(
            "uniform",
            &members(&["a", "b"], &ts),
            &topics,
            &BTreeMap::new(),
        );
        check_complete(&two, &topics);
        assert!(count(&two["a"]).abs_diff(count(&two["b"])) <= 1);
        // A third member takes partitions only from the others; nothing moves between a and b.
        let three = assign("uniform", &members(&["a", "b", "c"], &ts), &topics, &two);
        check_complete(&three, &topics);
        for m in ["a", "b", "c"] {
            assert_eq!(count(&three[m]), 3, "{m}");
        }
        for m in ["a", "b"] {
            for (t, ps) in &three[m] {
                assert!(
                    ps.is_subset(&two[m][t]),
                    "{m} gained a partition of another member"
                );
            }
        }
        // b leaves: its partitions go to a and c, which keep theirs.
        let back = assign("uniform", &members(&["a", "c"], &ts), &topics, &three);
        check_complete(&back, &topics);
        for m in ["a", "c"] {
            for (t, ps) in &three[m] {
                assert!(ps.is_subset(&back[m][t]));
            }
        }
    }

    #[test]
    fn uniform_respects_heterogeneous_subscriptions() {
        let topics: BTreeMap<Uuid, i32> = [(topic(1), 4), (topic(2), 2)].into();
        let ms = vec![
            AssignorMember {
                member_id: "a",
                topics: [topic(1)].into(),
            },
            AssignorMember {
                member_id: "b",
                topics: [topic(1), topic(2)].into(),
            },
        ];
        let out = assign("uniform", &ms, &topics, &BTreeMap::new());
        check_complete(&out, &topics);
        assert!(!out["a"].contains_key(&topic(2)));
        assert_eq!(count(&out["a"]), 3);
        assert_eq!(count(&out["b"]), 3);
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let topics: BTreeMap<Uuid, i32> = [(topic(1), 5), (topic(2), 2)].into();
        let out = assign(
            "range",
            &members(&["b", "a"], &[topic(1), topic(2)]),
            &topics,
            &BTreeMap::new(),
        );
        check_complete(&out, &topics);
        assert_eq!(out["a"][&topic(1)], [0, 1, 2].into());
        assert_eq!(out["b"][&topic(1)], [3, 4].into());
        assert_eq!(out["a"][&topic(2)], [0].into());
        assert_eq!(out["b"][&topic(2)], [1].into());
    }

    #[test]
    fn no_members_or_topics() {
        let topics: BTreeMap<Uuid, i32> = [(topic(1), 3)].into();
        assert!(assign("uniform", &[], &topics, &BTreeMap::new()).is_empty());
        let out = assign("uniform", &members(&["a"], &[]), &topics, &BTreeMap::new());
        assert!(out["a"].is_empty());
    }
}
