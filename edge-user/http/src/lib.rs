//! edge-http: the PoP's HTTP server (hyper) on the service addresses: plain HTTP/1.1, and, with
//! `tls_listen`, TLS ([`tls`]) with HTTP/2 or HTTP/1.1 by ALPN. Host selects the site ([`site`]), static content comes from edge-cache ([`proxy`],
//! [`respond`], [`stream`]), and misses go to the origin steering selects ([`origin`]). A
//! reload swaps sites, limits and certificates whole ([`HttpServer::prepare`]).
//!
//! Owns HTTP framing, TLS, client connections and origin connections. Reads edge-config's
//! `[http]` schema and follows edge-steer's selections; must not touch DNS, the XDP maps, or the
//! admin address (the daemon's one admin server purges through [`HttpServer::cache`]).

pub mod counts;
pub mod headers;
pub mod origin;
pub mod proxy;
pub mod respond;
pub mod site;
pub mod sources;
pub mod stream;
pub mod tls;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use futures_util::future::{self, Either};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use edge_cache::{Cache, policy::Rules};
use edge_config::{Config, http::HttpConfig};
use edge_steer::SelectionsWatch;

pub use self::respond::Body;
use self::{
    counts::{OriginRequests, Responses},
    origin::{OriginClient, origin_roots},
    proxy::Proxy,
    site::Sites,
    sources::Sources,
    stream::Stream,
    tls::Resumption,
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
    /// What new connections and requests use; a reload replaces it.
    serving: watch::Sender<Arc<Serving>>,
    sources: Sources,
    resumption: Resumption,
    selections: SelectionsWatch,
    /// `[http]` as started: its addresses and cache settings hold until a restart.
    started: HttpConfig,
}

/// Everything a reload may change, swapped whole: the sites and their origin clients, the
/// limits, and the certificates. A connection takes the limits and TLS config current when it
/// was accepted; each request takes the sites current when it arrives.
struct Serving {
    proxy: Arc<Proxy>,
    config: HttpConfig,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

/// A reload checked and built, ready for [`HttpServer::apply`].
pub struct Prepared(Serving);

impl HttpServer {
    /// Opens the cache, binds the service addresses and starts serving, if the config has
    /// `[http]`. Misses go to the origin `selections` chooses.
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
        let resumption = Resumption::new()?;
        let origin_requests = Arc::new(OriginRequests::default());
        let serving = build(
            config,
            http,
            selections,
            &cache,
            &resumption,
            &origin_requests,
        )?;
        let plain = bind(http.listen).await?;
        let tls = match http.tls_listen {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        let (serving, _) = watch::channel(Arc::new(serving));
        let responses = Arc::new(Responses::default());
        let sources = Sources::new(http.max_connections_per_source);
        let mut tasks = vec![tokio::spawn(accept(
            plain,
            Listener::Plain,
            serving.subscribe(),
            sources.clone(),
            responses.clone(),
        ))];
        if let Some(tls) = tls {
            tasks.push(tokio::spawn(accept(
                tls,
                Listener::Tls,
                serving.subscribe(),
                sources.clone(),
                responses.clone(),
            )));
        }
        info!(listen = %http.listen, tls_listen = ?http.tls_listen, sites = http.sites.len(), "http serving");
        Ok(Some(Self {
            tasks,
            cache,
            responses,
            origin_requests,
            serving,
            sources,
            resumption,
            selections: selections.clone(),
            started: http.clone(),
        }))
    }

    /// Checks and builds `config`'s `[http]` for [`Self::apply`], reading every certificate
    /// and key; nothing changes yet. What needs a restart (the addresses, the cache's place,
    /// size and rules) is kept as it runs, with a warning.
    pub fn prepare(&self, config: &Config) -> Result<Prepared> {
        let Some(http) = &config.http else {
            anyhow::bail!("removing [http] needs a restart");
        };
        let started = &self.started;
        let mut http = http.clone();
        if (http.listen, http.tls_listen) != (started.listen, started.tls_listen) {
            warn!(
                "http.listen and http.tls_listen change at a restart; serving on the old addresses"
            );
            (http.listen, http.tls_listen) = (started.listen, started.tls_listen);
        }
        if cache_settings(&http) != cache_settings(started) {
            warn!(
                "the cache's directory, size and rules change at a restart; keeping the running ones"
            );
        }
        build(
            config,
            &http,
            &self.selections,
            &self.cache,
            &self.resumption,
            &self.origin_requests,
        )
        .map(Prepared)
    }

