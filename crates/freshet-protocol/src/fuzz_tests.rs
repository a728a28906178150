//! Hostile-input tests for [`super::codec::decode_body`]: every served request type, at every
//! version, decodes its own encoding, and survives random and mutated bytes without a panic, an
//! abort or a large allocation. Where a mutated body still decodes, the pre-scan and the crate
//! must have read exactly the same bytes (the schema is in step with the decoder).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use proptest::prelude::*;

use super::codec::decode_body;
use super::schema::{prescan, request_schema};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn flexible(key: i16, version: i16) -> bool {
    version >= request_schema(key).expect("schema").tagged_from
}

fn seed_produce(v: i16) -> ProduceRequest {
    let batch = Bytes::from_static(b"not really a record batch, but bytes all the same");
    let part = |i| {
        produce_request::PartitionProduceData::default()
            .with_index(i)
            .with_records(Some(batch.clone()))
    };
    let mut topic =
        produce_request::TopicProduceData::default().with_partition_data(vec![part(0), part(1)]);
    if v <= 12 {
        topic = topic.with_name(TopicName(s("orders")));
    } else {
        topic = topic.with_topic_id(uuid::Uuid::from_u128(7));
    }
    ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s("tx"))))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic.clone(), topic])
}

fn seed_fetch(v: i16) -> FetchRequest {
    let part = |i| {
        fetch_request::FetchPartition::default()
            .with_partition(i)
            .with_fetch_offset(42)
            .with_partition_max_bytes(1 << 20)
    };
    let mut topic = fetch_request::FetchTopic::default().with_partitions(vec![part(0), part(3)]);
    let mut forgotten = fetch_request::ForgottenTopic::default().with_partitions(vec![1, 2, 3]);
    if v >= 13 {
        topic = topic.with_topic_id(uuid::Uuid::from_u128(9));
        forgotten = forgotten.with_topic_id(uuid::Uuid::from_u128(9));
    } else {
        topic = topic.with_topic(TopicName(s("orders")));
        forgotten = forgotten.with_topic(TopicName(s("old")));
    }
    let mut req = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 24)
        .with_topics(vec![topic]);
    if v >= 7 {
        req = req
            .with_session_id(3)
            .with_session_epoch(1)
            .with_forgotten_topics_data(vec![forgotten]);
    }
    if v >= 11 {
        req = req.with_rack_id(s("rack-a"));
    }
    if v >= 12 {
        req = req.with_cluster_id(Some(s("cluster")));
    }
    if v >= 15 {
        req = req.with_replica_state(
            fetch_request::ReplicaState::default()
                .with_replica_id(BrokerId(1))
                .with_replica_epoch(5),
        );
    }
    req
}

fn seed_list_offsets(_v: i16) -> ListOffsetsRequest {
    let part = |i| {
        list_offsets_request::ListOffsetsPartition::default()
            .with_partition_index(i)
            .with_timestamp(-1)
    };
    let topic = list_offsets_request::ListOffsetsTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![part(0), part(1)]);
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![topic])
}

fn seed_metadata(v: i16) -> MetadataRequest {
    let mut topic = metadata_request::MetadataRequestTopic::default();
    if v >= 10 {
        topic = topic.with_topic_id(uuid::Uuid::from_u128(5));
    }
    topic = topic.with_name(Some(TopicName(s("orders"))));
    let mut req = MetadataRequest::default().with_topics(Some(vec![topic.clone(), topic]));
    if v >= 4 {
        req = req.with_allow_auto_topic_creation(true);
    }
    req
}

fn seed_api_versions(v: i16) -> ApiVersionsRequest {
    if v >= 3 {
        ApiVersionsRequest::default()
            .with_client_software_name(s("freshet-test"))
            .with_client_software_version(s("1.0"))
    } else {
        ApiVersionsRequest::default()
    }
}

fn seed_create_topics(_v: i16) -> CreateTopicsRequest {
    let assignment = create_topics_request::CreatableReplicaAssignment::default()
        .with_partition_index(0)
        .with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
    let config = create_topics_request::CreatableTopicConfig::default()
        .with_name(s("retention.ms"))
        .with_value(Some(s("1000")));
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(TopicName(s("orders")))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![assignment])
        .with_configs(vec![config.clone(), config]);
    CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(1000)
}

fn seed_delete_topics(v: i16) -> DeleteTopicsRequest {
    if v >= 6 {
        let t = delete_topics_request::DeleteTopicState::default()
            .with_name(Some(TopicName(s("orders"))))
            .with_topic_id(uuid::Uuid::from_u128(1));
        DeleteTopicsRequest::default().with_topics(vec![t.clone(), t])
    } else {
        DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("a")), TopicName(s("b"))])
    }
}

fn seed_delete_records(_v: i16) -> DeleteRecordsRequest {
    let part = delete_records_request::DeleteRecordsPartition::default()
        .with_partition_index(0)
        .with_offset(10);
    let topic = delete_records_request::DeleteRecordsTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![part]);
    DeleteRecordsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(1000)
}

fn seed_init_producer_id(_v: i16) -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s("txn-1"))))
        .with_transaction_timeout_ms(60_000)
}

fn seed_add_partitions_to_txn(v: i16) -> AddPartitionsToTxnRequest {
    let topic = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![0, 3]);
    if v >= 4 {
        let t = add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s("txn-1")))
            .with_producer_id(ProducerId(7))
            .with_producer_epoch(2)
            .with_verify_only(true)
            .with_topics(vec![topic]);
        AddPartitionsToTxnRequest::default().with_transactions(vec![t])
    } else {
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("txn-1")))
            .with_v3_and_below_producer_id(ProducerId(7))
            .with_v3_and_below_producer_epoch(2)
            .with_v3_and_below_topics(vec![topic])
    }
}

