//! A server connection's socket whose small writes leave together, once per turn
//! of the connection's task (`coalesce`, `FlushAfterPoll`).
//!
//! Why: h2 writes a DATA frame of 256 bytes or more straight from its buffer (a
//! vectored write, no copy) and encodes nothing after it until that write is
//! done. So a gRPC answer with a message of that size left in two writes: the
//! headers and the message, then the trailers (`grpc-status`). The first write
//! woke the client, often on this same CPU and ahead of this task, which read
//! the message and went back to sleep, and the trailers woke it again: a fan-out
//! read (`fanout`) waited for one more wake-up of its thread for every peer that
//! sent it a series.
//!
//! Here h2's writes are copied into a buffer and its flushes do nothing; the
//! task's wrapper (`FlushAfterPoll`) writes the buffer after each poll of the
//! connection, so what one turn produced (headers, message, trailers, window
//! updates) leaves in one write. A write of `DIRECT_BYTES_MIN` or more (a big
//! answer's piece) is not copied: the buffer is written first, then the piece
//! straight from h2. The buffer holds at most `BUFFERED_BYTES_MAX` plus one
//! small write; past that a write waits until the socket took the buffer.

use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes at least this long go to the socket as they are, after the buffer.
const DIRECT_BYTES_MIN: usize = 64 * 1024;
/// How much the buffer holds before a write waits for the socket.
const BUFFERED_BYTES_MAX: usize = 64 * 1024;

/// The socket and what was written to it but not yet sent.
struct Shared {
    stream: TcpStream,
    out: Vec<u8>,
    /// How much of `out` was sent already.
    sent: usize,
    /// Why sending failed, once it has: every later write fails the same way.
    failed: Option<io::ErrorKind>,
}

impl Shared {
    /// Sends the buffer; `Pending` (the task woken when the socket can take
    /// more) while the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        while self.sent < self.out.len() {
            let n = match ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]))
            {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                r => r,
            };
            match n {
                Ok(n) => self.sent += n,
                Err(e) => {
                    // Nothing buffered can be sent any more.
                    self.failed = Some(e.kind());
                    self.out = Vec::new();
                    self.sent = 0;
                    return Poll::Ready(Err(e));
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// The socket as h2 sees it: reads pass through, writes are buffered.
pub struct Coalesced {
    shared: Arc<Mutex<Shared>>,
}

/// The task's handle on the same socket, to send the buffer after each poll.
pub struct Flusher {
    shared: Arc<Mutex<Shared>>,
}

/// Splits `stream` into the socket for h2 and the handle that sends its writes.
pub fn coalesce(stream: TcpStream) -> (Coalesced, Flusher) {
    let shared = Arc::new(Mutex::new(Shared {
        stream,
        out: Vec::new(),
        sent: 0,
        failed: None,
    }));
    (
        Coalesced {
            shared: shared.clone(),
        },
        Flusher { shared },
    )
}

impl AsyncRead for Coalesced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.shared.lock().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.shared.lock();
        if let Some(kind) = s.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len >= DIRECT_BYTES_MIN {
            ready!(s.poll_drain(cx))?;
            return Pin::new(&mut s.stream).poll_write_vectored(cx, bufs);
        }
        if s.out.len() >= BUFFERED_BYTES_MAX {
            ready!(s.poll_drain(cx))?;
        }
        for b in bufs {
            s.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing: the buffer goes out after the task's poll (`FlushAfterPoll`).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.shared.lock();
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.stream).poll_shutdown(cx)
    }
}

/// `future` (a connection served over a `Coalesced` socket) that sends the
/// socket's buffer after each of its polls. A socket that is full keeps the rest
/// for the next poll, which its becoming writable brings; once a send failed,
/// the connection's writes fail too, so h2 closes it.
pub struct FlushAfterPoll<F> {
    future: Pin<Box<F>>,
    flusher: Flusher,
}

