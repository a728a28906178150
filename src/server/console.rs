//! The web console on the admin listener: one static page at `/` ([`PAGE`], embedded in the
//! binary, plain HTML and a little JavaScript, no build step) and the small JSON endpoints it
//! reads:
//!
//! - `/api/cluster`: the cluster id, this broker's node id and shard count, the registered
//!   brokers, and where the HTTP push listener is (`http_listen`, or null when it is off);
//! - `/api/topics`: topics (sorted by name) and their partitions: leader, replicas, ISR, and for
//!   the replicas this broker holds, the log size and the log start and end (high watermark)
//!   offsets. At most [`CONSOLE_TOPICS_MAX`] topics and [`CONSOLE_PARTITIONS_MAX`] partitions
//!   are listed; `truncated` says when more exist (`topics_total` counts them all); a topic's
//!   size is that of its listed partitions held here;
//! - `/api/groups`: the groups this broker coordinates (consumer groups, classic and KIP-848,
//!   and share groups once the broker lists them: ListGroups' type `"share"`), each with its
//!   state, member count, committed offsets and lag (high watermark − committed offset, where
//!   this broker holds the partition). At most [`CONSOLE_GROUPS_MAX`] groups and
//!   [`CONSOLE_GROUP_OFFSETS_MAX`] committed offsets in all; `truncated` says when more exist.
//!
//! The data is read on each shard through the router (`Shard::invoke_on_all`, as a metrics
//! scrape does), within [`super::admin::SCRAPE_TIMEOUT`] (503 when a shard does not answer).
//! Access: without `admin_authentication_method` the same rule as `/metrics`: no
//! authentication, served whether or not the authorizer is on (it listens on loopback by
//! default, and what it shows, names and offsets, is what `/metrics` already exports). With it,
//! the admin listener authenticates the request (`super::admin`) and, while the authorizer is
//! on, requires DESCRIBE on the cluster; the lists then hold only the topics and groups the
//! principal may DESCRIBE (as Kafka's Metadata and ListGroups filter them), and a group's
//! offsets only those of topics it may DESCRIBE (as OffsetFetch). Record contents are never
//! served here. The live tail reads records from the HTTP push listener itself, straight from
//! the browser (EventSource or WebSocket to `http_listen`, allowed by the push listener's
//! `Access-Control-Allow-Origin: *`), so it is subject to that listener's rules (403 while the
//! authorizer is on without HTTP authentication; with it, 401: the browser's stream sends no
//! credentials). It is not proxied through the admin listener, whose few connections
//! ([`super::admin::ADMIN_CONNECTIONS_MAX`]) and write timeout are made for short requests.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::security::acl::{AclBinding, AclOperation, ResourceType};
use crate::security::authorizer::{Authorizer, Caller};
use crate::shard::{Shard, COORDINATOR_SHARD};

/// The console page, served at `/`.
pub const PAGE: &str = include_str!("console.html");
/// Topics listed by `/api/topics` at most.
pub const CONSOLE_TOPICS_MAX: usize = 200;
/// Partitions listed by `/api/topics` at most (over all listed topics).
pub const CONSOLE_PARTITIONS_MAX: usize = 2000;
/// Groups listed by `/api/groups` at most.
pub const CONSOLE_GROUPS_MAX: usize = 200;
/// Committed offsets listed by `/api/groups` at most (over all listed groups).
pub const CONSOLE_GROUP_OFFSETS_MAX: usize = 2000;

/// A console answer: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// Who asks, when the admin listener authenticates: the principal and the client's IP.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Rc<str>,
    pub host: String,
}

/// The broker's authorizer settings.
pub fn authorizer(shard: &Shard) -> Authorizer<'_> {
    Authorizer {
        enabled: shard.config.authorizer,
        super_users: &shard.config.super_users,
        allow_everyone_if_no_acl_found: shard.config.allow_everyone_if_no_acl_found,
    }
}

/// May `viewer` see the resource in a list (DESCRIBE)? Everyone may without a viewer (no
/// authentication) or without the authorizer.
fn visible(
    shard: &Shard,
    acls: &BTreeSet<AclBinding>,
    viewer: Option<&Viewer>,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    let Some(viewer) = viewer else {
        return true;
    };
    let caller = Caller {
        principal: &viewer.principal,
        host: &viewer.host,
    };
    authorizer(shard).authorize(acls, caller, AclOperation::Describe, resource_type, name)
}

/// Whether `path` is one of the console's.
pub fn handles(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/api/cluster" | "/api/topics" | "/api/groups"
    )
}

/// Answers a console path (one [`handles`] accepts).
pub async fn answer(shard: &Rc<Shard>, path: &str, viewer: Option<&Viewer>) -> Answer {
    let json = |v: Option<Value>| match v {
        Some(v) => (200, "application/json", v.to_string()),
        None => (
            503,
            "application/json",
            json!({ "error": "a shard did not answer in time" }).to_string(),
        ),
    };
    match path {
        "/api/cluster" => json(Some(cluster(shard))),
        "/api/topics" => json(topics(shard, viewer).await),
        "/api/groups" => json(groups(shard, viewer).await),
        _ => (200, "text/html; charset=utf-8", PAGE.to_string()),
    }
}

