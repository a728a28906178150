//! Multi-process cluster harness: `n` real `freshet start` processes on 127.0.0.1 forming one
//! metadata quorum, each with its own Kafka, controller and admin listener and data directory.
//!
//! - [`TestCluster::start`] picks free ports for every listener of every node (binds port 0
//!   for all of them at once, reads the ports, closes), builds `controller_quorum_voters`
//!   (`id@127.0.0.1:port,...`, node ids 0..n, the first `voters` nodes vote), spawns every
//!   process before waiting for any (a quorum needs a majority up to elect), waits until each
//!   answers `/ready`, then (unless told not to) until the cluster is whole: every node's
//!   Metadata names a controller and lists every running node. A node that lost a port race
//!   (its log says the address is in use) makes the whole start retry with new ports.
//! - Nodes are addressed by index, which is also their Kafka node id.
//! - [`TestCluster::kill9`] (SIGKILL), [`TestCluster::stop`] (SIGTERM, Kafka's controlled
//!   shutdown), [`TestCluster::restart`] (same ports and data directory).
//! - Every wait is bounded and fails naming the node(s) and what was last seen, followed by
//!   the tail of every node's log ([`TestCluster::logs_tail`]); a panicking test prints the
//!   logs on drop too. Processes die with the test process (PR_SET_PDEATHSIG) and on drop.
//! - [`TestCluster::pause`] / [`TestCluster::resume`] (SIGSTOP / SIGCONT).
//! - With [`ClusterOptions::netns`], each node runs in its own network namespace
//!   ([`super::netns::Fabric`]) at its own address instead of 127.0.0.1, so that
//!   [`TestCluster::isolate`] can cut one node off from the others while clients (this
//!   process) still reach it ([`TestCluster::cut_link`]: one pair of nodes), and
//!   [`TestCluster::heal_network`] joins them again.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{DescribeClusterRequest, MetadataRequest, MetadataResponse};

use super::{broker_bin, http_get, signal, wait_timeout, RawConn, BROKER_STOP_TIMEOUT};

/// How long one node may take from spawn to answering `/ready`.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a started cluster may take to elect a controller and register every node.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Whole-cluster start attempts when a node loses a race for its port.
pub const START_ATTEMPTS_MAX: usize = 3;
/// Log lines of each node shown when something fails.
pub const LOG_TAIL_LINES: usize = 60;
/// Timeout of each probe request (Metadata, DescribeCluster, /ready) the harness sends.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the harness looks at a condition it waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Shards per node (`--shards`).
    pub shards: usize,
    /// How many nodes (the first ones) are voters; `None`: all of them.
    pub voters: Option<usize>,
    /// `--broker-rack` per node (missing entries: no rack).
    pub racks: Vec<String>,
    /// TOML settings every node gets in its `--config` file (e.g.
    /// `broker_session_timeout_ms = 3000`).
    pub settings: String,
    /// Extra `freshet start` arguments for every node.
    pub extra_args: Vec<String>,
    /// More TOML settings per node (missing entries: none), after `settings`; `{kafka_port}`
    /// is replaced by the node's Kafka port (e.g. for `listeners` naming it).
    pub node_settings: Vec<String>,
    /// Wait for the whole cluster (a controller, every node registered) after starting.
    pub wait_for_cluster: bool,
    /// Each node in its own network namespace (needs root; see [`super::netns`]):
    /// [`TestCluster::start`] panics if they cannot be made, [`TestCluster::try_start`]
    /// says why.
    pub netns: bool,
    /// Data directories of some nodes instead of their own under the cluster's directory
    /// (e.g. on a small file system); node index -> directory.
    pub data_dirs: std::collections::BTreeMap<usize, PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shards: 1,
            voters: None,
            racks: Vec::new(),
            settings: String::new(),
            extra_args: Vec::new(),
            node_settings: Vec::new(),
            wait_for_cluster: true,
            netns: false,
            data_dirs: Default::default(),
        }
    }
}

