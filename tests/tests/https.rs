//! HTTPS and HTTP/2 at the PoP, end to end: curl (HTTP/1.1 and `--http2`), openssl s_client and
//! h2load in the client namespace against the real `edge` binary, with certificates the test
//! makes (tests/src/certs.rs) and the counting origin behind it.

use std::{
    io::Write as _,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use edge_tests::{
    certs::{self, EXPIRED, TestCa, VALID},
    curl::{Reply, curl},
    origin::pattern,
    pop::Pop,
    topology::Topology,
};

const TLS_PORT: u16 = 443;

/// The `[http]` lines that open the TLS listener, then `sites`.
fn tls(extra: &str, sites: &str) -> String {
    format!(
        "tls_listen = \"{}:{TLS_PORT}\"\n{extra}{sites}",
        Topology::POP_V4
    )
}

/// curl for `https://host/path` at the PoP, trusting only the test's CA.
fn https(pop: &Pop, ca: &TestCa, host: &str, path: &str, args: &[&str]) -> Result<Reply> {
    let resolve = format!("{host}:{TLS_PORT}:{}", Topology::POP_V4);
    let url = format!("https://{host}{path}");
    let cacert = ca.ca.display().to_string();
    let mut all = vec!["--resolve", &resolve, "--cacert", &cacert];
    all.extend_from_slice(args);
    all.push(&url);
    curl(&pop.topology.client, &all)
}

/// openssl s_client to the TLS listener with `server_name` (none: no SNI), sending one request
/// that closes the connection, so that the session tickets sent after the handshake arrive
/// before it ends; stdout and stderr together.
fn s_client(pop: &Pop, ca: &TestCa, server_name: Option<&str>, args: &[&str]) -> Result<String> {
    let connect = format!("{}:{TLS_PORT}", Topology::POP_V4);
    let mut command = pop.topology.client.command("timeout");
    command
        .args([
            "10", "openssl", "s_client", "-connect", &connect, "-ign_eof",
        ])
        .arg("-CAfile")
        .arg(&ca.ca)
        .args(args);
    match server_name {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    let host = server_name.unwrap_or("none.example.com");
    child.stdin.take().expect("piped").write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let output = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The subject line s_client printed for the server's certificate.
fn subject(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("subject="))
        .map(str::trim)
}

#[test]
fn sni_picks_the_sites_certificate_and_both_protocols_share_the_cache() -> Result<()> {
    let ca = TestCa::new("https-sni")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    let b = ca.certificate("b", &["b.example.com"], VALID)?;
    let pop = Pop::start(
        "https-sni",
        &tls(
            "redirect_to_https = true\n",
            &format!(
                "{}{}",
                certs::site("a.example.com", &a),
                certs::site("b.example.com", &b)
            ),
        ),
    )?;

    // SNI picks each site's certificate; TLS 1.2 and 1.3 both work.
    for (name, expected) in [
        ("a.example.com", "a.example.com"),
        ("b.example.com", "b.example.com"),
    ] {
        for version in ["-tls1_3", "-tls1_2"] {
            let output = s_client(&pop, &ca, Some(name), &[version])?;
            assert_eq!(
                subject(&output),
                Some(format!("CN = {expected}").as_str()),
                "{output}"
            );
            assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
        }
    }
    // TLS 1.1 is refused.
    let old = s_client(&pop, &ca, Some("a.example.com"), &["-tls1_1"])?;
    assert!(subject(&old).is_none(), "{old}");
    // A name no site serves, and no name at all, fail the handshake: no default certificate.
    for server_name in [Some("unknown.example.com"), None] {
        let output = s_client(&pop, &ca, server_name, &[])?;
        assert!(subject(&output).is_none(), "{output}");
        assert!(output.contains("alert"), "{output}");
    }

    // The cache answers the same over HTTP/2 and HTTP/1.1: miss, hit, Age, x-cache.
    let path = "/tls.txt?size=5000&cc=max-age%3D600";
    let miss = https(&pop, &ca, "a.example.com", path, &["--http2"])?;
    assert_eq!((miss.version.as_str(), miss.status), ("HTTP/2", 200));
    assert_eq!(miss.cache(), "miss");
    assert_eq!(miss.body, pattern(5000));
    let hit = https(&pop, &ca, "a.example.com", path, &["--http1.1"])?;
    assert_eq!((hit.version.as_str(), hit.status), ("HTTP/1.1", 200));
    assert_eq!(hit.cache(), "hit");
    assert!(hit.age().is_some(), "{:?}", hit.headers);
    assert_eq!(hit.body, pattern(5000));
    let h2_hit = https(&pop, &ca, "a.example.com", path, &["--http2"])?;
    assert_eq!((h2_hit.version.as_str(), h2_hit.cache()), ("HTTP/2", "hit"));
    assert_eq!(pop.origin.count(path), 1);

    // Range and conditional requests over HTTP/2.
    let range = https(
        &pop,
        &ca,
        "a.example.com",
        path,
        &["--http2", "-r", "10-19"],
    )?;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, pattern(5000)[10..20]);
    let etagged = "/tag.txt?size=100&cc=max-age%3D600&etag=v1";
    https(&pop, &ca, "a.example.com", etagged, &["--http2"])?;
    let not_modified = https(
        &pop,
        &ca,
        "a.example.com",
        etagged,
        &["--http2", "-H", "If-None-Match: \"v1\""],
    )?;
    assert_eq!(not_modified.status, 304);

    // Purge works the same for what was stored over TLS.
    pop.purge(&format!("http://a.example.com{path}"))?;
    let after = https(&pop, &ca, "a.example.com", path, &["--http2"])?;
    assert_eq!(after.cache(), "miss");
    assert_eq!(pop.origin.count(path), 2);

    // A header list over max_header_size (16 KiB by default) is refused over HTTP/2 as over
    // HTTP/1.1.
    let big = format!("X-Big: {}", "x".repeat(20_000));
    for protocol in ["--http2", "--http1.1"] {
        let refused = https(&pop, &ca, "a.example.com", path, &[protocol, "-H", &big])?;
        assert_eq!(refused.status, 431, "{protocol}");
    }

    // The plain listener redirects sites with a certificate and serves the others.
    let redirect = pop.request("a.example.com", "/x?y=1", &[])?;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        Some("https://a.example.com/x?y=1")
    );
    let plain = pop.get("/plain.txt?size=10")?;
    assert_eq!(plain.status, 200);
    Ok(())
}

