//! The daemon's one admin server (`[admin] listen`, loopback by default, never the service
//! address): `GET /` (the status page, [`crate::status_page`]), `GET /status` (JSON), `POST /drain?pool=P&member=M` and `POST /undrain?…` for
//! steering, `POST /purge?url=<URL>` and `GET /stats` (JSON counters) for the cache, `GET
//! /metrics` for Prometheus ([`crate::metrics`]); and the client `edge status`, `edge drain`,
//! `edge undrain` and `edge purge` use.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use edge_cache::key::CacheKey;
use edge_steer::status::Status;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::{
    history::History,
    metrics::{self, Sources},
    status_page,
};

/// What the admin server controls and shows: the steering of the pools, the HTTP cache if the
/// config has `[http]`, what else the metrics read, and the status page's history.
#[derive(Clone)]
pub struct Controls {
    pub sources: Sources,
    pub history: Arc<History>,
}

pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding admin.listen = {listen}"))
}

/// Answers control requests on `listener` until aborted.
pub async fn serve(listener: TcpListener, controls: Controls) {
    info!(listen = ?listener.local_addr().ok(), "admin serving /, /status, /drain, /undrain, /purge, /metrics");
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
                serde_json::to_vec(&controls.sources.steering.status()).expect("serialises"),
            )))
            .expect("valid response"),
        (&Method::GET, "/") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(status_page::render(
                &controls.sources,
                &controls.history,
                controls.history.interval().as_secs().max(1),
            ))))
            .expect("valid response"),
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics::render(&controls.sources))))
            .expect("valid response"),
        (&Method::POST, path @ ("/drain" | "/undrain")) => {
            let (Some(pool), Some(member)) = (query.get("pool"), query.get("member")) else {
                return reply(StatusCode::BAD_REQUEST, "needs ?pool=P&member=M".into());
            };
            let drained = path == "/drain";
            match controls.sources.steering.drain(pool, member, drained) {
                Ok(()) => {
                    info!(pool, member, drained, "admin");
                    let verb = if drained { "drained" } else { "undrained" };
                    reply(StatusCode::OK, format!("{verb} {member} of pool {pool}"))
                }
                Err(error) => reply(StatusCode::NOT_FOUND, error),
            }
        }
        (&Method::GET, "/stats") => {
            let Some(cache) = &controls.sources.cache else {
                return reply(StatusCode::NOT_FOUND, "no [http] cache".into());
            };
            let stale_on_error = cache.counters.stale_on_error.load(Ordering::Relaxed);
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(
                    serde_json::json!({ "stale_on_error": stale_on_error }).to_string(),
                )))
                .expect("valid response")
        }
        (&Method::POST, "/purge") => {
            let Some(url) = query.get("url") else {
                return reply(StatusCode::BAD_REQUEST, "missing ?url=".into());
            };
            let Some(cache) = &controls.sources.cache else {
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
        (_, "/" | "/status" | "/metrics" | "/drain" | "/undrain" | "/purge" | "/stats") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /, /status, /stats, /metrics; POST /drain, /undrain, /purge".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "unknown path; try GET / (the status page), GET /status, GET /metrics, \
             POST /drain?pool=P&member=M, POST /undrain?…, POST /purge?url=URL, GET /stats"
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use edge_cache::{
        Cache,
        policy::{RequestDirectives, Rules},
    };
    use edge_config::Config;
    use edge_steer::Steering;

    use super::*;

    fn request(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    async fn text(response: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// One server answers what the steering and the cache listeners answered apart.
    #[tokio::test]
    async fn one_server_routes_steering_and_cache_requests() {
        let config =
            Config::parse(Path::new("edge.toml"), "[xdp]\ninterface = \"eth0\"\n").unwrap();
        let steering = Steering::start(&config).await.unwrap();
        let dir = std::env::temp_dir().join(format!("edge-admin-test-{}", std::process::id()));
        let cache = Cache::open(
            &dir,
            1 << 20,
            1 << 20,
            Rules::new(0.0, std::time::Duration::ZERO, RequestDirectives::Ignore),
        )
        .unwrap();
        let sources = Sources {
            steering: steering.shared.clone(),
            cache: Some(Arc::new(cache)),
            responses: None,
            origin_requests: None,
            pin_dir: None,
            daemon: Arc::default(),
            dns: Arc::default(),
        };
        let with_cache = Controls {
            sources: sources.clone(),
            history: Arc::new(History::new(std::time::Duration::from_secs(10))),
        };
        let without_cache = Controls {
            sources: Sources {
                cache: None,
                ..sources
            },
            ..with_cache.clone()
        };

        let (status, body) = text(handle(&with_cache, &request(Method::GET, "/status"))).await;
        assert_eq!(status, StatusCode::OK);
        let parsed: Status = serde_json::from_str(&body).unwrap();
        assert!(parsed.pools.is_empty());

        let drain = request(Method::POST, "/drain?pool=shop&member=a");
        let (status, body) = text(handle(&with_cache, &drain)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no pool called shop"), "{body}");

        let purge = request(Method::POST, "/purge?url=http://static.example.com/a.css");
        let (status, body) = text(handle(&with_cache, &purge)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("purged 0"), "{body}");
        let (status, body) = text(handle(&without_cache, &purge)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no [http] cache"), "{body}");

        let (status, body) = text(handle(&with_cache, &request(Method::GET, "/metrics"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("edge_reloads_total{result=\"refused\"} 0"),
            "{body}"
        );
        assert!(body.contains("edge_cache_bytes 0"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, body) = text(handle(&with_cache, &request(Method::GET, "/"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
        assert!(body.contains("id=\"no-mesh\"") && body.contains("id=\"selections\""));
        assert_eq!(body.matches("<svg ").count(), 5, "{body}");
        assert!(body.contains("no data yet"), "an empty history: {body}");
        assert!(!body.contains("<script"), "{body}");

        let wrong = request(Method::GET, "/purge?url=http://static.example.com/a.css");
        let (status, _) = text(handle(&with_cache, &wrong)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = text(handle(&with_cache, &request(Method::GET, "/nope"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
