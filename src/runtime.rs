//! Starting and stopping the broker: guards, executors, and each shard's life.
//!
//! [`run_broker`] runs on the main thread:
//! 1. refuses to start if another broker holds the data directory (an `flock` on
//!    `<data_dir>/.lock`) or the port (a plain bind probe: glommio's SO_REUSEPORT would let a
//!    second broker silently share it; the HTTP listener's port too, [`check_http_port_free`]);
//! 2. checks RLIMIT_MEMLOCK against what glommio will lock, so a short limit is a clear error
//!    instead of glommio's misleading panic (GLOMMIO.md pitfall 5);
//! 3. loads (or creates) the cluster metadata from its internal log, migrating an old
//!    `cluster-metadata.json` (`metadata_log::load_at_startup`, on a short-lived executor);
//! 4. starts one pinned executor per shard, each running [`shard_main`];
//! 5. waits for SIGINT/SIGTERM, then runs the controlled shutdown (in a cluster: leadership
//!    handed over while the broker still serves, bounded), asks every shard to stop and joins
//!    them.
//!
//! Signal handlers are installed first of all, so a SIGTERM at any point of startup is a clean
//! stop (shards stop opening partitions and exit 0), never the default kill. Limits left at 0
//! are derived here once RLIMIT_NOFILE is raised ([`derive_partitions_max`], the open segment
//! files per shard) and logged. A start that fails (cannot listen, a shard that cannot start)
//! exits non-zero; a watchdog makes sure it does within [`STARTUP_FAILURE_EXIT_TIMEOUT`] even
//! if a shard is slow to stop. The port guard binds a SO_REUSEPORT probe first: a port held by
//! any other program is refused at once.
//!
//! A shard's life: prime the disk (GLOMMIO.md pitfall 1), open its partitions, start its
//! inbox, retention loop and listener; on stop, close the listener, let connections finish,
//! flush and close its partitions.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use crate::shard::{Job, Router, Shard};

/// CPU shares of the log cleaner's task queue (glommio's default queue has 1000).
const CLEANER_SHARES: usize = 50;
/// Threads of each shard's blocking pool (directory listings, small metadata files and their
/// fsyncs: `storage::io`). glommio's default is one, which serialises every partition's
/// open and close behind one fsync at a time; these threads mostly wait on the disk.
pub const BLOCKING_THREADS_PER_SHARD: usize = 8;
use crate::config::BrokerConfig;
use crate::coordinator::metadata::ClusterMetadata;
use crate::rt::PoolStartError;

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("another broker is already using data directory {0} (its .lock file is held); stop it first or pick another --data-dir")]
    DataDirLocked(String),
    #[error("cannot listen on {addr}: {source} (is another broker or program using this port?)")]
    PortInUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen for admin HTTP on {addr}: {source} (set admin_listen / --admin-listen to another address, or \"off\")")]
    AdminPortInUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("RLIMIT_MEMLOCK is {have} bytes but {shards} shard(s) need about {need} bytes of locked memory; lower --shards, io_memory_bytes or ring_depth, or raise the limit (ulimit -l)")]
    Memlock { have: u64, need: u64, shards: usize },
    #[error("cluster metadata: {0}")]
    Metadata(std::io::Error),
    #[error("starting shards failed: {0}")]
    Executor(String),
    #[error("shard {shard} failed: {reason}")]
    ShardFailed { shard: usize, reason: String },
    /// A shard could not get memory for its io_uring rings while starting (ENOMEM), before any
    /// shard served a request. Seen when a broker is restarted right after a kill -9: the
    /// kernel releases the killed process's rings asynchronously. Worth retrying.
    #[error("shard {shard} could not start: {reason}")]
    RingMemory { shard: usize, reason: String },
}

impl StartError {
    /// Whether starting again shortly may succeed (see [`StartError::RingMemory`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, StartError::RingMemory { .. })
    }
}

/// Runs a broker until SIGINT/SIGTERM. Returns once every shard has stopped.
pub fn run_broker(config: BrokerConfig) -> Result<(), StartError> {
    let result = run_broker_once(config);
    RUNS_RETURNED.fetch_add(1, Ordering::SeqCst);
    result
}