fn seed_add_offsets_to_txn(_v: i16) -> AddOffsetsToTxnRequest {
    AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("txn-1")))
        .with_producer_id(ProducerId(7))
        .with_producer_epoch(2)
        .with_group_id(GroupId(s("readers")))
}

fn seed_end_txn(_v: i16) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s("txn-1")))
        .with_producer_id(ProducerId(7))
        .with_producer_epoch(2)
        .with_committed(true)
}

fn seed_write_txn_markers(_v: i16) -> WriteTxnMarkersRequest {
    let topic = write_txn_markers_request::WritableTxnMarkerTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partition_indexes(vec![0, 3]);
    let marker = write_txn_markers_request::WritableTxnMarker::default()
        .with_producer_id(ProducerId(7))
        .with_producer_epoch(2)
        .with_transaction_result(true)
        .with_topics(vec![topic])
        .with_coordinator_epoch(4);
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

fn seed_describe_client_quotas(_v: i16) -> DescribeClientQuotasRequest {
    let user = describe_client_quotas_request::ComponentData::default()
        .with_entity_type(s("user"))
        .with_match_type(0)
        .with_match(Some(s("alice")));
    let client = describe_client_quotas_request::ComponentData::default()
        .with_entity_type(s("client-id"))
        .with_match_type(1);
    DescribeClientQuotasRequest::default()
        .with_components(vec![user, client])
        .with_strict(true)
}

fn seed_alter_client_quotas(_v: i16) -> AlterClientQuotasRequest {
    let entity = vec![
        alter_client_quotas_request::EntityData::default()
            .with_entity_type(s("user"))
            .with_entity_name(Some(s("alice"))),
        alter_client_quotas_request::EntityData::default().with_entity_type(s("client-id")),
    ];
    let ops = vec![
        alter_client_quotas_request::OpData::default()
            .with_key(s("producer_byte_rate"))
            .with_value(1048576.0),
        alter_client_quotas_request::OpData::default()
            .with_key(s("request_percentage"))
            .with_remove(true),
    ];
    let entry = alter_client_quotas_request::EntryData::default()
        .with_entity(entity)
        .with_ops(ops);
    AlterClientQuotasRequest::default()
        .with_entries(vec![entry])
        .with_validate_only(true)
}

fn seed_txn_offset_commit(v: i16) -> TxnOffsetCommitRequest {
    let part = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
        .with_partition_index(1)
        .with_committed_offset(99)
        .with_committed_metadata(Some(s("m")));
    let topic = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![part]);
    let mut req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("txn-1")))
        .with_group_id(GroupId(s("readers")))
        .with_producer_id(ProducerId(7))
        .with_producer_epoch(2)
        .with_topics(vec![topic]);
    if v >= 3 {
        req = req.with_generation_id(4).with_member_id(s("member-1"));
    }
    req
}

fn seed_describe_producers(_v: i16) -> DescribeProducersRequest {
    let t = describe_producers_request::TopicRequest::default()
        .with_name(TopicName(s("orders")))
        .with_partition_indexes(vec![0, 2]);
    DescribeProducersRequest::default().with_topics(vec![t])
}

fn seed_describe_transactions(_v: i16) -> DescribeTransactionsRequest {
    DescribeTransactionsRequest::default().with_transactional_ids(vec![
        TransactionalId(s("txn-1")),
        TransactionalId(s("txn-2")),
    ])
}

fn seed_list_transactions(v: i16) -> ListTransactionsRequest {
    let mut req = ListTransactionsRequest::default()
        .with_state_filters(vec![s("Ongoing")])
        .with_producer_id_filters(vec![ProducerId(7)]);
    if v >= 1 {
        req = req.with_duration_filter(1000);
    }
    if v >= 2 {
        req = req.with_transactional_id_pattern(Some(s("txn-.*")));
    }
    req
}

fn seed_describe_configs(v: i16) -> DescribeConfigsRequest {
    let r = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("orders"))
        .with_configuration_keys(Some(vec![s("retention.ms"), s("segment.bytes")]));
    let mut req = DescribeConfigsRequest::default().with_resources(vec![r]);
    if v >= 3 {
        req = req.with_include_documentation(true);
    }
    req
}

fn seed_alter_configs(_v: i16) -> AlterConfigsRequest {
    let c = alter_configs_request::AlterableConfig::default()
        .with_name(s("retention.ms"))
        .with_value(Some(s("5")));
    let r = alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("orders"))
        .with_configs(vec![c]);
    AlterConfigsRequest::default().with_resources(vec![r])
}

fn seed_describe_log_dirs(_v: i16) -> DescribeLogDirsRequest {
    let t = describe_log_dirs_request::DescribableLogDirTopic::default()
        .with_topic(TopicName(s("orders")))
        .with_partitions(vec![0, 1, 2]);
    DescribeLogDirsRequest::default().with_topics(Some(vec![t]))
}

fn seed_create_partitions(_v: i16) -> CreatePartitionsRequest {
    let a = create_partitions_request::CreatePartitionsAssignment::default()
        .with_broker_ids(vec![BrokerId(1)]);
    let t = create_partitions_request::CreatePartitionsTopic::default()
        .with_name(TopicName(s("orders")))
        .with_count(4)
        .with_assignments(Some(vec![a]));
    CreatePartitionsRequest::default()
        .with_topics(vec![t])
        .with_timeout_ms(1000)
}

