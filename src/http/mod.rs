//! The HTTP listener (`http_listen`, off by default): produce and push consumption over HTTP.
//!
//! - `POST /v3/clusters/{cluster_id}/topics/{topic}/records`: produce one record in the
//!   shape of Confluent's REST Proxy v3 ([`produce`]).
//! - `GET /v3/clusters/{cluster_id}/topics/{topic}/partitions/{p}/records/stream`: the
//!   partition's records as Server-Sent Events, as they arrive ([`stream`]); with `?group=G`
//!   from G's committed offset. The same path with `Upgrade: websocket` carries them over a
//!   WebSocket ([`websocket`]).
//! - `GET /v3/clusters/{cluster_id}/topics/{topic}/records/stream`: every partition of the
//!   topic merged into one stream (SSE or WebSocket, [`stream`]).
//! - `POST /v3/clusters/{cluster_id}/consumer-groups/{group}/offsets`: commit a stream's
//!   position for a group ([`group`]).
//! - Either stream path with `?share_group=G`: a member of share group G, pushed the records
//!   it acquires, acknowledged (ACCEPT / RELEASE / REJECT) with
//!   `POST /v3/clusters/{cluster_id}/share-groups/{G}/acknowledgements` or WebSocket messages
//!   ([`share`]). `?isolation=read_committed` on a plain stream stops at the last stable
//!   offset and leaves out aborted transactions ([`committed`]).
//!
//! Every shard binds the address (SO_REUSEPORT, as the Kafka listener does) and serves the
//! connections it accepts; requests reach partitions on other shards through the router, by
//! the entry points Produce and Fetch use. HTTP/1.1, one request per connection
//! (`Connection: close`), parsing shared with the admin listener ([`wire`]). Limits: at most
//! `http_connections_per_shard_max` connections per shard (one more is answered 503 and
//! closed), a request head of at most [`REQUEST_HEAD_BYTES_MAX`], a body of at most
//! `http_request_bytes_max`, the whole request within [`REQUEST_READ_TIMEOUT`]. Errors are the
//! REST proxy's JSON `{"error_code":..,"message":..}` with the HTTP status.
//!
//! Security: with `http_authentication_method` `BASIC` or `BEARER` every request must
//! authenticate ([`auth`]: 401 with `WWW-Authenticate` otherwise) and, with the authorizer on,
//! its principal passes the ACL checks Kafka makes for the equivalent Kafka requests
//! ([`access`]: 403 with Kafka's message otherwise), before anything is read or written. With
//! `NONE` (the default) there is no principal, so while the authorizer is on every request is
//! answered 403: the listener cannot be used to get around the ACLs. With `http_ssl_enabled`
//! the listener speaks HTTPS ([`tls`]), and a client certificate's principal authenticates
//! the request by itself.
//!
//! Memory: a connection holds its request (head + body, bounded above) and, when streaming,
//! one read of [`stream::STREAM_READ_BYTES_MAX`] (or one larger batch, at most
//! `message_max_bytes`), its decoded records and [`stream::STREAM_WRITE_CHUNK_BYTES`] of
//! events (or one larger event): roughly `http_connections_per_shard_max` x (64 KiB + 2 x
//! `message_max_bytes`) per shard at worst. A WebSocket stream adds the client's frames not yet
//! whole: at most one frame of `websocket::WS_CLIENT_FRAME_BYTES_MAX` (4 KiB) and a 512-byte
//! read.

pub mod access;
pub mod auth;
pub mod committed;
pub mod group;
pub mod produce;
pub mod share;
pub mod stream;
pub mod tls;
pub mod websocket;
pub mod wire;

pub use tls::HttpStream;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::rt::net::{TcpListener, TcpStream};
use crate::shard::Shard;
use wire::{error_body, json_response, Head, Route};

