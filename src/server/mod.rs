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

/// Sockets a shard holds open at most while their close is delayed (an address over its
/// connection rate); past it they are closed at once.
const DELAYED_CLOSES_PER_SHARD_MAX: usize = 1024;

thread_local! {
    /// Sockets this shard holds for a delayed close now.
    static DELAYED_CLOSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Closes `stream` after `delay_ms` without serving it (Kafka's `DelayedCloseSocket` for a
/// connection over its IP's rate: the client learns of the refusal only then, which slows a
/// client that reconnects at once), or at once when this shard already holds
/// [`DELAYED_CLOSES_PER_SHARD_MAX`] such sockets or is stopping.
fn close_after(shard: &Rc<Shard>, stream: crate::rt::net::TcpStream, delay_ms: u64) {
    if DELAYED_CLOSES.get() >= DELAYED_CLOSES_PER_SHARD_MAX || shard.stopping.get() {
        drop(stream);
        return;
    }
    DELAYED_CLOSES.set(DELAYED_CLOSES.get() + 1);
    crate::rt::spawn_local(async move {
        crate::rt::sleep(std::time::Duration::from_millis(delay_ms)).await;
        drop(stream);
        DELAYED_CLOSES.set(DELAYED_CLOSES.get() - 1);
    })
    .detach();
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
    let rate_limits = shard.config.accept_limits(&kind.name);
    let error_log = crate::rt::LogLimiter::new(ACCEPT_ERROR_LOG_INTERVAL);
    let ip_throttle_log = crate::rt::LogLimiter::new(ACCEPT_ERROR_LOG_INTERVAL);
    loop {
        let accepted = crate::shard::accept_or_stop(&shard, &listener).await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                let out_of_fds = crate::rt::is_out_of_descriptors(&e);
                if let Some(errors_unlogged) = error_log.allow() {
                    tracing::warn!(shard = shard.id, error = %e, similar_errors_not_logged = errors_unlogged, "accept failed");
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
        if rate_limits.any() {
            // KIP-612: the connection is counted into the broker-wide and listener rates; over
            // them this acceptor waits before serving it and accepting the next (Kafka's
            // `waitForConnectionSlot`). At most one quota window (1 s).
            let wait_ms = crate::security::conn_rate::record_accept(&rate_limits);
            if wait_ms > 0 {
                crate::rt::sleep(std::time::Duration::from_millis(wait_ms)).await;
            }
        }
        if let Some(addr) = peer_addr {
            let quota =
                crate::quota::ip_connection_rate(&shard.metadata().client_quotas, addr.ip());
            if let Some(quota) = quota {
                if let Err(throttle_ms) =
                    crate::security::conn_rate::record_ip(&rate_limits, addr.ip(), quota)
                {
                    if let Some(ip_throttled_unlogged) = ip_throttle_log.allow() {
                        tracing::info!(shard = shard.id, %peer, quota, throttle_ms, similar_not_logged = ip_throttled_unlogged, "connection creation rate of this address over its connection_creation_rate quota; closing the new connection after the throttle time");
                    }
                    crate::metrics::record_connection(false);
                    close_after(&shard, stream, throttle_ms);
                    continue;
                }
            }
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