impl<F> FlushAfterPoll<F> {
    pub fn new(future: F, flusher: Flusher) -> FlushAfterPoll<F> {
        FlushAfterPoll {
            future: Box::pin(future),
            flusher,
        }
    }
}

impl<F: Future> Future for FlushAfterPoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let r = self.future.as_mut().poll(cx);
        let mut s = self.flusher.shared.lock();
        let failed_before = s.failed.is_some();
        if let Poll::Ready(Err(e)) = s.poll_drain(cx) {
            if !failed_before {
                tracing::debug!(error = %e, "cluster gRPC server: sending failed");
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (server, client)
    }

    #[tokio::test]
    async fn one_polls_writes_leave_together_after_it() {
        let (server, mut client) = pair().await;
        let (mut io, flusher) = coalesce(server);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(FlushAfterPoll::new(
            async move {
                io.write_all(b"headers+message ").await.unwrap();
                io.flush().await.unwrap();
                io.write_all(b"trailers").await.unwrap();
                io.flush().await.unwrap();
                // Waits: what this poll wrote leaves once it ends.
                rx.await.unwrap();
                io
            },
            flusher,
        ));
        let mut got = vec![0u8; 24];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headers+message trailers");
        tx.send(()).unwrap();
        let _io = task.await.unwrap();
    }

    #[tokio::test]
    async fn nothing_leaves_before_the_poll_ends() {
        let (server, client) = pair().await;
        let (mut io, flusher) = coalesce(server);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let written = Pin::new(&mut io).poll_write(&mut cx, b"held");
        assert!(matches!(written, Poll::Ready(Ok(4))));
        let flushed = Pin::new(&mut io).poll_flush(&mut cx);
        assert!(matches!(flushed, Poll::Ready(Ok(()))));
        // Still in the buffer: the peer has nothing to read.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut buf = [0u8; 8];
        assert!(client.try_read(&mut buf).is_err());
        // The wrapper's poll sends it.
        let mut f = FlushAfterPoll::new(std::future::pending::<()>(), flusher);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        client.readable().await.unwrap();
        assert_eq!(client.try_read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"held");
    }

    #[tokio::test]
    async fn once_sending_failed_every_write_fails() {
        let (server, client) = pair().await;
        // The peer goes away with a reset: sends to it fail.
        client.set_zero_linger().unwrap();
        drop(client);
        let (mut io, flusher) = coalesce(server);
        let mut f = FlushAfterPoll::new(std::future::pending::<()>(), flusher);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut failed = None;
        for _ in 0..200 {
            match Pin::new(&mut io).poll_write(&mut cx, &[7u8; 1000]) {
                Poll::Ready(Err(e)) => {
                    failed = Some(e.kind());
                    break;
                }
                Poll::Ready(Ok(_)) | Poll::Pending => {}
            }
            let _ = Pin::new(&mut f).poll(&mut cx);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let kind = failed.expect("a write to a reset connection fails");
        for _ in 0..3 {
            match Pin::new(&mut io).poll_write(&mut cx, b"more") {
                Poll::Ready(Err(e)) => assert_eq!(e.kind(), kind),
                other => panic!("a write after the failure gave {other:?}"),
            }
        }
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Err(_))
        ));
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_in_order() {
        // Small writes and big ones (sent directly) through a socket the reader
        // empties slowly: the buffer waits for the socket and nothing is lost.
        let (server, mut client) = pair().await;
        let (mut io, flusher) = coalesce(server);
        let chunks: Vec<Vec<u8>> = (0..400u32)
            .map(|i| {
                let len = if i % 50 == 7 {
                    200_000
                } else {
                    1 + (i as usize * 37) % 3000
                };
                (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
            })
            .collect();
        let expected: Vec<u8> = chunks.concat();
        let writer = tokio::spawn(FlushAfterPoll::new(
            async move {
                for c in chunks {
                    io.write_all(&c).await.unwrap();
                    io.flush().await.unwrap();
                }
                io.shutdown().await.unwrap();
            },
            flusher,
        ));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % 7 == 0 {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        }
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes arrived out of order or changed");
    }
}
