//! The Kafka listeners: every shard accepts connections on each listener's port.
//!
//! Each configured listener (`listeners`, [`listener::Listener`]) has its accept loop on every
//! shard; the connection it accepts speaks that listener's security protocol (TLS, SASL).
//! glommio sets SO_REUSEPORT on every listening socket, so each shard binds the listen
//! address and the kernel spreads new connections over them. A connection is served entirely
//! by the shard that accepted it ([`connection`]); requests reach other shards' partitions
//! through the router. At most `connections_per_shard_max` connections are open per shard;
//! one more is closed at once, with a log line. When the process is out of descriptors
//! (EMFILE), the loop backs off instead of spinning, turns waiting clients away with a prompt
//! close (using a descriptor it keeps in reserve), and logs at most one line per 10 s.
//!
//! When the shard stops (`Shard::stopping` set, `Shard::stop` notified), the accept loop ends
//! and every connection waiting for its next request wakes ([`crate::rt::Notify::until`]),
//! so idle connections close at once. Each waiter unregisters when its wait ends: a closed
//! connection leaves nothing behind (a waker kept after its task ended would keep the whole
//! connection task's memory alive).

pub mod admin;
pub mod connection;
pub mod console;
pub mod listener;
pub mod metrics_gather;

use std::net::SocketAddr;
use std::rc::Rc;

use crate::rt::net::TcpListener;

use crate::shard::Shard;

/// Back-off after a failed accept (EMFILE and friends), so the loop never spins.
const ACCEPT_ERROR_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// At most one "accept failed" log line per this interval (with the count of the others).
const ACCEPT_ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A descriptor kept in reserve for the listener: when the process runs out of descriptors
/// (EMFILE), the accept loop gives it up for a moment to accept the waiting connection and
/// close it at once, so clients get a prompt close instead of hanging in the backlog, then
/// takes it back.
fn reserve_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Accepts connections on `listener` (the socket of Kafka listener `kind`) until the shard
/// begins to stop.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: Rc<listener::Listener>) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(shard = shard.id, ?addr, listener = %kind.name, "accepting connections");
    let mut reserve = reserve_fd();
    // Checked at start (`BrokerConfig::validate`); a bad value here falls back to no limit.
    let ip_limits = crate::security::ip_limit::IpLimits::parse(
        shard.config.max_connections_per_ip,
        &shard.config.max_connections_per_ip_overrides,
    )
    .unwrap_or_else(|_| {
        crate::security::ip_limit::IpLimits::parse(u32::MAX, "").expect("no overrides")
    });
    let mut errors_unlogged = 0u64;
    let mut last_error_log: Option<std::time::Instant> = None;
    loop {
        let accepted = crate::shard::accept_or_stop(&shard, &listener).await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                let out_of_fds = crate::rt::is_out_of_descriptors(&e);
                if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(shard = shard.id, error = %e, similar_errors_not_logged = errors_unlogged, "accept failed");
                    last_error_log = Some(std::time::Instant::now());
                    errors_unlogged = 0;
                } else {
                    errors_unlogged += 1;
                }
                if out_of_fds && reserve.take().is_some() {
                    // Turn the waiting client away (closed at once) rather than leave it
                    // hanging; the reserve descriptor is taken back right after.
                    let turned_away =
                        futures_lite::future::or(async { listener.accept().await.ok() }, async {
                            crate::rt::sleep(ACCEPT_ERROR_BACKOFF).await;
                            None
                        })
                        .await;
                    if turned_away.is_some() {
                        crate::metrics::record_connection(false);
                    }
                    drop(turned_away);
                    reserve = reserve_fd();
                }
                crate::rt::sleep(ACCEPT_ERROR_BACKOFF).await;
                if reserve.is_none() {
                    reserve = reserve_fd();
                }
                continue;
            }
        };
        let peer_addr = stream.peer_addr().ok();
        let peer = peer_addr.map_or_else(|| "unknown".to_string(), |a| a.to_string());
        if shard.connections.get() >= shard.config.connections_per_shard_max {
            tracing::warn!(shard = shard.id, %peer, limit = shard.config.connections_per_shard_max, "too many connections; closing new one");
            crate::metrics::record_connection(false);
            drop(stream);
            continue;
        }
        let ip_slot = match peer_addr {
            Some(addr) => match crate::security::ip_limit::try_acquire(&ip_limits, addr.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(shard = shard.id, %peer, limit = ip_limits.limit_of(addr.ip()), "too many connections from this address (max_connections_per_ip); closing new one");
                    crate::metrics::record_connection(false);
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        shard.connections.set(shard.connections.get() + 1);
        crate::metrics::record_connection(true);
        let conn_shard = shard.clone();
        let conn_listener = kind.clone();
        crate::rt::spawn_local(async move {
            connection::serve(conn_shard.clone(), stream, peer, conn_listener).await;
            conn_shard.connections.set(conn_shard.connections.get() - 1);
            drop(ip_slot);
        })
        .detach();
    }
    tracing::debug!(shard = shard.id, "listener closed");
}
