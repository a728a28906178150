//! The Kafka listener: every shard accepts connections on the same port.
//!
//! glommio sets SO_REUSEPORT on every listening socket, so each shard binds the listen
//! address and the kernel spreads new connections over them. A connection is served entirely
//! by the shard that accepted it ([`connection`]); requests reach other shards' partitions
//! through the router. At most `connections_per_shard_max` connections are open per shard;
//! one more is closed at once, with a log line.

pub mod admin;
pub mod connection;

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::TcpListener;

use crate::shard::Shard;

/// The next accepted connection, or `None` once the shard begins to stop.
pub(crate) async fn accept_or_stop(
    shard: &Shard,
    listener: &TcpListener,
) -> Option<glommio::Result<glommio::net::TcpStream, ()>> {
    futures_lite::future::or(async { Some(listener.accept().await) }, async {
        while !shard.stopping.get() {
            shard.stop.wait().await;
        }
        None
    })
    .await
}

/// Accepts connections on `addr` until the shard begins to stop.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(shard = shard.id, ?addr, "accepting connections");
    loop {
        let accepted = accept_or_stop(&shard, &listener).await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.id, error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
        if shard.connections.get() >= shard.config.connections_per_shard_max {
            tracing::warn!(shard = shard.id, %peer, limit = shard.config.connections_per_shard_max, "too many connections; closing new one");
            crate::metrics::record_connection(false);
            drop(stream);
            continue;
        }
        shard.connections.set(shard.connections.get() + 1);
        crate::metrics::record_connection(true);
        let conn_shard = shard.clone();
        glommio::spawn_local(async move {
            connection::serve(conn_shard.clone(), stream, peer).await;
            conn_shard.connections.set(conn_shard.connections.get() - 1);
        })
        .detach();
    }
    tracing::debug!(shard = shard.id, "listener closed");
}