fn seed_incremental_alter_configs(_v: i16) -> IncrementalAlterConfigsRequest {
    let c = incremental_alter_configs_request::AlterableConfig::default()
        .with_name(s("retention.ms"))
        .with_value(Some(s("5")));
    let r = incremental_alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("orders"))
        .with_configs(vec![c]);
    IncrementalAlterConfigsRequest::default().with_resources(vec![r])
}

fn seed_describe_cluster(v: i16) -> DescribeClusterRequest {
    let req = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    if v >= 2 {
        req.with_include_fenced_brokers(true)
    } else {
        req
    }
}

fn seed_describe_topic_partitions(_v: i16) -> DescribeTopicPartitionsRequest {
    let t = describe_topic_partitions_request::TopicRequest::default()
        .with_name(TopicName(s("orders")));
    let cursor = describe_topic_partitions_request::Cursor::default()
        .with_topic_name(TopicName(s("orders")))
        .with_partition_index(3);
    DescribeTopicPartitionsRequest::default()
        .with_topics(vec![t])
        .with_response_partition_limit(100)
        .with_cursor(Some(cursor))
}

fn seed_elect_leaders(v: i16) -> ElectLeadersRequest {
    let t = elect_leaders_request::TopicPartitions::default()
        .with_topic(TopicName(s("orders")))
        .with_partitions(vec![0, 2]);
    let req = ElectLeadersRequest::default()
        .with_topic_partitions(Some(vec![t]))
        .with_timeout_ms(30_000);
    if v >= 1 {
        req.with_election_type(1)
    } else {
        req
    }
}

fn seed_describe_quorum(_v: i16) -> DescribeQuorumRequest {
    let p = describe_quorum_request::PartitionData::default().with_partition_index(0);
    let t = describe_quorum_request::TopicData::default()
        .with_topic_name(TopicName(s("__cluster_metadata")))
        .with_partitions(vec![p]);
    DescribeQuorumRequest::default().with_topics(vec![t])
}

fn seed_sasl_handshake(_v: i16) -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(s("PLAIN"))
}

fn seed_sasl_authenticate(_v: i16) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0alice\0secret"))
}

fn seed_describe_user_scram_credentials(_v: i16) -> DescribeUserScramCredentialsRequest {
    let user = describe_user_scram_credentials_request::UserName::default().with_name(s("alice"));
    DescribeUserScramCredentialsRequest::default().with_users(Some(vec![user]))
}

fn seed_alter_user_scram_credentials(_v: i16) -> AlterUserScramCredentialsRequest {
    let upsert = alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
        .with_name(s("alice"))
        .with_mechanism(2)
        .with_iterations(4096)
        .with_salt(Bytes::from_static(b"salt"))
        .with_salted_password(Bytes::from_static(b"salted"));
    let delete = alter_user_scram_credentials_request::ScramCredentialDeletion::default()
        .with_name(s("bob"))
        .with_mechanism(1);
    AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsert])
        .with_deletions(vec![delete])
}

fn seed_consumer_group_heartbeat(v: i16) -> ConsumerGroupHeartbeatRequest {
    let tp = consumer_group_heartbeat_request::TopicPartitions::default()
        .with_topic_id(uuid::Uuid::from_bytes([7; 16]))
        .with_partitions(vec![0, 1]);
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_member_id(s("member-1"))
        .with_member_epoch(3)
        .with_instance_id(Some(s("instance-1")))
        .with_rack_id(Some(s("rack-1")))
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("orders"))]))
        .with_server_assignor(Some(s("uniform")))
        .with_topic_partitions(Some(vec![tp]));
    if v >= 1 {
        req.with_subscribed_topic_regex(Some(s("ord.*")))
    } else {
        req
    }
}

fn seed_consumer_group_describe(_v: i16) -> ConsumerGroupDescribeRequest {
    ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(s("group-1")), GroupId(s("group-2"))])
        .with_include_authorized_operations(true)
}

fn seed_share_group_heartbeat(_v: i16) -> ShareGroupHeartbeatRequest {
    ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("share-1")))
        .with_member_id(s("member-1"))
        .with_member_epoch(3)
        .with_rack_id(Some(s("rack-1")))
        .with_subscribed_topic_names(Some(vec![TopicName(s("orders"))]))
}

fn seed_share_group_describe(_v: i16) -> ShareGroupDescribeRequest {
    ShareGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(s("share-1")), GroupId(s("share-2"))])
        .with_include_authorized_operations(true)
}

fn seed_share_fetch(_v: i16) -> ShareFetchRequest {
    let ack = share_fetch_request::AcknowledgementBatch::default()
        .with_first_offset(10)
        .with_last_offset(12)
        .with_acknowledge_types(vec![1, 2, 3]);
    let part = share_fetch_request::FetchPartition::default()
        .with_partition_index(0)
        .with_acknowledgement_batches(vec![ack]);
    let topic = share_fetch_request::FetchTopic::default()
        .with_topic_id(uuid::Uuid::from_u128(9))
        .with_partitions(vec![part]);
    let forgotten = share_fetch_request::ForgottenTopic::default()
        .with_topic_id(uuid::Uuid::from_u128(8))
        .with_partitions(vec![1, 2]);
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(s("share-1"))))
        .with_member_id(Some(s("member-1")))
        .with_share_session_epoch(2)
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(500)
        .with_batch_size(500)
        .with_topics(vec![topic])
        .with_forgotten_topics_data(vec![forgotten])
}

