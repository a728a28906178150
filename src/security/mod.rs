//! Security: TLS for listeners, SASL authentication (PLAIN, SCRAM) and the SCRAM credential
//! math, and the first users of a stopped node (`users`). Nothing here imports the coordinator
//! or the shard: the connection (`server::connection`) drives these pieces over its socket and
//! looks credentials up in the metadata it holds.

pub mod sasl;
pub mod scram;
pub mod tls;
pub mod users;