/// One node of a [`TestCluster`].
struct Node {
    /// The address every listener of the node binds (127.0.0.1 unless in a namespace).
    host: String,
    kafka_port: u16,
    controller_port: u16,
    admin_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    config_path: PathBuf,
    child: Option<Child>,
}

/// A running cluster of `freshet` processes; see the module doc.
pub struct TestCluster {
    bin: PathBuf,
    options: ClusterOptions,
    nodes: Vec<Node>,
    voters: String,
    log_shown: std::cell::Cell<bool>,
    /// The nodes' network namespaces ([`ClusterOptions::netns`]); dropped after the nodes.
    fabric: Option<super::netns::Fabric>,
    // Holds every node's data directory, config and log; removed on drop.
    tmp: tempfile::TempDir,
}

/// `count` distinct free ports on 127.0.0.1: all bound at once (so no two are the same),
/// then released.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Whether a node's log says it could not bind a listener (another process took the port
/// between our check and its start).
fn lost_port_race(log: &str) -> bool {
    ["Address already in use", "AddrInUse", "os error 98"]
        .iter()
        .any(|needle| log.contains(needle))
}

impl TestCluster {
    /// Starts `n` nodes as `options` say, waits as the module doc says.
    pub fn start(n: usize, options: ClusterOptions) -> TestCluster {
        TestCluster::try_start(n, options)
            .unwrap_or_else(|e| panic!("network namespaces for {n} nodes: {e}"))
    }

