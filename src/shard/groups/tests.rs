//! The group coordinator's runtime against a real offsets log: group metadata and committed
//! offsets survive reloads and compaction; expired offsets are deleted durably.

use std::collections::BTreeMap;

use crate::coordinator::consumer_group::ConsumerGroupConfig;
use crate::coordinator::group::{
    Effect, GroupConfig, GroupState, JoinRequest, Response, SyncRequest,
};
use crate::coordinator::offsets::{CommittedOffset, OffsetKey};
use crate::storage::TailCache;

use super::{offsets_log_dir, GroupCoordinator};

fn run<T: 'static>(fut: impl std::future::Future<Output = T> + 'static) -> T {
    crate::rt::run_on_new_executor(1 << 20, 512, fut).expect("executor")
}

fn key(p: i32) -> OffsetKey {
    OffsetKey {
        group: "g".into(),
        topic: "t".into(),
        partition: p,
    }
}

fn value(offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 1,
    }
}

fn classic_join(member: &str) -> JoinRequest {
    JoinRequest {
        group_id: "classic".into(),
        member_id: member.into(),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), bytes::Bytes::from_static(b"sub"))],
        ..Default::default()
    }
}

/// Group metadata is persisted in the offsets log and rebuilt on load, also after the log
/// is compacted: a stable classic group comes back Stable with its generation, members
/// and assignments; a consumer group with its epochs and assignments; a deleted group
/// stays deleted.
#[test]
fn groups_survive_reload_and_compaction() {
    use crate::coordinator::consumer_group::HeartbeatRequest;
    use crate::coordinator::metadata::{ClusterMetadata, TopicMeta};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    run(async move {
        let cache = TailCache::new(1 << 20);
        let config = || {
            (
                GroupConfig {
                    initial_rebalance_delay_ms: 0,
                    ..GroupConfig::default()
                },
                ConsumerGroupConfig::default(),
            )
        };
        let (gc, cc) = config();
        let c = GroupCoordinator::new(gc, cc);
        c.load(&data_dir, cache.clone()).await.unwrap();
        let now = crate::shard::now_ms();
        // A classic group: one member joins and syncs its assignment.
        let e = c.groups.borrow_mut().join(now, 1, classic_join(""));
        let m1 = match &e[0] {
            Effect::Reply {
                response: Response::Join(j),
                ..
            } if j.generation_id == 1 => j.member_id.clone(),
            other => panic!("{other:?}"),
        };
        let sync = SyncRequest {
            group_id: "classic".into(),
            member_id: m1.clone(),
            generation_id: 1,
            assignments: vec![(m1.clone(), bytes::Bytes::from_static(b"assigned"))],
            ..Default::default()
        };
        c.groups.borrow_mut().sync(now, 2, sync);
        // A group that is deleted before the restart.
        let e = c.groups.borrow_mut().join(now, 3, {
            let mut r = classic_join("");
            r.group_id = "gone".into();
            r
        });
        let x1 = match &e[0] {
            Effect::Reply {
                response: Response::Join(j),
                ..
            } => j.member_id.clone(),
            other => panic!("{other:?}"),
        };
        c.persist_groups().await;
        c.groups.borrow_mut().leave(now, "gone", &[(x1, None)]);
        c.groups.borrow_mut().delete_group("gone").unwrap();
        // A consumer group.
        let mut metadata = ClusterMetadata::default();
        let topic_id = uuid::Uuid::from_bytes([9; 16]);
        metadata.topics.insert(
            "t".into(),
            TopicMeta {
                id: topic_id,
                partitions: 3,
                configs: BTreeMap::new(),
                internal: false,
                assignment: Vec::new(),
            },
        );
        let r = c
            .consumer_heartbeat(
                now,
                1,
                &metadata,
                HeartbeatRequest {
                    group_id: "kip848".into(),
                    member_id: "c1".into(),
                    member_epoch: 0,
                    rebalance_timeout_ms: 30_000,
                    subscribed_topic_names: Some(vec!["t".into()]),
                    owned: Some(Vec::new()),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(r.member_epoch, 1);
        c.persist_groups().await;
        c.close().await;

        for round in 0..2 {
            let (gc, cc) = config();
            let c = GroupCoordinator::new(gc, cc);
            c.load(&data_dir, cache.clone()).await.unwrap();
            {
                let groups = c.groups.borrow();
                let g = groups.group("classic").expect("classic group restored");
                assert_eq!(g.state, GroupState::Stable);
                assert_eq!(g.generation_id, 1);
                assert_eq!(g.leader.as_deref(), Some(m1.as_str()));
                assert_eq!(&g.members[&m1].assignment[..], b"assigned");
                assert!(groups.group("gone").is_none(), "round {round}");
                let consumer = c.consumer.borrow();
                let k = consumer.group("kip848").expect("consumer group restored");
                assert_eq!((k.group_epoch, k.assignment_epoch), (1, 1));
                assert_eq!(k.members["c1"].member_epoch, 1);
                assert_eq!(k.members["c1"].assigned[&topic_id], [0, 1, 2].into());
            }
            // The restored member goes on heartbeating with its epoch.
            assert_eq!(
                c.groups
                    .borrow_mut()
                    .heartbeat(crate::shard::now_ms(), "classic", &m1, None, 1),
                None
            );
            if round == 0 {
                let log = c.local_log();
                log.compact(|| c.snapshot_records()).await.unwrap();
            }
            c.close().await;
        }
    });
}

/// Expired offsets are deleted durably: a simple consumer's by commit time, an Empty
/// classic group's once it has been empty for the retention; a live group keeps its own.
#[test]
fn expired_offsets_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    run(async move {
        let cache = TailCache::new(1 << 20);
        let config = GroupConfig {
            initial_rebalance_delay_ms: 0,
            offsets_retention_ms: 1_000,
            offsets_retention_check_interval_ms: 0,
            ..GroupConfig::default()
        };
        let c = GroupCoordinator::new(config, ConsumerGroupConfig::default());
        c.load(&data_dir, cache.clone()).await.unwrap();
        let at = |group: &str, committed: i64| {
            (
                OffsetKey {
                    group: group.into(),
                    topic: "t".into(),
                    partition: 0,
                },
                Some(CommittedOffset {
                    commit_timestamp_ms: committed,
                    ..value(1)
                }),
            )
        };
        c.write_offsets(vec![at("simple", 0), at("live", 0)], 0)
            .await
            .unwrap();
        // "live" is a classic group with a member (PreparingRebalance, then joined).
        c.groups.borrow_mut().join(0, 1, {
            let mut r = classic_join("");
            r.group_id = "live".into();
            r
        });
        c.maybe_expire_offsets(500).await;
        assert_eq!(c.offsets.borrow().len(), 2, "not expired yet");
        c.maybe_expire_offsets(5_000).await;
        assert!(c.offsets.borrow().get("simple", "t", 0).is_none());
        assert!(c.offsets.borrow().get("live", "t", 0).is_some());
        c.close().await;
        let c = GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
        c.load(&data_dir, cache).await.unwrap();
        assert!(
            c.offsets.borrow().get("simple", "t", 0).is_none(),
            "durably"
        );
        c.close().await;
    });
}

/// Committed offsets come back after a reload; a log of mostly superseded records is
/// compacted at load to just the live offsets, and loads back to the same table.
#[test]
fn offsets_survive_reload_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    run(async move {
        let cache = TailCache::new(1 << 20);
        let c = GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
        c.load(&data_dir, cache.clone()).await.unwrap();
        for round in 0..120 {
            let changes = (0..100).map(|p| (key(p), Some(value(round)))).collect();
            c.write_offsets(changes, crate::shard::now_ms())
                .await
                .unwrap();
        }
        c.write_offsets(vec![(key(99), None)], crate::shard::now_ms())
            .await
            .unwrap();
        // While running, the tick loop's compaction shrinks the log to the live offsets.
        c.maybe_compact().await.unwrap();
        assert_eq!(c.local_log().records(), 99);
        c.write_offsets(vec![(key(0), Some(value(119)))], crate::shard::now_ms())
            .await
            .unwrap();
        c.close().await;

        for _ in 0..2 {
            let c = GroupCoordinator::new(GroupConfig::default(), ConsumerGroupConfig::default());
            c.load(&data_dir, cache.clone()).await.unwrap();
            {
                let table = c.offsets.borrow();
                assert_eq!(table.len(), 99);
                assert_eq!(table.get("g", "t", 0), Some(&value(119)));
                assert_eq!(table.get("g", "t", 99), None);
            }
            c.close().await;
        }
        let log = crate::storage::PartitionLog::open(
            &offsets_log_dir(&data_dir),
            crate::storage::LogConfig::default(),
            cache,
        )
        .await
        .unwrap();
        assert_eq!(log.high_watermark() - log.log_start_offset(), 100);
        log.close().await.unwrap();
    });
}