/// `/api/cluster`.
fn cluster(shard: &Rc<Shard>) -> Value {
    let metadata = shard.metadata();
    let brokers: Vec<Value> = metadata
        .brokers
        .values()
        .map(|b| {
            json!({
                "node_id": b.node_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "fenced": b.fenced,
            })
        })
        .collect();
    let brokers = if brokers.is_empty() {
        // A single node outside a quorum registers nowhere: it is the whole cluster.
        let (host, port) = shard
            .config
            .advertised_host_port()
            .unwrap_or_else(|_| (String::new(), 0));
        vec![json!({
            "node_id": shard.config.node_id, "host": host, "port": port,
            "rack": null, "fenced": false,
        })]
    } else {
        brokers
    };
    let http = shard
        .config
        .http_addr()
        .ok()
        .flatten()
        .map(|a| json!({ "host": a.ip().to_string(), "port": a.port() }));
    json!({
        "cluster_id": metadata.cluster_id,
        "node_id": shard.config.node_id,
        "shards": shard.shard_count(),
        "metadata_version": metadata.version,
        "brokers": brokers,
        "http_listen": http,
        "authorizer": shard.config.authorizer,
    })
}

/// What a shard knows of one of its partitions: size, log start, high watermark.
type LogState = (u64, i64, i64);

