//! The quota hooks of Produce and Fetch (`crate::quota` does the arithmetic).
//!
//! Produce records the request's bytes before appending and answers with the throttle time;
//! Fetch records the response's bytes and, when that puts the client over its quota, answers
//! with an empty response carrying the throttle time and takes the bytes back off the rate
//! (Kafka's `getThrottledResponse` and `unrecordQuotaSensor`: what the client did not get does
//! not count). Either way the connection then stops reading for the throttle time
//! ([`Outcome::Throttled`], `server::connection`).

use std::rc::Rc;

use crate::protocol::fetch::FetchResponseParts;
use crate::protocol::header::ParsedRequest;
use crate::quota::{self, QuotaType};
use crate::shard::Shard;

use super::Outcome;

/// `outcome`, followed by `throttle_ms` of muting when it is not 0.
pub fn throttled(outcome: Outcome, throttle_ms: u64) -> Outcome {
    if throttle_ms == 0 {
        return outcome;
    }
    match outcome {
        Outcome::Respond(pieces) => Outcome::Throttled {
            pieces,
            throttle_ms,
        },
        Outcome::NoResponse => Outcome::Throttled {
            pieces: Vec::new(),
            throttle_ms,
        },
        other => other,
    }
}

/// Frames `out` with `frame`, records its bytes against the client's fetch quota, and, over
/// it, frames the empty throttled response instead.
pub fn throttle_fetch(
    shard: &Rc<Shard>,
    request: &ParsedRequest,
    out: &mut FetchResponseParts,
    frame: impl Fn(&FetchResponseParts) -> Outcome,
) -> Outcome {
    let metadata = shard.metadata();
    let quotas = &metadata.client_quotas;
    let answer = frame(out);
    let Outcome::Respond(pieces) = &answer else {
        return answer;
    };
    if quotas.is_empty() {
        return answer;
    }
    let bytes: usize = pieces.iter().map(|p| p.len()).sum();
    let (principal, client_id) = (&request.principal, request.client_id_or_empty());
    let throttle_ms =
        quota::record_and_throttle_ms(quotas, QuotaType::Fetch, principal, client_id, bytes as f64);
    if throttle_ms == 0 {
        return answer;
    }
    quota::unrecord(quotas, QuotaType::Fetch, principal, client_id, bytes as f64);
    out.topics.clear();
    out.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    throttled(frame(out), throttle_ms)
}