fn run_broker_once(mut config: BrokerConfig) -> Result<(), StartError> {
    process_started();
    // Signals are caught from the very start: a SIGTERM during startup stops the shards as
    // soon as their inboxes run (it is delivered to the handler thread started below), instead
    // of killing the process mid-recovery.
    let signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| StartError::Executor(format!("cannot install signal handlers: {e}")))?;
    config.validate()?;
    // The HTTP listeners' authentication and HTTPS settings (checked here, not in `config`,
    // which does not depend on `http`).
    crate::http::auth::check_config(&config).map_err(crate::config::ConfigError)?;
    // How this broker calls the others (listener, TLS, SASL): built once, read by every shard.
    // A single node calls no other broker.
    if config.in_cluster() {
        crate::cluster::inter_broker::install(
            crate::cluster::inter_broker::InterBrokerSecurity::from_config(&config)?,
        );
    }
    let shards = config.shard_count();
    // The first listener's address (`listen` unless `listeners` is set) names the broker in
    // its start and ready lines.
    let addr = config.listener_specs()?[0].socket_addr()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let _lock = lock_data_dir(&config)?;
    // glommio binds with SO_REUSEPORT, so a second broker would silently share the port.
    for spec in config.listener_specs()? {
        check_port_free(spec.socket_addr()?)?;
    }
    if let Some(addr) = config.http_addr()? {
        check_http_port_free(addr)?;
    }
    check_memlock(&config, shards)?;
    let admin = bind_admin(&config)?;
    let open_files_max = raise_open_files_limit();
    resolve_derived_limits(&mut config, shards, open_files_max);
    crate::tuning::disk::install_profile(&config);
    let metadata = load_metadata(&config)?;
    tracing::info!(
        shards,
        %addr,
        data_dir = %config.data_dir.display(),
        topics = metadata.topics.len(),
        cluster_id = %metadata.cluster_id,
        "starting freshet"
    );

    let (router, inboxes) = Router::new(shards, config.shard_queue_depth);
    let config = Arc::new(config);
    let metadata = Arc::new(metadata);
    let started = Instant::now();
    let (ready_tx, ready_rx) = flume::bounded::<Result<bool, String>>(shards);
    let startup = Arc::new(StartupGate::default());

    let signal_router = router.clone();
    std::thread::Builder::new()
        .name("freshet-signals".into())
        .spawn(move || wait_for_signals(signals, signal_router))
        .map_err(|e| StartError::Executor(e.to_string()))?;

    let handles = start_shards(
        shards, config, &router, inboxes, metadata, &startup, admin, ready_tx,
    )?;

    // Report readiness once every shard listens (tests and operators wait for this line). A
    // shard that fails to start stops the whole broker.
    let startup_error = await_ready(&ready_rx, shards, &startup, &router, addr, started);

    shards_outcome(handles.join_all(), startup_error)
}

/// Starts one executor per shard, each running [`shard_main`] with its inbox (and, on the
/// coordinator shard, the admin socket).
#[allow(clippy::too_many_arguments)]
fn start_shards(
    shards: usize,
    config: Arc<BrokerConfig>,
    router: &Router,
    inboxes: Vec<flume::Receiver<Job>>,
    metadata: Arc<ClusterMetadata>,
    startup: &Arc<StartupGate>,
    admin: Option<OwnedFd>,
    ready_tx: flume::Sender<Result<bool, String>>,
) -> Result<crate::rt::Pool<Result<(), String>>, StartError> {
    let inboxes: Arc<Mutex<Vec<Option<flume::Receiver<Job>>>>> =
        Arc::new(Mutex::new(inboxes.into_iter().map(Some).collect()));
    let next_index = Arc::new(AtomicUsize::new(0));
    let pool = crate::rt::PoolSettings {
        name: "freshet-shard".to_string(),
        executors: shards,
        cpus: config.shard_cpus.clone(),
        io_memory_bytes: config.io_memory_bytes,
        ring_depth: config.ring_depth,
        spin_before_park: Duration::from_micros(config.spin_before_park_us),
        blocking_threads_per_executor: BLOCKING_THREADS_PER_SHARD,
    };
    let pool_router = router.clone();
    let pool_startup = startup.clone();
    let admin: Arc<Mutex<Option<OwnedFd>>> = Arc::new(Mutex::new(admin));
    let shard_cpus = config.shard_cpus.clone();
    crate::rt::start_pool(&pool, move || {
        let index = next_index.fetch_add(1, Ordering::SeqCst);
        let inbox = inboxes.lock().ok().and_then(|mut v| v[index].take());
        let admin = if index == crate::shard::COORDINATOR_SHARD {
            admin.lock().ok().and_then(|mut a| a.take())
        } else {
            None
        };
        async move {
            let inbox = inbox.expect("each shard index is handed out once");
            let gate = pool_startup;
            let io = ShardIo {
                inbox,
                admin,
                ready: ready_tx,
            };
            shard_main(index, config, pool_router, metadata, gate, io).await
        }
    })
    .map_err(|e| {
        StartError::Executor(match e {
            PoolStartError::CpuTopology(e) => format!("cannot read the CPU topology: {e}"),
            PoolStartError::NoOnlineCpu => {
                format!("shard_cpus {shard_cpus:?} names no online CPU")
            }
            PoolStartError::Executor(text) => explain_executor_error(&text),
        })
    })
}