#[test]
fn default_certificate_answers_unknown_names() -> Result<()> {
    let ca = TestCa::new("https-default")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    let b = ca.certificate("b", &["b.example.com"], VALID)?;
    let pop = Pop::start(
        "https-default",
        &tls(
            "tls_default_host = \"b.example.com\"\n",
            &format!(
                "{}{}",
                certs::site("a.example.com", &a),
                certs::site("b.example.com", &b)
            ),
        ),
    )?;
    for server_name in [Some("unknown.example.com"), None] {
        let output = s_client(&pop, &ca, server_name, &[])?;
        assert_eq!(subject(&output), Some("CN = b.example.com"), "{output}");
    }
    let output = s_client(&pop, &ca, Some("a.example.com"), &[])?;
    assert_eq!(subject(&output), Some("CN = a.example.com"), "{output}");
    Ok(())
}

/// A session resumes: TLS 1.3 by ticket, TLS 1.2 by ticket, and still after a reload (the
/// ticket keys are kept).
#[test]
fn sessions_resume_also_across_a_reload() -> Result<()> {
    let ca = TestCa::new("https-resume")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    let mut pop = Pop::start("https-resume", &tls("", &certs::site("a.example.com", &a)))?;
    let session = ca.dir().join("session.pem");
    let session = session.to_str().expect("UTF-8 path");
    for version in ["-tls1_3", "-tls1_2"] {
        let first = s_client(
            &pop,
            &ca,
            Some("a.example.com"),
            &[version, "-sess_out", session],
        )?;
        assert!(first.contains("\nNew, "), "{first}");
        let second = s_client(
            &pop,
            &ca,
            Some("a.example.com"),
            &[version, "-sess_in", session],
        )?;
        assert!(second.contains("\nReused, "), "{version}: {second}");
    }
    let first = s_client(&pop, &ca, Some("a.example.com"), &["-sess_out", session])?;
    assert!(first.contains("\nNew, "), "{first}");
    let edge = pop.edge.as_mut().expect("running");
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(position, "reload applied", Duration::from_secs(10))?;
    let resumed = s_client(&pop, &ca, Some("a.example.com"), &["-sess_in", session])?;
    assert!(resumed.contains("\nReused, "), "{resumed}");
    Ok(())
}