/// The longest request head accepted.
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// A request (head and body) must arrive within this long.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the HTTP listener on this shard until the shard begins to stop.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    let auth = Rc::new(auth::Authenticator::new(
        &shard.config,
        &shard.config.http_authentication_method,
        "http",
    ));
    let tls = match tls::tls_config(&shard.config) {
        Ok(tls) => tls.map(Rc::new),
        Err(e) => {
            // Checked at start: only a file that changed since can get here. Serve nothing.
            tracing::error!(shard = shard.id, error = %e, "HTTPS configuration does not load; HTTP listener closed");
            return;
        }
    };
    loop {
        let stream = match crate::shard::accept_or_stop(&shard, &listener).await {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, error = %e, "HTTP accept failed");
                crate::rt::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limit = shard.config.http_connections_per_shard_max;
        if open.get() >= limit {
            tracing::debug!(
                shard = shard.id,
                limit,
                "too many HTTP connections; refusing one"
            );
            if tls.is_none() {
                crate::rt::spawn_local(refuse(stream)).detach();
            }
            continue;
        }
        open.set(open.get() + 1);
        let (shard, open, auth, tls) = (shard.clone(), open.clone(), auth.clone(), tls.clone());
        crate::rt::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let served = match tls::accept(tls.as_deref(), stream, &peer).await {
                Ok((stream, certified)) => serve_one(&shard, &auth, stream, certified, &peer).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
    tracing::debug!(shard = shard.id, "HTTP listener closed");
}

/// Answers 503 to a connection over the limit (within a second) and closes it. What the
/// client sent first is read (at most 16 KiB), so that the close does not reset the
/// connection before the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let body = error_body(503, "too many HTTP connections");
    let answer = json_response(503, &body);
    let _ = crate::rt::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 16 * 1024];
        let _ = stream.read(&mut sink).await;
        let _ = stream.write_all(&answer).await;
        let _ = stream.close().await;
    })
    .await;
}

/// A request read whole: its head and body.
struct Request {
    head: Head,
    body: Vec<u8>,
}

/// Reads one request; `Err(answer)` when it must be refused with that response.
async fn read_request(
    stream: &mut HttpStream,
    body_max: usize,
) -> std::io::Result<Result<Request, Vec<u8>>> {
    let deadline = Instant::now() + REQUEST_READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(Err(json_response(
                400,
                &error_body(400, "request head too large"),
            )));
        }
        read_some(stream, &mut buf, deadline).await?;
    };
    let Some(head) = wire::parse_head(&String::from_utf8_lossy(&buf[..head_end])) else {
        return Ok(Err(json_response(400, &error_body(400, "bad request"))));
    };
    let Some(len) = head.content_length() else {
        return Ok(Err(json_response(
            400,
            &error_body(400, "bad Content-Length"),
        )));
    };
    if head.header("transfer-encoding").is_some() {
        return Ok(Err(json_response(
            411,
            &error_body(411, "send the body with a Content-Length"),
        )));
    }
    if len > body_max {
        let message = format!("the body is larger than http_request_bytes_max ({body_max})");
        return Ok(Err(json_response(413, &error_body(413, &message))));
    }
    if len > 0
        && head
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let mut body = buf.split_off(head_end);
    while body.len() < len {
        read_some(stream, &mut body, deadline).await?;
    }
    body.truncate(len);
    Ok(Ok(Request { head, body }))
}