fn seed_share_acknowledge(_v: i16) -> ShareAcknowledgeRequest {
    let ack = share_acknowledge_request::AcknowledgementBatch::default()
        .with_first_offset(10)
        .with_last_offset(10)
        .with_acknowledge_types(vec![1]);
    let part = share_acknowledge_request::AcknowledgePartition::default()
        .with_partition_index(0)
        .with_acknowledgement_batches(vec![ack]);
    let topic = share_acknowledge_request::AcknowledgeTopic::default()
        .with_topic_id(uuid::Uuid::from_u128(9))
        .with_partitions(vec![part]);
    ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(s("share-1"))))
        .with_member_id(Some(s("member-1")))
        .with_share_session_epoch(3)
        .with_topics(vec![topic])
}

fn seed_describe_share_group_offsets(_v: i16) -> DescribeShareGroupOffsetsRequest {
    let topic =
        describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestTopic::default()
            .with_topic_name(TopicName(s("orders")))
            .with_partitions(vec![0, 1]);
    let group =
        describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(s("share-1")))
            .with_topics(Some(vec![topic]));
    let all =
        describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default()
            .with_group_id(GroupId(s("share-2")))
            .with_topics(None);
    DescribeShareGroupOffsetsRequest::default().with_groups(vec![group, all])
}

fn seed_alter_share_group_offsets(_v: i16) -> AlterShareGroupOffsetsRequest {
    let part = alter_share_group_offsets_request::AlterShareGroupOffsetsRequestPartition::default()
        .with_partition_index(0)
        .with_start_offset(42);
    let topic = alter_share_group_offsets_request::AlterShareGroupOffsetsRequestTopic::default()
        .with_topic_name(TopicName(s("orders")))
        .with_partitions(vec![part]);
    AlterShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(s("share-1")))
        .with_topics(vec![topic])
}

fn seed_delete_share_group_offsets(_v: i16) -> DeleteShareGroupOffsetsRequest {
    let topic = delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic::default()
        .with_topic_name(TopicName(s("orders")));
    DeleteShareGroupOffsetsRequest::default()
        .with_group_id(GroupId(s("share-1")))
        .with_topics(vec![topic])
}

fn seed_read_share_group_state(_v: i16) -> ReadShareGroupStateRequest {
    let part = read_share_group_state_request::PartitionData::default()
        .with_partition(0)
        .with_leader_epoch(1);
    let topic = read_share_group_state_request::ReadStateData::default()
        .with_topic_id(uuid::Uuid::from_u128(7))
        .with_partitions(vec![part]);
    ReadShareGroupStateRequest::default()
        .with_group_id(s("share-1"))
        .with_topics(vec![topic])
}

fn seed_write_share_group_state(_v: i16) -> WriteShareGroupStateRequest {
    let batch = write_share_group_state_request::StateBatch::default()
        .with_first_offset(3)
        .with_last_offset(5)
        .with_delivery_count(2);
    let part = write_share_group_state_request::PartitionData::default()
        .with_partition(0)
        .with_leader_epoch(1)
        .with_start_offset(3)
        .with_state_batches(vec![batch]);
    let topic = write_share_group_state_request::WriteStateData::default()
        .with_topic_id(uuid::Uuid::from_u128(7))
        .with_partitions(vec![part]);
    WriteShareGroupStateRequest::default()
        .with_group_id(s("share-1"))
        .with_topics(vec![topic])
}

fn seed_find_coordinator(v: i16) -> FindCoordinatorRequest {
    let req = FindCoordinatorRequest::default();
    match v {
        0 => req.with_key(s("group-1")),
        1..=3 => req.with_key(s("group-1")).with_key_type(0),
        _ => req
            .with_key_type(0)
            .with_coordinator_keys(vec![s("group-1"), s("group-2")]),
    }
}

fn join_protocols() -> Vec<join_group_request::JoinGroupRequestProtocol> {
    let p = |name: &'static str| {
        join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s(name))
            .with_metadata(Bytes::from_static(b"\0\x01meta"))
    };
    vec![p("range"), p("cooperative-sticky")]
}

fn seed_join_group(v: i16) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_session_timeout_ms(10_000)
        .with_member_id(s("member-1"))
        .with_protocol_type(s("consumer"))
        .with_protocols(join_protocols());
    if v >= 1 {
        req = req.with_rebalance_timeout_ms(30_000);
    }
    if v >= 5 {
        req = req.with_group_instance_id(Some(s("instance-1")));
    }
    if v >= 8 {
        req = req.with_reason(Some(s("rejoin")));
    }
    req
}

fn seed_sync_group(v: i16) -> SyncGroupRequest {
    let a = sync_group_request::SyncGroupRequestAssignment::default()
        .with_member_id(s("member-1"))
        .with_assignment(Bytes::from_static(b"assign"));
    let mut req = SyncGroupRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_generation_id(3)
        .with_member_id(s("member-1"))
        .with_assignments(vec![a.clone(), a]);
    if v >= 3 {
        req = req.with_group_instance_id(Some(s("instance-1")));
    }
    if v >= 5 {
        req = req
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")));
    }
    req
}

fn seed_heartbeat(v: i16) -> HeartbeatRequest {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_generation_id(3)
        .with_member_id(s("member-1"));
    if v >= 3 {
        req.with_group_instance_id(Some(s("instance-1")))
    } else {
        req
    }
}

fn seed_leave_group(v: i16) -> LeaveGroupRequest {
    let req = LeaveGroupRequest::default().with_group_id(GroupId(s("group-1")));
    if v < 3 {
        return req.with_member_id(s("member-1"));
    }
    let mut m = leave_group_request::MemberIdentity::default()
        .with_member_id(s("member-1"))
        .with_group_instance_id(Some(s("instance-1")));
    if v >= 5 {
        m = m.with_reason(Some(s("bye")));
    }
    req.with_members(vec![m.clone(), m])
}