/// A certificate that is expired, does not cover the site, or whose key is another's is
/// refused with its file and why: by `edge check`, at start, and at a reload, which keeps the
/// running one.
#[test]
fn bad_certificates_are_refused_at_start_and_reload() -> Result<()> {
    let ca = TestCa::new("https-bad")?;
    let good = ca.certificate("good", &["a.example.com"], VALID)?;
    let expired = ca.certificate("expired", &["a.example.com"], EXPIRED)?;
    let other = ca.certificate("other", &["b.example.com"], VALID)?;
    let mismatched = certs::Made {
        certificate: good.certificate.clone(),
        key: other.key.clone(),
    };
    let mut pop = Pop::start("https-bad", &tls("", &certs::site("a.example.com", &good)))?;
    let text = std::fs::read_to_string(&pop.config)?;
    let cases = [
        (&expired, &expired.certificate, "expired on"),
        (&other, &other.certificate, "does not cover a.example.com"),
        (&mismatched, &other.key, "does not match the certificate"),
    ];
    for (made, file, reason) in &cases {
        let bad = text.replace(
            &certs::site("a.example.com", &good),
            &certs::site("a.example.com", made),
        );
        // Started on its own (another cache directory): refused before it binds anything.
        let cache_dir = pop.cache_dir().display().to_string();
        let alone = bad.replace(&cache_dir, &format!("{cache_dir}-bad"));
        let path = pop.topology.write_file("bad.toml", &alone)?;
        let output = pop
            .topology
            .pop
            .command(edge_tests::edge::binary())
            .args(["run", "--config"])
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(reason),
            "{stderr}"
        );
        let checked = pop
            .topology
            .pop
            .command(edge_tests::edge::binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&checked.stderr);
        assert!(!checked.status.success(), "edge check: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(reason),
            "edge check: {stderr}"
        );

        std::fs::write(&pop.config, &bad)?;
        let edge = pop.edge.as_mut().expect("running");
        let position = edge.signal(libc::SIGHUP)?;
        edge.wait_for_log(position, "reload refused", Duration::from_secs(10))?;
        let log = edge.log_since(position);
        assert!(
            log.contains(&file.display().to_string()) && log.contains(reason),
            "{log}"
        );
        let output = s_client(&pop, &ca, Some("a.example.com"), &[])?;
        assert!(output.contains("Verify return code: 0 (ok)"), "{output}");
    }
    std::fs::write(&pop.config, &text)?;
    Ok(())
}

