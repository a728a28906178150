//! DescribeUserScramCredentials (50) and AlterUserScramCredentials (51): the SCRAM users kept
//! in the metadata log (`ClusterMetadata::scram_credentials`).
//!
//! Describe reads the local shard's metadata snapshot: each asked user's mechanisms and
//! iteration counts (never salts or keys), RESOURCE_NOT_FOUND for an unknown user,
//! DUPLICATE_RESOURCE for a user asked twice; no users (null or empty) describes every user.
//! Alter takes, as Kafka does, the client's salt and SaltedPassword and stores only StoredKey
//! and ServerKey derived from them (`security::scram`); each user's changes are checked first
//! (mechanism, iterations, non-empty name: UNSUPPORTED_SASL_MECHANISM / UNACCEPTABLE_CREDENTIAL;
//! the same user and mechanism twice: DUPLICATE_RESOURCE) and a user with any refused change
//! gets none applied. The changes run on the coordinator shard through `change_metadata`.
//!
//! Authorization as Kafka's `KafkaApis`: Describe needs DESCRIBE on the cluster (else the
//! top-level CLUSTER_AUTHORIZATION_FAILED), Alter needs ALTER on the cluster (else every user's
//! result is CLUSTER_AUTHORIZATION_FAILED and nothing changes).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{decode, respond, str_bytes, Outcome};
use crate::coordinator::metadata::{
    ClusterMetadata, MetadataCommand, StoredScramCredential, SCRAM_FIELD_BYTES_MAX,
};
use crate::protocol::header::ParsedRequest;
use crate::security::scram::{ScramCredential, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::shard::{Shard, COORDINATOR_SHARD};

/// DescribeUserScramCredentials.
pub async fn describe(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: DescribeUserScramCredentialsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    if !super::authz::cluster_allowed(shard, &request, super::authz::Op::Describe) {
        let response = DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
        return respond(&request, &response);
    }
    let asked: Vec<String> = body
        .users
        .unwrap_or_default()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    let response = DescribeUserScramCredentialsResponse::default()
        .with_results(describe_results(&shard.metadata(), &asked));
    respond(&request, &response)
}

/// The Describe results for `asked` (every user when empty).
fn describe_results(
    metadata: &ClusterMetadata,
    asked: &[String],
) -> Vec<DescribeUserScramCredentialsResult> {
    let users: Vec<&str> = if asked.is_empty() {
        metadata
            .scram_credentials
            .keys()
            .map(String::as_str)
            .collect()
    } else {
        asked.iter().map(String::as_str).collect()
    };
    let duplicates = super::admin::duplicates(users.iter().copied());
    let mut results = Vec::new();
    for user in users {
        let mut result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
        let (error, message) = if duplicates.contains(&user) {
            if results
                .iter()
                .any(|r: &DescribeUserScramCredentialsResult| r.user.as_str() == user)
            {
                continue;
            }
            (
                Some(ResponseError::DuplicateResource),
                "Cannot describe SCRAM credentials for the same user twice in a single request",
            )
        } else if let Some(mechanisms) = metadata.scram_credentials.get(user) {
            result.credential_infos = mechanisms
                .iter()
                .filter_map(|(name, c)| {
                    Some(
                        CredentialInfo::default()
                            .with_mechanism(ScramMechanism::from_name(name)?.kafka_type())
                            .with_iterations(c.iterations),
                    )
                })
                .collect();
            (None, "")
        } else {
            (
                Some(ResponseError::ResourceNotFound),
                "Attempt to describe a user credential that does not exist",
            )
        };
        result.error_code = crate::error::code(error);
        result.error_message = error.map(|_| str_bytes(message));
        results.push(result);
    }
    results
}

/// One user's requested change, checked.
type Change = Result<MetadataCommand, (ResponseError, String)>;

/// AlterUserScramCredentials.
pub async fn alter(shard: &Rc<Shard>, request: ParsedRequest) -> Outcome {
    let body: AlterUserScramCredentialsRequest = match decode(&request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // Per user, in order of first appearance: its changes.
    let mut by_user: BTreeMap<String, Vec<(i8, Change)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut add = |user: String, mechanism: i8, change: Change| {
        if !by_user.contains_key(&user) {
            order.push(user.clone());
        }
        by_user.entry(user).or_default().push((mechanism, change));
    };
    for d in body.deletions {
        let user = d.name.to_string();
        let change = check_mechanism(d.mechanism).map(|m| MetadataCommand::DeleteScramCredential {
            user: user.clone(),
            mechanism: m.name().to_string(),
        });
        add(user, d.mechanism, change);
    }
    for u in body.upsertions {
        let user = u.name.to_string();
        let change = upsertion(
            &user,
            u.mechanism,
            u.iterations,
            &u.salt,
            &u.salted_password,
        );
        add(user, u.mechanism, change);
    }
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    if !super::authz::cluster_allowed(shard, &request, super::authz::Op::Alter) {
        for user in by_user.into_keys() {
            let why = "Cluster authorization failed.".to_string();
            errors.insert(user, (ResponseError::ClusterAuthorizationFailed, why));
        }
        by_user = BTreeMap::new();
    }
    let mut commands = Vec::new();
    let mut command_users = Vec::new();
    for (user, changes) in by_user {
        let mut mechanisms: Vec<i8> = changes.iter().map(|(m, _)| *m).collect();
        mechanisms.sort_unstable();
        let twice = mechanisms.windows(2).any(|w| w[0] == w[1]);
        let refused = changes.iter().find_map(|(_, c)| c.as_ref().err().cloned());
        if user.is_empty() {
            errors.insert(
                user,
                (
                    ResponseError::UnacceptableCredential,
                    "Username must not be empty".into(),
                ),
            );
        } else if twice {
            errors.insert(
                user,
                (
                    ResponseError::DuplicateResource,
                    "A user credential cannot be altered twice in the same request".into(),
                ),
            );
        } else if let Some(e) = refused {
            errors.insert(user, e);
        } else {
            for (_, change) in changes {
                commands.push(change.expect("checked above"));
                command_users.push(user.clone());
            }
        }
    }
    if !commands.is_empty() {
        let applied = shard
            .invoke_on(COORDINATOR_SHARD, move |c| async move {
                c.change_metadata(commands, false).await
            })
            .await;
        match applied {
            Ok(results) => {
                for (user, result) in command_users.into_iter().zip(results) {
                    if let Err(e) = result {
                        errors.entry(user).or_insert((e.code, e.message));
                    }
                }
            }
            Err(_) => {
                for user in command_users {
                    errors
                        .entry(user)
                        .or_insert((ResponseError::UnknownServerError, "broker stopping".into()));
                }
            }
        }
    }
    let results = order
        .into_iter()
        .map(|user| {
            let error = errors.get(&user);
            AlterUserScramCredentialsResult::default()
                .with_user(str_bytes(user.clone()))
                .with_error_code(crate::error::code(error.map(|e| e.0)))
                .with_error_message(error.map(|e| str_bytes(e.1.clone())))
        })
        .collect();
    respond(
        &request,
        &AlterUserScramCredentialsResponse::default().with_results(results),
    )
}

fn check_mechanism(code: i8) -> Result<ScramMechanism, (ResponseError, String)> {
    ScramMechanism::from_kafka_type(code).ok_or((
        ResponseError::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism".into(),
    ))
}

/// An upsertion as its metadata command: StoredKey and ServerKey derived from the client's
/// SaltedPassword (which is not kept).
fn upsertion(user: &str, mechanism: i8, iterations: i32, salt: &[u8], salted: &[u8]) -> Change {
    let m = check_mechanism(mechanism)?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err((
            ResponseError::UnacceptableCredential,
            format!("Iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}"),
        ));
    }
    if salt.is_empty()
        || salted.is_empty()
        || salt.len() > SCRAM_FIELD_BYTES_MAX
        || salted.len() > SCRAM_FIELD_BYTES_MAX
    {
        return Err((
            ResponseError::UnacceptableCredential,
            "Salt and salted password must be non-empty and at most 1024 bytes".into(),
        ));
    }
    let c = ScramCredential::from_salted_password(m, salted, salt, iterations);
    Ok(MetadataCommand::SetScramCredential {
        user: user.to_string(),
        mechanism: m.name().to_string(),
        credential: StoredScramCredential {
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
            iterations: c.iterations,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Describe lists mechanisms and iterations only, refuses unknown and repeated users.
    #[test]
    fn describe_answers_as_kafka() {
        let mut m = ClusterMetadata::default();
        let c = StoredScramCredential {
            salt: vec![1],
            stored_key: vec![2],
            server_key: vec![3],
            iterations: 8192,
        };
        m.scram_credentials
            .entry("alice".into())
            .or_default()
            .insert("SCRAM-SHA-512".into(), c);
        let all = describe_results(&m, &[]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].credential_infos[0].mechanism, 2);
        assert_eq!(all[0].credential_infos[0].iterations, 8192);
        let r = describe_results(&m, &["bob".into(), "alice".into(), "alice".into()]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].error_code, ResponseError::ResourceNotFound.code());
        assert_eq!(r[1].error_code, ResponseError::DuplicateResource.code());
    }

    #[test]
    fn upsertions_are_checked() {
        assert!(upsertion("a", 3, 4096, b"s", b"p").is_err());
        assert!(upsertion("a", 2, 100, b"s", b"p").is_err());
        assert!(upsertion("a", 2, 4096, b"", b"p").is_err());
        assert!(upsertion("a", 1, 4096, b"s", b"p").is_ok());
    }
}