/// Waits until every shard listens and says `freshet ready`, or stops every shard when one
/// fails to start. Returns why startup failed, if it did.
fn await_ready(
    ready_rx: &flume::Receiver<Result<bool, String>>,
    shards: usize,
    startup: &StartupGate,
    router: &Router,
    addr: std::net::SocketAddr,
    started: Instant,
) -> Option<String> {
    let mut ready = 0;
    let mut startup_error = None;
    let mut stopped_early = false;
    while ready < shards && startup_error.is_none() {
        match ready_rx.recv() {
            Ok(Ok(listening)) => {
                ready += 1;
                stopped_early |= !listening;
            }
            Ok(Err(reason)) => startup_error = Some(reason),
            Err(_) => startup_error = Some("a shard stopped during startup".to_string()),
        }
    }
    if let Some(reason) = &startup_error {
        tracing::error!(%reason, "startup failed; stopping");
        startup.failed.store(true, Ordering::SeqCst);
        for shard in 0..shards {
            let _ = router.send_blocking(shard, |shard| async move { shard.begin_stop() });
        }
        exit_if_not_stopped_within(STARTUP_FAILURE_EXIT_TIMEOUT, reason.clone());
    } else if stopped_early {
        tracing::info!("stopped during startup");
    } else {
        startup.ready.store(true, Ordering::SeqCst);
        tracing::info!(%addr, shards, startup_ms = started.elapsed().as_millis() as u64, "freshet ready");
        // Not eprintln!: it panics when stderr is a closed pipe (a log collector that went
        // away), which would leave the broker unable to shut down.
        let _ = writeln!(
            std::io::stderr(),
            "freshet ready on {addr} ({shards} shard(s), started in {} ms)",
            started.elapsed().as_millis()
        );
    }
    startup_error
}

