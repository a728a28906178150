//! The admin HTTP listener: `/metrics` (Prometheus text format), `/health` and `/ready`, and
//! the web console (`/` and its `/api/...` JSON, [`super::console`]).
//!
//! A deliberately tiny HTTP/1.1 server on the coordinator shard (shard 0): one request per
//! connection (`Connection: close`), GET or HEAD only, the request head at most
//! [`REQUEST_HEAD_BYTES_MAX`] bytes and read within [`REQUEST_READ_TIMEOUT`], the response
//! taken within [`RESPONSE_WRITE_TIMEOUT`], at most [`ADMIN_CONNECTIONS_MAX`] connections at
//! once. When all are taken, a new connection closes the oldest one that has not sent its
//! request head yet (an idle or slow client), so probes keep being answered however many idle
//! connections are open; only when every slot is busy answering is the new one closed. It is
//! bound by
//! `runtime::run_broker` with a plain socket (no SO_REUSEPORT, so a second broker cannot
//! silently share the port) and handed to shard 0, which serves it from startup (so `/health`
//! answers while partitions are still being recovered) until the broker stops.
//!
//! - `/health`: 200 while the process runs and serves HTTP (liveness).
//! - `/ready`: 200 once every shard has opened its partitions and listens for Kafka clients,
//!   503 before that and once shutdown has begun (readiness).
//! - `/metrics`: asks every shard for its snapshot over the router (bounded by
//!   [`SCRAPE_TIMEOUT`]) and renders them (`crate::metrics`). A shard that does not answer in
//!   time makes the scrape fail with 503 rather than hang.
//!
//! Authentication (`admin_authentication_method`, default `NONE`: none, as before): with
//! `BASIC` or `BEARER` (`crate::http::auth`, the same checks as the HTTP listener) every path
//! but `/health` and `/ready` (probes) needs credentials (401 with `WWW-Authenticate`
//! otherwise). `/metrics` then needs an authenticated principal and no ACL (Prometheus sends
//! `basic_auth` or `authorization` credentials; what it reads are counters and names). The
//! console (`/`) and `/api/*` also need, while the authorizer is on, DESCRIBE on the CLUSTER
//! (or a super user): 403 otherwise; and `/api/topics` and `/api/groups` list only the topics
//! and groups the principal may DESCRIBE (`super::console`). Without authentication the
//! console is served as before (no principal to check).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::net::{TcpListener, TcpStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{self, render::BrokerInfo, ShardSnapshot};
use crate::shard::Shard;

/// The longest request head (request line and headers) accepted.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A request head must arrive within this long (probes and scrapers send theirs at once).
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin connections served at once; past it, the oldest one still waiting for its request head
/// is closed to make room (or, if none waits, the new one is closed).
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// A response must be taken by the client within this long (a client that stops reading must
/// not hold one of the [`ADMIN_CONNECTIONS_MAX`] slots forever).
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for every shard's snapshot.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin listener until the shard begins to stop. `ready` says whether the broker
/// is ready (every shard listens); `started` is when the process started.
pub async fn serve(
    shard: Rc<Shard>,
    listener: TcpListener,
    ready: Rc<dyn Fn() -> bool>,
    started: Instant,
) {
    let slots = Rc::new(RefCell::new(Slots::default()));
    let auth = Rc::new(crate::http::auth::Authenticator::new(
        &shard.config,
        &shard.config.admin_authentication_method,
        "admin",
    ));
    loop {
        let accepted = crate::shard::accept_or_stop(&shard, &listener).await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin accept failed");
                crate::rt::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !slots.borrow_mut().make_room() {
            tracing::debug!("every admin connection is busy answering; closing new one");
            continue;
        }
        let id = slots.borrow_mut().admit();
        let guard = SlotGuard {
            slots: slots.clone(),
            id,
        };
        let (shard, ready, auth) = (shard.clone(), ready.clone(), auth.clone());
        let task = crate::rt::spawn_local(async move {
            let admin = Admin {
                ready: &*ready,
                started,
                auth: &auth,
            };
            if let Err(e) = serve_one(&shard, stream, &admin, &guard).await {
                tracing::debug!(error = %e, "admin connection failed");
            }
            drop(guard);
        })
        .detach();
        // The task has not run yet (it runs when this loop next waits), so it is still waiting
        // for its head.
        if let Some(waiting) = slots.borrow_mut().open.get_mut(&id) {
            *waiting = Some(task);
        }
    }
    tracing::debug!("admin listener closed");
}

