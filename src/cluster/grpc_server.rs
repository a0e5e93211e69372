//! hearth's gRPC server for the cluster's services: tonic's generated services
//! (`tonic::service::Routes`) served over HTTP/2 connections of the `h2` crate,
//! each connection's calls run inside the connection's own task.
//!
//! Why not tonic's server over hyper: hyper's HTTP/2 server spawns a task for
//! every request. On the multi-threaded runtime that wakes a second worker for
//! each heartbeat, AppendEntries or probe, and the answer then wakes the
//! connection's task again to write it. A follower under remote write spent
//! about 15% of its CPU in that server and a third in the scheduler's parking
//! and waking. Here a connection's task accepts a request, runs the call to
//! completion (or until it waits) and writes the answer in the same turn, so a
//! call that does not wait costs one wake-up of one thread.
//!
//! What the server does for a call, as tonic's own server would: `grpc-timeout`
//! (the call fails with `DEADLINE_EXCEEDED` when it runs out), a client's reset
//! drops the call, an answer streams under HTTP/2 flow control, and a stop
//! (`serve`'s token) closes every connection gracefully: calls in flight finish.

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body::{Body, Frame};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{http, Service};
use tonic::service::Routes;
use tonic::Status;

use super::coalesce::{coalesce, Coalesced, FlushAfterPoll};
use super::grpc_client::{CONNECTION_WINDOW_BYTES, FRAME_BYTES_MAX, STREAM_WINDOW_BYTES};
use super::quiet::quiet;

/// Most calls one connection runs at once; more wait in the client's queue.
const CONCURRENT_STREAMS_MAX: u32 = 1024;
/// How much of an answer is queued without waiting for the client's window:
/// h2 holds what the window does not allow yet.
const UNRESERVED_BYTES_MAX: usize = 64 * 1024;
/// How long the accept loop rests after a failed accept (out of file
/// descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `routes` on every connection `listener` accepts until `stop` is
/// cancelled.
pub async fn serve(listener: TcpListener, routes: Routes, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                // `quiet`: answering a call wakes this task, which is running.
                // `coalesce`: what one turn writes leaves in one write.
                let (io, flusher) = coalesce(stream);
                tokio::spawn(quiet(FlushAfterPoll::new(
                    connection(io, routes.clone(), stop.clone(), peer),
                    flusher,
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster gRPC server: accepting a connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// One connection: accepts its calls and runs them in this task until the
/// client closes it, it fails, or a stop was asked and its calls finished.
async fn connection(
    stream: Coalesced,
    routes: Routes,
    stop: CancellationToken,
    peer: std::net::SocketAddr,
) {
    let handshake = h2::server::Builder::new()
        .max_frame_size(FRAME_BYTES_MAX)
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .handshake::<_, Bytes>(stream);
    let mut conn = match handshake.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cluster gRPC server: HTTP/2 handshake failed");
            return;
        }
    };
    let mut calls = FuturesUnordered::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            Some(()) = calls.next(), if !calls.is_empty() => {}
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => calls.push(call(routes.clone(), request, respond)),
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cluster gRPC server: connection failed");
                    break;
                }
                // Closed by the client, or gracefully after a stop.
                None => break,
            },
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// Runs one call and writes its answer; a client's reset or the call's
/// `grpc-timeout` ends it early.
async fn call(
    mut routes: Routes,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let timeout = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let request = request.map(RequestBody::new);
    let answer = async {
        let sleep = async {
            match timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = Service::call(&mut routes, request) => Some(match r {
                Ok(response) => response,
                Err(never) => match never {},
            }),
            _ = sleep => Some(Status::deadline_exceeded("call ran out of its grpc-timeout").into_http()),
            _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => None,
        }
    };
    let Some(response) = answer.await else {
        return; // the client reset the stream: nobody to answer
    };
    if let Err(e) = send(&mut respond, response).await {
        tracing::debug!(error = %e, "cluster gRPC server: writing an answer failed");
    }
}

/// Writes `response`: its headers, then its body's data under flow control,
/// then its trailers. An answer with an empty body (a gRPC "trailers-only"
/// error) is its headers alone.
async fn send(
    respond: &mut h2::server::SendResponse<Bytes>,
    response: http::Response<tonic::body::Body>,
) -> Result<(), h2::Error> {
    let (parts, mut body) = response.into_parts();
    let head = http::Response::from_parts(parts, ());
    if body.is_end_stream() {
        respond.send_response(head, true)?;
        return Ok(());
    }
    let mut stream = respond.send_response(head, false)?;
    let mut body = Pin::new(&mut body);
    let mut unreserved = UNRESERVED_BYTES_MAX;
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => return stream.send_data(Bytes::new(), true),
            Some(Err(status)) => {
                // A failure in the middle of a stream: its status as trailers.
                let mut trailers = http::HeaderMap::new();
                if status.add_header(&mut trailers).is_err() {
                    trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
                }
                return stream.send_trailers(trailers);
            }
            Some(Ok(frame)) => match frame.into_data() {
                // A small answer is queued at once, so its headers, message and
                // trailers leave in one write and wake the client once; a big
                // one waits for window, so a slow client does not make the
                // server buffer it whole.
                Ok(data) if data.len() <= unreserved => {
                    unreserved -= data.len();
                    stream.send_data(data, false)?;
                }
                Ok(data) => send_data(&mut stream, data).await?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        return stream.send_trailers(trailers);
                    }
                }
            },
        }
    }
}

