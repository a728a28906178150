//! Security: authentication and authorization, as Kafka clients configure them.
//!
//! Authentication: `tls` (rustls server configuration from PEM files, client certificates,
//! reload, the principal of a certificate), `sasl` (the per-connection SASL server: PLAIN,
//! SCRAM-SHA-256/512, OAUTHBEARER), `oauth` (OAUTHBEARER's JWT validation: unsecured, or
//! signed against a JWKS file), `scram` (the credential math) and `users` (the users of a
//! stopped node: create, list, delete). The connection (`server::connection`) drives them over its socket and sets
//! `ParsedRequest::principal` (`User:ANONYMOUS` until a listener authenticates).
//!
//! Authorization: `acl` holds the ACL values (bindings, filters, Kafka's enums and codes) and
//! `authorizer` the pure decision (Kafka's `StandardAuthorizer` rules) over the bindings of the
//! cluster metadata; the API handlers (`api::authz`) give them the caller, the request's
//! resource and the current metadata's ACLs.
//!
//! Connection limits: `ip_limit` (Kafka's `max.connections.per.ip` and its overrides, counted
//! process-wide; the accept loop in `server` takes a slot per connection) and `conn_rate`
//! (KIP-612 connection-creation rates: broker-wide and per listener the acceptor waits, per IP
//! an address over its `connection_creation_rate` quota is closed).
//!
//! Nothing here does I/O on the request path or imports the coordinator or the shard. The
//! byte-rate and request quotas are in `crate::quota`.

pub mod acl;
pub mod authorizer;
pub mod conn_rate;
pub mod ip_limit;
pub mod oauth;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod users;
