//! The metadata quorum's node driver ([`QuorumNode`], `cluster/node.rs`): three nodes under
//! `rt::sim` (virtual clock, seeded order) on a simulated disk, joined by a tiny in-test
//! network that delivers every message at once unless a node is cut off. Checks election,
//! the bootstrap of a new cluster's metadata, proposals on the leader and on a follower, a new
//! election after the leader is cut off, and the applied metadata rebuilt from the journals.

use freshet::cluster::node::{NodeSettings, ProposeError, QuorumNode};
use freshet::cluster::node_id_of;
use freshet::cluster::raft_log::{self, RaftLog};
use freshet::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use freshet::rt;
use freshet::storage::io::sim::{self, SimDisk};
use freshet::storage::TailCache;
use raft::prelude::Message;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const VOTERS: [i32; 3] = [0, 1, 2];
const CACHE_BYTES: usize = 64 << 10;

/// The three nodes, what each applied, and who is cut off.
#[derive(Default)]
struct Net {
    nodes: RefCell<Vec<Option<Rc<QuorumNode>>>>,
    applied: RefCell<Vec<Vec<Arc<ClusterMetadata>>>>,
    /// A node whose messages (both ways) are dropped.
    cut: Cell<Option<i32>>,
    /// Messages lost, in parts per million (seeded).
    loss_ppm: Cell<u64>,
    /// Messages delayed up to this (seeded; reorders them); 0: delivered at once.
    delay_ms_max: Cell<u64>,
    /// The next this many snapshot messages are lost.
    snapshots_to_lose: Cell<u32>,
}

impl Net {
    fn new() -> Rc<Net> {
        let net = Net::default();
        *net.nodes.borrow_mut() = vec![None, None, None];
        *net.applied.borrow_mut() = vec![Vec::new(), Vec::new(), Vec::new()];
        Rc::new(net)
    }

    fn node(&self, id: i32) -> Rc<QuorumNode> {
        self.nodes.borrow()[id as usize]
            .clone()
            .expect("node running")
    }

    fn deliver(&self, from: i32, msg: Message) {
        let to = node_id_of(msg.to);
        if self.cut.get() == Some(from) || self.cut.get() == Some(to) {
            return;
        }
        if self.loss_ppm.get() > 0 && rt::sim::random_below(1_000_000) < self.loss_ppm.get() {
            return;
        }
        if msg.get_msg_type() == raft::prelude::MessageType::MsgSnapshot
            && self.snapshots_to_lose.get() > 0
        {
            self.snapshots_to_lose.set(self.snapshots_to_lose.get() - 1);
            return;
        }
        let node = self.nodes.borrow()[to as usize].clone();
        let Some(node) = node else { return };
        if self.delay_ms_max.get() == 0 {
            node.step(msg);
            return;
        }
        let delay = Duration::from_millis(rt::sim::random_below(self.delay_ms_max.get() + 1));
        rt::spawn_local(async move {
            rt::sleep(delay).await;
            node.step(msg);
        })
        .detach();
    }

    /// The node that is ready to take proposals, if exactly one is.
    fn leader(&self) -> Option<i32> {
        let ready: Vec<i32> = VOTERS
            .iter()
            .copied()
            .filter(|&id| {
                self.nodes.borrow()[id as usize]
                    .as_ref()
                    .is_some_and(|n| n.ready_to_propose())
            })
            .collect();
        (ready.len() == 1).then(|| ready[0])
    }
}

fn dir_of(id: i32) -> PathBuf {
    raft_log::raft_log_dir(&PathBuf::from(format!("/sim/node{id}")))
}

/// Opens node `id`'s journal and starts it on the network.
async fn start(net: &Rc<Net>, id: i32) {
    start_at(net, id, dir_of(id)).await
}

/// Starts node `id` with the journal in `dir`.
async fn start_at(net: &Rc<Net>, id: i32, dir: PathBuf) {
    let log = RaftLog::open(&dir, TailCache::new(CACHE_BYTES), &VOTERS, || {
        panic!("no single-node bootstrap in a 3-voter cluster")
    })
    .await
    .unwrap();
    let settings = NodeSettings {
        node_id: id,
        voters: VOTERS.to_vec(),
        election_timeout_ms: 1000,
        tick_ms: 100,
        cluster_id: "test-cluster".into(),
    };
    let out = net.clone();
    let outbox = Rc::new(move |msg: Message| out.deliver(id, msg));
    let seen = net.clone();
    let on_applied = Rc::new(move |m: Arc<ClusterMetadata>| {
        seen.applied.borrow_mut()[id as usize].push(m);
    });
    let node = QuorumNode::start(settings, log, outbox, on_applied)
        .await
        .unwrap();
    net.nodes.borrow_mut()[id as usize] = Some(node);
}

