//! The controller transport (`cluster/transport.rs`) carrying a real metadata quorum: three
//! [`QuorumNode`]s (raft-rs, `cluster/node.rs`) on a simulated disk, each with its own
//! [`ControllerTransport`] listening on 127.0.0.1 (free ports), all inside one real glommio
//! executor. Raft messages go over real TCP as protobuf frames; calls find the active
//! controller with `call_controller`. Checks election and replication over the wire, the
//! controller found from any hint, a new leader after the old one's node and listener stop,
//! and a node started late catching up from a snapshot sent over the wire.

use freshet::cluster::node::{NodeSettings, QuorumNode};
use freshet::cluster::raft_log::{self, RaftLog};
use freshet::cluster::transport::{CallHandler, ControllerTransport, RaftHandler, TransportLimits};
use freshet::cluster::{ControllerRequest, ControllerResponse, Voter};
use freshet::coordinator::metadata::{ClusterMetadata, MetadataRecord};
use freshet::rt;
use freshet::storage::io::sim::{self, SimDisk};
use freshet::storage::TailCache;
use raft::prelude::Message;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const VOTERS: [i32; 3] = [0, 1, 2];
const CACHE_BYTES: usize = 64 << 10;

/// One node: its quorum node (once started) and its transport.
struct Node {
    quorum: Rc<RefCell<Option<Rc<QuorumNode>>>>,
    transport: Rc<ControllerTransport>,
}

struct Cluster {
    addrs: Vec<SocketAddr>,
    nodes: RefCell<Vec<Option<Node>>>,
}

fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    probe.local_addr().expect("local addr")
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            addrs: VOTERS.iter().map(|_| free_addr()).collect(),
            nodes: RefCell::new(vec![None, None, None]),
        }
    }

    fn voters(&self) -> Vec<Voter> {
        VOTERS
            .iter()
            .map(|&id| Voter {
                node_id: id,
                addr: self.addrs[id as usize].to_string(),
            })
            .collect()
    }

    fn quorum(&self, id: i32) -> Rc<QuorumNode> {
        let nodes = self.nodes.borrow();
        let node = nodes[id as usize].as_ref().expect("node running");
        let quorum = node.quorum.borrow().clone();
        quorum.expect("quorum started")
    }

    fn transport(&self, id: i32) -> Rc<ControllerTransport> {
        self.nodes.borrow()[id as usize]
            .as_ref()
            .expect("node running")
            .transport
            .clone()
    }

    /// Starts node `id`: its listener, then its quorum node sending through the transport.
    async fn start(&self, id: i32) {
        let transport = ControllerTransport::new(id, self.voters(), TransportLimits::default());
        let quorum: Rc<RefCell<Option<Rc<QuorumNode>>>> = Rc::default();
        let to_node = quorum.clone();
        let on_raft: RaftHandler = Rc::new(move |msg: Message| {
            if let Some(node) = to_node.borrow().as_ref() {
                node.step(msg);
            }
        });
        transport
            .serve(
                self.addrs[id as usize],
                on_raft,
                answer_calls(quorum.clone()),
            )
            .expect("listen");
        let dir = raft_log::raft_log_dir(&PathBuf::from(format!("/sim/node{id}")));
        let log = RaftLog::open(&dir, TailCache::new(CACHE_BYTES), &VOTERS, || {
            panic!("no single-node bootstrap in a 3-voter cluster")
        })
        .await
        .expect("open the journal");
        let settings = NodeSettings {
            node_id: id,
            voters: VOTERS.to_vec(),
            election_timeout_ms: 1000,
            tick_ms: 100,
            cluster_id: "transport-test".into(),
        };
        let out = transport.clone();
        let outbox = Rc::new(move |msg: Message| out.send_raft(msg));
        let on_applied = Rc::new(|_: Arc<ClusterMetadata>| {});
        let node = QuorumNode::start(settings, log, outbox, on_applied)
            .await
            .expect("start the node");
        *quorum.borrow_mut() = Some(node);
        self.nodes.borrow_mut()[id as usize] = Some(Node { quorum, transport });
    }

    /// Stops node `id`: its quorum node and its transport (listener and links).
    async fn stop(&self, id: i32) {
        let node = self.nodes.borrow_mut()[id as usize].take();
        if let Some(node) = node {
            let quorum = node.quorum.borrow_mut().take();
            if let Some(quorum) = quorum {
                quorum.stop().await;
            }
            node.transport.stop().await;
        }
    }

    fn running(&self) -> Vec<i32> {
        VOTERS
            .iter()
            .copied()
            .filter(|&id| self.nodes.borrow()[id as usize].is_some())
            .collect()
    }

    /// The one running node ready to take proposals, if exactly one is.
    fn leader(&self) -> Option<i32> {
        let ready: Vec<i32> = self
            .running()
            .into_iter()
            .filter(|&id| self.quorum(id).ready_to_propose())
            .collect();
        (ready.len() == 1).then(|| ready[0])
    }
}

/// The calls a node answers: DescribeQuorum when it is the active controller, else
/// NotController naming the leader it knows.
fn answer_calls(quorum: Rc<RefCell<Option<Rc<QuorumNode>>>>) -> CallHandler {
    Rc::new(move |_request: ControllerRequest| {
        let node = quorum.borrow().clone();
        Box::pin(async move {
            match node {
                Some(node) if node.ready_to_propose() => ControllerResponse::Quorum(node.status()),
                Some(node) => ControllerResponse::NotController {
                    leader: node.leader(),
                },
                None => ControllerResponse::NotController { leader: None },
            }
        })
    })
}

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

