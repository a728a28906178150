//! Authorization of HTTP requests: the ACL checks Kafka would make for the Kafka requests an
//! HTTP request stands for, against the same authorizer and ACLs (`security::authorizer`, the
//! shard's metadata), for the principal [`super::auth`] authenticated.
//!
//! - produce (`POST .../topics/{t}/records`): a producer's Metadata and Produce: DESCRIBE
//!   and WRITE on the topic (the HTTP produce path is neither idempotent nor transactional, so
//!   no IDEMPOTENT_WRITE or transactional id check);
//! - a stream from a position (`.../records/stream`): a consumer's Metadata, ListOffsets and
//!   Fetch: DESCRIBE and READ on the topic; with `?group=G` (its committed offset: OffsetFetch)
//!   also READ on group G, checked first as a consumer joins first;
//! - a share-group stream (`?share_group=G`: ShareGroupHeartbeat, ShareFetch): READ on group G
//!   and DESCRIBE, READ on the topic;
//! - a commit (`POST .../consumer-groups/{G}/offsets`: OffsetCommit): READ on G, then READ on
//!   the topic of the body;
//! - share acknowledgements (`POST .../share-groups/{G}/acknowledgements`: ShareAcknowledge):
//!   READ on G, then READ on every topic the body names.
//!
//! A refusal is 403 with the REST proxy's authorization error code (40301) and the message of
//! Kafka's exception (`TopicAuthorizationException` / `GroupAuthorizationException`). A topic
//! that does not exist is refused like one that does (as Kafka answers
//! TOPIC_AUTHORIZATION_FAILED, not UNKNOWN_TOPIC_OR_PARTITION, to a caller without DESCRIBE),
//! so names do not leak. Pure: [`required`] lists the checks; [`first_refusal`] asks the
//! authorizer.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{Head, Route};
use crate::security::acl::{AclBinding, AclOperation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::{Authorizer, Caller};

/// One check: this operation on this resource.
pub type Need = (AclOperation, ResourceType, String);

/// The checks a request needs, in the order Kafka's client would meet them; empty for a path
/// that names nothing (answered 404/405 by the router).
pub fn required(method: &str, route: &Route<'_>, head: &Head, body: &[u8]) -> Vec<Need> {
    let topic_reads = |topic: &str| {
        vec![
            (
                AclOperation::Describe,
                ResourceType::Topic,
                topic.to_string(),
            ),
            (AclOperation::Read, ResourceType::Topic, topic.to_string()),
        ]
    };
    match (method, route) {
        ("POST", Route::Records { topic, .. }) => vec![
            (
                AclOperation::Describe,
                ResourceType::Topic,
                topic.to_string(),
            ),
            (AclOperation::Write, ResourceType::Topic, topic.to_string()),
        ],
        ("GET", Route::Stream { topic, .. } | Route::TopicStream { topic, .. }) => {
            let group = head.param("share_group").or_else(|| head.param("group"));
            let mut needs: Vec<Need> = group
                .map(|g| (AclOperation::Read, ResourceType::Group, g.to_string()))
                .into_iter()
                .collect();
            needs.extend(topic_reads(topic));
            needs
        }
        ("POST", Route::GroupOffsets { group, .. } | Route::ShareAcks { group, .. }) => {
            let mut needs = vec![(AclOperation::Read, ResourceType::Group, group.to_string())];
            needs.extend(
                topics_in_body(body)
                    .into_iter()
                    .map(|t| (AclOperation::Read, ResourceType::Topic, t)),
            );
            needs
        }
        _ => Vec::new(),
    }
}

/// The topics a commit or acknowledgement body names (`topic_name` at the top, or in each of
/// `acknowledgements`); none when it is not JSON (the handler then answers 400).
fn topics_in_body(body: &[u8]) -> BTreeSet<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return BTreeSet::new();
    };
    let name = |v: &serde_json::Value| v.get("topic_name")?.as_str().map(String::from);
    let mut topics: BTreeSet<String> = name(&value).into_iter().collect();
    if let Some(acks) = value.get("acknowledgements").and_then(|a| a.as_array()) {
        topics.extend(acks.iter().filter_map(name));
    }
    topics
}

/// The first check `caller` fails, as the 403 message Kafka's exception would carry; `None`
/// when every check passes (or the authorizer is off).
pub fn first_refusal(
    authorizer: &Authorizer<'_>,
    acls: &BTreeSet<AclBinding>,
    caller: Caller<'_>,
    needs: &[Need],
) -> Option<String> {
    needs
        .iter()
        .find(|(op, resource_type, name)| {
            !authorizer.authorize(acls, caller, *op, *resource_type, name)
        })
        .map(|(_, resource_type, name)| refusal_message(*resource_type, name))
}

/// Kafka's authorization exception message for a resource.
pub fn refusal_message(resource_type: ResourceType, name: &str) -> String {
    match resource_type {
        ResourceType::Topic => format!("Not authorized to access topics: [{name}]"),
        ResourceType::Group => format!("Not authorized to access group: {name}"),
        ResourceType::Cluster => "Cluster authorization failed.".to_string(),
        ResourceType::TransactionalId => {
            format!("Transactional Id authorization failed: {name}")
        }
        _ => format!("Not authorized to access {name}"),
    }
}