fn seed_offset_commit(v: i16) -> OffsetCommitRequest {
    let mut part = offset_commit_request::OffsetCommitRequestPartition::default()
        .with_partition_index(0)
        .with_committed_offset(42)
        .with_committed_metadata(Some(s("meta")));
    if v >= 6 {
        part = part.with_committed_leader_epoch(1);
    }
    let topic = offset_commit_request::OffsetCommitRequestTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![part.clone(), part.with_partition_index(1)]);
    let mut req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_generation_id_or_member_epoch(3)
        .with_member_id(s("member-1"))
        .with_topics(vec![topic]);
    if v <= 4 {
        req = req.with_retention_time_ms(-1);
    }
    if v >= 7 {
        req = req.with_group_instance_id(Some(s("instance-1")));
    }
    req
}

fn seed_offset_fetch(v: i16) -> OffsetFetchRequest {
    if v >= 8 {
        let t = offset_fetch_request::OffsetFetchRequestTopics::default()
            .with_name(TopicName(s("orders")))
            .with_partition_indexes(vec![0, 1]);
        let mut g = offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("group-1")))
            .with_topics(Some(vec![t]));
        if v >= 9 {
            g = g.with_member_id(Some(s("member-1"))).with_member_epoch(2);
        }
        let all = offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(s("group-2")))
            .with_topics(None);
        return OffsetFetchRequest::default()
            .with_groups(vec![g, all])
            .with_require_stable(true);
    }
    let t = offset_fetch_request::OffsetFetchRequestTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partition_indexes(vec![0, 1]);
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_topics(Some(vec![t]));
    if v >= 7 {
        req.with_require_stable(true)
    } else {
        req
    }
}

fn seed_describe_groups(v: i16) -> DescribeGroupsRequest {
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(s("group-1")), GroupId(s("group-2"))]);
    if v >= 3 {
        req.with_include_authorized_operations(true)
    } else {
        req
    }
}

fn seed_list_groups(v: i16) -> ListGroupsRequest {
    let mut req = ListGroupsRequest::default();
    if v >= 4 {
        req = req.with_states_filter(vec![s("Stable"), s("Empty")]);
    }
    if v >= 5 {
        req = req.with_types_filter(vec![s("classic")]);
    }
    req
}

fn seed_delete_groups(_v: i16) -> DeleteGroupsRequest {
    DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(s("group-1")), GroupId(s("group-2"))])
}

fn seed_offset_delete(_v: i16) -> OffsetDeleteRequest {
    let p = offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0);
    let t = offset_delete_request::OffsetDeleteRequestTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![p.clone(), p.with_partition_index(1)]);
    OffsetDeleteRequest::default()
        .with_group_id(GroupId(s("group-1")))
        .with_topics(vec![t])
}

fn seed_offset_for_leader_epoch(v: i16) -> OffsetForLeaderEpochRequest {
    let p = offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(3)
        .with_leader_epoch(2);
    let t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
        .with_topic(TopicName(s("orders")))
        .with_partitions(vec![p.clone(), p.with_partition(1)]);
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(if v >= 3 { BrokerId(-1) } else { BrokerId(-2) })
        .with_topics(vec![t])
}

/// Type-erased checks for one served request type.
struct Served {
    key: i16,
    min: i16,
    max: i16,
    /// The seed encoded at a version.
    encode: fn(i16) -> Bytes,
    /// decode_body's verdict: Ok(bytes the crate consumed).
    decode: fn(Bytes, i16) -> Result<(), super::ProtocolError>,
    /// Seed -> encode -> decode_body gives the seed back.
    roundtrip: fn(i16),
}

fn encode_seed<T: Request + Encodable + 'static>(seed: fn(i16) -> T, v: i16) -> Bytes {
    let mut msg = seed(v);
    let mut buf = BytesMut::new();
    if flexible(T::KEY, v) {
        // An unknown tagged field, which the decoder keeps and the pre-scan skips.
        let mut tagged = std::collections::BTreeMap::new();
        tagged.insert(90, Bytes::from_static(b"xyz"));
        msg = with_unknown_tags(msg, tagged);
    }
    msg.encode(&mut buf, v)
        .unwrap_or_else(|e| panic!("encode {} v{v}: {e}", std::any::type_name::<T>()));
    buf.freeze()
}

/// Sets the top-level unknown tagged fields (the message types share no trait for it).
fn with_unknown_tags<T: 'static>(msg: T, tags: std::collections::BTreeMap<i32, Bytes>) -> T {
    let mut any: Box<dyn std::any::Any> = Box::new(msg);
    macro_rules! set {
        ($($t:ty),*) => {$(
            if let Some(m) = any.downcast_mut::<$t>() {
                m.unknown_tagged_fields = tags.clone();
            }
        )*};
    }
    set!(
        ProduceRequest,
        FetchRequest,
        ListOffsetsRequest,
        MetadataRequest,
        ApiVersionsRequest,
        CreateTopicsRequest,
        DeleteTopicsRequest,
        DeleteRecordsRequest,
        InitProducerIdRequest,
        DescribeConfigsRequest,
        AlterConfigsRequest,
        DescribeLogDirsRequest,
        CreatePartitionsRequest,
        IncrementalAlterConfigsRequest,
        DescribeQuorumRequest,
        DescribeClusterRequest,
        FindCoordinatorRequest,
        JoinGroupRequest,
        SyncGroupRequest,
        HeartbeatRequest,
        LeaveGroupRequest,
        OffsetCommitRequest,
        OffsetFetchRequest,
        DescribeGroupsRequest,
        ListGroupsRequest,
        DeleteGroupsRequest,
        ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribeRequest,
        AddPartitionsToTxnRequest,
        AddOffsetsToTxnRequest,
        EndTxnRequest,
        TxnOffsetCommitRequest,
        WriteTxnMarkersRequest,
        DescribeProducersRequest,
        DescribeTransactionsRequest,
        ListTransactionsRequest,
        SaslAuthenticateRequest,
        DescribeUserScramCredentialsRequest,
        AlterUserScramCredentialsRequest,
        ElectLeadersRequest,
        OffsetForLeaderEpochRequest,
        DescribeClientQuotasRequest,
        AlterClientQuotasRequest,
        ShareGroupHeartbeatRequest,
        ShareGroupDescribeRequest,
        ShareFetchRequest,
        ShareAcknowledgeRequest,
        DescribeShareGroupOffsetsRequest,
        AlterShareGroupOffsetsRequest,
        DeleteShareGroupOffsetsRequest,
        AlterPartitionReassignmentsRequest,
        ListPartitionReassignmentsRequest,
        ReadShareGroupStateRequest,
        WriteShareGroupStateRequest
    );
    *any.downcast::<T>().expect("same type")
}