/// The broker's result from each shard's: the first shard failure (a failed startup's reason
/// if no shard failed; ring memory when a shard failed startup with ENOMEM).
fn shards_outcome(
    results: Vec<Result<Result<(), String>, String>>,
    startup_error: Option<String>,
) -> Result<(), StartError> {
    let mut failure = None;
    for (shard, result) in results.into_iter().enumerate() {
        let reason = match result {
            Ok(Ok(())) => continue,
            Ok(Err(reason)) => reason,
            Err(e) => explain_executor_error(&e),
        };
        tracing::error!(shard, %reason, "shard failed");
        failure.get_or_insert(StartError::ShardFailed { shard, reason });
    }
    if let (None, Some(reason)) = (&failure, &startup_error) {
        failure = Some(StartError::Executor(reason.clone()));
    }
    if startup_error.is_some() {
        if let Some(StartError::ShardFailed { shard, reason }) = &failure {
            if reason.contains("os error 12") {
                failure = Some(StartError::RingMemory {
                    shard: *shard,
                    reason: reason.clone(),
                });
            }
        }
    }
    match failure {
        None => {
            tracing::info!("freshet stopped");
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// Startup coordination between shards: no shard listens before every shard has opened its
/// partitions, so no client request ever finds a partition still being recovered.
#[derive(Default)]
struct StartupGate {
    opened: AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
    /// Every shard listens (set by the main thread); the admin `/ready` reports it.
    ready: std::sync::atomic::AtomicBool,
}

/// What a shard receives at start besides its settings: its inbox, the admin listener
/// (shard 0 only, when enabled), and where to report that it listens.
struct ShardIo {
    inbox: flume::Receiver<Job>,
    admin: Option<OwnedFd>,
    /// `Ok(true)`: listening; `Ok(false)`: stopped (a signal) before listening.
    ready: flume::Sender<Result<bool, String>>,
}

async fn shard_main(
    index: usize,
    config: Arc<BrokerConfig>,
    router: Router,
    metadata: Arc<ClusterMetadata>,
    gate: Arc<StartupGate>,
    io: ShardIo,
) -> Result<(), String> {
    let ShardIo {
        inbox,
        admin,
        ready,
    } = io;
    let shards = router.shard_count();
    crate::storage::io::set_open_files_max(config.open_segment_files_per_shard_max);
    if let Err(e) = crate::storage::prime_disk(&config.data_dir).await {
        let reason = format!("priming data directory: {e}");
        let _ = ready.send(Err(reason.clone()));
        return Err(reason);
    }
    let shard = Shard::new(index, config.clone(), router, metadata);
    let stall_watch = crate::rt::spawn_local(crate::rt::stall::watch(
        index,
        crate::metrics::record_reactor_stall,
    ))
    .detach();
    let inbox_task = crate::rt::spawn_local(inbox_loop(shard.clone(), inbox)).detach();
    let admin_task = admin.map(|fd| spawn_admin(&shard, fd, &gate));
    shard.open_partitions().await;
    if index == crate::shard::COORDINATOR_SHARD {
        shard.load_group_coordinator().await;
        crate::shard::shares::load(&shard).await;
        if let Err(reason) = start_quorum(&shard).await {
            let _ = ready.send(Err(reason.clone()));
            return Err(reason);
        }
    }
    all_opened(&gate, shards, &shard).await;
    if index == crate::shard::COORDINATOR_SHARD {
        store_bootstrap_users(&shard).await;
    }
    let listeners = bind_listeners(&shard, &config, &gate, &ready);
    let retention = crate::rt::spawn_local(shard.clone().retention_loop()).detach();
    let cleaner = spawn_cleaner(&shard, &config);
    let group_coordinator = (index == crate::shard::COORDINATOR_SHARD)
        .then(|| crate::rt::spawn_local(shard.clone().group_tick_loop()).detach());
    let share_coordinator = (index == crate::shard::COORDINATOR_SHARD).then(|| {
        crate::rt::spawn_local(crate::shard::shares::share_tick_loop(shard.clone())).detach()
    });
    let http = match listeners.as_ref().map(|_| spawn_http(&shard)).transpose() {
        Ok(task) => task.flatten(),
        Err(reason) => {
            let _ = ready.send(Err(reason.clone()));
            return Err(reason);
        }
    };
    if let Some(listeners) = listeners {
        let _ = ready.send(Ok(true));
        let loops: Vec<_> = listeners
            .into_iter()
            .map(|(socket, kind)| {
                crate::rt::spawn_local(crate::server::accept_loop(shard.clone(), socket, kind))
            })
            .collect();
        for accept_loop in loops {
            accept_loop.await;
        }
    } else {
        while !shard.stopping.get() {
            shard.stop.wait().await;
        }
    }

    // Stopping: let connections finish what they have (bounded wait), then close the logs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shard.connections.get() > 0 && Instant::now() < deadline {
        crate::rt::sleep(Duration::from_millis(20)).await;
    }
    retention.cancel();
    stall_watch.cancel();
    if let Some(task) = cleaner {
        task.cancel();
    }
    if let Some(task) = group_coordinator {
        task.cancel();
    }
    if let Some(task) = share_coordinator {
        task.cancel();
    }
    if index == crate::shard::COORDINATOR_SHARD {
        shard.stop_controller().await;
    }
    shard.close_partitions().await;
    shard.groups.close().await;
    shard.txns.close().await;
    shard.shares.close().await;
    if let Some(task) = admin_task {
        task.cancel();
    }
    if let Some(task) = http {
        task.cancel();
    }
    inbox_task.cancel();
    tracing::debug!(shard = index, "shard stopped");
    Ok(())
}

/// Starts the metadata quorum on the coordinator shard; with a quorum of several nodes, waits
/// (at most [`QUORUM_JOIN_WAIT`]) until this broker is registered and unfenced, so clients
/// that reach it find the cluster's metadata.
async fn start_quorum(shard: &Rc<Shard>) -> Result<(), String> {
    let quorum = crate::cluster::QuorumConfig::from_broker_config(&shard.config)
        .map_err(|e| e.to_string())?;
    let single_node = quorum.single_node;
    shard.start_controller(quorum, shard.metadata()).await?;
    if single_node {
        return Ok(());
    }
    let node_id = shard.config.node_id;
    let deadline = Instant::now() + QUORUM_JOIN_WAIT;
    while !shard.stopping.get() && Instant::now() < deadline {
        let joined = shard
            .controller()
            .is_some_and(|c| c.is_registered_in(&shard.metadata()));
        if joined {
            tracing::info!(node_id, "registered with the metadata quorum");
            return Ok(());
        }
        crate::rt::sleep(Duration::from_millis(20)).await;
    }
    if !shard.stopping.get() {
        tracing::warn!(node_id, "not registered with the metadata quorum yet (no active controller reachable?); listening anyway");
    }
    Ok(())
}

/// Writes the users `freshet user create` left in the data directory to the metadata log
/// (and deletes those `freshet user delete` marked), then removes their file
/// (`security::users`); before the listeners open, so the first user can log in at once (and
/// a deleted one cannot). A deletion of a credential the metadata no longer holds is skipped.
/// A failure is logged and the file kept for the next start.
async fn store_bootstrap_users(shard: &Rc<Shard>) {
    use crate::coordinator::metadata::{MetadataCommand, StoredScramCredential};
    let data_dir = &shard.config.data_dir;
    let users = match crate::security::users::read_bootstrap(data_dir) {
        Ok(users) if users.is_empty() => return,
        Ok(users) => users,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bootstrap users; none stored");
            return;
        }
    };
    let names: Vec<String> = users.iter().map(|u| u.user.clone()).collect();
    let metadata = shard.metadata();
    let commands: Vec<MetadataCommand> = users
        .into_iter()
        .filter_map(|u| {
            if !u.delete {
                return Some(MetadataCommand::SetScramCredential {
                    user: u.user,
                    mechanism: u.mechanism,
                    credential: StoredScramCredential {
                        salt: u.salt,
                        stored_key: u.stored_key,
                        server_key: u.server_key,
                        iterations: u.iterations,
                    },
                });
            }
            let held = metadata
                .scram_credentials
                .get(&u.user)
                .is_some_and(|m| m.contains_key(&u.mechanism));
            if !held {
                tracing::warn!(user = %u.user, mechanism = %u.mechanism, "bootstrap deletion of a credential the metadata does not hold; skipped");
                return None;
            }
            Some(MetadataCommand::DeleteScramCredential {
                user: u.user,
                mechanism: u.mechanism,
            })
        })
        .collect();
    let results = if commands.is_empty() {
        Vec::new()
    } else {
        shard.change_metadata(commands, false).await
    };
    if let Some(e) = results.iter().find_map(|r| r.as_ref().err()) {
        tracing::error!(error = %e.message, "storing the bootstrap users failed; the file is kept for the next start");
        return;
    }
    tracing::info!(users = ?names, "bootstrap SCRAM users stored in the metadata log");
    if let Err(e) = crate::security::users::remove_bootstrap(data_dir) {
        tracing::warn!(error = %e, "cannot remove the bootstrap users file");
    }
}

/// The SCRAM users a stopped node's metadata log holds (user -> mechanism -> iterations), for
/// `freshet user list/delete` (`security::users::StoredUsers`); none for a node that never
/// started.
pub fn stored_scram_users(
    data_dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, i32>>, String> {
    let metadata = crate::shard::controller::read_stored_metadata(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    Ok(metadata
        .map(|m| {
            m.scram_credentials
                .into_iter()
                .map(|(user, mechanisms)| {
                    let iterations = mechanisms
                        .into_iter()
                        .map(|(mechanism, c)| (mechanism, c.iterations))
                        .collect();
                    (user, iterations)
                })
                .collect()
        })
        .unwrap_or_default())
}

/// How long a node of a quorum waits at startup to be registered before it listens anyway.
const QUORUM_JOIN_WAIT: Duration = Duration::from_secs(30);

/// Counts this shard's partitions as opened, then waits until every shard's are (or startup
/// failed on another shard, or the broker stops).
async fn all_opened(gate: &StartupGate, shards: usize, shard: &Shard) {
    gate.opened.fetch_add(1, Ordering::SeqCst);
    while gate.opened.load(Ordering::SeqCst) < shards
        && !gate.failed.load(Ordering::SeqCst)
        && !shard.stopping.get()
    {
        crate::rt::sleep(Duration::from_millis(1)).await;
    }
}

/// Serves the admin (metrics/health) socket `fd` on this shard; ready once `gate` says so.
fn spawn_admin(
    shard: &Rc<Shard>,
    fd: OwnedFd,
    gate: &Arc<StartupGate>,
) -> crate::rt::JoinHandle<()> {
    // The descriptor is a bound, listening TCP socket (bind_admin).
    let listener = crate::rt::net::listener_from_fd(fd);
    let ready_gate = gate.clone();
    let is_ready: Rc<dyn Fn() -> bool> = Rc::new(move || ready_gate.ready.load(Ordering::SeqCst));
    crate::rt::spawn_local(crate::server::admin::serve(
        shard.clone(),
        listener,
        is_ready,
        process_started(),
    ))
    .detach()
}

/// This shard's sockets for the Kafka listeners (`listeners`), each with its listener: none
/// if the broker is stopping (reported ready with `false`), if startup failed on another
/// shard, or if binding one failed or its TLS files do not load (reported).
fn bind_listeners(
    shard: &Shard,
    config: &BrokerConfig,
    gate: &StartupGate,
    ready: &flume::Sender<Result<bool, String>>,
) -> Option<
    Vec<(
        crate::rt::net::TcpListener,
        Rc<crate::server::listener::Listener>,
    )>,
> {
    if shard.stopping.get() {
        // A signal arrived during startup: stop without ever listening.
        let _ = ready.send(Ok(false));
        return None;
    }
    let bound = config
        .listener_specs()
        .map_err(|e| e.to_string())
        .and_then(|specs| {
            specs
                .iter()
                .map(|spec| {
                    let addr = spec.socket_addr().map_err(|e| e.to_string())?;
                    let kind = crate::server::listener::Listener::new(config, spec)?;
                    let socket = crate::rt::net::bind(addr)
                        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
                    Ok((socket, Rc::new(kind)))
                })
                .collect::<Result<Vec<_>, String>>()
        });
    match bound {
        Ok(sockets) if !gate.failed.load(Ordering::SeqCst) => Some(sockets),
        Ok(_) => None,
        Err(reason) => {
            let _ = ready.send(Err(reason));
            None
        }
    }
}

/// Binds the HTTP listener (`http_listen`) on this shard and serves it, when it is on.
fn spawn_http(shard: &Rc<Shard>) -> Result<Option<crate::rt::JoinHandle<()>>, String> {
    let Some(addr) = shard.config.http_addr().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let listener = crate::rt::net::bind(addr)
        .map_err(|e| format!("cannot listen for HTTP on {addr}: {e} (http_listen)"))?;
    if shard.id == 0 {
        tracing::info!(%addr, "HTTP listener (produce, push streams)");
    }
    Ok(Some(
        crate::rt::spawn_local(crate::http::serve(shard.clone(), listener)).detach(),
    ))
}

/// The log cleaner's task, when log_cleaner_enable.
fn spawn_cleaner(shard: &Rc<Shard>, config: &BrokerConfig) -> Option<crate::rt::JoinHandle<()>> {
    // The cleaner gets a small share of the CPU when requests are waiting (Redpanda's
    // lesson: background work must not stall the shard).
    if config.log_cleaner_enable {
        let queue = crate::rt::create_task_queue(CLEANER_SHARES, "log-cleaner");
        crate::rt::spawn_local_into(shard.clone().cleaner_loop(), queue)
            .map_err(|e| tracing::error!(error = %e, "cannot start the log cleaner"))
            .ok()
            .map(|t| t.detach())
    } else {
        None
    }
}

/// Runs the jobs other shards send, each as its own task, at most `shard_queue_depth` at once.
async fn inbox_loop(shard: Rc<Shard>, inbox: flume::Receiver<Job>) {
    let running = Rc::new(crate::rt::sync::Semaphore::new(
        shard.config.shard_queue_depth as u64,
    ));
    while let Ok(job) = inbox.recv_async().await {
        let Ok(permit) = running.acquire_static_permit(1).await else {
            break;
        };
        let job_shard = shard.clone();
        crate::rt::spawn_local(async move {
            // A panicking job drops its answer channel: the caller sees ShardGone and answers
            // its client with an error; this shard keeps serving.
            if AssertUnwindSafe(job(job_shard))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("a cross-shard job panicked");
            }
            drop(permit);
        })
        .detach();
    }
}

fn wait_for_signals(mut signals: signal_hook::iterator::Signals, router: Router) {
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
        controlled_shutdown(&router);
        for shard in 0..router.shard_count() {
            let _ = router.send_blocking(shard, |shard| async move { shard.begin_stop() });
        }
    }
}

/// Kafka's controlled shutdown, before any shard stops (`Shard::controlled_shutdown` on the
/// coordinator shard): in a cluster the broker hands its partitions' leadership over while it
/// still serves. Waits for it at most `CONTROLLED_SHUTDOWN_WAIT` plus a heartbeat's time.
fn controlled_shutdown(router: &Router) {
    let (done_tx, done_rx) = flume::bounded::<()>(1);
    let sent = router.send_blocking(crate::shard::COORDINATOR_SHARD, move |shard| async move {
        shard.controlled_shutdown().await;
        let _ = done_tx.send(());
    });
    if sent.is_ok() {
        let bound = crate::shard::controller::CONTROLLED_SHUTDOWN_WAIT + Duration::from_secs(3);
        let _ = done_rx.recv_timeout(bound);
    }
}

/// Refuses to start when a live Kafka listener (another broker) answers on `addr`.
///
/// A listening socket can outlive its process for a moment: after a kill -9, glommio's
/// io_uring teardown may still hold it, and the kernel keeps completing handshakes that nobody
/// will ever read. Such a socket accepts but never answers, so the probe sends an ApiVersions
/// request: an answer means a live broker; silence means a stale socket, which we wait out
/// (bounded) so that new clients are not spread onto it by SO_REUSEPORT.
fn check_port_free(addr: std::net::SocketAddr) -> Result<(), StartError> {
    use std::io::{Read, Write};
    const STALE_WAIT_MAX: Duration = Duration::from_secs(5);
    // A socket bound without SO_REUSEPORT (any other program) makes glommio's bind fail
    // anyway: say so now instead of probing it as a possibly stale broker socket.
    if let Err(source) = reuseport_bind_probe(addr) {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            return Err(StartError::PortInUse {
                addr: addr.to_string(),
                source,
            });
        }
    }
    let started = Instant::now();
    loop {
        let Ok(mut probe) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        else {
            return Ok(()); // Nobody listens.
        };
        // ApiVersions v0: size, api key 18, version 0, correlation id 0, null client id.
        let request: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let _ = probe.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 4];
        if probe.write_all(&request).is_ok() && probe.read_exact(&mut answer).is_ok() {
            return Err(StartError::PortInUse {
                addr: addr.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            });
        }
        if started.elapsed() > STALE_WAIT_MAX {
            tracing::warn!(%addr, "a listener that never answers holds the port; starting anyway");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Refuses to start when the HTTP listener's address (`http_listen`) is taken: bound without
/// SO_REUSEPORT by any program, or held by a live HTTP server (another broker's HTTP listener,
/// which SO_REUSEPORT would otherwise let this one share silently). A socket that accepts but
/// never answers (a broker just killed with -9) does not count.
fn check_http_port_free(addr: std::net::SocketAddr) -> Result<(), StartError> {
    use std::io::{Read, Write};
    let in_use = |source| StartError::PortInUse {
        addr: addr.to_string(),
        source,
    };
    if let Err(source) = reuseport_bind_probe(addr) {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            return Err(in_use(source));
        }
    }
    let Ok(mut probe) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    else {
        return Ok(()); // Nobody listens.
    };
    let _ = probe.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 1];
    if probe.write_all(b"GET / HTTP/1.1\r\n\r\n").is_ok() && probe.read_exact(&mut answer).is_ok() {
        return Err(in_use(std::io::Error::from(std::io::ErrorKind::AddrInUse)));
    }
    Ok(())
}

