//! The client connection under hyper: a TCP stream that sends large slices of mapped object
//! bodies with sendfile, so that the kernel references page-cache pages instead of copying the
//! bytes from the mapping into socket buffers, and that gives up on a client that stops reading.

use std::{
    fs::File,
    future::Future as _,
    io::{self, IoSlice},
    os::fd::AsRawFd as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

use edge_cache::mapped::{self, Source};

/// Smaller slices are written from memory: for them a lookup and a second system call (head,
/// then body) cost more than the copy.
const SENDFILE_MIN: usize = 64 * 1024;

pub struct Stream {
    tcp: TcpStream,
    /// The file of the body being sent, open until another body's comes.
    file: Option<(Arc<Source>, File)>,
    /// How long a write may wait for the client to take any byte.
    send_timeout: Duration,
    /// Running while a write waits: since the client last took something.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Stream {
    pub fn new(tcp: TcpStream, send_timeout: Duration) -> Self {
        Self {
            tcp,
            file: None,
            send_timeout,
            stalled: None,
        }
    }

    /// A write that could not proceed: pending, or an error once it has waited `send_timeout`
    /// since the client last took a byte. The connection is then reset, so that its socket
    /// does not linger with unsent data.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let send_timeout = self.send_timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send_timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let _ = self.tcp.set_zero_linger();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took nothing within the send timeout",
                )))
            }
        }
    }

    /// The open file `source` names, or `None` (write from the mapping instead) when it is gone.
    fn file(&mut self, source: Arc<Source>) -> Option<&File> {
        if !matches!(&self.file, Some((open, _)) if Arc::ptr_eq(open, &source)) {
            let file = source.open().ok()?;
            self.file = Some((source, file));
        }
        self.file.as_ref().map(|(_, file)| file)
    }

    /// Writes the slices before the first large mapped one as usual; that one, when it comes
    /// first, goes with sendfile.
    fn poll_write_now(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mapped = bufs.iter().enumerate().find_map(|(index, buf)| {
            (buf.len() >= SENDFILE_MIN)
                .then(|| mapped::source(buf))
                .flatten()
                .map(|(source, offset)| (index, source, offset))
        });
        let before = match mapped {
            Some((0, source, offset)) => {
                if let Some(sent) = self.poll_sendfile(cx, source, offset, bufs[0].len()) {
                    return sent;
                }
                bufs.len()
            }
            Some((index, ..)) => index,
            None => bufs.len(),
        };
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..before])
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        source: Arc<Source>,
        offset: u64,
        len: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        let socket = self.tcp.as_raw_fd();
        let file = self.file(source)?.as_raw_fd();
        Some(loop {
            match self.tcp.poll_write_ready(cx) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                let mut offset = offset as libc::off_t;
                // SAFETY: both descriptors are open (the socket is ours, the file is held in
                // `self.file`); sendfile writes only to `offset`.
                let sent = unsafe { libc::sendfile(socket, file, &mut offset, len) };
                if sent < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(sent as usize)
                }
            });
            match sent {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => break Poll::Ready(result),
            }
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes what it can now (hyper calls again for what is left); a write that waits longer
    /// than the send timeout fails.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_write_now(cx, bufs) {
            Poll::Pending => this.poll_stalled(cx),
            done => {
                this.stalled = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
