//! The webhook's connections, bounded so that clients that connect and then stall (a slow-loris) hold nothing for
//! long: each accepted TCP stream gets `TCP_NODELAY` and an idle limit ([`IdleLimit`]: closed once no byte was read
//! or written for that long), below the TLS handshake (with its own timeout, `axum_server`'s) and HTTP (a header read
//! timeout for HTTP/1.1, set in `run.rs`). Every connection is a task of its own, so a stalled one never delays
//! another; the limits make sure stalled ones also go away, and with them their memory and file descriptors.

use std::future::{Future, Ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Accepts TCP streams with `TCP_NODELAY` (see `run.rs`: over HTTP/2 an answer is several TLS records, which Nagle's
/// algorithm would hold back) and an idle limit.
#[derive(Clone, Copy, Debug)]
pub struct IdleLimitAcceptor {
    pub idle: Duration,
}

impl<S> Accept<TcpStream, S> for IdleLimitAcceptor {
    type Stream = IdleLimit<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(
            stream
                .set_nodelay(true)
                .map(|()| (IdleLimit::new(stream, self.idle), service)),
        )
    }
}

/// A stream that fails with `TimedOut` once `idle` passed without a byte read or written while it was waited on.
pub struct IdleLimit<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleLimit<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    /// For an operation that is pending: an error once the idle limit passed, else pending too (woken by the
    /// deadline as well as by the stream).
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no byte read or written for {:.1}s",
                    self.idle.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if result.is_ok() && buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_cut_after_the_idle_limit_and_a_talking_one_is_not() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut stream = IdleLimit::new(ours, Duration::from_secs(5));
        let mut buf = [0u8; 8];
        // Bytes keep coming every 3 s: more than 5 s in all, never 5 s without one.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            theirs.write_all(b"x").await.unwrap();
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
        }
        // Then silence: the read fails once the limit has passed.
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_is_cut_too() {
        let (ours, _theirs) = tokio::io::duplex(4);
        let mut stream = IdleLimit::new(ours, Duration::from_secs(5));
        let err = stream.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
