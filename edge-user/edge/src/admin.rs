//! The daemon's one admin server (`[admin] listen`, loopback by default, never the service
//! address): `GET /status` (JSON), `POST /drain?pool=P&member=M` and `POST /undrain?…` for
//! steering, `POST /purge?url=<URL>` for the cache; and the client `edge status`, `edge drain`,
//! `edge undrain` and `edge purge` use.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use edge_cache::{Cache, key::CacheKey};
use edge_steer::{Shared, status::Status};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// What the admin server controls: the steering of the pools, and the HTTP cache if the config
/// has `[http]`.
#[derive(Clone)]
pub struct Controls {
    pub steering: Arc<Shared>,
    pub cache: Option<Arc<Cache>>,
}

pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding admin.listen = {listen}"))
}

/// Answers control requests on `listener` until aborted.
pub async fn serve(listener: TcpListener, controls: Controls) {
    info!(listen = ?listener.local_addr().ok(), "admin serving /status, /drain, /undrain, /purge");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let controls = controls.clone();
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let response = handle(&controls, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "admin connection");
            }
        });
    }
}

fn handle<B>(controls: &Controls, request: &Request<B>) -> Response<Full<Bytes>> {
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/status") => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&controls.steering.status()).expect("serialises"),
            )))
            .expect("valid response"),
        (&Method::POST, path @ ("/drain" | "/undrain")) => {
            let (Some(pool), Some(member)) = (query.get("pool"), query.get("member")) else {
                return reply(StatusCode::BAD_REQUEST, "needs ?pool=P&member=M".into());
            };
            let drained = path == "/drain";
            match controls.steering.drain(pool, member, drained) {
                Ok(()) => {
                    info!(pool, member, drained, "admin");
                    let verb = if drained { "drained" } else { "undrained" };
                    reply(StatusCode::OK, format!("{verb} {member} of pool {pool}"))
                }
                Err(error) => reply(StatusCode::NOT_FOUND, error),
            }
        }
        (&Method::POST, "/purge") => {
            let Some(url) = query.get("url") else {
                return reply(StatusCode::BAD_REQUEST, "missing ?url=".into());
            };
            let Some(cache) = &controls.cache else {
                return reply(StatusCode::NOT_FOUND, "no [http] cache to purge".into());
            };
            match CacheKey::parse_url(url) {
                Ok(key) => {
                    let purged = cache.purge(&key);
                    info!(%key, purged, "purge");
                    reply(
                        StatusCode::OK,
                        format!("purged {purged} object(s) for {key}"),
                    )
                }
                Err(error) => reply(StatusCode::BAD_REQUEST, format!("{url}: {error}")),
            }
        }
        (_, "/status" | "/drain" | "/undrain" | "/purge") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /status; POST /drain, /undrain, /purge".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "unknown path; try GET /status, POST /drain?pool=P&member=M, POST /undrain?…, \
             POST /purge?url=URL"
                .into(),
        ),
    }
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text + "\n")))
        .expect("valid response")
}

/// The running daemon's status, from its admin endpoint at `listen`.
pub async fn status(listen: SocketAddr) -> Result<Status> {
    let body = call(listen, Method::GET, "/status".into()).await?;
    serde_json::from_slice(&body).context("reading the daemon's status")
}

/// Drains (or undrains) `member` of `pool` in the running daemon; returns its answer.
pub async fn drain(listen: SocketAddr, pool: &str, member: &str, drained: bool) -> Result<String> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("pool", pool)
        .append_pair("member", member)
        .finish();
    let path = if drained { "/drain" } else { "/undrain" };
    let body = call(listen, Method::POST, format!("{path}?{query}")).await?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// Asks the running daemon to purge every stored variant of `url`; returns its answer.
pub async fn purge(listen: SocketAddr, url: &str) -> Result<String> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", url)
        .finish();
    let body = call(listen, Method::POST, format!("/purge?{query}")).await?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// Where a local client reaches a daemon listening on `listen`: loopback for a wildcard.
pub fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

async fn call(listen: SocketAddr, method: Method, path: String) -> Result<Bytes> {
    let admin = reachable(listen);
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .body(Empty::<Bytes>::new())?;
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let response = client
        .request(request)
        .await
        .with_context(|| format!("asking the daemon at {admin} (is `edge run` up?)"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(body)
}
