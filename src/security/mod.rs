//! Security: Kafka's authorization model. `acl` holds the ACL values (bindings, filters,
//! Kafka's enums and codes) and `authorizer` the pure decision (Kafka's `StandardAuthorizer`
//! rules) over the bindings of the cluster metadata. Neither does I/O nor imports another
//! module of the broker: the API handlers (`api::authz`) give them the caller, the request's
//! resource and the current metadata's ACLs.
//!
//! Not here yet: authentication (the connection sets `ParsedRequest::principal`; until a
//! listener authenticates it is `User:ANONYMOUS`) and quotas.

pub mod acl;
pub mod authorizer;