/// The cluster's one name, for the admin listener's DESCRIBE check.
pub fn cluster_need() -> Need {
    (
        AclOperation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME.to_string(),
    )
}

/// Which of `names` (of `resource_type`) `caller` may DESCRIBE: what a listing shows.
pub fn describable<'a>(
    authorizer: &Authorizer<'_>,
    acls: &BTreeSet<AclBinding>,
    caller: Caller<'_>,
    resource_type: ResourceType,
    names: impl Iterator<Item = &'a str>,
) -> BTreeMap<&'a str, bool> {
    names
        .map(|n| {
            let ok = authorizer.authorize(acls, caller, AclOperation::Describe, resource_type, n);
            (n, ok)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::acl::{AclPermission, PatternType};

    fn head(query: &str) -> Head {
        super::super::wire::parse_head(&format!("GET /x?{query} HTTP/1.1\r\nHost: a\r\n")).unwrap()
    }

    fn allow(principal: &str, op: AclOperation, rt: ResourceType, name: &str) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn each_route_needs_what_kafka_checks() {
        let records = Route::Records {
            cluster: "c",
            topic: "t",
        };
        let ops = |needs: Vec<Need>| {
            needs
                .into_iter()
                .map(|(o, r, n)| format!("{o:?} {r:?} {n}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ops(required("POST", &records, &head(""), b"")),
            ["Describe Topic t", "Write Topic t"]
        );
        let stream = Route::Stream {
            cluster: "c",
            topic: "t",
            partition: 0,
        };
        assert_eq!(
            ops(required("GET", &stream, &head("group=g&offset=1"), b"")),
            ["Read Group g", "Describe Topic t", "Read Topic t"]
        );
        let topic_stream = Route::TopicStream {
            cluster: "c",
            topic: "t",
        };
        assert_eq!(
            ops(required("GET", &topic_stream, &head("share_group=s"), b"")),
            ["Read Group s", "Describe Topic t", "Read Topic t"]
        );
        let commit = Route::GroupOffsets {
            cluster: "c",
            group: "g",
        };
        assert_eq!(
            ops(required(
                "POST",
                &commit,
                &head(""),
                br#"{"topic_name":"t","partition_id":0,"offset":3}"#
            )),
            ["Read Group g", "Read Topic t"]
        );
        let acks = Route::ShareAcks {
            cluster: "c",
            group: "s",
        };
        let body = br#"{"member_id":"m","acknowledgements":[{"topic_name":"b","offset":1},{"topic_name":"a","offset":2},{"topic_name":"b","offset":3}]}"#;
        assert_eq!(
            ops(required("POST", &acks, &head(""), body)),
            ["Read Group s", "Read Topic a", "Read Topic b"]
        );
        assert_eq!(
            ops(required("POST", &acks, &head(""), b"not json")),
            ["Read Group s"]
        );
        assert!(required("GET", &Route::Unknown, &head(""), b"").is_empty());
        assert!(required("DELETE", &records, &head(""), b"").is_empty());
    }

    #[test]
    fn the_first_refusal_carries_kafkas_message() {
        let authorizer = Authorizer {
            enabled: true,
            super_users: "User:admin",
            allow_everyone_if_no_acl_found: false,
        };
        let acls: BTreeSet<AclBinding> = [
            allow("User:alice", AclOperation::Write, ResourceType::Topic, "t"),
            allow("User:alice", AclOperation::Read, ResourceType::Topic, "t"),
        ]
        .into_iter()
        .collect();
        let alice = Caller {
            principal: "User:alice",
            host: "127.0.0.1",
        };
        let produce = required(
            "POST",
            &Route::Records {
                cluster: "c",
                topic: "t",
            },
            &head(""),
            b"",
        );
        assert_eq!(first_refusal(&authorizer, &acls, alice, &produce), None);
        let other = required(
            "POST",
            &Route::Records {
                cluster: "c",
                topic: "u",
            },
            &head(""),
            b"",
        );
        assert_eq!(
            first_refusal(&authorizer, &acls, alice, &other).as_deref(),
            Some("Not authorized to access topics: [u]")
        );
        let stream = required(
            "GET",
            &Route::Stream {
                cluster: "c",
                topic: "t",
                partition: 0,
            },
            &head("group=g"),
            b"",
        );
        assert_eq!(
            first_refusal(&authorizer, &acls, alice, &stream).as_deref(),
            Some("Not authorized to access group: g")
        );
        let admin = Caller {
            principal: "User:admin",
            host: "127.0.0.1",
        };
        assert_eq!(first_refusal(&authorizer, &acls, admin, &stream), None);
        assert_eq!(
            first_refusal(&authorizer, &acls, alice, &[cluster_need()]).as_deref(),
            Some("Cluster authorization failed.")
        );
        let seen = describable(
            &authorizer,
            &acls,
            alice,
            ResourceType::Topic,
            ["t", "u"].into_iter(),
        );
        assert_eq!(seen.get("t"), Some(&true));
        assert_eq!(seen.get("u"), Some(&false));
    }
}
