//! Cross-shard message passing: run a closure on the shard that owns the data.
//!
//! Every shard has one bounded inbox (a flume channel of depth `shard_queue_depth`); the
//! [`Router`] holds a sender to each. [`Router::invoke_on`] sends a job (a closure that runs on
//! the target shard and produces a `Send` answer) and awaits its answer over a one-shot
//! channel. A full inbox makes the sender wait: that is the backpressure between shards. The
//! time the job took on the target shard is added to the caller's request (`quota::busy`,
//! the request quota's measure).
//! Jobs for the caller's own shard skip the channel (see `Shard::invoke_on`).
//!
//! Only `Send` values cross: `Bytes`, plain data, `Arc`s. Shard-local state (`Rc`, glommio
//! files) stays on its shard and is reached through the `Rc<Shard>` the job receives.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use super::internal_partitions::LoadedPartitions;
use super::Shard;

/// Index of a shard, 0..shard_count. Not glommio's executor id (GLOMMIO.md pitfall 7).
pub type ShardId = usize;

/// A unit of work sent to a shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Why a cross-shard call did not complete (defined in `crate::error`, with its code).
pub use crate::error::ShardGone;

/// Senders to every shard's inbox. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Router {
    inboxes: Vec<flume::Sender<Job>>,
    /// The `__consumer_offsets` partitions whose groups this node has loaded (a cluster's
    /// group coordinator, `groups::replicated`): written by the coordinator shard, read by
    /// every shard's group requests.
    loaded_offsets: Arc<LoadedPartitions>,
    /// The same for the `__transaction_state` partitions (`txns::replicated`).
    loaded_txns: Arc<LoadedPartitions>,
}

impl Router {
    /// Creates the inboxes for `shards` shards, each `depth` jobs deep; returns the router and
    /// the receiving end for each shard, in shard order.
    pub fn new(shards: usize, depth: usize) -> (Router, Vec<flume::Receiver<Job>>) {
        assert!(shards > 0 && depth > 0);
        let (inboxes, receivers) = (0..shards).map(|_| flume::bounded(depth)).unzip();
        let loaded_offsets = Arc::new(LoadedPartitions::default());
        (
            Router {
                inboxes,
                loaded_offsets,
                loaded_txns: Arc::new(LoadedPartitions::default()),
            },
            receivers,
        )
    }

    /// The `__consumer_offsets` partitions loaded on this node (shared by its shards).
    pub fn loaded_offsets_partitions(&self) -> Arc<LoadedPartitions> {
        self.loaded_offsets.clone()
    }

    /// The `__transaction_state` partitions loaded on this node (shared by its shards).
    pub fn loaded_txn_partitions(&self) -> Arc<LoadedPartitions> {
        self.loaded_txns.clone()
    }

    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Jobs waiting in shard `target`'s inbox (for metrics).
    pub fn inbox_depth(&self, target: ShardId) -> usize {
        self.inboxes[target].len()
    }

    /// Runs `f` on shard `target` and returns its answer.
    pub async fn invoke_on<F, Fut, T>(&self, target: ShardId, f: F) -> Result<T, ShardGone>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (answer_tx, answer_rx) = flume::bounded(1);
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                // Timed, so the caller's request is charged for it (`quota::busy`).
                let answer = crate::quota::busy::timed(f(shard)).await;
                // The caller may have given up (connection closed); nobody to tell then.
                let _ = answer_tx.send(answer);
            })
        });
        self.inboxes[target]
            .send_async(job)
            .await
            .map_err(|_| ShardGone(target))?;
        let (answer, busy) = answer_rx
            .recv_async()
            .await
            .map_err(|_| ShardGone(target))?;
        crate::quota::busy::add(busy);
        Ok(answer)
    }

    /// Sends `f` to shard `target` without waiting for it to run; blocks the calling thread if
    /// the inbox is full. For threads that are not shards (the signal handler thread).
    pub fn send_blocking<F, Fut>(&self, target: ShardId, f: F) -> Result<(), ShardGone>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let job: Job = Box::new(move |shard| Box::pin(f(shard)));
        self.inboxes[target]
            .send(job)
            .map_err(|_| ShardGone(target))
    }
}

/// The shard that owns partition `partition` of `topic`, out of `shards`. Stable for the life
/// of the process: consecutive partitions of a topic land on consecutive shards.
pub fn owner_of(topic: &str, partition: i32, shards: usize) -> ShardId {
    assert!(shards > 0);
    // FNV-1a: deterministic across runs and platforms (std's hasher is seeded per process).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash.wrapping_add(partition as u64) % shards as u64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_over_all_shards() {
        for shards in 1..5 {
            let mut seen = vec![0; shards];
            for p in 0..100 {
                seen[owner_of("orders", p, shards)] += 1;
            }
            assert!(seen
                .iter()
                .all(|&n| n == 100 / shards || n == 100 / shards + 1));
        }
        assert_eq!(owner_of("t", 7, 1), 0);
    }
}