macro_rules! served {
    ($t:ty, $seed:ident) => {
        Served {
            key: <$t as Request>::KEY,
            min: <$t as kafka_protocol::protocol::Message>::VERSIONS.min,
            max: <$t as kafka_protocol::protocol::Message>::VERSIONS.max,
            encode: |v| encode_seed::<$t>($seed, v),
            decode: |b, v| decode_body::<$t>(b, v).map(|_| ()),
            roundtrip: |v| {
                let bytes = encode_seed::<$t>($seed, v);
                let decoded = decode_body::<$t>(bytes.clone(), v)
                    .unwrap_or_else(|e| panic!("{} v{v}: {e}", stringify!($t)));
                let mut again = BytesMut::new();
                decoded.encode(&mut again, v).expect("re-encode");
                assert_eq!(again.freeze(), bytes, "{} v{v} round trip", stringify!($t));
                let scan = prescan(request_schema(<$t as Request>::KEY).unwrap(), &bytes, v)
                    .expect("prescan");
                assert!(
                    scan.memory_bytes < 1024 + 16 * bytes.len(),
                    "{} v{v}: memory",
                    stringify!($t)
                );
                assert_eq!(
                    scan.wire_bytes,
                    bytes.len(),
                    "{} v{v}: pre-scan length",
                    stringify!($t)
                );
            },
        }
    };
}

fn served() -> Vec<Served> {
    vec![
        served!(ProduceRequest, seed_produce),
        served!(FetchRequest, seed_fetch),
        served!(ListOffsetsRequest, seed_list_offsets),
        served!(MetadataRequest, seed_metadata),
        served!(ApiVersionsRequest, seed_api_versions),
        served!(CreateTopicsRequest, seed_create_topics),
        served!(DeleteTopicsRequest, seed_delete_topics),
        served!(DeleteRecordsRequest, seed_delete_records),
        served!(InitProducerIdRequest, seed_init_producer_id),
        served!(DescribeConfigsRequest, seed_describe_configs),
        served!(AlterConfigsRequest, seed_alter_configs),
        served!(DescribeLogDirsRequest, seed_describe_log_dirs),
        served!(CreatePartitionsRequest, seed_create_partitions),
        served!(
            IncrementalAlterConfigsRequest,
            seed_incremental_alter_configs
        ),
        served!(DescribeQuorumRequest, seed_describe_quorum),
        served!(DescribeClusterRequest, seed_describe_cluster),
        served!(
            DescribeTopicPartitionsRequest,
            seed_describe_topic_partitions
        ),
        served!(FindCoordinatorRequest, seed_find_coordinator),
        served!(JoinGroupRequest, seed_join_group),
        served!(SyncGroupRequest, seed_sync_group),
        served!(HeartbeatRequest, seed_heartbeat),
        served!(LeaveGroupRequest, seed_leave_group),
        served!(OffsetCommitRequest, seed_offset_commit),
        served!(OffsetFetchRequest, seed_offset_fetch),
        served!(DescribeGroupsRequest, seed_describe_groups),
        served!(ListGroupsRequest, seed_list_groups),
        served!(DeleteGroupsRequest, seed_delete_groups),
        served!(OffsetDeleteRequest, seed_offset_delete),
        served!(ConsumerGroupHeartbeatRequest, seed_consumer_group_heartbeat),
        served!(ConsumerGroupDescribeRequest, seed_consumer_group_describe),
        served!(AddPartitionsToTxnRequest, seed_add_partitions_to_txn),
        served!(AddOffsetsToTxnRequest, seed_add_offsets_to_txn),
        served!(EndTxnRequest, seed_end_txn),
        served!(TxnOffsetCommitRequest, seed_txn_offset_commit),
        served!(WriteTxnMarkersRequest, seed_write_txn_markers),
        served!(DescribeProducersRequest, seed_describe_producers),
        served!(DescribeTransactionsRequest, seed_describe_transactions),
        served!(ListTransactionsRequest, seed_list_transactions),
        served!(SaslHandshakeRequest, seed_sasl_handshake),
        served!(SaslAuthenticateRequest, seed_sasl_authenticate),
        served!(
            DescribeUserScramCredentialsRequest,
            seed_describe_user_scram_credentials
        ),
        served!(
            AlterUserScramCredentialsRequest,
            seed_alter_user_scram_credentials
        ),
        served!(ElectLeadersRequest, seed_elect_leaders),
        served!(OffsetForLeaderEpochRequest, seed_offset_for_leader_epoch),
        served!(DescribeClientQuotasRequest, seed_describe_client_quotas),
        served!(AlterClientQuotasRequest, seed_alter_client_quotas),
        served!(DescribeAclsRequest, seed_describe_acls),
        served!(CreateAclsRequest, seed_create_acls),
        served!(DeleteAclsRequest, seed_delete_acls),
        served!(ShareGroupHeartbeatRequest, seed_share_group_heartbeat),
        served!(ShareGroupDescribeRequest, seed_share_group_describe),
        served!(ShareFetchRequest, seed_share_fetch),
        served!(ShareAcknowledgeRequest, seed_share_acknowledge),
        served!(
            DescribeShareGroupOffsetsRequest,
            seed_describe_share_group_offsets
        ),
        served!(
            AlterShareGroupOffsetsRequest,
            seed_alter_share_group_offsets
        ),
        served!(
            DeleteShareGroupOffsetsRequest,
            seed_delete_share_group_offsets
        ),
        served!(
            AlterPartitionReassignmentsRequest,
            seed_alter_partition_reassignments
        ),
        served!(
            ListPartitionReassignmentsRequest,
            seed_list_partition_reassignments
        ),
        served!(ReadShareGroupStateRequest, seed_read_share_group_state),
        served!(WriteShareGroupStateRequest, seed_write_share_group_state),
    ]
}