    /// Serves what [`Self::prepare`] built from now on: new connections take its limits and
    /// certificates, every request its sites. Open connections stay.
    pub fn apply(&self, prepared: Prepared) {
        self.sources
            .set_limit(prepared.0.config.max_connections_per_source);
        self.serving.send_replace(Arc::new(prepared.0));
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What of `[http]` only a restart changes, besides the addresses, for comparison.
fn cache_settings(http: &HttpConfig) -> String {
    format!(
        "{:?} {} {} {} {:?} {:?} {:?} {:?} {} {}",
        http.cache_dir,
        http.cache_capacity,
        http.max_object_size(),
        http.heuristic_fraction,
        http.negative_ttl,
        http.request_cache_control,
        http.targeted_cache_control,
        http.stale_on_error,
        http.store_set_cookie,
        http.mapped_bodies,
    )
}

/// Builds what serves `http`: sites, origin clients, protocol limits and TLS, with the running
/// cache. Certificates are checked now.
fn build(
    config: &Config,
    http: &HttpConfig,
    selections: &SelectionsWatch,
    cache: &Arc<Cache>,
    resumption: &Resumption,
    origin_requests: &Arc<OriginRequests>,
) -> Result<Serving> {
    let tls = tls::server_config(http, resumption, SystemTime::now())?.map(TlsAcceptor::from);
    let needs_roots = http
        .sites
        .iter()
        .any(|site| site.origin_scheme == edge_config::http::OriginScheme::Https);
    let roots = needs_roots
        .then(|| origin_roots(http.origin_ca.as_deref()))
        .transpose()
        .map_err(|reason| {
            let file = http
                .origin_ca
                .as_ref()
                .map_or("the system's roots".into(), |ca| ca.display().to_string());
            anyhow::anyhow!("{file}: http.origin_ca: {reason}")
        })?;
    let sites = Sites::from_config(config, selections, roots.as_ref(), origin_requests)
        .map_err(|(field, reason)| anyhow::anyhow!("{field}: {reason}"))?;
    let proxy = Arc::new(Proxy {
        sites,
        cache: cache.clone(),
        origin: OriginClient::new(
            http.origin_connect_timeout,
            http.origin_read_timeout,
            origin_requests.clone(),
        ),
        forward_request_headers: http.forwarded_headers(),
    });
    Ok(Serving {
        proxy,
        http1: http1_limits(http),
        http2: http2_limits(http),
        tls,
        config: http.clone(),
    })
}

/// HTTP/1.1 within the configured limits: request heads larger than `max_header_size` get
/// 431, a head not complete within `client_timeout` of connecting or of the previous response
/// closes the connection.
fn http1_limits(http: &HttpConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.client_timeout)
        .max_buf_size(http.max_header_size.as_u64() as usize);
    builder
}

/// HTTP/2 within the configured limits: at most `h2_max_concurrent_streams` streams at once, a
/// header list of at most `max_header_size` (431 past it), and h2's defence against rapid reset
/// (CVE-2023-44487): more than 20 streams reset by the client before the server took them (or
/// 1024 that the client's errors made the server reset) end the connection with GOAWAY
/// (ENHANCE_YOUR_CALM). A connection silent for `client_timeout` is pinged, and closed if the
/// ping goes unanswered; one that sends no request within `client_timeout` is closed
/// ([`first_request_within`]).
fn http2_limits(http: &HttpConfig) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.h2_max_concurrent_streams)
        .max_header_list_size(http.max_header_size.as_u64().min(u32::MAX.into()) as u32)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(http.client_timeout)
        .keep_alive_timeout(http.client_timeout);
    builder
}

