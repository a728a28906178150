//! The coordinator: cluster-wide state owned by one shard (shard 0).
//!
//! The cluster metadata (topics, partition counts, topic ids, config overrides): [`metadata`]
//! is the state machine (pure), [`store`] keeps it durable, [`topic_config`] knows Kafka's
//! topic configs and [`broker_config`] its dynamic broker configs. Classic consumer groups:
//! [`group`] is their state machine (pure, driven by requests and ticks, returning delayed replies as effects), and [`offsets`] the committed
//! offsets table with its record format; `shard::groups` runs both on shard 0 and keeps the
//! offsets in an internal log. KIP-848 consumer groups: [`consumer_group`] is their state machine
//! (pure, heartbeats answered at once) and [`assignor`] the server-side assignors.
//! Transactions: [`txn`] is the transaction coordinator's state machine (pure); `shard::txns`
//! runs it with its internal log. Share groups (KIP-932): [`share_group`] is their membership
//! state machine and [`share_partition`] the acquire/acknowledge state of one share partition
//! (both pure); `shard::shares` runs them with the share-state log. [`coordinator_key`] says which broker of a cluster
//! coordinates a group or a transactional id (Kafka's internal-topic partition rule).

pub mod assignor;
pub mod broker_config;
pub mod consumer_group;
pub mod coordinator_key;
pub mod group;
pub mod group_config;
pub mod invariants;
pub mod member;
pub mod metadata;
pub mod offsets;
pub mod placement;
pub mod reassignment;
pub mod share_group;
pub mod share_partition;
pub mod store;
pub mod topic_config;
pub mod txn;