    /// Like [`TestCluster::start`], but an error when [`ClusterOptions::netns`] asks for
    /// network namespaces and they cannot be made (not root, no `ip` tool).
    pub fn try_start(n: usize, options: ClusterOptions) -> io::Result<TestCluster> {
        assert!(n >= 1, "a cluster has nodes");
        let voters = options.voters.unwrap_or(n);
        assert!((1..=n).contains(&voters), "1..={n} voters, not {voters}");
        for attempt in 1..=START_ATTEMPTS_MAX {
            let mut cluster = TestCluster::prepare(n, options.clone())?;
            for node in 0..n {
                cluster.spawn(node);
            }
            match cluster.wait_nodes_ready(&(0..n).collect::<Vec<_>>()) {
                Ok(()) => {
                    if options.wait_for_cluster {
                        cluster.wait_ready();
                    }
                    return Ok(cluster);
                }
                Err(NotReady::LostPortRace(node)) if attempt < START_ATTEMPTS_MAX => {
                    eprintln!("cluster start {attempt}: node {node} lost a port race; retrying");
                    // Dropping `cluster` kills every node and removes its directories.
                }
                Err(e) => cluster.fail(&format!("cluster of {n} did not start: {e}")),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Directories, ports and the voter list for `n` nodes (nothing started yet).
    fn prepare(n: usize, options: ClusterOptions) -> io::Result<TestCluster> {
        let fabric = match options.netns {
            true => Some(super::netns::Fabric::create(n)?),
            false => None,
        };
        // FRESHET_KEEP_CLUSTER_DIRS=1 keeps the nodes' data and logs after the test (to read
        // a failure's whole logs).
        let tmp = tempfile::Builder::new()
            .prefix("freshet-cluster-")
            .disable_cleanup(std::env::var_os("FRESHET_KEEP_CLUSTER_DIRS").is_some())
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(3 * n);
        let voter_count = options.voters.unwrap_or(n);
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let dir = tmp.path().join(format!("node{i}"));
                fs::create_dir_all(&dir).expect("node dir");
                Node {
                    host: fabric
                        .as_ref()
                        .map_or_else(|| "127.0.0.1".to_string(), |f| f.host(i)),
                    kafka_port: ports[3 * i],
                    controller_port: ports[3 * i + 1],
                    admin_port: ports[3 * i + 2],
                    data_dir: options
                        .data_dirs
                        .get(&i)
                        .cloned()
                        .unwrap_or_else(|| dir.join("data")),
                    log_path: dir.join("node.log"),
                    config_path: dir.join("freshet.toml"),
                    child: None,
                }
            })
            .collect();
        let voters = (0..voter_count)
            .map(|i| format!("{i}@{}:{}", nodes[i].host, nodes[i].controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for (i, node) in nodes.iter().enumerate() {
            let own = options.node_settings.get(i).map_or(String::new(), |s| {
                s.replace("{kafka_port}", &node.kafka_port.to_string())
            });
            let text = format!("{}\n{own}\n", options.settings);
            fs::write(&node.config_path, text).expect("write node config");
        }
        Ok(TestCluster {
            bin: broker_bin(),
            options,
            nodes,
            voters,
            log_shown: std::cell::Cell::new(false),
            fabric,
            tmp,
        })
    }

    /// The `freshet start` arguments of `node` (without the binary).
    pub fn args(&self, node: usize) -> Vec<String> {
        let n = &self.nodes[node];
        let mut args: Vec<String> = [
            "start",
            "--config",
            &n.config_path.display().to_string(),
            "--node-id",
            &node.to_string(),
            "--listen",
            &format!("{}:{}", n.host, n.kafka_port),
            "--controller-listen",
            &format!("{}:{}", n.host, n.controller_port),
            "--controller-quorum-voters",
            &self.voters,
            "--admin-listen",
            &format!("{}:{}", n.host, n.admin_port),
            "--data-dir",
            &n.data_dir.display().to_string(),
            "--shards",
            &self.options.shards.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(rack) = self.options.racks.get(node) {
            args.extend(["--broker-rack".to_string(), rack.clone()]);
        }
        args.extend(self.options.extra_args.iter().cloned());
        args
    }

    /// Spawns `node`'s process (not waiting for it).
    fn spawn(&mut self, node: usize) {
        assert!(self.nodes[node].child.is_none(), "node {node} is running");
        let args = self.args(node);
        let netns = self.fabric.as_ref().map(|f| (f, node));
        let child =
            super::spawn_broker_process_in(&self.bin, &args, &self.nodes[node].log_path, netns);
        self.nodes[node].child = Some(child);
    }

    /// Waits until every node of `nodes` answers `/ready` (each bounded by
    /// [`NODE_READY_TIMEOUT`], all waited for at once).
    fn wait_nodes_ready(&mut self, nodes: &[usize]) -> Result<(), NotReady> {
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        let mut pending: BTreeSet<usize> = nodes.iter().copied().collect();
        let mut last = String::new();
        while !pending.is_empty() {
            for node in pending.clone() {
                let exited = self.nodes[node]
                    .child
                    .as_mut()
                    .expect("spawned")
                    .try_wait()
                    .expect("try_wait");
                if let Some(status) = exited {
                    self.nodes[node].child = None;
                    if lost_port_race(&self.log(node)) {
                        return Err(NotReady::LostPortRace(node));
                    }
                    return Err(NotReady::Exited(node, status));
                }
                match http_get(&self.admin_addr(node), "/ready") {
                    Ok((200, _)) => {
                        pending.remove(&node);
                    }
                    Ok((status, body)) => last = format!("node {node}: /ready {status} {body}"),
                    Err(e) => last = format!("node {node}: /ready: {e}"),
                }
            }
            if !pending.is_empty() && Instant::now() >= deadline {
                return Err(NotReady::Timeout(pending.into_iter().collect(), last));
            }
            thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }

    /// Waits until the running nodes form the whole cluster: each answers Metadata naming a
    /// controller and listing exactly the running nodes as brokers.
    pub fn wait_ready(&self) {
        let running: BTreeSet<i32> = self.running().iter().map(|&n| n as i32).collect();
        self.wait_until(CLUSTER_READY_TIMEOUT, "the cluster to be whole", || {
            for &node in &running {
                let m = self
                    .metadata(node as usize)
                    .map_err(|e| format!("node {node}: Metadata: {e}"))?;
                let brokers: BTreeSet<i32> = m.brokers.iter().map(|b| b.node_id.0).collect();
                if m.controller_id.0 < 0 || brokers != running {
                    return Err(format!(
                        "node {node}: controller {}, brokers {brokers:?} (want {running:?})",
                        m.controller_id.0
                    ));
                }
            }
            Ok(())
        });
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].child.is_some())
            .collect()
    }

    /// `node`'s Kafka listener, `127.0.0.1:PORT` (its namespace's address with
    /// [`ClusterOptions::netns`]).
    pub fn kafka_addr(&self, node: usize) -> String {
        format!("{}:{}", self.nodes[node].host, self.nodes[node].kafka_port)
    }

    /// `node`'s Kafka listener as a socket address.
    pub fn socket_addr(&self, node: usize) -> SocketAddr {
        self.kafka_addr(node).parse().expect("socket address")
    }

    /// `node`'s controller listener, `127.0.0.1:PORT`.
    pub fn controller_addr(&self, node: usize) -> String {
        format!(
            "{}:{}",
            self.nodes[node].host, self.nodes[node].controller_port
        )
    }

    /// `node`'s admin HTTP listener, `127.0.0.1:PORT`.
    pub fn admin_addr(&self, node: usize) -> String {
        format!("{}:{}", self.nodes[node].host, self.nodes[node].admin_port)
    }

    /// The voters as every node was given them (`controller_quorum_voters`).
    pub fn voters(&self) -> &str {
        &self.voters
    }

    /// `node`'s data directory.
    pub fn data_dir(&self, node: usize) -> &Path {
        &self.nodes[node].data_dir
    }

    /// The directory holding every node's files.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `node`'s process id.
    pub fn pid(&self, node: usize) -> u32 {
        self.nodes[node]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is not running"))
            .id()
    }

    /// Every node's Kafka address, comma-separated (a bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.bootstrap_of(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// The Kafka addresses of `nodes`, comma-separated.
    pub fn bootstrap_of(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&n| self.kafka_addr(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// rdkafka settings bootstrapping from `nodes` (IPv4, 20 s socket timeout).
    pub fn client_config(&self, nodes: &[usize]) -> rdkafka::config::ClientConfig {
        let mut config = rdkafka::config::ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap_of(nodes))
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "20000");
        config
    }

    /// FindCoordinator v3 for `key` (`key_type` 0 a group, 1 a transactional id) asked of
    /// `node`: (error, coordinator node id), `None` if it does not answer.
    pub fn find_coordinator(&self, node: usize, key_type: i8, key: &str) -> Option<(i16, i32)> {
        let request = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(kafka_protocol::protocol::StrBytes::from_string(
                key.to_string(),
            ))
            .with_key_type(key_type);
        let r = RawConn::connect(self.socket_addr(node))
            .ok()?
            .request(3, &request)
            .ok()?;
        Some((r.error_code, r.node_id.0))
    }

    /// Waits (at most 60 s) until every node of `nodes` names the same coordinator for
    /// `key`, other than `not`, and returns it.
    pub fn common_coordinator(
        &self,
        nodes: &[usize],
        key_type: i8,
        key: &str,
        not: Option<i32>,
    ) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answers: Vec<Option<(i16, i32)>> = nodes
                .iter()
                .map(|&n| self.find_coordinator(n, key_type, key))
                .collect();
            if let Some(Some((0, first))) = answers.first() {
                if answers.iter().all(|a| *a == Some((0, *first))) && Some(*first) != not {
                    return *first;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no common coordinator (other than {not:?}) for {key}: {answers:?}"
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `topic` through `nodes` with rdkafka's admin client, again while a broker is
    /// fenced for a moment on a loaded machine (INVALID_REPLICATION_FACTOR) or an answer is
    /// slow, for at most 90 s; an existing topic is fine.
    pub fn create_topic_retrying(&self, nodes: &[usize], topic: &rdkafka::admin::NewTopic) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let options =
            rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            self.client_config(nodes).create().expect("admin client");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let results = super::runtime().block_on(admin.create_topics([topic], &options));
            match results.as_ref().map(|r| &r[0]) {
                Ok(Ok(_)) | Ok(Err((_, Code::TopicAlreadyExists))) => return,
                Ok(Err((_, Code::InvalidReplicationFactor))) | Err(_)
                    if Instant::now() < deadline =>
                {
                    println!("creating {}: {results:?}; again", topic.name);
                    thread::sleep(Duration::from_millis(500));
                }
                other => self.fail(&format!("create {}: {other:?}", topic.name)),
            }
        }
    }

    /// Kills `node` with SIGKILL and reaps it.
    pub fn kill9(&mut self, node: usize) {
        let mut child = self.nodes[node]
            .child
            .take()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        child.kill().expect("SIGKILL");
        child.wait().expect("wait after SIGKILL");
    }

    /// Kills every running node with SIGKILL at once.
    pub fn kill9_all(&mut self) {
        let children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for mut child in children.into_iter() {
            let _ = child.kill();
            child.wait().expect("wait after SIGKILL");
        }
    }

    /// Stops `node` with SIGSTOP (it keeps its sockets; peers see it hang, not go away).
    pub fn pause(&self, node: usize) {
        let child = self.nodes[node]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        signal(child, libc::SIGSTOP);
    }

    /// Lets a paused `node` go on (SIGCONT).
    pub fn resume(&self, node: usize) {
        let child = self.nodes[node]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        signal(child, libc::SIGCONT);
    }

    /// Cuts `node` off from every other node, both ways, clients still reaching it (needs
    /// [`ClusterOptions::netns`]).
    pub fn isolate(&mut self, node: usize) {
        let fabric = self
            .fabric
            .as_mut()
            .expect("isolate needs ClusterOptions::netns");
        if let Err(e) = fabric.isolate(node) {
            self.fail(&format!("isolating node {node}: {e}"));
        }
    }

    /// Cuts the link between nodes `a` and `b` only, both ways (needs
    /// [`ClusterOptions::netns`]).
    pub fn cut_link(&mut self, a: usize, b: usize) {
        let fabric = self
            .fabric
            .as_mut()
            .expect("cut_link needs ClusterOptions::netns");
        if let Err(e) = fabric.cut(a, b) {
            self.fail(&format!("cutting nodes {a} and {b} apart: {e}"));
        }
    }

    /// Removes every cut [`TestCluster::isolate`] or [`TestCluster::cut_link`] made.
    pub fn heal_network(&mut self) {
        if let Some(Err(e)) = self.fabric.as_mut().map(|f| f.heal()) {
            self.fail(&format!("healing the network: {e}"));
        }
    }

    /// Sends `node` SIGTERM and waits (bounded) for it to exit; returns its exit status.
    pub fn stop(&mut self, node: usize) -> ExitStatus {
        let mut child = self.nodes[node]
            .child
            .take()
            .unwrap_or_else(|| panic!("node {node} is not running"));
        signal(&child, libc::SIGTERM);
        match wait_timeout(&mut child, BROKER_STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail(&format!(
                    "node {node} did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM"
                ))
            }
        }
    }

    /// Starts a stopped `node` again (same ports, same data directory) and waits until it
    /// answers `/ready` (not for the cluster: see [`TestCluster::wait_ready`]).
    pub fn restart(&mut self, node: usize) {
        self.start_nodes(&[node]);
    }

    /// Starts the stopped `nodes` again all at once and waits until each answers `/ready`.
    pub fn start_nodes(&mut self, nodes: &[usize]) {
        for &node in nodes {
            self.spawn(node);
        }
        if let Err(e) = self.wait_nodes_ready(nodes) {
            self.fail(&format!("restarting nodes {nodes:?}: {e}"));
        }
    }

    /// Starts every stopped node again at once and waits until each answers `/ready`.
    pub fn start_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].child.is_none())
            .collect();
        self.start_nodes(&stopped);
    }

    /// Whether `node`'s process is running (reaps it if it exited on its own).
    pub fn is_running(&mut self, node: usize) -> bool {
        let exited = match self.nodes[node].child.as_mut() {
            None => return false,
            Some(child) => child.try_wait().expect("try_wait").is_some(),
        };
        if exited {
            self.nodes[node].child = None;
        }
        !exited
    }

    /// Metadata (all topics) as `node` answers it, at the highest version both sides know.
    pub fn metadata(&self, node: usize) -> io::Result<MetadataResponse> {
        let mut conn = RawConn::connect_timeout(self.socket_addr(node), PROBE_TIMEOUT)?;
        conn.request(12, &MetadataRequest::default().with_topics(None))
    }

    /// The brokers `node` knows with their fenced state (DescribeCluster v2, fenced brokers
    /// included), by node id.
    pub fn brokers_with_fencing(&self, node: usize) -> io::Result<Vec<(i32, bool)>> {
        let mut conn = RawConn::connect_timeout(self.socket_addr(node), PROBE_TIMEOUT)?;
        let request = DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(true);
        let answer = conn.request(2, &request)?;
        if answer.error_code != 0 {
            return Err(io::Error::other(format!(
                "DescribeCluster error {}",
                answer.error_code
            )));
        }
        let mut brokers: Vec<(i32, bool)> = answer
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.is_fenced))
            .collect();
        brokers.sort_unstable();
        Ok(brokers)
    }

    /// The active controller as `node`'s Metadata names it (`None`: none known).
    pub fn controller_seen_by(&self, node: usize) -> io::Result<Option<usize>> {
        let id = self.metadata(node)?.controller_id.0;
        Ok((id >= 0).then_some(id as usize))
    }

    /// Waits until every running node names the same running controller, other than
    /// `not` (e.g. the one just killed); returns it.
    pub fn wait_controller(&self, timeout: Duration, not: Option<usize>) -> usize {
        let running = self.running();
        self.wait_until(timeout, "one controller named by every node", || {
            let mut seen = BTreeSet::new();
            for &node in &running {
                let c = self
                    .controller_seen_by(node)
                    .map_err(|e| format!("node {node}: Metadata: {e}"))?;
                seen.insert(c);
            }
            match seen.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(c)] if running.contains(c) && Some(*c) != not => Ok(*c),
                other => Err(format!("controllers named: {other:?}")),
            }
        })
    }

    /// Waits until `probe` returns `Ok`, looking every 50 ms; after `timeout` fails the test
    /// naming `what`, the last `Err` (which should name the node), and every node's log tail.
    pub fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        loop {
            let last = match probe() {
                Ok(value) => return value,
                Err(state) => state,
            };
            if started.elapsed() >= timeout {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Everything `node` wrote to its log so far (all its runs).
    pub fn log(&self, node: usize) -> String {
        fs::read_to_string(&self.nodes[node].log_path).unwrap_or_default()
    }

    /// The last [`LOG_TAIL_LINES`] lines of `node`'s log.
    pub fn log_tail(&self, node: usize) -> String {
        let text = self.log(node);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "---- node {node} log ({}), last {} lines ----\n{}\n---- end of node {node} log ----",
            self.nodes[node].log_path.display(),
            lines.len() - from,
            lines[from..].join("\n")
        )
    }

    /// Every node's log tail.
    pub fn logs_tail(&self) -> String {
        self.log_shown.set(true);
        (0..self.nodes.len())
            .map(|n| self.log_tail(n))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fails the test with `message` and every node's log tail.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.logs_tail())
    }

    /// Waits (up to 5 s) until nothing accepts connections on `node`'s Kafka port.
    pub fn wait_port_closed(&self, node: usize) {
        let addr = self.socket_addr(node);
        self.wait_until(
            Duration::from_secs(5),
            &format!("node {node}'s Kafka port to close"),
            || match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(_) => Err(format!("node {node}: {addr} still accepts")),
                Err(_) => Ok(()),
            },
        )
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.logs_tail());
        }
    }
}

/// Why nodes did not become ready.
#[derive(Debug)]
enum NotReady {
    /// The node exited because a port it was given was taken meanwhile.
    LostPortRace(usize),
    /// The node exited during startup.
    Exited(usize, ExitStatus),
    /// These nodes did not answer `/ready` in time; the last thing seen.
    Timeout(Vec<usize>, String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::LostPortRace(n) => write!(f, "node {n} could not bind a port"),
            NotReady::Exited(n, status) => write!(f, "node {n} exited during startup: {status}"),
            NotReady::Timeout(nodes, last) => write!(
                f,
                "nodes {nodes:?} not ready after {NODE_READY_TIMEOUT:?} (last: {last})"
            ),
        }
    }
}