/// A download that started on the old certificate completes while a reload swaps it; new
/// connections get the new one.
#[test]
fn reload_swaps_the_certificate_while_a_download_continues() -> Result<()> {
    let ca = TestCa::new("https-swap")?;
    let old = ca.certificate("old", &["a.example.com"], VALID)?;
    let new = ca.certificate("new", &["*.example.com", "a.example.com"], VALID)?;
    // The server pings a connection silent for `client_timeout` and closes it if the ping goes
    // unanswered as long: times the slowdown, as under emulation (vm-test run 6 on 6.1) the
    // 8 MiB warm-up download was cut short (curl: exit status 18), as in `h2_many_streams`.
    let client_timeout = format!(
        "client_timeout = \"{}s\"\n",
        2 * edge_tests::edge::slowdown()?
    );
    let mut pop = Pop::start(
        "https-swap",
        &tls(&client_timeout, &certs::site("a.example.com", &old)),
    )?;
    const SIZE: usize = 8 << 20;
    let path = format!("/long.bin?size={SIZE}&cc=max-age%3D600");
    https(&pop, &ca, "a.example.com", &path, &[])?;

    let output = ca.dir().join("download");
    let resolve = format!("a.example.com:{TLS_PORT}:{}", Topology::POP_V4);
    let mut download = pop
        .topology
        .client
        .command("curl")
        .args([
            "-s",
            "--max-time",
            // Under TCG (vm-test) the download runs several times longer.
            &(60 * edge_tests::edge::slowdown()?).to_string(),
            "--limit-rate",
            "2M",
            "--resolve",
            &resolve,
        ])
        .arg("--cacert")
        .arg(&ca.ca)
        .arg("-o")
        .arg(&output)
        .arg(format!("https://a.example.com{path}"))
        .spawn()?;
    let started = Instant::now();
    while std::fs::metadata(&output).map_or(0, |m| m.len()) == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the download did not start"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let text = std::fs::read_to_string(&pop.config)?;
    std::fs::write(
        &pop.config,
        text.replace(
            &certs::site("a.example.com", &old),
            &certs::site("a.example.com", &new),
        ),
    )?;
    let edge = pop.edge.as_mut().expect("running");
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(position, "reload applied", Duration::from_secs(10))?;
    let swapped = s_client(&pop, &ca, Some("a.example.com"), &[])?;
    assert_eq!(subject(&swapped), Some("CN = *.example.com"), "{swapped}");
    assert!(
        std::fs::metadata(&output)?.len() < SIZE as u64,
        "the download ended before the reload: make it longer"
    );

    let status = download.wait()?;
    assert!(status.success(), "curl: {status}");
    assert_eq!(std::fs::read(&output)?, pattern(SIZE));
    Ok(())
}

/// h2load: many streams on few connections, all answered from the cache within the announced
/// concurrent-stream limit; a client that opens more at once has the excess refused.
#[test]
fn h2_many_streams() -> Result<()> {
    let ca = TestCa::new("https-h2")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    // The server pings a connection silent for `client_timeout` and closes it if the ping goes
    // unanswered as long: times the slowdown, as on an emulated CPU (`cargo xtask vm-test`)
    // h2load, waiting seconds for 200 answers, was cut off with GOAWAY and abandoned the rest.
    let client_timeout = 2 * edge_tests::edge::slowdown()?;
    let pop = Pop::start(
        "https-h2",
        // h2load sends no server name to an address: the default certificate answers.
        &tls(
            &format!(
                "h2_max_concurrent_streams = 50\ntls_default_host = \"a.example.com\"\n\
                 client_timeout = \"{client_timeout}s\"\n"
            ),
            &certs::site("a.example.com", &a),
        ),
    )?;
    let path = "/many.txt?size=1000&cc=max-age%3D600";
    https(&pop, &ca, "a.example.com", path, &["--http2"])?;
    let url = format!("https://{}:{TLS_PORT}{path}", Topology::POP_V4);
    // Requests started, succeeded and errored, and h2load's report.
    let h2load = |streams: &str| -> Result<(usize, usize, usize, String)> {
        let output = pop
            .topology
            .client
            .command("timeout")
            .arg((60 * edge_tests::edge::slowdown()?).to_string())
            .args(["h2load", "-n", "2000", "-c", "4", "-m", streams])
            .args(["-H", ":authority: a.example.com", &url])
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(output.status.success(), "{stdout}");
        ensure!(stdout.contains("Application protocol: h2"), "{stdout}");
        let requests = stdout
            .lines()
            .find(|line| line.starts_with("requests:"))
            .context("no requests line")?;
        let count = |what: &str| -> Result<usize> {
            let before = requests
                .split(&format!(" {what}"))
                .next()
                .context(what.to_string())?;
            Ok(before.rsplit(' ').next().unwrap_or("").parse()?)
        };
        Ok((
            count("started")?,
            count("succeeded")?,
            count("errored")?,
            stdout,
        ))
    };
    let (_, succeeded, errored, stdout) = h2load("50")?;
    assert_eq!((succeeded, errored), (2000, 0), "{stdout}");
    // Sent before the server's SETTINGS arrive, streams past 50 per connection are refused:
    // h2load sends its first 100 (nghttp2 sends no more than 100 before the peer's SETTINGS
    // either), and once SETTINGS are in, never more than 50 at once; each refused stream
    // counts as errored and h2load starts another. Every request is started: a connection the
    // server cut off would leave its rest unstarted and count them as errored too.
    let (started, succeeded, errored, stdout) = h2load("100")?;
    assert_eq!(started, 2000, "{stdout}");
    assert_eq!(succeeded + errored, 2000, "{stdout}");
    assert!(
        errored <= 4 * 50,
        "{errored} refused\n{stdout}\n{}",
        pop.edge.as_ref().map(|edge| edge.log()).unwrap_or_default()
    );
    assert_eq!(pop.origin.count(path), 1);
    Ok(())
}

