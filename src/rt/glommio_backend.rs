//! The glommio backend of the runtime seam: the only file of `rt` that names glommio.
//!
//! Everything here runs on a real glommio executor (io_uring rings, a reactor, memlock): the
//! executor pool start, task spawning and task queues, timers, yields, the blocking thread
//! pool, and the TCP types. [`super`] picks this backend on every thread that is not running
//! a simulation ([`super::sim`]).

use std::future::Future;
use std::time::Duration;

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::sync::{
    Permit, RwLock, RwLockReadGuard, RwLockWriteGuard, Semaphore, StaticPermit,
};
pub use glommio::task::JoinHandle;
pub use glommio::timer::Timer;
pub use glommio::{GlommioError, Task, TaskQueueHandle};

/// glommio's error type, as its socket and task-queue calls return it.
pub type Error = GlommioError<()>;

pub fn spawn_local<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

pub fn spawn_local_into<T: 'static>(
    future: impl Future<Output = T> + 'static,
    queue: TaskQueueHandle,
) -> Result<Task<T>, Error> {
    glommio::spawn_local_into(future, queue)
}

/// A background task queue with `shares` CPU shares (glommio's default queue has 1000) whose
/// tasks are not latency-sensitive.
pub fn create_task_queue(shares: usize, name: &str) -> TaskQueueHandle {
    glommio::executor().create_task_queue(
        glommio::Shares::Static(shares),
        glommio::Latency::NotImportant,
        name,
    )
}

pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

pub async fn yield_now() {
    glommio::executor().yield_now().await
}

pub fn spawn_blocking<F, R>(f: F) -> impl Future<Output = R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f)
}

/// Connects to `addr`, giving up after `timeout` (io_uring's linked timeout; a zero timeout is
/// raised to 1 ms, since glommio refuses zero).
pub async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    TcpStream::connect_timeout(addr, timeout.max(Duration::from_millis(1))).await
}

/// Whether glommio's error is EMFILE or ENFILE (the process or the system is out of file
/// descriptors): the accept loop backs off on it, and the segment file pool closes idle files
/// and retries the open.
pub fn is_out_of_descriptors(e: &Error) -> bool {
    let source = match e {
        GlommioError::IoError(source) => source,
        GlommioError::EnhancedIoError { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// Settings of an executor pool: one pinned executor (thread) per shard.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Thread name prefix.
    pub name: String,
    pub executors: usize,
    /// CPUs to place the executors on; empty: any online CPU.
    pub cpus: Vec<usize>,
    /// io_uring buffer memory per executor, in bytes (counted against RLIMIT_MEMLOCK).
    pub io_memory_bytes: usize,
    pub ring_depth: usize,
    pub spin_before_park: Duration,
    /// Threads of each executor's pool for [`super::spawn_blocking`].
    pub blocking_threads_per_executor: usize,
}

/// Why an executor pool did not start.
#[derive(Debug)]
pub enum PoolStartError {
    /// The CPU topology could not be read (only asked when `cpus` is not empty).
    CpuTopology(String),
    /// None of the requested CPUs is online.
    NoOnlineCpu,
    /// glommio refused to start the executors (its text).
    Executor(String),
}

/// A started pool: [`Pool::join_all`] waits for every executor's future.
pub struct Pool<T>(glommio::PoolThreadHandles<T>);

impl<T> Pool<T> {
    /// Each executor's output in executor order, or the text of glommio's failure.
    pub fn join_all(self) -> Vec<Result<T, String>> {
        self.0
            .join_all()
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }
}

/// Starts one executor per `settings.executors`, each running the future `make()` returns.
/// Executors are spread over distinct CPUs when there are enough of them, unpinned otherwise.
pub fn start_pool<G, F, T>(settings: &PoolSettings, make: G) -> Result<Pool<T>, PoolStartError>
where
    G: FnOnce() -> F + Clone + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};
    let cpus = if settings.cpus.is_empty() {
        None
    } else {
        let set = CpuSet::online()
            .map_err(|e| PoolStartError::CpuTopology(e.to_string()))?
            .filter(|l| settings.cpus.contains(&l.cpu));
        if set.is_empty() {
            return Err(PoolStartError::NoOnlineCpu);
        }
        Some(set)
    };
    let available = cpus.as_ref().map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |c| c.len(),
    );
    let placement = if settings.executors <= available {
        PoolPlacement::MaxSpread(settings.executors, cpus)
    } else {
        PoolPlacement::Unbound(settings.executors)
    };
    LocalExecutorPoolBuilder::new(placement)
        .name(&settings.name)
        .io_memory(settings.io_memory_bytes)
        .ring_depth(settings.ring_depth)
        .spin_before_park(settings.spin_before_park)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(
            settings.blocking_threads_per_executor,
        ))
        .on_all_shards(make)
        .map(Pool)
        .map_err(|e| PoolStartError::Executor(e.to_string()))
}

/// Runs `future` to completion on a new executor on this thread, with small io_uring rings
/// (`io_memory_bytes` of buffers, `ring_depth` entries): for one-off tools such as the disk
/// probe, and for tests of code that needs a real reactor.
pub fn run_on_new_executor<T>(
    io_memory_bytes: usize,
    ring_depth: usize,
    future: impl Future<Output = T>,
) -> Result<T, String> {
    let ex = glommio::LocalExecutorBuilder::default()
        .io_memory(io_memory_bytes)
        .ring_depth(ring_depth)
        .make()
        .map_err(|e| e.to_string())?;
    Ok(ex.run(future))
}

/// Runs the future `make` builds on a new executor (as [`run_on_new_executor`]) on a scoped
/// thread named `freshet-{name}`, and waits for it: for the loads that run before the shards
/// start, or while a node is stopped, off the caller's thread (which may already have an
/// executor).
pub fn run_on_own_thread<T, F>(
    name: &str,
    io_memory_bytes: usize,
    ring_depth: usize,
    make: impl FnOnce() -> F + Send,
) -> std::io::Result<T>
where
    T: Send,
    F: Future<Output = std::io::Result<T>>,
{
    let run = || {
        run_on_new_executor(io_memory_bytes, ring_depth, make())
            .map_err(|e| std::io::Error::other(format!("{name} executor: {e}")))?
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("freshet-{name}"))
            .spawn_scoped(scope, run)?
            .join()
            .map_err(|_| std::io::Error::other(format!("the {name} thread panicked")))?
    })
}

/// Locked memory glommio needs for `shards` executors: three rings each, each with its
/// io_memory and ring entries (an estimate matching GLOMMIO.md's measurements).
pub fn memlock_needed(io_memory_bytes: usize, ring_depth: usize, shards: usize) -> u64 {
    let ring_bytes = (ring_depth as u64) * 64 * 2;
    shards as u64 * 3 * (io_memory_bytes as u64 + ring_bytes)
}
