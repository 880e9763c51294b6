//! edge-http: the PoP's HTTP/1.1 server (hyper) on the service address, where Host selects the
//! site ([`site`]), static content comes from edge-cache ([`proxy`], [`respond`], [`stream`]),
//! and misses go to the origin steering selects ([`origin`]).
//!
//! Owns HTTP framing, client connections and origin connections. Reads edge-config's `[http]`
//! schema and follows edge-steer's selections; must not touch DNS, the XDP maps, or the admin
//! address (the daemon's one admin server purges through [`HttpServer::cache`]).

pub mod counts;
pub mod headers;
pub mod origin;
pub mod proxy;
pub mod respond;
pub mod site;
pub mod sources;
pub mod stream;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use futures_util::future::{self, Either};
use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{debug, info, warn};

use edge_cache::{Cache, policy::Rules};
use edge_config::{Config, http::HttpConfig};
use edge_steer::SelectionsWatch;

pub use self::respond::Body;
use self::{
    counts::{OriginRequests, Responses},
    origin::OriginClient,
    proxy::Proxy,
    site::Sites,
    sources::Sources,
    stream::Stream,
};

/// The running server; dropping it stops accepting (connections in progress finish on their
/// own tasks).
pub struct HttpServer {
    tasks: Vec<JoinHandle<()>>,
    pub cache: Arc<Cache>,
    /// Responses sent, by cache status.
    pub responses: Arc<Responses>,
    /// Requests sent to origins, by result.
    pub origin_requests: Arc<OriginRequests>,
}

impl HttpServer {
    /// Opens the cache, binds the service address and starts serving, if the config has `[http]`.
    /// Misses go to the origin `selections` chooses.
    pub async fn start(config: &Config, selections: &SelectionsWatch) -> Result<Option<Self>> {
        let Some(http) = &config.http else {
            return Ok(None);
        };
        if let Some(budget) = std::num::NonZeroUsize::new(http.mapped_bodies) {
            edge_cache::mapped::set_budget(budget);
        }
        let cache = Arc::new(
            Cache::open(
                &http.cache_dir,
                http.cache_capacity.as_u64(),
                http.max_object_size(),
                Rules::new(
                    http.heuristic_fraction,
                    http.negative_ttl,
                    http.request_cache_control,
                )
                .with_targets(http.targeted_fields())
                .with_set_cookie(http.store_set_cookie)
                .with_stale_on_error(http.stale_on_error),
            )
            .with_context(|| format!("opening the cache in {}", http.cache_dir.display()))?,
        );
        let origin = OriginClient::new(http.origin_connect_timeout, http.origin_read_timeout);
        let origin_requests = origin.requests.clone();
        let proxy = Arc::new(Proxy {
            sites: Sites::from_config(config, selections),
            cache: cache.clone(),
            origin,
            forward_request_headers: http.forwarded_headers(),
        });
        let service = bind(http.listen).await?;
        let responses = Arc::new(Responses::default());
        let serve = {
            let http = http.clone();
            let responses = responses.clone();
            accept(service, http.clone(), move |request, peer: SocketAddr| {
                match proxy.fresh_hit(&request) {
                    Some(response) => {
                        responses.count(&response);
                        Either::Left(future::ready(response))
                    }
                    // Boxed: the whole request path's state is large, and moved with the future.
                    None => {
                        let responses = responses.clone();
                        let response = proxy.clone().handle(request, peer.ip());
                        Either::Right(Box::pin(async move {
                            let response = response.await;
                            responses.count(&response);
                            response
                        }))
                    }
                }
            })
        };
        info!(listen = %http.listen, sites = http.sites.len(), "http serving");
        Ok(Some(Self {
            tasks: vec![tokio::spawn(serve)],
            cache,
            responses,
            origin_requests,
        }))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

/// Serves HTTP/1.1 connections from `listener` with `handle` (given each request and its
/// client's address), within the configured limits: request heads larger than
/// `max_header_size` get 431; a connection that does not deliver a complete head within
/// `client_timeout` (new, or idle after a response), or whose client takes nothing of a
/// response for `send_timeout`, is closed; a source with `max_connections_per_source` open
/// has its next connections closed as they come.
async fn accept<F, Fut>(listener: TcpListener, config: HttpConfig, handle: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.client_timeout)
        .max_buf_size(config.max_header_size.as_u64() as usize);
    let sources = Sources::new(config.max_connections_per_source);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = sources.admit(peer.ip()) else {
            debug!(%peer, "too many connections from this source; reset");
            // A reset leaves no TIME_WAIT behind for each refused connection.
            let _ = stream.set_zero_linger();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let connection = builder.serve_connection(
            TokioIo::new(Stream::new(stream, config.send_timeout)),
            service_fn(move |request| {
                let response = handle(request, peer);
                async move { Ok::<_, Infallible>(response.await) }
            }),
        );
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, %error, "connection ended");
            }
            drop(admitted);
        });
    }
}
