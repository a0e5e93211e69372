//! hearth's gRPC client for calls to other members: one HTTP/2 connection per
//! peer (the `h2` crate directly, no hyper or tonic `Channel`) and a call that
//! sends its whole request at once. The fan-out's `Query` calls, openraft's RPCs
//! (`raft/network.rs`), the failure detector's status probes, the group
//! directory's `Held` and forwarded writes all go through it.
//!
//! Why not the generated tonic client over hyper: hyper's HTTP/2 client writes a
//! request's HEADERS frame, then pipes the body from a task of its own that first
//! waits for send capacity, which the connection task grants after the HEADERS
//! went out; so every request leaves in two writes and the peer wakes up twice
//! before it can answer, on a machine where each wake-up may wait for a CPU. Here
//! a call queues the HEADERS and the one DATA frame (the request is encoded at
//! once) before the connection task runs, and h2 writes both in one flush: one
//! wake-up of the peer per call. Heartbeats and status probes are most of an idle
//! cluster's work, so this halves what each costs the peer.
//!
//! The answer is read as gRPC: HTTP status 200 and a `application/grpc` content
//! type, then length-prefixed messages (uncompressed; at most the caller's limit
//! each), then trailers whose `grpc-status` must be 0. A "trailers-only" answer
//! (the status in the headers, no body) is an error or an empty answer. A failed
//! call is a `tonic::Status`, so callers report transport and peer errors alike.
//!
//! A connection is made on first use and kept; one that closed (the peer
//! restarted) is replaced on the next call, and callers drop one whose call
//! failed or timed out (`Connections::forget`), so a connection stuck behind a
//! healed partition is not reused. A connection's task runs on the runtime that
//! made it (`tokio::spawn`): for the fan-out, the current-thread runtime of the
//! reading thread, so the connection is only served while that thread waits for
//! a read; for the others, the server's runtime.

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::http;
use tonic::{Code, Status};

/// Most a message's announced length makes the reader reserve before its bytes
/// arrive.
const RESERVE_BYTES_MAX: usize = 4 << 20;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Flow-control windows and frame size as hyper's client sets them: a big
/// answer (a `Select` batch is about 1 MiB) streams without waiting for a window
/// update every 64 KiB.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 5 * 1024 * 1024;

/// The largest HTTP/2 frame the cluster's client and server accept (both
/// announce it). With HTTP/2's default of 16 KiB a WAL group's AppendEntries of
/// one remote-write request (about 36 KiB) left in three writes and a big answer
/// in one write per 16 KiB; with this it is one DATA frame, so one write.
pub const FRAME_BYTES_MAX: u32 = 1 << 20;

/// The gRPC message prefix: a compression flag byte and a big-endian u32 length.
const PREFIX_BYTES: usize = 5;

/// One HTTP/2 connection to a peer's gRPC server. Cheap to clone; clones share
/// the connection.
#[derive(Clone)]
pub struct PeerConnection {
    send: h2::client::SendRequest<Bytes>,
    /// `host:port`, parsed once: each request's URI is put together from it and
    /// the method's path rather than formatted and parsed again.
    authority: http::uri::Authority,
    /// Set when the connection's task ended (closed by either side, or failed).
    closed: Arc<AtomicBool>,
}

impl PeerConnection {
    /// Calls `path` (`/hearth.cluster.Query/Select`) with `request` and gives
    /// every message of the answer to `each`, in order; the peer's status, a
    /// broken answer or a transport error is the `Err`. `timeout` goes to the
    /// peer as `grpc-timeout`; the caller enforces it.
    pub async fn call<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
        message_bytes_max: usize,
        mut each: impl FnMut(Resp) -> Result<(), Status>,
    ) -> Result<(), Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let len = request.encoded_len();
        let mut body = BytesMut::with_capacity(PREFIX_BYTES + len);
        body.extend_from_slice(&[0]);
        body.extend_from_slice(&(len as u32).to_be_bytes());
        request
            .encode(&mut body)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))?;
        let req = self.request_head(path, timeout)?;
        let mut send = self.send.clone();
        std::future::poll_fn(|cx| send.poll_ready(cx))
            .await
            .map_err(transport)?;
        // HEADERS and DATA are both queued before the connection task next runs,
        // so they leave in one write (h2 buffers the DATA until the stream opens).
        let (answer, mut stream) = send.send_request(req, false).map_err(transport)?;
        stream.send_data(body.freeze(), true).map_err(transport)?;

        let (parts, mut body) = answer.await.map_err(transport)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "peer answered with HTTP status {}",
                parts.status
            )));
        }
        if let Some(s) = Status::from_header_map(&parts.headers) {
            // Trailers-only: the status came with the headers and there is no body.
            return if s.code() == Code::Ok { Ok(()) } else { Err(s) };
        }
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return Err(Status::unknown(format!(
                "peer answered with content type {:?}, not gRPC",
                parts.headers.get(http::header::CONTENT_TYPE)
            )));
        }

        let mut frames = Frames::new(message_bytes_max);
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            // Give the window back at once: the messages are decoded as they come.
            let _ = body.flow_control().release_capacity(chunk.len());
            frames.push(&chunk);
            while let Some(msg) = frames.next()? {
                let m = Resp::decode(msg)
                    .map_err(|e| Status::internal(format!("decoding the answer: {e}")))?;
                each(m)?;
            }
        }
        frames.finish()?;
        match body.trailers().await.map_err(transport)? {
            Some(t) => match Status::from_header_map(&t) {
                Some(s) if s.code() == Code::Ok => Ok(()),
                Some(s) => Err(s),
                None => Err(Status::internal("answer ended without a grpc-status")),
            },
            None => Err(Status::internal("answer ended without trailers")),
        }
    }

    /// A call's HTTP/2 request head: `POST` of `path` with gRPC's headers.
    fn request_head(&self, path: &str, timeout: Duration) -> Result<http::Request<()>, Status> {
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|e| Status::internal(format!("method path {path:?}: {e}")))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let mut req = http::Request::new(());
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_parts(uri)
            .map_err(|e| Status::internal(format!("building the request: {e}")))?;
        let headers = req.headers_mut();
        headers.reserve(3);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        headers.insert(
            "grpc-timeout",
            http::HeaderValue::try_from(grpc_timeout(timeout))
                .map_err(|e| Status::internal(format!("building the request: {e}")))?,
        );
        Ok(req)
    }

    /// Calls the unary method `path` and returns its one answer (`call`'s
    /// checks, and exactly one message).
    pub async fn unary<Req, Resp>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
        answer_bytes_max: usize,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut answer = None;
        self.call(path, request, timeout, answer_bytes_max, |m: Resp| {
            if answer.replace(m).is_some() {
                return Err(Status::internal(
                    "peer sent more than one message to a unary call",
                ));
            }
            Ok(())
        })
        .await?;
        answer.ok_or_else(|| Status::internal("peer sent no message to a unary call"))
    }
}

