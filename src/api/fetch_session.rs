//! Fetch sessions (KIP-227) on the Fetch path: what `api::fetch` asks of the session caches of
//! `shard::fetch_sessions`, as Kafka's `FetchManager.newContext` and `FetchContext`s.
//!
//! - Fetch below v7, or session epoch -1 (FINAL): sessionless (a session id names one to close).
//! - Epoch 0 (INITIAL): a full fetch; a session id names one to close; the answer may create a
//!   session on this connection's shard (its id in the answer's `session_id`).
//! - Any other epoch: an incremental fetch of session `session_id` on the shard that holds it:
//!   FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH or FETCH_SESSION_TOPIC_ID_ERROR
//!   (a session made with topic ids, v13+, used below v13 or the reverse) answer it with no
//!   partitions; else the request's partitions update the session, `forgotten_topics_data`
//!   leave it, every partition of the session is read, and the answer carries only those
//!   with something new (`FetchSessionCache::finish_incremental`).
//!
//! Cost: a session's partitions cross to its shard and back once per fetch (a clone of its
//! parameters, ~60 bytes a partition), or not at all when the connection is on that shard.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request;
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::fetch::FetchTopic;
use crate::shard::fetch_sessions::{
    self, Answered, FetchParams, PartitionKey, SessionError, SessionTopic, FINAL_EPOCH,
    INITIAL_EPOCH, INVALID_SESSION_ID,
};
use crate::shard::Shard;

/// What a Fetch request is, session-wise.
pub enum Context {
    /// No session: the answer names none.
    Sessionless,
    /// A full fetch that may create a session: the request's partitions in answer order.
    Full(Vec<(PartitionKey, FetchParams)>),
    /// An incremental fetch of session `id`, its partitions now in the request body; `epoch`
    /// is the session's epoch after it.
    Incremental {
        id: i32,
        epoch: i32,
        keys: Vec<PartitionKey>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A request topic's key in a session of this version.
fn session_topic(version: i16, name: &TopicName, id: uuid::Uuid) -> SessionTopic {
    if version >= 13 {
        SessionTopic::Id(id)
    } else {
        // A copy: the request's bytes are not kept alive by the cache.
        SessionTopic::Name(StrBytes::from_string(name.0.to_string()))
    }
}

fn params(p: &fetch_request::FetchPartition) -> FetchParams {
    FetchParams {
        fetch_offset: p.fetch_offset,
        partition_max_bytes: p.partition_max_bytes,
        current_leader_epoch: p.current_leader_epoch,
        last_fetched_epoch: p.last_fetched_epoch,
        log_start_offset: p.log_start_offset,
    }
}

/// The request's partitions with their keys, in request (= answer) order.
fn request_partitions(version: i16, body: &FetchRequest) -> Vec<(PartitionKey, FetchParams)> {
    let mut out = Vec::new();
    for topic in &body.topics {
        let key = session_topic(version, &topic.topic, topic.topic_id);
        for p in &topic.partitions {
            out.push(((key.clone(), p.partition), params(p)));
        }
    }
    out
}

/// Sorts the request out (Kafka's `FetchManager.newContext`); an incremental fetch's body is
/// replaced by its session's partitions. `Err`: the session error that answers it.
pub async fn open(
    shard: &Rc<Shard>,
    version: i16,
    body: &mut FetchRequest,
) -> Result<Context, ResponseError> {
    let (id, epoch) = if version >= 7 {
        (body.session_id, body.session_epoch)
    } else {
        (INVALID_SESSION_ID, FINAL_EPOCH)
    };
    if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
        if id != INVALID_SESSION_ID {
            // Any session a full fetch names is closed.
            let owner = fetch_sessions::owner(id, shard.shard_count());
            let _ = shard
                .invoke_on(owner, move |s| async move {
                    s.fetch_sessions.borrow_mut().remove(id)
                })
                .await;
        }
        return Ok(if epoch == FINAL_EPOCH {
            Context::Sessionless
        } else {
            Context::Full(request_partitions(version, body))
        });
    }
    let changed = request_partitions(version, body);
    let forgotten: Vec<PartitionKey> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let key = session_topic(version, &t.topic, t.topic_id);
            t.partitions.iter().map(move |p| (key.clone(), *p))
        })
        .collect();
    let owner = fetch_sessions::owner(id, shard.shard_count());
    let began = shard
        .invoke_on(owner, move |s| async move {
            s.fetch_sessions.borrow_mut().begin_incremental(
                id,
                epoch,
                version >= 13,
                changed,
                &forgotten,
                now_ms(),
            )
        })
        .await
        .map_err(|e| crate::error::shard_gone_code(&e))?;
    match began {
        Ok(snapshot) => {
            body.topics = request_topics(&snapshot.partitions);
            let keys = snapshot.partitions.into_iter().map(|(k, _)| k).collect();
            Ok(Context::Incremental {
                id,
                epoch: snapshot.epoch,
                keys,
            })
        }
        // The request's own partitions, answered without a session (Kafka's
        // SessionlessFetchContext of the request's data).
        Err(SessionError::Emptied) => Ok(Context::Sessionless),
        Err(e) => Err(crate::error::fetch_session_code(e)),
    }
}