fn seed_alter_partition_reassignments(v: i16) -> AlterPartitionReassignmentsRequest {
    let moved = alter_partition_reassignments_request::ReassignablePartition::default()
        .with_partition_index(0)
        .with_replicas(Some(vec![BrokerId(1), BrokerId(2), BrokerId(3)]));
    let cancelled = alter_partition_reassignments_request::ReassignablePartition::default()
        .with_partition_index(1)
        .with_replicas(None);
    let t = alter_partition_reassignments_request::ReassignableTopic::default()
        .with_name(TopicName(s("orders")))
        .with_partitions(vec![moved, cancelled]);
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(vec![t]);
    if v >= 1 {
        req.with_allow_replication_factor_change(false)
    } else {
        req
    }
}

fn seed_list_partition_reassignments(_v: i16) -> ListPartitionReassignmentsRequest {
    let t = list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
        .with_name(TopicName(s("orders")))
        .with_partition_indexes(vec![0, 1]);
    ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(Some(vec![t]))
}

fn seed_describe_acls(_v: i16) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(2)
        .with_resource_name_filter(Some(s("orders")))
        .with_pattern_type_filter(2)
        .with_principal_filter(Some(s("User:alice")))
        .with_operation(1)
        .with_permission_type(1)
}

fn seed_create_acls(_v: i16) -> CreateAclsRequest {
    let c = create_acls_request::AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(s("orders"))
        .with_resource_pattern_type(3)
        .with_principal(s("User:alice"))
        .with_host(s("*"))
        .with_operation(3)
        .with_permission_type(3);
    CreateAclsRequest::default().with_creations(vec![c.clone(), c])
}

fn seed_delete_acls(_v: i16) -> DeleteAclsRequest {
    let f = delete_acls_request::DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(Some(s("orders")))
        .with_pattern_type_filter(1)
        .with_host_filter(Some(s("*")))
        .with_operation(1)
        .with_permission_type(1);
    DeleteAclsRequest::default().with_filters(vec![f])
}

/// Every API in the versions table is covered here, so no served type escapes the fuzzing.
#[test]
fn every_served_api_is_fuzzed_and_has_a_schema() {
    let fuzzed: Vec<i16> = served().iter().map(|s| s.key).collect();
    for api in super::versions::SUPPORTED_APIS {
        assert!(
            fuzzed.contains(&(api.key as i16)),
            "{:?} is not fuzzed",
            api.key
        );
        assert!(
            request_schema(api.key as i16).is_some(),
            "{:?} has no pre-scan schema",
            api.key
        );
    }
}

/// A well-formed request of every served type decodes, at every version the crate knows, and
/// re-encodes to the same bytes; the pre-scan reads exactly the whole message.
#[test]
fn every_served_request_round_trips_at_every_version() {
    for s in served() {
        for v in s.min..=s.max {
            (s.roundtrip)(v);
        }
    }
}

