//! The HTTP servers edge's cache is measured against, run in the PoP namespace from configs
//! written here, not the system services: nginx serving files from disk with sendfile, nginx
//! caching on disk in front of the benchmark's origin (`proxy_cache`), and Varnish caching in
//! memory in front of it. Each is pinned to one CPU.

use std::{fs, net::SocketAddr, path::Path};

use anyhow::Result;

use super::peers::Daemon;
use crate::topology::Netns;

/// Where a web peer serves, and where its files go.
#[derive(Debug, Clone)]
pub struct WebSetup<'a> {
    pub netns: &'a Netns,
    /// Config, run state and log go here.
    pub dir: &'a Path,
    pub listen: SocketAddr,
    /// The CPU the server's processes are pinned to.
    pub cpu: usize,
}

/// A TLS listener for nginx: HTTP/1.1 and HTTP/2 by ALPN, with this certificate and key.
#[derive(Debug, Clone)]
pub struct WebTls<'a> {
    pub listen: SocketAddr,
    pub certificate: &'a Path,
    pub key: &'a Path,
}

/// `nginx.conf`: one worker, static files from `root` with sendfile, no access log, keep-alive
/// connections that last the whole run, every path inside `dir`.
pub fn nginx_config(setup: &WebSetup, root: &Path) -> String {
    nginx_config_with_tls(setup, root, None)
}

/// As [`nginx_config`], and with `tls` the same files over TLS 1.2 and 1.3 (HTTP/2 by ALPN),
/// with a shared session cache and tickets, as a site serving HTTPS usually has.
pub fn nginx_config_with_tls(setup: &WebSetup, root: &Path, tls: Option<&WebTls>) -> String {
    let tls = tls.map_or(String::new(), |tls| {
        format!(
            "
    server {{
        listen {listen} ssl http2;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        root {root};
    }}",
            listen = tls.listen,
            certificate = tls.certificate.display(),
            key = tls.key.display(),
            root = root.display(),
        )
    });
    nginx_frame(
        setup,
        &format!(
            "    default_type application/octet-stream;
    server {{
        listen {listen};
        root {root};
    }}{tls}",
            listen = setup.listen,
            root = root.display(),
        ),
    )
}

/// What every nginx config of the benchmarks shares: one worker in the foreground, no access
/// log, sendfile, keep-alive connections that last the whole run, every path inside `dir`;
/// `http` is the rest of the `http` block.
fn nginx_frame(setup: &WebSetup, http: &str) -> String {
    let dir = setup.dir.display();
    format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
}}
"
    )
}

/// `nginx.conf` for nginx as a cache on disk in front of `origin`: as [`nginx_config`], with
/// `proxy_cache` (a `max_size` cache under `dir`, keep-alive connections to the origin), which
/// keeps a response for as long as its Cache-Control says.
pub fn nginx_proxy_cache_config(setup: &WebSetup, origin: SocketAddr, max_size: &str) -> String {
    let dir = setup.dir.display();
    nginx_frame(
        setup,
        &format!(
            "    proxy_cache_path {dir}/cache levels=1:2 keys_zone=objects:64m max_size={max_size} use_temp_path=off;
    upstream origin {{
        server {origin};
        keepalive 64;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache objects;
        }}
    }}",
            listen = setup.listen,
        ),
    )
}

/// Starts nginx in the foreground, serving the files under `root`, and over TLS with `tls`.
pub fn start_nginx(setup: &WebSetup, root: &Path, tls: Option<&WebTls>) -> Result<Daemon> {
    start_nginx_with(setup, &nginx_config_with_tls(setup, root, tls))
}

/// Starts nginx in the foreground as a cache in front of `origin` ([`nginx_proxy_cache_config`]).
pub fn start_nginx_proxy_cache(
    setup: &WebSetup,
    origin: SocketAddr,
    max_size: &str,
) -> Result<Daemon> {
    start_nginx_with(setup, &nginx_proxy_cache_config(setup, origin, max_size))
}

/// Starts nginx in the foreground with the config `text`.
pub fn start_nginx_with(setup: &WebSetup, text: &str) -> Result<Daemon> {
    fs::create_dir_all(setup.dir)?;
    let config = setup.dir.join("nginx.conf");
    fs::write(&config, text)?;
    let mut command = setup.netns.command("taskset");
    command
        .args(["-c", &setup.cpu.to_string(), "nginx", "-e"])
        .arg(setup.dir.join("error.log"))
        .arg("-p")
        .arg(setup.dir)
        .arg("-c")
        .arg(&config);
    Daemon::spawn("nginx", command, &setup.dir.join("nginx.out"))
}

/// Starts varnishd in the foreground: the built-in VCL in front of `backend`, objects in
/// `memory` of malloc storage, its working directory in `dir`, and no privilege separation
/// (`-j none`: it reads nothing outside `dir`).
pub fn start_varnish(setup: &WebSetup, backend: SocketAddr, memory: &str) -> Result<Daemon> {
    fs::create_dir_all(setup.dir)?;
    let mut command = setup.netns.command("taskset");
    command
        .args(["-c", &setup.cpu.to_string(), "varnishd", "-F", "-j", "none"])
        .arg("-n")
        .arg(setup.dir.join("varnish"))
        .args(["-a", &setup.listen.to_string()])
        .args(["-b", &backend.to_string()])
        .args(["-s", &format!("malloc,{memory}")]);
    Daemon::spawn("varnishd", command, &setup.dir.join("varnish.log"))
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, process::Command};

    use super::*;

    #[test]
    fn nginx_accepts_its_config() {
        let dir = std::env::temp_dir().join(format!("edge-bench-nginx-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let netns = Netns {
            name: "unused".into(),
        };
        let setup = WebSetup {
            netns: &netns,
            dir: &dir,
            // `nginx -t` binds the address: a free port on loopback.
            listen: TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
            cpu: 1,
        };
        let config = dir.join("nginx.conf");
        let files = nginx_config(&setup, &dir);
        assert!(files.contains("sendfile on;"));
        let origin = SocketAddr::from(([127, 0, 0, 1], 8080));
        let cache = nginx_proxy_cache_config(&setup, origin, "256m");
        assert!(cache.contains("proxy_cache objects;"));
        let ca = crate::certs::TestCa::new(&format!("web-{}", std::process::id())).unwrap();
        let made = ca
            .certificate("site", &["static.example.com"], crate::certs::VALID)
            .unwrap();
        let tls = WebTls {
            listen: TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
            certificate: &made.certificate,
            key: &made.key,
        };
        let with_tls = nginx_config_with_tls(&setup, &dir, Some(&tls));
        assert!(with_tls.contains(" ssl http2;"));
        for text in [files, cache, with_tls] {
            fs::write(&config, &text).unwrap();
            let output = Command::new("nginx")
                .arg("-t")
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&config)
                .output()
                .expect("nginx (cargo xtask setup installs it)");
            assert!(
                output.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
