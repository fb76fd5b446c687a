//! Moving a connection between the worker that serves it and the thread
//! that does its TLS handshake.
//!
//! A full TLS handshake costs the gateway about 0.5 ms of CPU in one piece
//! (key exchange, signature, key schedule), during which a worker that did it
//! inline could serve nothing else: every proxied request that arrived in
//! that window waited. So each worker has a companion thread in `SCHED_IDLE`
//! with a reactor of its own (`[server] tls_handshakes`): the worker sends a
//! new connection there, the handshake runs, the connection comes back; a
//! worker woken by a request preempts a handshake at once. A move costs a
//! deregistration, a registration and a cross-thread wake-up each way.
//!
//! tokio-rustls cannot rebuild a `TlsStream` from a TCP stream and a
//! `ServerConnection`, so the stream itself travels: its TCP socket is
//! wrapped in [`PortableTcp`], which can leave one reactor (the socket
//! becomes a plain non-blocking `std` socket) and join another, while the
//! TLS state, including any request bytes the client sent with its
//! `Finished`, stays in the `TlsStream`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The TLS stream every connection is served over.
pub(crate) type Tls = tokio_rustls::server::TlsStream<PortableTcp>;

/// A TCP stream that can leave one tokio reactor and join another's.
///
/// Between [`InTransit::leave`] and [`InTransit::arrive`] it holds no
/// socket; IO on it then fails with `NotConnected`, but nothing does IO on a
/// stream in transit.
#[derive(Debug)]
pub(crate) struct PortableTcp(Option<TcpStream>);

impl PortableTcp {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        PortableTcp(Some(tcp))
    }

    /// The socket, for reading what precedes TLS (a PROXY header).
    pub(crate) fn socket(&mut self) -> io::Result<&mut TcpStream> {
        self.0
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection is in transit"))
    }
}

impl AsyncRead for PortableTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for PortableTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().socket() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().socket() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A connection between two runtimes, registered with neither: a plain TCP
/// connection on its way to a handshake (`T = ()`), or a handshaked one on
/// its way back (`T = Tls`).
pub(crate) struct InTransit<T> {
    held: T,
    socket: std::net::TcpStream,
}

impl InTransit<()> {
    /// Takes a freshly accepted connection out of the current runtime's reactor.
    pub(crate) fn tcp(tcp: TcpStream) -> io::Result<InTransit<()>> {
        // Still non-blocking: `into_std` leaves the mode as it was.
        Ok(InTransit {
            held: (),
            socket: tcp.into_std()?,
        })
    }

    /// Registers the connection with the reactor of the runtime this runs in.
    pub(crate) fn arrive(self) -> io::Result<PortableTcp> {
        Ok(PortableTcp::new(TcpStream::from_std(self.socket)?))
    }
}

impl InTransit<Tls> {
    /// Takes a handshaked connection's socket out of the current runtime's reactor.
    pub(crate) fn tls(mut tls: Tls) -> io::Result<InTransit<Tls>> {
        let tcp = tls.get_mut().0 .0.take();
        let tcp = tcp.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection already in transit"))?;
        Ok(InTransit {
            socket: tcp.into_std()?,
            held: tls,
        })
    }

    /// Registers the socket with the reactor of the runtime this runs in.
    /// Readiness the socket already has is reported by the new registration,
    /// so nothing the client sent while in transit is missed.
    pub(crate) fn arrive(self) -> io::Result<Tls> {
        let InTransit { held: mut tls, socket } = self;
        tls.get_mut().0 .0 = Some(TcpStream::from_std(socket)?);
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Accepted on one runtime, handshaked on a second, served on a third,
    /// each shut down once the connection has left it: the bytes the client
    /// sent right after its handshake, and everything after, arrive.
    #[test]
    fn a_connection_travels_from_accept_to_handshake_to_service() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = crate::tls::write_self_signed(dir.path(), &["localhost".into()]).expect("cert");
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&cert, &key).expect("config"));
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&cert).expect("pem") {
            roots.add(c.expect("cert")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");

        let client = std::thread::spawn(move || {
            runtime().block_on(async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
                let name = ServerName::try_from("localhost").expect("name");
                let mut tls = connector.connect(name, tcp).await.expect("client handshake");
                tls.write_all(b"first").await.expect("write");
                let mut reply = [0u8; 6];
                tls.read_exact(&mut reply).await.expect("read");
                assert_eq!(&reply, b"second");
                tls.write_all(b"third").await.expect("write");
                let mut end = Vec::new();
                tls.read_to_end(&mut end).await.expect("read to close");
                end
            })
        });

        let accept_rt = runtime();
        let moving = accept_rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let (tcp, _) = listener.accept().await.expect("accept");
            InTransit::tcp(tcp).expect("leave the accepting runtime")
        });
        drop(accept_rt);
        // The handshake on a second runtime, which is shut down in turn.
        let handshake_rt = runtime();
        let moving = handshake_rt.block_on(async move {
            let tcp = moving.arrive().expect("join the handshake runtime");
            let tls = acceptor.accept(tcp).await.expect("server handshake");
            InTransit::tls(tls).expect("leave the handshake runtime")
        });
        drop(handshake_rt);

        runtime().block_on(async move {
            let mut tls = moving.arrive().expect("arrive");
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.expect("first");
            assert_eq!(&buf, b"first");
            tls.write_all(b"second").await.expect("write");
            tls.read_exact(&mut buf).await.expect("third");
            assert_eq!(&buf, b"third");
            tls.write_all(b"done").await.expect("write");
            tls.shutdown().await.expect("close");
        });
        assert_eq!(client.join().expect("client thread"), b"done");
    }

    #[test]
    fn a_stream_in_transit_refuses_io() {
        runtime().block_on(async {
            let mut empty = PortableTcp(None);
            let err = empty.write_all(b"x").await.expect_err("no socket");
            assert_eq!(err.kind(), io::ErrorKind::NotConnected);
            let mut buf = [0u8; 1];
            let err = empty.read(&mut buf).await.expect_err("no socket");
            assert_eq!(err.kind(), io::ErrorKind::NotConnected);
        });
    }
}