/// Array counts near the type's maximum, with nothing behind them, are refused before the crate
/// can reserve memory for them (unguarded, these abort the process).
#[test]
fn huge_array_counts_are_refused_without_allocating() {
    let patterns: [&[u8]; 4] = [
        &[0x7f, 0xff, 0xff, 0xff],
        &[0x00, 0x7f, 0xff, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0xfe, 0xff, 0xff, 0x7f],
    ];
    for s in served() {
        for v in s.min..=s.max {
            for p in patterns {
                for prefix in 0..12 {
                    let mut body = vec![0u8; prefix];
                    for _ in 0..8 {
                        body.extend_from_slice(p);
                    }
                    let _ = (s.decode)(Bytes::from(body), v);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Xor(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    I32(usize, i32),
    Varint(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Xor(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(i32::MAX),
                Just(-1),
                Just(-2),
                Just(0),
                Just(1 << 24),
                any::<i32>()
            ]
        )
            .prop_map(|(i, n)| Mutation::I32(i, n)),
        any::<usize>().prop_map(Mutation::Varint),
    ]
}

fn apply(body: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Xor(i, x) if !body.is_empty() => {
            let i = at(*i, body.len());
            body[i] ^= x;
        }
        Mutation::Truncate(i) => body.truncate(at(*i, body.len() + 1)),
        Mutation::Insert(i, b) => {
            let i = at(*i, body.len() + 1);
            body.splice(i..i, b.iter().copied());
        }
        Mutation::I32(i, n) if body.len() >= 4 => {
            let i = at(*i, body.len() - 3);
            body[i..i + 4].copy_from_slice(&n.to_be_bytes());
        }
        Mutation::Varint(i) if body.len() >= 5 => {
            let i = at(*i, body.len() - 4);
            body[i..i + 5].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Mutated encodings of every served request never panic; where they still decode, the
    /// pre-scan agreed with the decoder on the bytes read (checked inside decode_body).
    #[test]
    fn mutated_requests_never_panic(which in any::<usize>(), vsel in any::<u16>(),
                                    muts in proptest::collection::vec(mutation(), 1..6)) {
        let all = served();
        let s = &all[which % all.len()];
        let v = s.min + (vsel % (s.max - s.min + 1) as u16) as i16;
        let mut body = (s.encode)(v).to_vec();
        for m in &muts {
            apply(&mut body, m);
        }
        let _ = (s.decode)(Bytes::from(body), v);
    }

    /// Random bytes, at any version including ones the type does not have, never panic.
    #[test]
    fn random_bodies_never_panic(which in any::<usize>(), v in -2i16..20,
                                 body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let all = served();
        let s = &all[which % all.len()];
        let _ = (s.decode)(Bytes::from(body), v);
    }
}

/// Flipping each byte of each seed in turn: many of the results still decode (so the check that
/// pre-scan and decoder read the same bytes, inside decode_body, is exercised), none panics.
#[test]
fn every_single_byte_corruption_is_handled() {
    let (mut decoded, mut refused) = (0usize, 0usize);
    for s in served() {
        for v in s.min..=s.max {
            let seed = (s.encode)(v).to_vec();
            for i in 0..seed.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut body = seed.clone();
                    body[i] ^= x;
                    match (s.decode)(Bytes::from(body), v) {
                        Ok(()) => decoded += 1,
                        Err(_) => refused += 1,
                    }
                }
            }
        }
    }
    assert!(
        decoded > 1000 && refused > 1000,
        "decoded {decoded}, refused {refused}"
    );
}

/// A body that is cheap on the wire but costly decoded (500,000 empty topic names, 1 MB) is
/// refused before decoding; the same topics with real names are accepted.
#[test]
fn degenerate_bodies_are_refused_by_their_decoded_size() {
    let count = 500_000u32;
    let mut body = count.to_be_bytes().to_vec();
    for _ in 0..count {
        body.extend_from_slice(&[0, 0]);
    }
    let err = decode_body::<MetadataRequest>(Bytes::from(body), 0).unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");

    let mut body = 10_000u32.to_be_bytes().to_vec();
    for i in 0..10_000 {
        let name = format!("topic-{i:05}");
        body.extend_from_slice(&(name.len() as i16).to_be_bytes());
        body.extend_from_slice(name.as_bytes());
    }
    let req = decode_body::<MetadataRequest>(Bytes::from(body), 0).unwrap();
    assert_eq!(req.topics.unwrap().len(), 10_000);
}

/// The seed corpus of the `cargo fuzz` targets (`fuzz/seeds/<target>/`), made from the seed
/// requests above: (target, file name, bytes). The `record_batches` seeds are made by the
/// broker crate (`freshet::fuzzing`), which owns the record-batch encoder.
fn fuzz_seed_files() -> Vec<(&'static str, String, Vec<u8>)> {
    use kafka_protocol::messages::{ApiKey, RequestHeader};
    let mut out = Vec::new();
    for api in served() {
        let (min, max) = super::versions::supported_range(api.key).unwrap_or((api.min, api.max));
        let mut versions = vec![min, (min + max) / 2, max];
        versions.dedup();
        for v in versions {
            let body = (api.encode)(v);
            let mut input = vec![api.key as u8, v as u8];
            input.extend_from_slice(&body);
            out.push(("request_body", format!("key{}-v{v}", api.key), input));
        }
        // A whole frame at the highest served version, twice in a row (pipelining).
        let key = ApiKey::try_from(api.key).expect("served key");
        let header = RequestHeader::default()
            .with_request_api_key(api.key)
            .with_request_api_version(max)
            .with_correlation_id(7)
            .with_client_id(Some(s("fuzz")));
        let mut payload = BytesMut::new();
        header
            .encode(&mut payload, key.request_header_version(max))
            .expect("encode header");
        payload.extend_from_slice(&(api.encode)(max));
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        let twice = [frame.clone(), frame].concat();
        out.push(("frames", format!("key{}-v{max}", api.key), twice));
    }
    out
}

/// The committed seed corpus is what `fuzz_seed_files` makes, and every request seed decodes.
/// `FRESHET_WRITE_FUZZ_SEEDS=1 cargo test fuzz_seed_corpus` rewrites it (after adding an
/// API or changing a seed).
#[test]
fn fuzz_seed_corpus_is_committed_and_decodes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let write = std::env::var_os("FRESHET_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in fuzz_seed_files() {
        let path = root.join(target).join(&name);
        if target == "request_body" {
            let body = Bytes::copy_from_slice(&bytes[2..]);
            super::any_request::decode_request_body(
                i16::from(bytes[0]),
                i16::from(bytes[1] as i8),
                body,
            )
            .unwrap_or_else(|e| panic!("seed {name} does not decode: {e}"));
        }
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run FRESHET_WRITE_FUZZ_SEEDS=1 cargo test -p freshet-protocol fuzz_seed_corpus",
                    path.display()
                )
            });
            assert!(
                committed == bytes,
                "{} is stale; run FRESHET_WRITE_FUZZ_SEEDS=1 cargo test -p freshet-protocol fuzz_seed_corpus",
                path.display()
            );
        }
    }
}
