//! Requests to origins: by the origin's address with the site's name as Host, over pooled HTTP/1.1
//! connections, within the configured connect and read timeouts; for `https` origins over TLS,
//! the certificate verified for the site's name against the system's roots or a configured CA.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, request};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};

use super::{counts::OriginRequests, respond::Body};

/// Why an origin gave no usable response, and what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("origin unreachable")]
    Unreachable,
    #[error("origin timed out")]
    Timeout,
    #[error("origin broke the exchange")]
    Broken,
}

impl OriginError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unreachable | Self::Broken => StatusCode::BAD_GATEWAY,
        }
    }
}

#[derive(Debug, Clone)]
enum Connections {
    Plain(Client<HttpConnector, Body>),
    /// One site's: the server name verified is the site's host.
    Tls(Client<HttpsConnector<HttpConnector>, Body>),
}

#[derive(Debug, Clone)]
pub struct OriginClient {
    connections: Connections,
    read_timeout: Duration,
    /// Every request's result, for the metrics.
    pub requests: Arc<OriginRequests>,
}

/// Whom `https` origins must prove themselves to: the system's roots, or the configured CA.
pub type OriginRoots = Arc<RootCertStore>;

/// The roots `https` origins are verified against: the certificates of `ca` (PEM), or the
/// system's.
pub fn origin_roots(ca: Option<&std::path::Path>) -> Result<OriginRoots, String> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|error| format!("cannot read: {error}"))?;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate.map_err(|error| format!("not PEM: {error}"))?;
                roots
                    .add(certificate)
                    .map_err(|error| format!("not a CA certificate: {error}"))?;
            }
            if roots.is_empty() {
                return Err("no CERTIFICATE in it".into());
            }
        }
        None => {
            // Unreadable entries of the system store are skipped, as every TLS client does.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(Arc::new(roots))
}

fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    // The TLS connector wraps this one and asks for `https` URIs.
    connector.enforce_http(false);
    connector
}

fn pooled<C>(connector: C) -> Client<C, Body>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

impl OriginClient {
    /// A client counting its requests' results in `requests`.
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        requests: Arc<OriginRequests>,
    ) -> Self {
        Self {
            connections: Connections::Plain(pooled(connector(connect_timeout))),
            read_timeout,
            requests,
        }
    }

    /// A client for `host`'s `https` origins: TLS 1.2 or 1.3, the origin's certificate
    /// verified for `host` against `roots`.
    pub fn tls(
        host: &str,
        roots: OriginRoots,
        connect_timeout: Duration,
        read_timeout: Duration,
        requests: Arc<OriginRequests>,
    ) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_string()).map_err(|error| error.to_string())?;
        let config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(name))
            .enable_http1()
            .wrap_connector(connector(connect_timeout));
        Ok(Self {
            connections: Connections::Tls(pooled(https)),
            read_timeout,
            requests,
        })
    }

    /// Sends `parts` (origin-form target, headers as [`super::headers`] built them) with `body`
    /// to `origin` and waits for the response head. The framing is set here, for the body
    /// actually sent, whatever the headers say: none for an empty body, Content-Length (hyper
    /// sets it) for a body of known length, chunked for any other. So the origin reads exactly
    /// this request on a pooled connection, and the next one after it.
    pub async fn send(
        &self,
        origin: SocketAddr,
        mut parts: request::Parts,
        body: Body,
    ) -> Result<Response<Incoming>, OriginError> {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
        if !body.is_end_stream() && body.size_hint().exact().is_none() {
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let scheme = match self.connections {
            Connections::Plain(_) => "http",
            Connections::Tls(_) => "https",
        };
        parts.uri =
            Uri::try_from(format!("{scheme}://{origin}{path}")).map_err(|_| OriginError::Broken)?;
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let response = match &self.connections {
            Connections::Plain(client) => client.request(request),
            Connections::Tls(client) => client.request(request),
        };
        let result = match tokio::time::timeout(self.read_timeout, response).await {
            Err(_) => Err(OriginError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if error.is_connect() => Err(if timed_out(&error) {
                OriginError::Timeout
            } else {
                OriginError::Unreachable
            }),
            Ok(Err(_)) => Err(OriginError::Broken),
        };
        self.requests.count(match &result {
            Ok(_) => 0,
            Err(OriginError::Unreachable) => 1,
            Err(OriginError::Timeout) => 2,
            Err(OriginError::Broken) => 3,
        });
        result
    }

    /// An origin body as a stream of chunks, each awaited at most the read timeout.
    pub fn body(&self, body: Incoming) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let read_timeout = self.read_timeout;
        let frames = body.into_data_stream().map_err(io::Error::other);
        futures_util::stream::unfold(Some(Box::pin(frames)), move |frames| async move {
            let mut frames = frames?;
            let next = futures_util::StreamExt::next(&mut frames);
            match tokio::time::timeout(read_timeout, next).await {
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "origin read timed out",
                    )),
                    None,
                )),
                Ok(next) => next.map(|chunk| (chunk, Some(frames))),
            }
        })
    }
}

fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = error.source();
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return true;
        }
        source = error.source();
    }
    false
}
