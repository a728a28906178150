//! DeleteGroups: removes empty groups and their committed offsets (durably);
//! NON_EMPTY_GROUP for a group with members, GROUP_ID_NOT_FOUND for an unknown one. A share
//! group takes its share-partition state with it.

use crate::error::coordinator_gone_code;
use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{decode, Outcome};
use crate::coordinator::coordinator_key::CoordinatorKind;
use crate::protocol::header::ParsedRequest;
use crate::shard::{now_ms, Shard, COORDINATOR_SHARD};
use kafka_protocol::error::ResponseError;

pub async fn handle(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DeleteGroupsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // Each group with NOT_COORDINATOR if another node coordinates it, else None: deleted here.
    let asked: Vec<(String, Option<ResponseError>)> = body
        .groups_names
        .iter()
        .map(|g| {
            // Kafka: DELETE on the group.
            let refused = super::authz::refusal(
                shard,
                &request,
                super::authz::Op::Delete,
                super::authz::Res::Group,
                g,
            )
            .or_else(|| shard.not_coordinator(CoordinatorKind::Group, g));
            (g.to_string(), refused)
        })
        .collect();
    let answers = shard
        .invoke_on(COORDINATOR_SHARD, move |c| async move {
            let mut out = Vec::with_capacity(asked.len());
            for (id, refused) in &asked {
                out.push(match refused {
                    Some(e) => Some(*e),
                    // A share group's state goes with it (`shard::shares`).
                    None if c.shares.groups.borrow().group(id).is_some() => {
                        c.shares.delete_group(id).await.err()
                    }
                    None => c.groups.delete_group(now_ms(), id).await.err(),
                });
            }
            out
        })
        .await;
    let mut response = DeleteGroupsResponse::default();
    for (i, group_id) in body.groups_names.iter().enumerate() {
        let error = match &answers {
            Ok(errors) => errors[i],
            Err(_) => Some(coordinator_gone_code()),
        };
        response.results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id.clone())
                .with_error_code(crate::error::code(error)),
        );
    }
    super::respond(&request, &response)
}