/// Sends `data` in pieces the stream's window allows.
async fn send_data(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream closed (the client reset it): stop writing.
            None => return Ok(()),
        };
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, false)?;
    }
    Ok(())
}

/// `grpc-timeout`'s value as a duration: at most 8 digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`); `None` for anything else, which means no
/// deadline, as tonic's server reads it.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A request's body as tonic's services read it: the stream's data (its
/// window given back as each piece is read), then its trailers.
struct RequestBody {
    recv: h2::RecvStream,
    data_done: bool,
    done: bool,
}

impl RequestBody {
    fn new(recv: h2::RecvStream) -> RequestBody {
        RequestBody {
            recv,
            data_done: false,
            done: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        Poll::Ready(match trailers {
            Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::grpc_client::Connections;
    use tonic::Code;

    /// A service whose every call waits forever and says when it was dropped.
    #[derive(Clone)]
    struct Hang(tokio::sync::mpsc::UnboundedSender<()>);

    /// Sends on its channel when dropped.
    struct DropSignal(tokio::sync::mpsc::UnboundedSender<()>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    impl tonic::server::NamedService for Hang {
        const NAME: &'static str = "test.Hang";
    }

    impl Service<http::Request<tonic::body::Body>> for Hang {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future =
            Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            let signal = DropSignal(self.0.clone());
            Box::pin(async move {
                let _signal = signal;
                std::future::pending().await
            })
        }
    }

    /// Serves `Hang` on a loopback port: a connection to it, the server's stop,
    /// and the channel that hears of every call the server dropped.
    async fn serve_hang() -> (
        crate::cluster::grpc_client::PeerConnection,
        CancellationToken,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (tx, dropped) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Routes::new(Hang(tx)), stop.clone()));
        let (conn, _) = Connections::default().get(&addr).await.expect("connect");
        (conn, stop, dropped)
    }

    #[tokio::test]
    async fn a_call_the_client_gave_up_on_is_dropped() {
        let (conn, stop, mut dropped) = serve_hang().await;
        // The deadline sent is a minute; the client gives up after 100 ms, which
        // resets the stream.
        let call = conn.unary::<(), ()>("/test.Hang/Call", &(), Duration::from_secs(60), 1024);
        assert!(tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err());
        tokio::time::timeout(Duration::from_secs(5), dropped.recv())
            .await
            .expect("the server dropped the call once the client reset its stream");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_call_that_outlives_its_grpc_timeout_ends_with_deadline_exceeded() {
        let (conn, stop, _dropped) = serve_hang().await;
        let started = std::time::Instant::now();
        // The client leaves the deadline to the server; the outer timeout only
        // keeps a server that ignores it from hanging the test.
        let call = conn.unary::<(), ()>("/test.Hang/Call", &(), Duration::from_millis(200), 1024);
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the server answered within its grpc-timeout");
        let status = answer.expect_err("a call that never finishes cannot succeed");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        // The connection still serves calls after one ran out.
        let again = conn.unary::<(), ()>("/test.Hang/Call", &(), Duration::from_millis(50), 1024);
        let status = tokio::time::timeout(Duration::from_secs(10), again)
            .await
            .expect("answered")
            .expect_err("times out again");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        stop.cancel();
    }

    #[test]
    fn grpc_timeouts_read_as_tonic_reads_them() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        assert_eq!(
            parse_grpc_timeout("99999999S"),
            Some(Duration::from_secs(99_999_999))
        );
        for bad in ["", "m", "5", "123456789S", "5x", "-5m", "5 m", "+5m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