/// Reads what arrives (at most 16 KiB) onto `buf`, failing at the deadline or the end.
async fn read_some(
    stream: &mut HttpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let remaining = deadline.saturating_duration_since(Instant::now());
    match crate::rt::timeout(remaining, stream.read(&mut chunk)).await {
        None => Err(std::io::Error::other("request timed out")),
        Some(Ok(0)) => Err(std::io::Error::other("closed mid-request")),
        Some(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Some(Err(e)) => Err(e),
    }
}

async fn serve_one(
    shard: &Rc<Shard>,
    auth: &auth::Authenticator,
    mut stream: HttpStream,
    certified: Option<Rc<str>>,
    peer: &str,
) -> std::io::Result<()> {
    let request = match read_request(&mut stream, shard.config.http_request_bytes_max).await? {
        Ok(r) => r,
        Err(answer) => return finish(&mut stream, &answer).await,
    };
    let head = &request.head;
    if let Some(refusal) = admit(shard, auth, certified, peer, &request).await {
        return finish(&mut stream, &refusal).await;
    }
    let answer = match (head.method.as_str(), wire::route(&head.path)) {
        ("POST", Route::Records { cluster, topic }) => {
            let (status, body) = produce::handle(shard, cluster, topic, &request.body).await;
            json_response(status, &body)
        }
        (
            "GET",
            Route::Stream {
                cluster,
                topic,
                partition,
            },
        ) => {
            let partition = Some(partition);
            serve_stream(shard, &mut stream, head, cluster, topic, partition).await?;
            return stream.close().await;
        }
        ("GET", Route::TopicStream { cluster, topic }) => {
            serve_stream(shard, &mut stream, head, cluster, topic, None).await?;
            return stream.close().await;
        }
        ("POST", Route::ShareAcks { cluster, group }) => {
            let (status, body) =
                share::acknowledge_handler(shard, cluster, group, &request.body).await;
            json_response(status, &body)
        }
        ("POST", Route::GroupOffsets { cluster, group }) => {
            let (status, body) = group::commit_handler(shard, cluster, group, &request.body).await;
            json_response(status, &body)
        }
        (_, Route::Unknown) => json_response(404, &error_body(404, "HTTP 404 Not Found")),
        _ => json_response(405, &error_body(405, "HTTP 405 Method Not Allowed")),
    };
    finish(&mut stream, &answer).await
}

/// Authenticates the request (by its client certificate's principal `certified`, else as
/// [`auth`] says) and checks its ACLs ([`access`]): `None` when it may be served, else the
/// answer refusing it (401 or 403).
async fn admit(
    shard: &Shard,
    auth: &auth::Authenticator,
    certified: Option<Rc<str>>,
    peer: &str,
    request: &Request,
) -> Option<Vec<u8>> {
    if certified.is_none() && !auth.is_on() {
        // No principal to check ACLs against: with the authorizer on, nothing is served.
        let message =
            "the HTTP listener has no authentication; it serves nothing while the authorizer is on";
        return shard
            .config
            .authorizer
            .then(|| json_response(403, &error_body(40301, message)));
    }
    let principal = match certified {
        Some(principal) => principal,
        None => match auth.authenticate(shard, &request.head, peer).await {
            Ok(principal) => principal,
            Err(refusal) => return Some(auth.unauthorized_response(&refusal)),
        },
    };
    if !shard.config.authorizer {
        return None;
    }
    let head = &request.head;
    let needs = access::required(&head.method, &wire::route(&head.path), head, &request.body);
    let authorizer = crate::security::authorizer::Authorizer {
        enabled: true,
        super_users: &shard.config.super_users,
        allow_everyone_if_no_acl_found: shard.config.allow_everyone_if_no_acl_found,
    };
    let caller = crate::security::authorizer::Caller {
        principal: &principal,
        host: peer,
    };
    let metadata = shard.metadata();
    let message = access::first_refusal(&authorizer, &metadata.acls, caller, &needs)?;
    tracing::debug!(%peer, %principal, path = %head.path, %message, "HTTP request refused by the ACLs");
    Some(json_response(403, &error_body(40301, &message)))
}

/// A stream request: a share-group member's stream with `?share_group=G` ([`share`]), else
/// a partition's or topic's records ([`stream`]).
async fn serve_stream(
    shard: &Rc<Shard>,
    stream: &mut HttpStream,
    head: &Head,
    cluster: &str,
    topic: &str,
    partition: Option<i32>,
) -> std::io::Result<()> {
    let framing = stream::Framing::of(head);
    if head.param("share_group").is_some() {
        share::serve(shard, stream, head, cluster, topic, partition, framing).await
    } else {
        stream::serve(shard, stream, head, cluster, topic, partition, framing).await
    }
}

/// Writes a whole answer (within [`stream::STREAM_WRITE_STALL_MAX`]) and closes.
async fn finish(stream: &mut HttpStream, answer: &[u8]) -> std::io::Result<()> {
    match crate::rt::timeout(stream::STREAM_WRITE_STALL_MAX, stream.write_all(answer)).await {
        Some(result) => result?,
        None => return Err(std::io::Error::other("the client did not take the answer")),
    }
    stream.close().await
}
