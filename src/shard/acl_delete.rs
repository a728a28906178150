//! DeleteAcls as one metadata step (coordinator shard): each filter's matching bindings are
//! found and removed by the active controller against the metadata it decides changes on,
//! under the same lock as every other change, so a binding created before the delete was
//! decided (on any node) is matched and removed, and a binding is reported removed by exactly
//! one DeleteAcls (Kafka's `AclControlManager.deleteAcls`, one controller event).
//!
//! A node that is not the active controller forwards the filters
//! ([`ControllerRequest::DeleteAcls`]) and answers once it has applied the resulting version
//! (read-your-writes, as forwarded changes). Nothing here decides whether the caller may
//! delete: `api::delete_acls` checks that first.
//!
//! Bounds: the answer holds at most the bindings the metadata holds (`ACLS_MAX`).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;

use super::controller::{from_forwarded, not_controller};
use super::Shard;
use crate::cluster::{ControllerRequest, ControllerResponse};
use crate::coordinator::metadata::{MetadataError, MetadataRecord};
use crate::security::acl::{AclBinding, AclBindingFilter};

/// One filter's result: the bindings it removed.
pub type FilterDeleted = Result<Vec<AclBinding>, MetadataError>;

impl Shard {
    /// Removes the bindings each filter matches, in order, in one metadata change (module
    /// doc); a filter with an UNKNOWN element is INVALID_REQUEST and removes nothing.
    pub async fn delete_acls_matching(
        self: &Rc<Self>,
        filters: Vec<AclBindingFilter>,
    ) -> Vec<FilterDeleted> {
        assert_eq!(
            self.id,
            super::COORDINATOR_SHARD,
            "metadata changes run on shard 0"
        );
        let count = filters.len();
        let fail = |e: MetadataError| (0..count).map(|_| Err(e.clone())).collect();
        let Ok(permit) = self.metadata_lock.acquire_permit(1).await else {
            return fail(super::storage_unavailable());
        };
        if self.controller().is_some_and(|c| !c.is_active()) {
            drop(permit);
            return self.forward_delete_acls(filters).await;
        }
        let Some(base) = self.leader_metadata().await else {
            drop(permit);
            return self.forward_delete_acls(filters).await;
        };
        let mut current = (*base).clone();
        let mut records = Vec::new();
        let mut results: Vec<FilterDeleted> = Vec::with_capacity(count);
        for filter in &filters {
            if let Err(e) = filter.validate() {
                results.push(Err(MetadataError {
                    code: ResponseError::InvalidRequest,
                    message: e.0,
                }));
                continue;
            }
            let matched: Vec<AclBinding> = current
                .acls
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect();
            if !matched.is_empty() {
                let record = MetadataRecord::AclsDeleted {
                    acls: matched.clone(),
                };
                current.replay_in_place(&record);
                records.push(record);
            }
            results.push(Ok(matched));
        }
        if records.is_empty() {
            return results;
        }
        if let Err(e) = self.propose_change(records).await {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        results
    }

    /// Sends the filters to the active controller (this node does not lead).
    async fn forward_delete_acls(&self, filters: Vec<AclBindingFilter>) -> Vec<FilterDeleted> {
        let count = filters.len();
        let fail = |e: MetadataError| (0..count).map(|_| Err(e.clone())).collect();
        let request = ControllerRequest::DeleteAcls { filters };
        match self.call_active_controller(request, "DeleteAcls").await {
            Ok(ControllerResponse::AclsDeleted { results, version }) if results.len() == count => {
                self.await_published_bounded(version).await;
                results
                    .into_iter()
                    .map(|r| r.map_err(from_forwarded))
                    .collect()
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, "forwarded DeleteAcls: unexpected answer");
                fail(not_controller())
            }
            Err(e) => fail(e),
        }
    }
}