async fn stop(net: &Net, id: i32) {
    let node = net.nodes.borrow_mut()[id as usize].take();
    if let Some(node) = node {
        node.stop().await;
    }
}

/// Waits (virtual time) until `done()`, at most `timeout`; whether it became true.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = rt::now() + timeout;
    while !done() {
        if rt::now() >= deadline {
            return false;
        }
        rt::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn elect(net: &Rc<Net>) -> i32 {
    assert!(
        wait_until(Duration::from_secs(20), || net.leader().is_some()).await,
        "no leader within 20 s"
    );
    net.leader().unwrap()
}

fn block(next: i64) -> Vec<MetadataRecord> {
    vec![MetadataRecord::ProducerIdBlockAllocated { next }]
}

/// Three empty journals: one leader is elected, every node agrees on it, and the first leader
/// writes the cluster's first metadata (the configured cluster id), applied on all three.
#[test]
fn three_nodes_elect_one_leader_and_bootstrap_the_cluster() {
    rt::sim::run(11, async {
        let disk = SimDisk::new(11);
        let _installed = sim::install(&disk);
        let net = Net::new();
        for id in VOTERS {
            start(&net, id).await;
        }
        let leader = elect(&net).await;
        let agreed = wait_until(Duration::from_secs(5), || {
            VOTERS.iter().all(|&id| {
                let node = net.node(id);
                node.leader() == Some(leader) && node.applied().cluster_id == "test-cluster"
            })
        })
        .await;
        assert!(
            agreed,
            "every node knows the leader and applied the bootstrap"
        );
        let status = net.node(leader).status();
        assert_eq!(status.leader_id, Some(leader));
        assert_eq!(status.voters.len(), 3);
        assert!(status.commit_index >= 2, "{status:?}");
        for id in VOTERS {
            stop(&net, id).await;
        }
    });
}

/// Proposals on the leader resolve with the metadata after them, and every node applies the
/// same metadata in the same order; a proposal on a follower gets NotLeader naming the leader.
#[test]
fn a_proposal_on_the_leader_applies_on_all_three_in_order() {
    rt::sim::run(12, async {
        let disk = SimDisk::new(12);
        let _installed = sim::install(&disk);
        let net = Net::new();
        for id in VOTERS {
            start(&net, id).await;
        }
        let leader = elect(&net).await;
        for k in 1..=5i64 {
            let after = net.node(leader).propose(block(k * 1000)).await.unwrap();
            assert_eq!(after.producer_id_block_next, k * 1000);
        }
        let follower = (leader + 1) % 3;
        let refused = net.node(follower).propose(block(99_000)).await;
        assert_eq!(
            refused,
            Err(ProposeError::NotLeader {
                leader: Some(leader)
            })
        );
        let expected = net.node(leader).applied();
        let caught_up = wait_until(Duration::from_secs(5), || {
            VOTERS.iter().all(|&id| net.node(id).applied() == expected)
        })
        .await;
        assert!(caught_up, "every node applied the leader's metadata");
        let applied = net.applied.borrow().clone();
        let blocks = |id: usize| -> Vec<i64> {
            applied[id]
                .iter()
                .map(|m| m.producer_id_block_next)
                .collect()
        };
        assert_eq!(blocks(0), vec![0, 1000, 2000, 3000, 4000, 5000]);
        assert_eq!(applied[0], applied[1]);
        assert_eq!(applied[1], applied[2]);
        for id in VOTERS {
            stop(&net, id).await;
        }
    });
}

/// Cut the leader off: the other two elect a new leader, the old one steps down (check
/// quorum: no split brain) and answers a proposal NotLeader; once healed it follows the new
/// leader and applies what it missed.
#[test]
fn a_cut_off_leader_is_replaced_and_steps_down() {
    rt::sim::run(13, async {
        let disk = SimDisk::new(13);
        let _installed = sim::install(&disk);
        let net = Net::new();
        for id in VOTERS {
            start(&net, id).await;
        }
        let old = elect(&net).await;
        net.node(old).propose(block(1000)).await.unwrap();
        net.cut.set(Some(old));
        let stuck = net.node(old).propose(block(2000)).await;
        assert!(
            matches!(stuck, Err(ProposeError::NotLeader { .. })),
            "a cut-off leader cannot commit: {stuck:?}"
        );
        let new = wait_until(Duration::from_secs(20), || {
            net.leader().is_some_and(|l| l != old)
        })
        .await;
        assert!(new, "the two others elect a new leader");
        let new = net.leader().unwrap();
        assert!(
            !net.node(old).ready_to_propose(),
            "the old leader stepped down"
        );
        net.node(new).propose(block(3000)).await.unwrap();
        net.cut.set(None);
        let expected = net.node(new).applied();
        let healed = wait_until(Duration::from_secs(10), || {
            net.node(old).applied() == expected
        })
        .await;
        assert!(healed, "the old leader catches up once healed");
        assert_eq!(net.node(old).leader(), Some(new));
        for id in VOTERS {
            stop(&net, id).await;
        }
    });
}

/// A node's journal rebuilds the metadata it applied: after a stop, each reopened journal's
/// applied metadata is what that node had applied; restarted from them, the three elect a
/// leader again and go on from there.
#[test]
fn reopening_a_journal_restores_the_applied_metadata() {
    rt::sim::run(14, async {
        let disk = SimDisk::new(14);
        let _installed = sim::install(&disk);
        let net = Net::new();
        for id in VOTERS {
            start(&net, id).await;
        }
        let leader = elect(&net).await;
        for k in 1..=3i64 {
            net.node(leader).propose(block(k * 1000)).await.unwrap();
        }
        let expected = net.node(leader).applied();
        assert!(
            wait_until(Duration::from_secs(5), || {
                VOTERS.iter().all(|&id| net.node(id).applied() == expected)
            })
            .await
        );
        for id in VOTERS {
            let before = net.node(id).applied();
            stop(&net, id).await;
            let log = RaftLog::open(&dir_of(id), TailCache::new(CACHE_BYTES), &VOTERS, || {
                panic!("not empty")
            })
            .await
            .unwrap();
            assert_eq!(log.applied_at_open().1, *before, "node {id}");
            log.close().await.unwrap();
        }
        for id in VOTERS {
            start(&net, id).await;
        }
        let leader = elect(&net).await;
        let after = net.node(leader).propose(block(4000)).await.unwrap();
        assert_eq!(after.producer_id_block_next, 4000);
        assert_eq!(after.cluster_id, "test-cluster");
        for id in VOTERS {
            stop(&net, id).await;
        }
    });
}

/// A follower cut off while the leader's journal grows past its compaction limit catches up
/// from the leader's snapshot (its own journal then starts at a snapshot it received), and
/// applies the same metadata as the others.
#[test]
fn a_lagging_follower_catches_up_from_a_snapshot() {
    rt::sim::run(15, lagging_follower(0));
}

/// The same when the first snapshot sent is lost: the leader reports it failed after an
/// election timeout and sends another (raft-rs keeps a follower whose snapshot is unanswered
/// in its Snapshot state, replicating nothing to it, until told).
#[test]
fn a_lost_snapshot_is_sent_again() {
    rt::sim::run(15, lagging_follower(1));
}

async fn lagging_follower(snapshots_lost: u32) {
    let disk = SimDisk::new(15);
    let _installed = sim::install(&disk);
    let net = Net::new();
    for id in VOTERS {
        start(&net, id).await;
    }
    let leader = elect(&net).await;
    let lagging = (leader + 1) % 3;
    net.cut.set(Some(lagging));
    let mut k = 0i64;
    while net.node(leader).log().indexes().0 == 0 {
        k += 1;
        net.node(leader).propose(block(k * 1000)).await.unwrap();
        assert!(k < 2000, "the leader never compacted its journal");
    }
    assert!(net.node(leader).log().journal_records() < raft_log::COMPACT_RECORDS_MIN);
    assert_eq!(net.node(lagging).log().indexes().0, 0);
    net.snapshots_to_lose.set(snapshots_lost);
    net.cut.set(None);
    let expected = net.node(leader).applied();
    let caught_up = wait_until(Duration::from_secs(10), || {
        net.node(lagging).applied() == expected
    })
    .await;
    assert!(caught_up, "the lagging follower caught up");
    assert!(
        net.node(lagging).log().indexes().0 > 0,
        "it caught up from a snapshot"
    );
    // And it keeps following: one more change reaches it.
    net.node(leader)
        .propose(block((k + 1) * 1000))
        .await
        .unwrap();
    let expected = net.node(leader).applied();
    assert!(
        wait_until(Duration::from_secs(5), || net.node(lagging).applied()
            == expected)
        .await
    );
    for id in VOTERS {
        stop(&net, id).await;
    }
}

/// What one seeded run of election and proposals observed (leader, term, virtual time).
async fn observed_run() -> (i32, u64, Duration, Vec<i64>) {
    let disk = SimDisk::new(16);
    let _installed = sim::install(&disk);
    let net = Net::new();
    for id in VOTERS {
        start(&net, id).await;
    }
    let leader = elect(&net).await;
    for k in 1..=3i64 {
        net.node(leader).propose(block(k)).await.unwrap();
    }
    let term = net.node(leader).status().term;
    let elapsed = rt::sim::elapsed();
    let versions = VOTERS
        .iter()
        .map(|&id| net.node(id).applied().version as i64)
        .collect();
    for id in VOTERS {
        stop(&net, id).await;
    }
    (leader, term, elapsed, versions)
}

/// The same seed gives the same run: election timeouts come from the simulation's seed, not
/// from raft-rs's thread-local generator.
#[test]
fn same_seed_same_election() {
    let first = rt::sim::run(16, observed_run());
    let second = rt::sim::run(16, observed_run());
    assert_eq!(first, second);
}

async fn start_single(net: &Rc<Net>) {
    let dir = dir_of(0);
    let existing = ClusterMetadata {
        cluster_id: "single".into(),
        producer_id_block_next: 5000,
        ..ClusterMetadata::default()
    };
    let log = RaftLog::open(&dir, TailCache::new(CACHE_BYTES), &[0], move || existing)
        .await
        .unwrap();
    let settings = NodeSettings {
        node_id: 0,
        voters: vec![0],
        election_timeout_ms: 1000,
        tick_ms: 100,
        cluster_id: String::new(),
    };
    let node = QuorumNode::start(settings, log, Rc::new(|_| {}), Rc::new(|_| {}))
        .await
        .unwrap();
    net.nodes.borrow_mut()[0] = Some(node);
}

/// A single node is its own quorum: it leads at once, keeps the metadata it was bootstrapped
/// with, writes one journal append per change, and a journal write that fails stops it (the proposal gets a Storage error, later
/// ones too); after the crash every proposal that succeeded is in the reopened journal.
#[test]
fn a_single_node_leads_alone_and_stops_on_a_failed_write() {
    rt::sim::run(17, async {
        let disk = SimDisk::new(17);
        let _installed = sim::install(&disk);
        let net = Net::new();
        start_single(&net).await;
        let node = net.node(0);
        assert!(wait_until(Duration::from_millis(500), || node.ready_to_propose()).await);
        assert_eq!(node.leader(), Some(0));
        assert_eq!(node.applied().cluster_id, "single");
        assert_eq!(node.applied().producer_id_block_next, 5000);
        // One fsync'd journal append per change: a sole voter's durable entry is committed,
        // its commit index is not written apart.
        let records = node.log().journal_records();
        node.propose(block(5000)).await.unwrap();
        assert_eq!(node.log().journal_records(), records + 1);
        disk.power_off_after(40);
        let mut acknowledged = 5000;
        let failed = loop {
            let next = acknowledged + 1000;
            match node.propose(block(next)).await {
                Ok(after) => {
                    assert_eq!(after.producer_id_block_next, next);
                    acknowledged = next;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(failed, ProposeError::Storage(_)), "{failed:?}");
        assert!(node.failure().is_some());
        assert!(matches!(
            node.propose(block(1)).await,
            Err(ProposeError::Storage(_))
        ));
        stop(&net, 0).await;
        drop(node);
        for _ in 0..200 {
            sim::yield_once().await;
        }
        disk.crash();
        let log = RaftLog::open(&dir_of(0), TailCache::new(CACHE_BYTES), &[0], || {
            panic!("not empty")
        })
        .await
        .unwrap();
        let (_, applied) = log.applied_at_open();
        assert!(
            applied.producer_id_block_next >= acknowledged,
            "{} < {acknowledged}: an acknowledged change was lost",
            applied.producer_id_block_next
        );
        log.close().await.unwrap();
    });
}

/// The bounds: messages beyond the incoming queue are dropped and counted (and a proposal
/// from the network is dropped); proposals beyond the waiting limit are refused with
/// Overloaded, the others all applied.
#[test]
fn incoming_and_waiting_proposals_are_bounded() {
    use freshet::cluster::node::{INCOMING_MESSAGES_MAX, PROPOSALS_WAITING_MAX};
    rt::sim::run(18, async {
        let disk = SimDisk::new(18);
        let _installed = sim::install(&disk);
        let net = Net::new();
        start_single(&net).await;
        let node = net.node(0);
        assert!(wait_until(Duration::from_millis(500), || node.ready_to_propose()).await);
        // A proposal from the network is never taken: proposals enter through `propose`.
        node.step(Message {
            to: 1,
            from: 2,
            msg_type: raft::prelude::MessageType::MsgPropose,
            ..Message::default()
        });
        assert_eq!(node.incoming_dropped(), 1);
        let extra = 100;
        for _ in 0..INCOMING_MESSAGES_MAX + extra {
            let msg = Message {
                to: 1,
                from: 2,
                msg_type: raft::prelude::MessageType::MsgHeartbeatResponse,
                ..Message::default()
            };
            node.step(msg);
        }
        assert_eq!(node.incoming_dropped(), 1 + extra as u64);
        let proposals: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _>>>> = (0
            ..PROPOSALS_WAITING_MAX + extra)
            .map(|k| {
                let node = node.clone();
                Box::pin(async move { node.propose(block(k as i64)).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
            })
            .collect();
        let results = rt::join_all(proposals).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(ProposeError::Overloaded)))
            .count();
        assert_eq!(refused, extra);
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            PROPOSALS_WAITING_MAX
        );
        stop(&net, 0).await;
    });
}

/// Many seeds of a lossy, reordering network (10% loss, delays up to 30 ms): proposals retried
/// on NotLeader all get applied; every node applies the same metadata in the same order; no
/// term ever has two leaders (checked after every task poll).
#[test]
fn a_lossy_network_agrees_across_seeds() {
    for seed in 100..120u64 {
        rt::sim::run(seed, lossy_run(seed));
    }
}

async fn lossy_run(seed: u64) {
    let disk = SimDisk::new(seed);
    let _installed = sim::install(&disk);
    let net = Net::new();
    net.loss_ppm.set(100_000);
    net.delay_ms_max.set(30);
    let leaders: Rc<RefCell<std::collections::BTreeMap<u64, i32>>> = Rc::default();
    let (watched, seen) = (net.clone(), leaders.clone());
    rt::sim::on_step(move |_| {
        for node in watched.nodes.borrow().iter().flatten() {
            let status = node.status();
            if let Some(leader) = status.leader_id {
                let first = *seen.borrow_mut().entry(status.term).or_insert(leader);
                assert_eq!(
                    first, leader,
                    "seed {seed}: two leaders in term {}",
                    status.term
                );
            }
        }
    });
    for id in VOTERS {
        start(&net, id).await;
    }
    for k in 1..=10i64 {
        loop {
            let leader = elect(&net).await;
            match net.node(leader).propose(block(k * 1000)).await {
                Ok(after) => {
                    assert_eq!(after.producer_id_block_next, k * 1000, "seed {seed}");
                    break;
                }
                Err(ProposeError::NotLeader { .. }) => rt::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
    }
    net.loss_ppm.set(0);
    let leader = elect(&net).await;
    let expected = net.node(leader).applied();
    let agreed = wait_until(Duration::from_secs(20), || {
        VOTERS.iter().all(|&id| net.node(id).applied() == expected)
    })
    .await;
    assert!(agreed, "seed {seed}: the nodes did not converge");
    let applied = net.applied.borrow().clone();
    assert_eq!(applied[0], applied[1], "seed {seed}");
    assert_eq!(applied[1], applied[2], "seed {seed}");
    assert_eq!(expected.producer_id_block_next, 10_000, "seed {seed}");
    for id in VOTERS {
        stop(&net, id).await;
    }
}

/// A follower whose journal is wiped (restarted on an empty one) rejoins: the leader, which
/// still counts the entries it lost, sends heartbeats committing past its log (raft-rs would
/// panic on them; the node clamps them), and with the next entry it catches up. A proposal
/// waiting when a node stops gets Stopped.
#[test]
fn a_wiped_follower_rejoins_and_a_stop_answers_waiting_proposals() {
    rt::sim::run(19, async {
        let disk = SimDisk::new(19);
        let _installed = sim::install(&disk);
        let net = Net::new();
        for id in VOTERS {
            start(&net, id).await;
        }
        let leader = elect(&net).await;
        for k in 1..=3i64 {
            net.node(leader).propose(block(k * 1000)).await.unwrap();
        }
        let wiped = (leader + 1) % 3;
        let expected = net.node(leader).applied();
        assert!(
            wait_until(Duration::from_secs(5), || net.node(wiped).applied()
                == expected)
            .await
        );
        stop(&net, wiped).await;
        start_at(&net, wiped, dir_of(wiped).join("wiped")).await;
        assert_eq!(net.node(wiped).log().indexes(), (0, 0));
        // Heartbeats alone (the leader believes it has everything) do not move it; heartbeats
        // past its log must not kill it.
        rt::sleep(Duration::from_secs(3)).await;
        net.node(leader).propose(block(4000)).await.unwrap();
        let caught_up = wait_until(Duration::from_secs(10), || {
            net.node(wiped).applied() == net.node(leader).applied()
        })
        .await;
        assert!(
            caught_up,
            "the wiped follower caught up: {:?} / {:?} {:?}",
            net.node(wiped).status(),
            net.node(leader).status(),
            net.node(wiped).applied()
        );
        // A proposal queued when the leader stops is answered, not left hanging.
        let node = net.node(leader);
        let pending = rt::spawn_local(async move { node.propose(block(9000)).await });
        rt::yield_now().await;
        stop(&net, leader).await;
        let answer = pending.await;
        assert!(
            matches!(answer, Err(ProposeError::Stopped)) || answer.is_ok(),
            "{answer:?}"
        );
        for id in VOTERS {
            stop(&net, id).await;
        }
    });
}

/// All three nodes crash at once (the disk powers off a seeded number of operations into a
/// run of proposals, then loses, keeps or tears what was not synced): restarted from their
/// journals, they elect a leader and every acknowledged change is in its metadata, for many
/// seeds (Kafka's "kill -9 of all nodes at once" under simulation).
#[test]
fn every_acknowledged_change_survives_a_crash_of_all_nodes() {
    for seed in 200..230u64 {
        rt::sim::run(seed, crash_all_run(seed));
    }
}

async fn crash_all_run(seed: u64) {
    let disk = SimDisk::new(seed);
    let _installed = sim::install(&disk);
    let net = Net::new();
    for id in VOTERS {
        start(&net, id).await;
    }
    let mut acknowledged = 0i64;
    let leader = elect(&net).await;
    disk.power_off_after(20 + rt::sim::random_below(200));
    for k in 1..=50i64 {
        match net.node(leader).propose(block(k * 1000)).await {
            Ok(_) => acknowledged = k * 1000,
            Err(_) => break,
        }
    }
    if !disk.is_down() {
        disk.power_off_after(1);
    }
    for id in VOTERS {
        stop(&net, id).await;
    }
    for _ in 0..200 {
        sim::yield_once().await;
    }
    disk.crash();
    for id in VOTERS {
        start(&net, id).await;
    }
    let leader = elect(&net).await;
    // The new leader has applied its term's first entry: everything committed before.
    let applied = net.node(leader).applied();
    assert!(
        applied.producer_id_block_next >= acknowledged,
        "seed {seed}: acknowledged {acknowledged}, applied {}",
        applied.producer_id_block_next
    );
    assert_eq!(applied.cluster_id, "test-cluster", "seed {seed}");
    for id in VOTERS {
        stop(&net, id).await;
    }
}