/// Binds (and closes) a socket on `addr` with SO_REUSEADDR and SO_REUSEPORT, as glommio
/// will: EADDRINUSE means something bound it without SO_REUSEPORT (not a broker of ours).
fn reuseport_bind_probe(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())
}

/// Binds the admin listener with a plain socket (no SO_REUSEPORT: a second broker must not
/// share it silently). See `BrokerConfig::admin_listen` for what happens when it is taken.
fn bind_admin(config: &BrokerConfig) -> Result<Option<OwnedFd>, StartError> {
    let Some(addr) = config.admin_addr()? else {
        return Ok(None);
    };
    match bind_admin_waiting_out_a_stale_socket(addr) {
        Ok(listener) => {
            tracing::info!(%addr, "admin HTTP listener (/metrics, /health, /ready)");
            Ok(Some(OwnedFd::from(listener)))
        }
        Err(source) if config.admin_listen == crate::config::DEFAULT_ADMIN_LISTEN => {
            tracing::warn!(%addr, error = %source, "default admin address is taken (another broker on this host?); running without the admin listener");
            Ok(None)
        }
        Err(source) => Err(StartError::AdminPortInUse {
            addr: addr.to_string(),
            source,
        }),
    }
}

/// Binds `addr`; while it is taken by a listener that never answers (the admin socket of a
/// broker just killed with -9, still held by its io_uring teardown, as `check_port_free`
/// describes for the Kafka port), retries for up to [`ADMIN_STALE_WAIT_MAX`]. A listener that
/// answers HTTP is a live one: the error is returned at once.
fn bind_admin_waiting_out_a_stale_socket(
    addr: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpListener> {
    let started = Instant::now();
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() < ADMIN_STALE_WAIT_MAX
                    && !http_listener_answers(addr) =>
            {
                tracing::debug!(%addr, "admin address held by a listener that does not answer; waiting");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// How long a start waits for a stale admin socket to go away.
const ADMIN_STALE_WAIT_MAX: Duration = Duration::from_secs(5);

/// Whether an HTTP server answers a `GET /health` on `addr` within a short bound.
fn http_listener_answers(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut probe) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
    else {
        return false;
    };
    let _ = probe.set_read_timeout(Some(Duration::from_millis(300)));
    let mut answer = [0u8; 4];
    probe
        .write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .and_then(|()| probe.read_exact(&mut answer))
        .is_ok()
}

/// When this process started (first call; `run_broker` calls it early).
fn process_started() -> Instant {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

fn lock_data_dir(config: &BrokerConfig) -> Result<File, StartError> {
    let path = config.data_dir.join(".lock");
    let file = File::create(&path).map_err(|source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    })?;
    let locked = crate::os::try_lock_exclusive(&file).map_err(|source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    })?;
    if !locked {
        return Err(StartError::DataDirLocked(
            config.data_dir.display().to_string(),
        ));
    }
    Ok(file)
}

fn check_memlock(config: &BrokerConfig, shards: usize) -> Result<(), StartError> {
    if crate::os::is_root() {
        return Ok(()); // root is not charged for locked memory.
    }
    let Some(have) = crate::os::memlock_limit_bytes() else {
        return Ok(()); // unlimited
    };
    let need = crate::rt::memlock_needed(config.io_memory_bytes, config.ring_depth, shards);
    if have < need {
        return Err(StartError::Memlock { have, need, shards });
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (every connection and every pooled
/// segment file is a descriptor; the usual soft limit of 1024 is low) and returns it.
fn raise_open_files_limit() -> u64 {
    let limit = crate::os::raise_open_files_limit().unwrap_or(u64::MAX);
    tracing::debug!(open_files_max = limit, "open files limit");
    limit
}

/// How long a broker whose start failed may take to stop before it exits anyway (nothing was
/// acknowledged yet, so there is nothing to flush that recovery would not redo).
pub const STARTUP_FAILURE_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Open segment files per shard when derived: a quarter of RLIMIT_NOFILE shared by the shards
/// (the rest is for connections and metadata files), within these bounds.
pub const OPEN_SEGMENT_FILES_PER_SHARD_DERIVED_MIN: usize = 16;
pub const OPEN_SEGMENT_FILES_PER_SHARD_DERIVED_MAX: usize = 1024;
/// Partitions per descriptor of RLIMIT_NOFILE when the partition cap is derived: an idle
/// partition holds no descriptor, but one being written holds one until its fdatasync, so
/// a burst of writes to every partition needs one each.
pub const PARTITIONS_PER_OPEN_FILE_DERIVED: u64 = 8;
/// Memory one partition costs, in bytes, for the derived cap: its log state, indexes,
/// metadata and a share of the tail cache's bookkeeping (measured: see README).
pub const PARTITION_MEMORY_BYTES_ESTIMATE: u64 = 64 * 1024;

/// The partition cap derived from RLIMIT_NOFILE and memory (half of physical memory at
/// [`PARTITION_MEMORY_BYTES_ESTIMATE`] each), at least 1000.
pub fn derive_partitions_max(open_files_max: u64, memory_bytes: u64) -> usize {
    let by_files = open_files_max.saturating_mul(PARTITIONS_PER_OPEN_FILE_DERIVED);
    let by_memory = memory_bytes / 2 / PARTITION_MEMORY_BYTES_ESTIMATE;
    usize::try_from(by_files.min(by_memory).max(1000)).unwrap_or(usize::MAX)
}

/// Replaces the settings left at 0 ("derive") by their derived values, and logs them.
fn resolve_derived_limits(config: &mut BrokerConfig, shards: usize, open_files_max: u64) {
    if config.open_segment_files_per_shard_max == 0 {
        let share = open_files_max / 4 / shards.max(1) as u64;
        config.open_segment_files_per_shard_max =
            usize::try_from(share).unwrap_or(usize::MAX).clamp(
                OPEN_SEGMENT_FILES_PER_SHARD_DERIVED_MIN,
                OPEN_SEGMENT_FILES_PER_SHARD_DERIVED_MAX,
            );
    }
    if config.max_partitions_per_broker == 0 {
        let memory = crate::os::physical_memory_bytes();
        let memory = if memory == 0 { u64::MAX } else { memory };
        config.max_partitions_per_broker = derive_partitions_max(open_files_max, memory);
    }
    tracing::info!(
        open_files_max,
        max_partitions_per_broker = config.max_partitions_per_broker,
        open_segment_files_per_shard_max = config.open_segment_files_per_shard_max,
        "partition and open file limits"
    );
}

/// A watchdog for a failed start: if the shards have not stopped within `timeout`, exit
/// with status 1 anyway, so a failed start never hangs.
/// Counts the calls of [`run_broker`] that have returned, so that the watchdog of a failed
/// start never ends the process once that start has returned (and the caller retries it or
/// exits by itself).
static RUNS_RETURNED: AtomicUsize = AtomicUsize::new(0);

fn exit_if_not_stopped_within(timeout: Duration, reason: String) {
    let returned = RUNS_RETURNED.load(Ordering::SeqCst);
    let _ = std::thread::Builder::new()
        .name("freshet-exit-watchdog".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            if RUNS_RETURNED.load(Ordering::SeqCst) != returned {
                return; // the failed start returned in time
            }
            tracing::error!(
                ?timeout,
                "shards did not stop after the failed start; exiting"
            );
            crate::logging::flush();
            let _ = writeln!(std::io::stderr(), "freshet: {reason}");
            std::process::exit(1);
        });
}

fn explain_executor_error(text: &str) -> String {
    if text.contains("kernel") || text.contains("memlock") || text.contains("ENOMEM") {
        format!("{text} (glommio reports this when RLIMIT_MEMLOCK is too small: lower shards, io_memory_bytes or ring_depth)")
    } else {
        text.to_string()
    }
}

fn load_metadata(config: &BrokerConfig) -> Result<ClusterMetadata, StartError> {
    let fresh = || ClusterMetadata {
        cluster_id: if config.cluster_id.is_empty() {
            new_cluster_id()
        } else {
            config.cluster_id.clone()
        },
        ..ClusterMetadata::default()
    };
    let quorum = crate::cluster::QuorumConfig::from_broker_config(config)?;
    let metadata = crate::shard::controller::load_at_startup(config, &quorum, fresh)
        .map_err(StartError::Metadata)?;
    if !config.cluster_id.is_empty() && config.cluster_id != metadata.cluster_id {
        tracing::warn!(configured = %config.cluster_id, stored = %metadata.cluster_id, "cluster_id differs from the data directory's; keeping the stored one");
    }
    Ok(metadata)
}

/// A cluster id shaped like Kafka's, from a new random UUID.
fn new_cluster_id() -> String {
    crate::cluster::cluster_id_of(uuid::Uuid::new_v4().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_partition_cap_is_the_smaller_of_descriptors_and_memory() {
        // 20,000 descriptors x 8 = 160,000; 23 GiB / 2 / 64 KiB = 188,416.
        assert_eq!(derive_partitions_max(20_000, 23 << 30), 160_000);
        // 1 GiB: 8,192 by memory.
        assert_eq!(derive_partitions_max(1 << 20, 1 << 30), 8_192);
        // Never below 1000.
        assert_eq!(derive_partitions_max(16, 1 << 20), 1000);
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert_ne!(id, new_cluster_id());
    }
}
