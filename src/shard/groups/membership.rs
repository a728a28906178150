//! Group membership on the coordinator shard: the delayed-reply plumbing (a JoinGroup or
//! SyncGroup parks a one-shot channel under a request id until an `Effect::Reply` for it
//! comes) and the membership APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ConsumerGroupHeartbeat), which write changed groups before they answer.

use kafka_protocol::error::ResponseError;

use super::GroupCoordinator;
use crate::coordinator::consumer_group::{self, TopicsView};
use crate::coordinator::group::{
    Effect, JoinRequest, JoinResponse, RequestId, Response, SyncRequest, SyncResponse,
};

impl GroupCoordinator {
    pub(super) fn run(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply {
                    request_id,
                    response,
                } => {
                    let sender = self.replies.borrow_mut().remove(&request_id);
                    match sender {
                        // The requester may be gone (connection closed): nothing to do.
                        Some(sender) => {
                            let _ = sender.send(response);
                        }
                        None => panic!("reply to unknown request id {request_id}"),
                    }
                }
            }
        }
    }

    pub(super) fn park(&self) -> (RequestId, flume::Receiver<Response>) {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (tx, rx) = flume::bounded(1);
        self.replies.borrow_mut().insert(id, tx);
        (id, rx)
    }

    pub async fn join(&self, now_ms: i64, req: JoinRequest) -> JoinResponse {
        let member_id = req.member_id.clone();
        // An empty consumer group gives its id to the classic group (Kafka converts it); one
        // with members keeps it.
        if self
            .consumer
            .borrow_mut()
            .remove_if_empty(&req.group_id)
            .is_err()
        {
            return JoinResponse {
                error: Some(ResponseError::InconsistentGroupProtocol),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id,
                members: Vec::new(),
            };
        }
        let (id, rx) = self.park();
        let effects = self.groups.borrow_mut().join(now_ms, id, req);
        self.run(effects);
        match rx.recv_async().await {
            Ok(Response::Join(r)) => r,
            _ => JoinResponse {
                error: Some(crate::error::coordinator_gone_code()),
                generation_id: -1,
                protocol_type: None,
                protocol_name: None,
                leader: String::new(),
                member_id,
                members: Vec::new(),
            },
        }
    }

    pub async fn sync(&self, now_ms: i64, req: SyncRequest) -> SyncResponse {
        let (id, rx) = self.park();
        let effects = self.groups.borrow_mut().sync(now_ms, id, req);
        self.run(effects);
        let answer = rx.recv_async().await;
        self.persist_groups().await;
        match answer {
            Ok(Response::Sync(r)) => r,
            _ => SyncResponse {
                error: Some(crate::error::coordinator_gone_code()),
                protocol_type: None,
                protocol_name: None,
                assignment: bytes::Bytes::new(),
            },
        }
    }

    pub fn heartbeat(
        &self,
        now_ms: i64,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Option<ResponseError> {
        self.groups.borrow_mut().heartbeat(
            now_ms,
            group_id,
            member_id,
            group_instance_id,
            generation_id,
        )
    }

    pub async fn leave(
        &self,
        now_ms: i64,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> (Option<ResponseError>, Vec<Option<ResponseError>>) {
        let (top, each, effects) = self.groups.borrow_mut().leave(now_ms, group_id, members);
        self.run(effects);
        self.persist_groups().await;
        (top, each)
    }

    /// ConsumerGroupHeartbeat (KIP-848), answered at once. A classic group with members keeps
    /// its id (GROUP_ID_NOT_FOUND, as Kafka without online migration); an empty one is
    /// converted.
    pub async fn consumer_heartbeat(
        &self,
        now_ms: i64,
        version: i16,
        metadata: &crate::coordinator::metadata::ClusterMetadata,
        req: consumer_group::HeartbeatRequest,
    ) -> consumer_group::HeartbeatResponse {
        let classic_in_use = {
            let mut groups = self.groups.borrow_mut();
            match groups.group(&req.group_id) {
                None => false,
                Some(_) => groups.delete_group(&req.group_id).is_err(),
            }
        };
        if classic_in_use {
            return consumer_group::HeartbeatResponse {
                error: Some(ResponseError::GroupIdNotFound),
                error_message: Some(format!("Group {} is not a consumer group.", req.group_id)),
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        if !self.is_loaded() {
            return consumer_group::HeartbeatResponse {
                error: Some(ResponseError::CoordinatorLoadInProgress),
                error_message: None,
                member_id: None,
                member_epoch: 0,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        let view = TopicsView {
            version: metadata.version,
            topics: &metadata.topics,
        };
        let response = self
            .consumer
            .borrow_mut()
            .heartbeat(now_ms, version, view, req);
        self.persist_groups().await;
        response
    }
}
