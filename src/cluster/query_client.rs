//! The fan-out's connections to the other members' `Query` services: one HTTP/2
//! connection per peer, used by the generated gRPC client without tonic's
//! `Channel`.
//!
//! A `Channel` queues every call to a buffer task that owns the connection, and
//! hyper then streams the request body from a task of its own; for the small
//! calls of a fan-out (a `Select` request is a few matchers) each such hop is a
//! possible wake-up of another runtime worker, and wake-ups, not reads, were most
//! of what a fan-out added to a small query. Here a call encodes its request into
//! one buffer and hands it to hyper's connection directly, which sends it with
//! the headers in one go.
//!
//! A connection is made on first use and kept; one that closed (the peer
//! restarted) is replaced on the next call, and one whose call failed or timed
//! out is dropped (`Connections::forget`), so a connection stuck behind a healed
//! partition is not reused. A connection's task runs on the runtime that made it
//! (`tokio::spawn`): for the fan-out, the current-thread runtime of the reading
//! thread, so the connection is only served while that thread waits for a read.

use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::http;
use tonic::codegen::{Bytes, StdError};

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// One HTTP/2 connection to a peer's gRPC server, as a tower service the
/// generated clients take. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct PeerConnection {
    send: SendRequest<Full<Bytes>>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for PeerConnection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = StdError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, StdError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let mut send = self.send.clone();
        Box::pin(async move {
            // A unary or server-streaming request is one message, encoded at once.
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let resp = send
                .send_request(http::Request::from_parts(parts, Full::new(bytes)))
                .await?;
            Ok(resp)
        })
    }
}

/// The connections to the peers by gRPC address. Cheap to clone; clones share
/// the connections.
#[derive(Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<HashMap<String, PeerConnection>>>,
}

impl Connections {
    /// The connection to `address`, connecting when there is none or it closed;
    /// `true` with a connection kept from an earlier call.
    pub async fn get(&self, address: &str) -> Result<(PeerConnection, bool), String> {
        if let Some(c) = self.open.lock().get(address) {
            if !c.send.is_closed() {
                return Ok((c.clone(), true));
            }
        }
        let c = connect(address).await?;
        self.open.lock().insert(address.to_string(), c.clone());
        Ok((c, false))
    }

    /// Drops the connection to `address`, so the next call connects afresh.
    pub fn forget(&self, address: &str) {
        self.open.lock().remove(address);
    }
}

async fn connect(address: &str) -> Result<PeerConnection, String> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("tcp connect error: {e}")),
        Err(_) => {
            return Err(format!(
                "tcp connect error: no answer within {CONNECT_TIMEOUT:?}"
            ))
        }
    };
    // Requests and answers are small and latency-bound: no Nagle delay.
    tcp.set_nodelay(true)
        .map_err(|e| format!("setting TCP_NODELAY: {e}"))?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let address = address.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%address, error = %e, "fan-out connection closed");
        }
    });
    Ok(PeerConnection { send })
}