/// Rapid reset (CVE-2023-44487): a client that opens streams and resets them at once, as fast
/// as it can, has its connection closed with GOAWAY, and the server keeps answering others.
#[test]
fn rapid_reset_is_cut_off_and_others_are_served() -> Result<()> {
    let ca = TestCa::new("https-reset")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    let pop = Pop::start("https-reset", &tls("", &certs::site("a.example.com", &a)))?;
    let path = "/reset.txt?size=1000&cc=max-age%3D600";
    https(&pop, &ca, "a.example.com", path, &["--http2"])?;

    let attack = pop
        .topology
        .client
        .run_inside(|| rapid_reset(&ca, "a.example.com", path, 100_000))??;
    // Cut off long before the 100,000 streams: with GOAWAY (ENHANCE_YOUR_CALM), which a
    // client still writing may miss and see as a broken pipe when the server then closes.
    assert!(
        attack.opened < 100_000,
        "not cut off after {} resets: {}",
        attack.opened,
        attack.ended_by
    );
    assert!(
        attack.goaway || attack.ended_by.contains("broken pipe"),
        "{}",
        attack.ended_by
    );

    let started = Instant::now();
    let after = https(&pop, &ca, "a.example.com", path, &["--http2"])?;
    assert_eq!(after.cache(), "hit");
    assert!(
        started.elapsed() < edge_tests::edge::scaled(Duration::from_secs(2)),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

#[derive(Debug)]
struct Attack {
    opened: usize,
    goaway: bool,
    ended_by: String,
}

/// Opens up to `streams` GET streams on one HTTP/2 connection over TLS, resetting each right
/// after its HEADERS (the h2 crate as a client); stops when the server ends the connection.
fn rapid_reset(ca: &TestCa, host: &str, path: &str, streams: usize) -> Result<Attack> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = client_config(ca, b"h2")?;
        let tcp = tokio::net::TcpStream::connect((Topology::POP_V4, TLS_PORT)).await?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from(host.to_string())?,
                tcp,
            )
            .await?;
        let (mut client, connection) = h2::client::handshake(tls).await?;
        let connection = tokio::spawn(connection);
        let mut opened = 0;
        let mut ended_by = String::new();
        while opened < streams {
            let request = http::Request::get(format!("https://{host}{path}")).body(())?;
            let ready = match client.ready().await {
                Ok(ready) => ready,
                Err(error) => {
                    ended_by = error.to_string();
                    break;
                }
            };
            client = ready;
            match client.send_request(request, true) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    opened += 1;
                }
                Err(error) => {
                    ended_by = error.to_string();
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
        let goaway = match &ended {
            Ok(Ok(Err(error))) => {
                ended_by = format!("{ended_by}; connection: {error}");
                error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
                    || ended_by.contains("ENHANCE_YOUR_CALM")
            }
            _ => ended_by.contains("ENHANCE_YOUR_CALM"),
        };
        if ended.is_err() {
            bail!("the connection did not end after {opened} resets: {ended_by}");
        }
        Ok(Attack {
            opened,
            goaway,
            ended_by,
        })
    })
}