/// The log state of the `wanted` partitions (at most a listing's cap) that this broker holds,
/// from every shard; `None` if a shard did not answer within the scrape timeout.
async fn log_states(
    shard: &Rc<Shard>,
    wanted: BTreeSet<(String, i32)>,
) -> Option<BTreeMap<(String, i32), LogState>> {
    let wanted = Arc::new(wanted);
    let gather = async {
        let answers = shard
            .invoke_on_all(move |s| async move {
                s.partitions()
                    .iter()
                    .filter(|p| wanted.contains(&(p.topic.clone(), p.index)))
                    .map(|p| {
                        let state = (
                            p.log.size_bytes(),
                            p.log.log_start_offset(),
                            p.log.high_watermark(),
                        );
                        ((p.topic.clone(), p.index), state)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let mut out = BTreeMap::new();
        for answer in answers {
            out.extend(answer.ok()?);
        }
        Some(out)
    };
    let timeout = async {
        crate::rt::sleep(super::admin::SCRAPE_TIMEOUT).await;
        None
    };
    futures_lite::future::or(gather, timeout).await
}

/// `/api/topics`.
async fn topics(shard: &Rc<Shard>, viewer: Option<&Viewer>) -> Option<Value> {
    let metadata = shard.metadata();
    let mut listed = Vec::new();
    let mut partitions_left = CONSOLE_PARTITIONS_MAX;
    let mut truncated = false;
    let shown_topics = metadata
        .topics
        .iter()
        .filter(|(name, _)| visible(shard, &metadata.acls, viewer, ResourceType::Topic, name));
    let mut topics_total = 0;
    for (name, meta) in shown_topics {
        topics_total += 1;
        if truncated {
            continue;
        }
        if listed.len() == CONSOLE_TOPICS_MAX || partitions_left == 0 {
            truncated = true;
            continue;
        }
        let count = usize::try_from(meta.partitions).unwrap_or(0);
        let shown = count.min(partitions_left);
        truncated |= shown < count;
        partitions_left -= shown;
        listed.push((name.clone(), meta, shown));
    }
    let wanted = listed
        .iter()
        .flat_map(|(name, _, shown)| (0..*shown as i32).map(|p| (name.clone(), p)))
        .collect();
    let logs = log_states(shard, wanted).await?;
    let topics: Vec<Value> = listed
        .iter()
        .map(|(name, meta, shown)| {
            let partitions: Vec<Value> = (0..*shown as i32)
                .map(|p| {
                    let a = meta.assignment.get(p as usize);
                    let single = vec![shard.config.node_id];
                    let log = logs.get(&(name.clone(), p));
                    json!({
                        "partition": p,
                        "leader": a.map_or(shard.config.node_id, |a| a.leader),
                        "leader_epoch": a.map_or(0, |a| a.leader_epoch),
                        "replicas": a.map_or(&single, |a| &a.replicas),
                        "isr": a.map_or(&single, |a| &a.isr),
                        "size_bytes": log.map(|l| l.0),
                        "log_start_offset": log.map(|l| l.1),
                        "high_watermark": log.map(|l| l.2),
                    })
                })
                .collect();
            json!({
                "name": name,
                "id": meta.id.to_string(),
                "internal": meta.internal,
                "partition_count": meta.partitions,
                "size_bytes": logs.iter().filter(|((t, _), _)| t == name).map(|(_, l)| l.0).sum::<u64>(),
                "partitions": partitions,
            })
        })
        .collect();
    Some(json!({
        "topics": topics,
        "topics_total": topics_total,
        "truncated": truncated,
        "topics_max": CONSOLE_TOPICS_MAX,
        "partitions_max": CONSOLE_PARTITIONS_MAX,
    }))
}

/// One group as the coordinator shard reports it.
struct GroupRow {
    group_id: String,
    group_type: &'static str,
    protocol_type: String,
    state: &'static str,
    members: usize,
    offsets: Vec<((String, i32), i64)>,
}

/// The groups on the coordinator shard (bounded as the module docs say) and whether more exist.
async fn group_rows(shard: &Rc<Shard>) -> Option<(Vec<GroupRow>, bool)> {
    let read = shard.invoke_on(COORDINATOR_SHARD, |c| async move {
        let listed = c.groups.list();
        let mut truncated = listed.len() > CONSOLE_GROUPS_MAX;
        let mut offsets_left = CONSOLE_GROUP_OFFSETS_MAX;
        let mut rows = Vec::new();
        for g in listed.into_iter().take(CONSOLE_GROUPS_MAX) {
            let members = match g.group_type {
                "consumer" => c
                    .groups
                    .consumer
                    .borrow()
                    .group(&g.group_id)
                    .map_or(0, |g| g.members.len()),
                _ => c
                    .groups
                    .groups
                    .borrow()
                    .group(&g.group_id)
                    .map_or(0, |g| g.members.len()),
            };
            let mut offsets: Vec<((String, i32), i64)> = c
                .groups
                .offsets
                .borrow()
                .of_group(&g.group_id)
                .into_iter()
                .map(|(k, v)| (k, v.offset))
                .collect();
            truncated |= offsets.len() > offsets_left;
            offsets.truncate(offsets_left);
            offsets_left -= offsets.len();
            rows.push(GroupRow {
                group_id: g.group_id,
                group_type: g.group_type,
                protocol_type: g.protocol_type,
                state: g.state,
                members,
                offsets,
            });
        }
        (rows, truncated)
    });
    let timeout = async {
        crate::rt::sleep(super::admin::SCRAPE_TIMEOUT).await;
        None
    };
    futures_lite::future::or(async { read.await.ok() }, timeout).await
}

/// `/api/groups`.
async fn groups(shard: &Rc<Shard>, viewer: Option<&Viewer>) -> Option<Value> {
    let (mut rows, truncated) = group_rows(shard).await?;
    if viewer.is_some() {
        let metadata = shard.metadata();
        let acls = &metadata.acls;
        rows.retain(|g| visible(shard, acls, viewer, ResourceType::Group, &g.group_id));
        for g in &mut rows {
            g.offsets
                .retain(|((t, _), _)| visible(shard, acls, viewer, ResourceType::Topic, t));
        }
    }
    let wanted = rows
        .iter()
        .flat_map(|g| g.offsets.iter().map(|(tp, _)| tp.clone()))
        .collect();
    let logs = log_states(shard, wanted).await?;
    let render = |g: &GroupRow| {
        let mut lag_total: Option<i64> = None;
        let partitions: Vec<Value> = g
            .offsets
            .iter()
            .map(|((topic, p), committed)| {
                let end = logs.get(&(topic.clone(), *p)).map(|l| l.2);
                let lag = end.map(|e| (e - committed).max(0));
                if let Some(l) = lag {
                    lag_total = Some(lag_total.unwrap_or(0) + l);
                }
                json!({
                    "topic": topic, "partition": p, "committed_offset": committed,
                    "high_watermark": end, "lag": lag,
                })
            })
            .collect();
        json!({
            "group_id": g.group_id,
            "type": g.group_type,
            "protocol_type": g.protocol_type,
            "state": g.state,
            "members": g.members,
            "lag": lag_total,
            "partitions": partitions,
        })
    };
    let (share, consumer): (Vec<&GroupRow>, Vec<&GroupRow>) =
        rows.iter().partition(|g| g.group_type == "share");
    Some(json!({
        "groups": consumer.into_iter().map(render).collect::<Vec<_>>(),
        "share_groups": share.into_iter().map(render).collect::<Vec<_>>(),
        "truncated": truncated,
        "groups_max": CONSOLE_GROUPS_MAX,
        "offsets_max": CONSOLE_GROUP_OFFSETS_MAX,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_whole_and_names_its_endpoints() {
        assert!(PAGE.starts_with("<!doctype html>"));
        assert!(PAGE.trim_end().ends_with("</html>"));
        for path in ["/api/cluster", "/api/topics", "/api/groups"] {
            assert!(handles(path));
            assert!(PAGE.contains(path), "the page does not read {path}");
        }
        assert!(handles("/"));
        assert!(!handles("/api/other"));
        assert!(!handles("/metrics"));
    }
}