/// The gRPC messages in a body, as its chunks arrive.
struct Frames {
    buf: BytesMut,
    message_bytes_max: usize,
}

impl Frames {
    fn new(message_bytes_max: usize) -> Frames {
        Frames {
            buf: BytesMut::new(),
            message_bytes_max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one has arrived; an error for a compressed
    /// message (none was asked for) or one over the size limit.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flag != 0 {
            return Err(Status::internal(format!(
                "peer sent a message with compression flag {flag}, but no compression was asked for"
            )));
        }
        if len > self.message_bytes_max {
            return Err(Status::out_of_range(format!(
                "peer sent a message of {len} bytes, more than the limit of {} bytes",
                self.message_bytes_max
            )));
        }
        if self.buf.len() < PREFIX_BYTES + len {
            // Room for the rest, so it is not grown chunk by chunk; at most
            // RESERVE_BYTES_MAX ahead of the data, so a header claiming a large
            // message costs nothing until its bytes arrive.
            let missing = PREFIX_BYTES + len - self.buf.len();
            self.buf.reserve(missing.min(RESERVE_BYTES_MAX));
            return Ok(None);
        }
        self.buf.advance(PREFIX_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// An error when the body ended inside a message.
    fn finish(&self) -> Result<(), Status> {
        if self.buf.is_empty() {
            return Ok(());
        }
        Err(Status::internal(format!(
            "answer ended inside a message ({} bytes left over)",
            self.buf.len()
        )))
    }
}

/// `grpc-timeout` for `d`: at most 8 digits, in milliseconds or else seconds.
fn grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("HTTP/2: {e}"))
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
            if !c.closed.load(Ordering::Acquire) {
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

    /// Calls the unary method `path` (`/hearth.cluster.v1.Cluster/Status`) of the
    /// peer at `address` and returns its one answer, connecting first if need be;
    /// `DeadlineExceeded` when it takes longer than `timeout`. The caller decides
    /// whether a failure is the connection's (`forget`).
    pub async fn unary<Req, Resp>(
        &self,
        address: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
        answer_bytes_max: usize,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let call = async {
            let (conn, _) = self.get(address).await.map_err(Status::unavailable)?;
            conn.unary(path, request, timeout, answer_bytes_max).await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{address}: no answer within {timeout:?}"
            ))),
        }
    }
}

/// Most bytes the answer of a control call (a Raft RPC, a status probe, `Held`, a
/// forwarded write's index) may have: they are a few fields each.
pub const CONTROL_ANSWER_BYTES_MAX: usize = 4 << 20;

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
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(FRAME_BYTES_MAX)
        .handshake(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let closed = Arc::new(AtomicBool::new(false));
    let address = address.to_string();
    let authority = http::uri::Authority::try_from(address.as_str())
        .map_err(|e| format!("{address:?} is not host:port: {e}"))?;
    let flag = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%address, error = %e, "peer connection closed");
        }
        flag.store(true, Ordering::Release);
    });
    Ok(PeerConnection {
        send,
        authority,
        closed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn messages_split_across_chunks_are_put_together() {
        let body = [framed(0, b"abc"), framed(0, b""), framed(0, b"defgh")].concat();
        for cut in 0..body.len() {
            let mut f = Frames::new(16);
            let mut got = Vec::new();
            for part in [&body[..cut], &body[cut..]] {
                f.push(part);
                while let Some(m) = f.next().unwrap() {
                    got.push(m.to_vec());
                }
            }
            f.finish().unwrap();
            assert_eq!(
                got,
                [b"abc".to_vec(), vec![], b"defgh".to_vec()],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn truncated_oversized_and_compressed_messages_are_errors() {
        let mut f = Frames::new(16);
        f.push(&framed(0, b"abcdef")[..7]);
        assert!(f.next().unwrap().is_none());
        let e = f.finish().unwrap_err();
        assert!(e.message().contains("ended inside a message"), "{e}");

        let mut f = Frames::new(4);
        f.push(&framed(0, b"abcde"));
        let e = f.next().unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange);
        assert!(e.message().contains("5 bytes"), "{e}");

        let mut f = Frames::new(16);
        f.push(&framed(1, b"ab"));
        assert!(f.next().unwrap_err().message().contains("compression"));
    }

    #[test]
    fn timeouts_fit_grpc_timeout() {
        assert_eq!(grpc_timeout(Duration::from_secs(30)), "30000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