/// nginx in the client namespace: TLS on `listen` with `made`'s certificate, handing every
/// request to the counting origin with its Host.
fn start_tls_nginx(
    pop: &Pop,
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    made: &certs::Made,
) -> Result<edge_tests::bench::peers::Daemon> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let config = format!(
        "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {listen} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{origin};
            proxy_set_header Host $host;
        }}
    }}
}}
",
        cert = made.certificate.display(),
        key = made.key.display(),
        origin = pop.origin.address,
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config)?;
    let mut command = pop.topology.client.command("nginx");
    command
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path);
    let mut nginx =
        edge_tests::bench::peers::Daemon::spawn("nginx", command, &dir.join("nginx.out"))?;
    let started = Instant::now();
    while edge_tests::origin::connect(&pop.topology.client, listen).is_err() {
        nginx.check_running()?;
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen"
        );
        thread::sleep(Duration::from_millis(20));
    }
    Ok(nginx)
}

/// `https` origins: a miss goes over TLS to nginx (the origin's certificate verified for the
/// site's name against `origin_ca`), then hits; an origin whose certificate the CA did not sign,
/// or that does not cover the site, is not used (502).
#[test]
fn https_origins_are_verified() -> Result<()> {
    let ca = TestCa::new("https-origin")?;
    let other_ca = TestCa::new("https-origin-other")?;
    let edge_cert = ca.certificate("edge", &["a.example.com"], VALID)?;
    let origin_cert = ca.certificate("origin", &["secure.example.com"], VALID)?;
    let untrusted = other_ca.certificate("untrusted", &["untrusted.example.com"], VALID)?;
    let ports = [
        (8443, &origin_cert),
        (8444, &untrusted),
        (8445, &origin_cert),
    ];
    let mut pools = String::new();
    let mut sites = certs::site("a.example.com", &edge_cert);
    for (name, port) in [("secure", 8443), ("untrusted", 8444), ("wrongname", 8445)] {
        pools.push_str(&format!(
            "[[pools]]\nname = \"{name}\"\nkind = \"origin\"\n[[pools.members]]\nname = \"{name}1\"\naddress = \"{}\"\nhttp_port = {port}\n",
            Topology::CLIENT_V4
        ));
        sites.push_str(&format!(
            "[[http.sites]]\nhost = \"{name}.example.com\"\npool = \"{name}\"\norigin_scheme = \"https\"\n"
        ));
    }
    let pop = Pop::start(
        "https-origin",
        &tls(
            &format!("origin_ca = \"{}\"\n", ca.ca.display()),
            &format!("{sites}{pools}"),
        ),
    )?;
    let _nginx: Vec<_> = ports
        .iter()
        .map(|(port, made)| {
            let listen = std::net::SocketAddr::from((Topology::CLIENT_V4, *port));
            start_tls_nginx(&pop, &ca.dir().join(format!("nginx-{port}")), listen, made)
        })
        .collect::<Result<_>>()?;

    let path = "/secure.txt?size=2000&cc=max-age%3D600";
    let miss = pop.request("secure.example.com", path, &[])?;
    assert_eq!((miss.status, miss.cache()), (200, "miss"));
    assert_eq!(miss.body, pattern(2000));
    let hit = pop.request("secure.example.com", path, &[])?;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(pop.origin.count(path), 1);
    assert_eq!(pop.origin.seen()[0].headers["host"], "secure.example.com");

    for host in ["untrusted.example.com", "wrongname.example.com"] {
        let refused = pop.request(host, "/x.txt?size=10", &[])?;
        assert_eq!(refused.status, 502, "{host}");
    }
    assert_eq!(pop.origin.count("/x.txt?size=10"), 0);
    Ok(())
}