/// A session's partitions as request topics (consecutive partitions of a topic together).
fn request_topics(partitions: &[(PartitionKey, FetchParams)]) -> Vec<fetch_request::FetchTopic> {
    let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
    let mut last: Option<&SessionTopic> = None;
    for ((topic, partition), p) in partitions {
        if last != Some(topic) {
            let mut t = fetch_request::FetchTopic::default();
            match topic {
                SessionTopic::Id(id) => t.topic_id = *id,
                SessionTopic::Name(name) => t.topic = TopicName(name.clone()),
            }
            topics.push(t);
            last = Some(topic);
        }
        let fp = fetch_request::FetchPartition::default()
            .with_partition(*partition)
            .with_fetch_offset(p.fetch_offset)
            .with_partition_max_bytes(p.partition_max_bytes)
            .with_current_leader_epoch(p.current_leader_epoch)
            .with_last_fetched_epoch(p.last_fetched_epoch)
            .with_log_start_offset(p.log_start_offset);
        if let Some(t) = topics.last_mut() {
            t.partitions.push(fp);
        }
    }
    topics
}

/// What each answered partition carried, in answer order.
fn answered(topics: &[FetchTopic]) -> impl Iterator<Item = Answered> + '_ {
    topics.iter().flat_map(|t| {
        t.partitions.iter().map(|p| Answered {
            has_records: p.records.iter().any(|r| !r.is_empty()),
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            error: p.error_code != 0,
            diverging: p.diverging_epoch.is_some(),
        })
    })
}

/// A full fetch's session, created on this shard from its answer (Kafka's
/// `FullFetchContext`): its id, or 0 when none fits. A follower's session is privileged.
pub fn create(
    shard: &Shard,
    partitions: Vec<(PartitionKey, FetchParams)>,
    version: i16,
    follower: bool,
    topics: &[FetchTopic],
) -> i32 {
    let parts = partitions
        .into_iter()
        .zip(answered(topics))
        .map(|((key, params), answered)| (key, params, answered))
        .collect();
    shard
        .fetch_sessions
        .borrow_mut()
        .create(now_ms(), follower, version >= 13, parts)
}

/// Closes session `id` of this shard (a full fetch's, when its answer was throttled).
pub fn close_local(shard: &Shard, id: i32) {
    shard.fetch_sessions.borrow_mut().remove(id);
}

/// An incremental fetch's partitions (`keys`, in answer order) with what the answer `topics`
/// carried for each.
pub fn answers(keys: Vec<PartitionKey>, topics: &[FetchTopic]) -> Vec<(PartitionKey, Answered)> {
    keys.into_iter().zip(answered(topics)).collect()
}

/// An incremental fetch's answer: drops the partitions with nothing new from `topics` (and the
/// topics left empty; `pairs` from [`answers`] of the unfiltered `topics`); with `update`, the
/// session remembers what was sent. `Err`: another fetch of the session came in meanwhile
/// (INVALID_FETCH_SESSION_EPOCH, no partitions).
pub async fn finish(
    shard: &Rc<Shard>,
    id: i32,
    epoch: i32,
    pairs: Vec<(PartitionKey, Answered)>,
    topics: &mut Vec<FetchTopic>,
    update: bool,
) -> Result<(), ResponseError> {
    let owner = fetch_sessions::owner(id, shard.shard_count());
    let kept = shard
        .invoke_on(owner, move |s| async move {
            s.fetch_sessions
                .borrow_mut()
                .finish_incremental(id, epoch, &pairs, update)
        })
        .await
        .map_err(|e| crate::error::shard_gone_code(&e))?
        .map_err(crate::error::fetch_session_code)?;
    let Some(keep) = kept else {
        // Gone meanwhile: everything is sent; the next fetch learns it is gone.
        return Ok(());
    };
    let mut keep = keep.into_iter();
    for topic in topics.iter_mut() {
        topic.partitions.retain(|_| keep.next().unwrap_or(true));
    }
    topics.retain(|t| !t.partitions.is_empty());
    Ok(())
}
