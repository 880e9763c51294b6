//! Requests to origins: by the origin's address with the site's name as Host, over pooled HTTP/1.1
//! connections, within the configured connect and read timeouts.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, request};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

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
pub struct OriginClient {
    client: Client<HttpConnector, Body>,
    read_timeout: Duration,
    /// Every request's result, for the metrics.
    pub requests: Arc<OriginRequests>,
}

impl OriginClient {
    pub fn new(connect_timeout: Duration, read_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            read_timeout,
            requests: Arc::default(),
        }
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
        parts.uri =
            Uri::try_from(format!("http://{origin}{path}")).map_err(|_| OriginError::Broken)?;
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let result =
            match tokio::time::timeout(self.read_timeout, self.client.request(request)).await {
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