/// The admin connections open on the coordinator shard, by id (ids grow, so the first is the
/// oldest); each with the handle that closes it while it still waits for its request head,
/// `None` once it is answering.
#[derive(Default)]
struct Slots {
    open: BTreeMap<u64, Option<crate::rt::JoinHandle<()>>>,
    next_id: u64,
}

impl Slots {
    /// Makes room for one more connection: true if there is a free slot or one was freed by
    /// closing the oldest connection still waiting for its request head.
    fn make_room(&mut self) -> bool {
        if self.open.len() < ADMIN_CONNECTIONS_MAX {
            return true;
        }
        let Some(oldest) = self
            .open
            .iter()
            .find_map(|(id, waiting)| waiting.is_some().then_some(*id))
        else {
            return false;
        };
        tracing::debug!("admin connections at the limit; closing the oldest idle one");
        // Its future is dropped (closing the socket) on the next turn; its slot is free now.
        if let Some(Some(handle)) = self.open.remove(&oldest) {
            handle.cancel();
        }
        true
    }

    /// Takes a slot for a new connection.
    fn admit(&mut self) -> u64 {
        self.next_id += 1;
        self.open.insert(self.next_id, None);
        self.next_id
    }
}

/// Holds one admin connection's slot; gives it back when the connection ends (an evicted
/// connection's slot was given back when it was evicted).
struct SlotGuard {
    slots: Rc<RefCell<Slots>>,
    id: u64,
}

impl SlotGuard {
    /// The request head has arrived: the connection is answering and no longer evictable.
    fn head_received(&self) {
        if let Some(waiting) = self.slots.borrow_mut().open.get_mut(&self.id) {
            *waiting = None;
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.borrow_mut().open.remove(&self.id);
    }
}

/// Reads the request head: up to the blank line, within the size and time limits.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + REQUEST_READ_TIMEOUT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return Err(std::io::Error::other("request head too large"));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let read = futures_lite::future::or(async { Some(stream.read(&mut chunk).await) }, async {
            crate::rt::sleep(remaining).await;
            None
        })
        .await;
        match read {
            None => return Err(std::io::Error::other("request head timed out")),
            Some(Ok(0)) => return Err(std::io::Error::other("closed before a request")),
            Some(Ok(n)) => head.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(head)
}

/// What every admin connection shares: readiness, start time, authentication.
struct Admin<'a> {
    ready: &'a dyn Fn() -> bool,
    started: Instant,
    auth: &'a crate::http::auth::Authenticator,
}

/// The principal of a request to `path` when the admin listener authenticates (`Ok(None)`
/// when it does not, or for the probes), else the answer refusing it (401, or 403 for the
/// console without DESCRIBE on the cluster) and its `WWW-Authenticate`.
async fn admit(
    shard: &Shard,
    auth: &crate::http::auth::Authenticator,
    stream: &TcpStream,
    head: &str,
    path: &str,
) -> Result<Option<super::console::Viewer>, (u16, String, String)> {
    if !auth.is_on() || path == "/health" || path == "/ready" {
        return Ok(None);
    }
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let Some(parsed) = crate::http::wire::parse_head(head) else {
        return Err((400, "bad request\n".into(), String::new()));
    };
    let principal = auth
        .authenticate(shard, &parsed, &peer)
        .await
        .map_err(|refusal| {
            let challenge = format!("WWW-Authenticate: {}\r\n", auth.challenge(&refusal));
            (401, format!("{}\n", refusal.message), challenge)
        })?;
    if shard.config.authorizer && super::console::handles(path) {
        let caller = crate::security::authorizer::Caller {
            principal: &principal,
            host: &peer,
        };
        let needs = [crate::http::access::cluster_need()];
        let metadata = shard.metadata();
        if let Some(message) = crate::http::access::first_refusal(
            &super::console::authorizer(shard),
            &metadata.acls,
            caller,
            &needs,
        ) {
            return Err((403, format!("{message}\n"), String::new()));
        }
    }
    Ok(Some(super::console::Viewer {
        principal,
        host: peer,
    }))
}

