//! The server's cap on open connections: each accepted connection holds a
//! slot until it closes; a connection that finds none free is closed at
//! once (the client's retry finds one later).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An acceptor that gives each connection a slot, or refuses it.
#[derive(Clone)]
pub struct Limited<A> {
    inner: A,
    slots: Arc<Semaphore>,
}

impl<A> Limited<A> {
    /// `inner` with at most `max` connections open at once.
    pub fn new(inner: A, max: usize) -> Limited<A> {
        Limited {
            inner,
            slots: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

/// A connection and the slot it holds.
pub struct Slot<S> {
    io: S,
    _slot: OwnedSemaphorePermit,
}

type Accepted<S, V> = Pin<Box<dyn Future<Output = io::Result<(Slot<S>, V)>> + Send>>;

impl<I, S, A> Accept<I, S> for Limited<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Slot<A::Stream>;
    type Service = A::Service;
    type Future = Accepted<A::Stream, A::Service>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Err(_) => {
                tracing::warn!(
                    "every connection slot is taken (--max-connections); closing a new one"
                );
                Box::pin(std::future::ready(Err(io::Error::other(
                    "too many connections",
                ))))
            }
            Ok(slot) => {
                let accepted = self.inner.accept(stream, service);
                Box::pin(async move {
                    let (io, service) = accepted.await?;
                    Ok((Slot { io, _slot: slot }, service))
                })
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Slot<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Slot<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