async fn elect(cluster: &Cluster) -> i32 {
    assert!(
        wait_until(Duration::from_secs(20), || cluster.leader().is_some()).await,
        "no leader within 20 s"
    );
    cluster.leader().unwrap()
}

fn block(next: i64) -> Vec<MetadataRecord> {
    vec![MetadataRecord::ProducerIdBlockAllocated { next }]
}

fn run<T>(test: impl std::future::Future<Output = T>) -> T {
    rt::run_on_new_executor(1 << 20, 256, test).expect("a glommio executor")
}

/// The controller `call_controller` finds from node `from`, starting at `hint`.
async fn controller_seen_from(cluster: &Cluster, from: i32, hint: Option<i32>) -> Option<i32> {
    let answer = cluster
        .transport(from)
        .call_controller(
            ControllerRequest::DescribeQuorum,
            hint,
            Duration::from_secs(10),
        )
        .await;
    match answer {
        Ok(ControllerResponse::Quorum(status)) => status.leader_id,
        other => panic!("call_controller from {from}: {other:?}"),
    }
}

/// Three nodes elect a leader over TCP, replicate its proposals to every node in order, and
/// every node finds the controller with call_controller; when the leader's node and listener
/// stop, the other two elect a new one, found the same way, and take proposals.
#[test]
fn a_quorum_elects_and_replicates_over_the_transport() {
    run(async {
        let disk = SimDisk::new(21);
        let _installed = sim::install(&disk);
        let cluster = Cluster::new();
        for id in VOTERS {
            cluster.start(id).await;
        }
        elect(&cluster).await;
        for k in 1..=20i64 {
            let after = propose_on_leader(&cluster, block(k * 1000)).await;
            assert_eq!(after.producer_id_block_next, k * 1000);
        }
        let leader = elect(&cluster).await;
        let expected = cluster.quorum(leader).applied();
        let replicated = wait_until(Duration::from_secs(10), || {
            VOTERS
                .iter()
                .all(|&id| cluster.quorum(id).applied() == expected)
        })
        .await;
        assert!(replicated, "every node applied the leader's metadata");
        for from in VOTERS {
            for hint in [None, Some(0), Some(1), Some(2)] {
                assert_controller_found(&cluster, from, hint).await;
            }
        }

        let leader = elect(&cluster).await;
        cluster.stop(leader).await;
        let new_leader = elect(&cluster).await;
        assert_ne!(new_leader, leader);
        let from = cluster.running()[0];
        assert_controller_found(&cluster, from, Some(leader)).await;
        let after = propose_on_leader(&cluster, block(99_000)).await;
        assert_eq!(after.producer_id_block_next, 99_000);
        let stats = cluster.transport(elect(&cluster).await).stats();
        assert!(stats.raft_sent > 0 && stats.raft_received > 0, "{stats:?}");
        assert_eq!(stats.bad_frames, 0);
        for id in VOTERS {
            cluster.stop(id).await;
        }
    });
}

/// Proposes `records` on whichever node leads, again on the next leader when leadership
/// moved while the proposal was in flight (a loaded machine can starve the executor past an
/// election timeout); the records here set a value, so applying them twice is harmless.
async fn propose_on_leader(
    cluster: &Cluster,
    records: Vec<MetadataRecord>,
) -> Arc<ClusterMetadata> {
    let mut last = None;
    for _ in 0..10 {
        let leader = elect(cluster).await;
        match cluster.quorum(leader).propose(records.clone()).await {
            Ok(after) => return after,
            Err(e) => last = Some(format!("{e:?}")),
        }
        rt::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader took the proposal in 10 tries: {last:?}");
}

/// `call_controller` from node `from`, starting at `hint`, finds the node that leads; a
/// leadership change during the call (seen as a different leader before and after) is
/// retried rather than failed.
async fn assert_controller_found(cluster: &Cluster, from: i32, hint: Option<i32>) {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let before = elect(cluster).await;
        let found = controller_seen_from(cluster, from, hint).await;
        let after = elect(cluster).await;
        if found == Some(before) && before == after {
            return;
        }
        seen.push((before, found, after));
    }
    panic!("call_controller from {from} (hint {hint:?}) never found the leader: {seen:?}");
}

/// Two nodes run while the leader's journal grows past its compaction limit; the third,
/// started then with an empty journal, catches up from the leader's snapshot sent over the
/// wire and follows on.
#[test]
fn a_late_node_catches_up_from_a_snapshot_over_the_transport() {
    run(async {
        let disk = SimDisk::new(22);
        let _installed = sim::install(&disk);
        let cluster = Cluster::new();
        cluster.start(0).await;
        cluster.start(1).await;
        let leader = elect(&cluster).await;
        let mut k = 0i64;
        while cluster.quorum(leader).log().indexes().0 == 0 {
            k += 1;
            cluster
                .quorum(leader)
                .propose(block(k * 1000))
                .await
                .expect("proposal");
            assert!(k < 3000, "the leader never compacted its journal");
        }
        cluster.start(2).await;
        let expected = cluster.quorum(leader).applied();
        let caught_up = wait_until(Duration::from_secs(20), || {
            cluster.quorum(2).applied() == expected
        })
        .await;
        assert!(caught_up, "the late node caught up");
        assert!(cluster.quorum(2).log().indexes().0 > 0, "from a snapshot");
        cluster
            .quorum(leader)
            .propose(block((k + 1) * 1000))
            .await
            .expect("proposal");
        let expected = cluster.quorum(leader).applied();
        let follows = wait_until(Duration::from_secs(10), || {
            cluster.quorum(2).applied() == expected
        })
        .await;
        assert!(follows, "and follows on");
        for id in VOTERS {
            cluster.stop(id).await;
        }
    });
}