async fn serve_one(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    admin: &Admin<'_>,
    slot: &SlotGuard,
) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    slot.head_received();
    let head = String::from_utf8_lossy(&head);
    let (ready, started) = (admin.ready, admin.started);
    let mut extra_headers = String::new();
    let (status, content_type, body) = match crate::http::wire::parse_request_line(&head) {
        None => (400, "text/plain", "bad request\n".to_string()),
        Some(line) if line.method != "GET" && line.method != "HEAD" => {
            (405, "text/plain", "only GET and HEAD\n".to_string())
        }
        Some(line) => match admit(shard, admin.auth, &stream, &head, line.path).await {
            Err((status, message, challenge)) => {
                extra_headers = challenge;
                (status, "text/plain", message)
            }
            Ok(viewer) => match line.path {
                "/health" => (200, "text/plain", "ok\n".to_string()),
                "/ready" if ready() && !shard.stopping.get() => {
                    (200, "text/plain", "ready\n".to_string())
                }
                "/ready" => (503, "text/plain", "not ready\n".to_string()),
                "/metrics" => match scrape(shard, ready(), started).await {
                    Some(text) => (200, "text/plain; version=0.0.4; charset=utf-8", text),
                    None => (
                        503,
                        "text/plain",
                        "a shard did not answer in time\n".to_string(),
                    ),
                },
                path if super::console::handles(path) => {
                    super::console::answer(shard, path, viewer.as_ref()).await
                }
                _ => (
                    404,
                    "text/plain",
                    "not found (try /, /metrics, /health, /ready)\n".to_string(),
                ),
            },
        },
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let is_head = crate::http::wire::parse_request_line(&head).is_some_and(|l| l.method == "HEAD");
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        response.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&response).await?;
        stream.flush().await?;
        stream.close().await
    };
    let timeout = async {
        crate::rt::sleep(RESPONSE_WRITE_TIMEOUT).await;
        Err(std::io::Error::other(
            "client did not read the response in time",
        ))
    };
    futures_lite::future::or(write, timeout).await
}

/// Gathers every shard's snapshot and renders them; `None` if a shard did not answer in time.
async fn scrape(shard: &Rc<Shard>, ready: bool, started: Instant) -> Option<String> {
    let gather = async {
        let answers = shard
            .invoke_on_all(|s| async move { super::metrics_gather::snapshot(&s) })
            .await;
        answers
            .into_iter()
            .collect::<Result<Vec<ShardSnapshot>, _>>()
            .ok()
    };
    let timeout = async {
        crate::rt::sleep(SCRAPE_TIMEOUT).await;
        None
    };
    let snapshots = futures_lite::future::or(gather, timeout).await?;
    let info = BrokerInfo {
        ready,
        resident_memory_bytes: resident_memory_bytes(),
        uptime_seconds: started.elapsed().as_secs_f64(),
        cpu: metrics::procstat::process_cpu(),
        threads: metrics::procstat::thread_cpu(),
    };
    let mut text = metrics::render(&info, &snapshots);
    text.push_str(&crate::quota::render_metrics());
    text.push_str(&crate::security::conn_rate::render_metrics());
    Some(text)
}

/// VmRSS of this process, from /proc.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