/// Runs `connection` and gives up on it if no request has `started` within `timeout`: what
/// `header_read_timeout` does for HTTP/1.1, for an HTTP/2 client that completes the TLS
/// handshake and then sends no preface or no request.
async fn first_request_within<F: Future<Output = hyper::Result<()>>>(
    connection: F,
    started: &AtomicBool,
    timeout: Duration,
) -> hyper::Result<()> {
    tokio::pin!(connection);
    tokio::select! {
        served = &mut connection => return served,
        () = tokio::time::sleep(timeout) => {}
    }
    if started.load(Ordering::Relaxed) {
        connection.await
    } else {
        Ok(())
    }
}

/// h2's defaults, set here so that a change of them upstream does not pass unnoticed.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Plain,
    Tls,
}

/// Serves connections from `listener` with what `serving` holds when each is accepted (the
/// TLS handshake first on the TLS listener, within `client_timeout`): a source with `max_connections_per_source` open
/// has its next connections closed as they come; a client that takes nothing of a response for
/// `send_timeout` is closed.
async fn accept(
    listener: TcpListener,
    kind: Listener,
    serving: watch::Receiver<Arc<Serving>>,
    sources: Sources,
    responses: Arc<Responses>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        let current = serving.borrow().clone();
        let stream = Stream::new(stream, current.config.send_timeout);
        let started = Arc::new(AtomicBool::new(false));
        let service = {
            let serving = serving.clone();
            let responses = responses.clone();
            let started = started.clone();
            service_fn(move |request| {
                started.store(true, Ordering::Relaxed);
                let response = respond_to(&serving, &responses, kind, request, peer);
                async move { Ok::<_, Infallible>(response.await) }
            })
        };
        tokio::spawn(async move {
            let served = match (kind, &current.tls) {
                (Listener::Tls, Some(acceptor)) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(current.config.client_timeout, handshake).await {
                        // ALPN chose the protocol; no client offering none speaks HTTP/2.
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            let connection =
                                current.http2.serve_connection(TokioIo::new(tls), service);
                            first_request_within(
                                connection,
                                &started,
                                current.config.client_timeout,
                            )
                            .await
                        }
                        Ok(Ok(tls)) => {
                            current
                                .http1
                                .serve_connection(TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(error)) => {
                            debug!(%peer, %error, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
                // A TLS listener whose reload removed every certificate serves nothing new.
                (Listener::Tls, None) => Ok(()),
                (Listener::Plain, _) => {
                    current
                        .http1
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(error) = served {
                debug!(%peer, %error, "connection ended");
            }
            drop(admitted);
        });
    }
}

/// The response to one request, from the sites current now: a fresh hit at once, a redirect
/// to HTTPS on the plain listener when configured, else the whole request path.
fn respond_to(
    serving: &watch::Receiver<Arc<Serving>>,
    responses: &Arc<Responses>,
    kind: Listener,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> impl Future<Output = Response<Body>> + Send + use<> {
    let current = serving.borrow().clone();
    if kind == Listener::Plain
        && current.config.redirect_to_https
        && let Some(response) = redirect(&current, &request)
    {
        return Either::Left(future::ready(response));
    }
    match current.proxy.fresh_hit(&request) {
        Some(response) => {
            responses.count(&response);
            Either::Left(future::ready(response))
        }
        // Boxed: the whole request path's state is large, and moved with the future.
        None => {
            let responses = responses.clone();
            let response = current.proxy.clone().handle(request, peer.ip());
            Either::Right(Box::pin(async move {
                let response = response.await;
                responses.count(&response);
                response
            }))
        }
    }
}

/// A permanent redirect (308: the method and body stay) to the same URL over HTTPS, for a site
/// that has a certificate.
fn redirect(serving: &Serving, request: &Request<Incoming>) -> Option<Response<Body>> {
    let host = request
        .uri()
        .host()
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())?;
    let host = host.split(':').next()?.to_ascii_lowercase();
    let site = serving.proxy.sites.get(&host)?;
    if !site.https {
        return None;
    }
    let port = serving.config.tls_listen?.port();
    let authority = match port {
        443 => host,
        port => format!("{host}:{port}"),
    };
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::try_from(format!("https://{authority}{target}")).ok()?;
    let mut response = respond::plain(StatusCode::PERMANENT_REDIRECT, "use HTTPS");
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}