/// SIGHUP applies `[http]`: a site added is served with its certificate, the redirect to HTTPS
/// is turned on.
#[test]
fn reload_changes_sites_and_settings() -> Result<()> {
    let ca = TestCa::new("https-reload")?;
    let a = ca.certificate("a", &["a.example.com", "b.example.com"], VALID)?;
    let mut pop = Pop::start("https-reload", &tls("", &certs::site("a.example.com", &a)))?;
    let before = s_client(&pop, &ca, Some("b.example.com"), &[])?;
    assert!(subject(&before).is_none(), "{before}");
    let plain = pop.request("a.example.com", "/a.txt?size=10", &[])?;
    assert_eq!(plain.status, 200);

    let text = std::fs::read_to_string(&pop.config)?;
    let site = certs::site("a.example.com", &a);
    let reloaded = text
        .replace(
            &site,
            &format!("{site}{}", certs::site("b.example.com", &a)),
        )
        .replace("tls_listen =", "redirect_to_https = true\ntls_listen =");
    std::fs::write(&pop.config, reloaded)?;
    let edge = pop.edge.as_mut().expect("running");
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(position, "reload applied", Duration::from_secs(10))?;

    let after = https(&pop, &ca, "b.example.com", "/b.txt?size=10", &["--http2"])?;
    assert_eq!((after.status, after.body.len()), (200, 10));
    let redirected = pop.request("a.example.com", "/a.txt?size=10", &[])?;
    assert_eq!(redirected.status, 308);
    Ok(())
}

/// How long the server keeps a TLS connection that completed its handshake (ALPN `alpn`) but
/// sends nothing after it; fails if it is still open after 10 s.
fn idle_after_handshake(ca: &TestCa, alpn: &[u8]) -> Result<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::io::AsyncReadExt as _;
        let config = client_config(ca, alpn)?;
        let tcp = tokio::net::TcpStream::connect((Topology::POP_V4, TLS_PORT)).await?;
        let started = Instant::now();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from("a.example.com")?,
                tcp,
            )
            .await?;
        let mut buffer = [0; 1024];
        // An HTTP/2 server speaks first (its SETTINGS): read until the server closes.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buffer)).await {
                Err(_) => bail!("still open after 10 s"),
                Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    })
}

/// A TLS client config trusting only the test's CA, offering `alpn`.
fn client_config(ca: &TestCa, alpn: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&ca.ca)?;
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem)
    {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A connection that never sends a request is closed after `client_timeout` (2 s here), on
/// the plain listener and over TLS: before the handshake, and after it for HTTP/1.1 and HTTP/2
/// (whose clients must send their preface).
#[test]
fn silent_connections_are_closed_after_client_timeout() -> Result<()> {
    let ca = TestCa::new("https-silent")?;
    let a = ca.certificate("a", &["a.example.com"], VALID)?;
    let pop = Pop::start("https-silent", &tls("", &certs::site("a.example.com", &a)))?;
    let limit = Duration::from_secs(5);
    for port in [80, TLS_PORT] {
        let address = std::net::SocketAddr::from((Topology::POP_V4, port));
        let mut silent = edge_tests::origin::connect(&pop.topology.client, address)?;
        silent.set_read_timeout(Some(Duration::from_secs(10)))?;
        let started = Instant::now();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut silent, &mut rest)
            .with_context(|| format!("port {port}: still open after 10 s"))?;
        assert!(
            started.elapsed() < limit,
            "port {port}: {:?}",
            started.elapsed()
        );
    }
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let open = pop
            .topology
            .client
            .run_inside(|| idle_after_handshake(&ca, alpn))??;
        assert!(open < limit, "{}: {open:?}", String::from_utf8_lossy(alpn));
    }
    Ok(())
}
