//! The PoP's static content cache, end to end: curl in the client namespace asks the real `edge`
//! binary in the PoP namespace, which fetches from a real HTTP origin (tests/src/origin.rs, in
//! the client namespace) that counts what it is asked.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd as _,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use edge_tests::{
    edge::{EdgeProcess, slowdown},
    origin::{LAST_MODIFIED, connect, pattern},
    pop::{BLACKHOLE_PORT, ORIGIN_READ_TIMEOUT_SECS, Pop},
    topology::Topology,
};

/// Bytes of files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        disk_usage(&path)
                    } else {
                        entry.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn miss_then_hit_with_age_and_restart_keeps_hits() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mut pop = Pop::start("http-hit", "")?;
    let path = "/hello.txt?size=3000&cc=max-age%3D600";

    let miss = pop.get(path)?;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.cache(), "miss");
    assert_eq!(miss.body, pattern(3000));
    assert_eq!(miss.age(), Some(0));

    thread::sleep(Duration::from_millis(1100));
    let hit = pop.get(path)?;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.body, pattern(3000));
    assert!(hit.age().unwrap() >= 1, "{:?}", hit.headers);
    assert_eq!(hit.header("content-length"), Some("3000"));
    assert_eq!(pop.origin.count(path), 1);

    // The origin saw the site's name, sent to its address.
    let seen = &pop.origin.seen()[0];
    assert_eq!(seen.headers["host"], "static.example.com");
    assert_eq!(seen.method, "GET");

    pop.restart()?;
    let after = pop.get(path)?;
    assert_eq!(after.cache(), "hit", "the index is rebuilt from disk");
    assert_eq!(after.body, pattern(3000));
    assert_eq!(pop.origin.count(path), 1);
    Ok(())
}

/// Bytes `pid` has read through read-like system calls (sendfile counts; reading a mapping
/// does not).
fn read_chars(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .context("rchar in /proc/PID/io")?
        .parse()
        .context("rchar")
}

#[test]
fn large_hits_are_sent_from_the_file() -> Result<()> {
    let pop = Pop::start("http-sendfile", "")?;
    let size = 3 << 20;
    let path = format!("/large.bin?size={size}&cc=max-age%3D600");
    let body = pattern(size);
    assert_eq!(pop.get(&path)?.body, body);
    let pid = pop.edge.as_ref().context("edge")?.id();
    let before = read_chars(pid)?;
    let hit = pop.get(&path)?;
    assert_eq!(hit.cache(), "hit");
    assert_eq!(hit.body, body);
    let range = pop.request("static.example.com", &path, &["-r", "100000-2999999"])?;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, body[100000..3000000]);
    let read = read_chars(pid)? - before;
    // A last piece under 64 KiB of each body is written from the mapping.
    assert!(
        read + 2 * 65536 >= size as u64 + 2_900_000,
        "edge read {read} bytes: the bodies did not go with sendfile"
    );
    Ok(())
}

/// Mappings of files under `dir` in process `pid`, as the kernel counts them.
fn mappings_under(pid: u32, dir: &Path) -> Result<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let dir = dir.to_str().context("cache dir")?;
    Ok(maps.lines().filter(|line| line.contains(dir)).count())
}

/// Issue 16's crash: every large body stayed mapped for its object's life, and past
/// `vm.max_map_count` (65,530) every mmap failed, the allocator's too, and edge aborted. Now at
/// most `http.mapped_bodies` stay mapped: more large objects than that are all stored and all
/// served, hits included, and the process's mappings of cache files stay within the budget.
#[test]
fn large_objects_beyond_the_mapping_budget_are_all_served() -> Result<()> {
    let pop = Pop::start("http-mapped", "mapped_bodies = 8\n")?;
    let pid = pop.edge.as_ref().context("edge")?.id();
    let path = |n: usize| format!("/m{n}.bin?size={}&cc=max-age%3D600", 65_536 + n);
    for round in ["miss", "hit"] {
        for n in 0..40 {
            let reply = pop.get(&path(n))?;
            assert_eq!(reply.status, 200, "{} ({round})", path(n));
            assert_eq!(reply.cache(), round, "{}", path(n));
            assert_eq!(reply.body, pattern(65_536 + n), "{} ({round})", path(n));
        }
        // A response's mapping goes when the response is done with it.
        let mut mapped = 0;
        let within = wait_until(|| {
            mapped = mappings_under(pid, &pop.cache_dir()).unwrap_or(usize::MAX);
            mapped <= 8
        });
        ensure!(
            within.is_ok(),
            "{mapped} cache files mapped after the {round}es, budget 8"
        );
    }
    for n in 0..40 {
        assert_eq!(pop.origin.count(&path(n)), 1, "{}", path(n));
    }
    Ok(())
}

#[test]
fn freshness_rules_and_stale_answers() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let pop = Pop::start("http-fresh", "")?;

    // no-store and private are never stored; no-cache is stored and always revalidated.
    for cc in ["no-store", "private%2C%20max-age%3D60"] {
        let path = format!("/x?cc={cc}");
        assert_eq!(pop.get(&path)?.cache(), "miss");
        assert_eq!(pop.get(&path)?.cache(), "miss");
        assert_eq!(pop.origin.count(&path), 2, "{cc}");
    }
    let path = "/nc?cc=no-cache&etag=v1";
    assert_eq!(pop.get(path)?.cache(), "miss");
    assert_eq!(pop.get(path)?.cache(), "revalidated");
    let revalidation = pop.origin.seen().last().unwrap().clone();
    assert_eq!(revalidation.headers["if-none-match"], "\"v1\"");

    // Without explicit freshness nothing is reused (no heuristic freshness by default).
    let path = "/plain?lm=1";
    assert_eq!(pop.get(path)?.cache(), "miss");
    assert_eq!(pop.get(path)?.cache(), "revalidated");
    let revalidation = pop.origin.seen().last().unwrap().clone();
    assert_eq!(revalidation.headers["if-modified-since"], LAST_MODIFIED);

    // Expires in the past: stale at once; s-maxage beats max-age for a shared cache.
    let path = "/smax?cc=max-age%3D0%2C%20s-maxage%3D600";
    pop.get(path)?;
    assert_eq!(pop.get(path)?.cache(), "hit");

    // A short-lived object goes stale, is revalidated with its ETag, and is fresh again.
    let path = "/short?cc=max-age%3D1&etag=e1";
    assert_eq!(pop.get(path)?.cache(), "miss");
    assert_eq!(pop.get(path)?.cache(), "hit");
    thread::sleep(Duration::from_millis(2100));
    let revalidated = pop.get(path)?;
    assert_eq!(revalidated.cache(), "revalidated");
    assert_eq!(revalidated.body, pattern(16));
    assert_eq!(pop.get(path)?.cache(), "hit");
    assert_eq!(pop.origin.count(path), 2);

    // stale-while-revalidate: stale at once, refreshed in the background.
    let path = "/swr?cc=max-age%3D1%2C%20stale-while-revalidate%3D60&etag=s";
    pop.get(path)?;
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(pop.get(path)?.cache(), "stale");
    wait_until(|| pop.origin.count(path) == 2)?;
    wait_until(|| pop.get(path).is_ok_and(|reply| reply.cache() == "hit"))?;

    // stale-if-error: the origin fails, the stale copy is served; without it the error is.
    let tolerant = "/sie?cc=max-age%3D1%2C%20stale-if-error%3D60";
    let strict = "/strict?cc=max-age%3D1%2C%20must-revalidate%2C%20stale-if-error%3D60";
    pop.get(tolerant)?;
    pop.get(strict)?;
    thread::sleep(Duration::from_millis(2100));
    pop.origin.set_failing(true);
    let stale = pop.get(tolerant)?;
    assert_eq!((stale.status, stale.cache()), (200, "stale"));
    assert_eq!(stale.body, pattern(16));
    assert_eq!(pop.get(strict)?.status, 503);
    pop.origin.set_failing(false);

    // 404 is cached briefly (negative caching) even without freshness headers.
    let path = "/missing?status=404";
    let first = pop.get(path)?;
    assert_eq!((first.status, first.cache()), (404, "miss"));
    let second = pop.get(path)?;
    assert_eq!((second.status, second.cache()), (404, "hit"));
    assert_eq!(pop.origin.count(path), 1);

    // Vary: one stored variant per Accept-Encoding.
    let path = "/v?cc=max-age%3D60&vary=Accept-Encoding";
    let gzip = ["-H", "Accept-Encoding: gzip"];
    let br = ["-H", "Accept-Encoding: br"];
    assert_eq!(
        pop.request("static.example.com", path, &gzip)?.cache(),
        "miss"
    );
    assert_eq!(
        pop.request("static.example.com", path, &br)?.cache(),
        "miss"
    );
    assert_eq!(
        pop.request("static.example.com", path, &gzip)?.cache(),
        "hit"
    );
    assert_eq!(pop.request("static.example.com", path, &br)?.cache(), "hit");
    assert_eq!(pop.origin.count(path), 2);
    Ok(())
}

#[test]
fn concurrent_misses_make_one_origin_fetch() -> Result<()> {
    let pop = Pop::start("http-coalesce", "")?;
    // Slow enough that all clients arrive while the fetch is under way.
    let path = "/cold.bin?size=200000&slow=100&cc=max-age%3D600";
    let resolve = format!("static.example.com:80:{}", Topology::POP_V4);
    let url = format!("http://static.example.com{path}");
    // curl 7.88 runs at most 300 transfers in parallel: two curls of 250.
    let curls: Vec<_> = (0..2)
        .map(|_| {
            let mut command = pop.topology.client.command("curl");
            command.args([
                "-s",
                "--parallel",
                "--parallel-immediate",
                "--parallel-max",
                "250",
                "--max-time",
                "60",
                "--resolve",
                &resolve,
            ]);
            for _ in 0..250 {
                command.args([
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}\\n",
                    &url,
                ]);
            }
            command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for curl in curls {
        let output = curl.wait_with_output()?;
        results.extend(
            String::from_utf8(output.stdout)?
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(results.len(), 500);
    assert!(
        results.iter().all(|line| line == "200 200000"),
        "{:?}",
        results.iter().find(|line| *line != "200 200000")
    );
    assert_eq!(pop.origin.count(path), 1);
    assert_eq!(pop.get(path)?.cache(), "hit");
    Ok(())
}

#[test]
fn killed_during_a_slow_miss_stores_nothing() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mut pop = Pop::start("http-crash", "")?;
    // 16 pieces 300 ms apart: about 5 s of body.
    let path = "/slow.bin?size=160000&slow=300&cc=max-age%3D600";
    let resolve = format!("static.example.com:80:{}", Topology::POP_V4);
    let url = format!("http://static.example.com{path}");
    let mut client = pop
        .topology
        .client
        .command("curl")
        .args(["-s", "-o", "/dev/null", "--resolve", &resolve, &url])
        .spawn()?;
    wait_until(|| pop.origin.count(path) == 1)?;
    thread::sleep(Duration::from_millis(1000));
    pop.kill()?;
    client.wait()?;

    pop.edge = Some(EdgeProcess::start(&pop.topology.pop, &pop.config, &[])?);
    let reply = pop.get(path)?;
    assert_eq!(
        reply.cache(),
        "miss",
        "a truncated object must not be served"
    );
    assert_eq!(reply.body, pattern(160000));
    assert_eq!(pop.origin.count(path), 2);
    assert_eq!(pop.get(path)?.cache(), "hit");
    Ok(())
}

#[test]
fn ranges_conditionals_and_head() -> Result<()> {
    let pop = Pop::start("http-range", "")?;
    let path = "/r.bin?size=1000&cc=max-age%3D600&etag=r1&lm=1";
    let body = pattern(1000);
    pop.get(path)?;
    let host = "static.example.com";

    let one = pop.request(host, path, &["-H", "Range: bytes=10-19"])?;
    assert_eq!((one.status, one.cache()), (206, "hit"));
    assert_eq!(one.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(one.body, &body[10..20]);

    let suffix = pop.request(host, path, &["-H", "Range: bytes=-5"])?;
    assert_eq!(suffix.body, &body[995..]);

    let many = pop.request(host, path, &["-H", "Range: bytes=0-1,500-502"])?;
    assert_eq!(many.status, 206);
    let content_type = many.header("content-type").unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .context("multipart content type")?;
    let text = String::from_utf8(many.body.clone())?;
    let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert!(
        parts[1].contains("Content-Range: bytes 0-1/1000\r\n\r\n01\r\n"),
        "{text}"
    );
    let middle = std::str::from_utf8(&body[500..503])?;
    assert!(
        parts[2].contains(&format!(
            "Content-Range: bytes 500-502/1000\r\n\r\n{middle}\r\n"
        )),
        "{text}"
    );
    assert_eq!(parts[3], "--\r\n");
    assert_eq!(
        many.header("content-length"),
        Some(many.body.len().to_string().as_str())
    );

    let unsatisfiable = pop.request(host, path, &["-H", "Range: bytes=5000-"])?;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(unsatisfiable.header("content-range"), Some("bytes */1000"));

    // If-Range with another validator: the whole object.
    let stale_range = pop.request(
        host,
        path,
        &["-H", "Range: bytes=0-1", "-H", "If-Range: \"old\""],
    )?;
    assert_eq!((stale_range.status, stale_range.body.len()), (200, 1000));

    let etag = pop.request(host, path, &["-H", "If-None-Match: \"x\", \"r1\""])?;
    assert_eq!((etag.status, etag.body.len()), (304, 0));
    assert_eq!(etag.header("etag"), Some("\"r1\""));
    let other = pop.request(host, path, &["-H", "If-None-Match: \"x\""])?;
    assert_eq!(other.status, 200);
    let since = pop.request(
        host,
        path,
        &["-H", "If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT"],
    )?;
    assert_eq!(since.status, 304);
    let before = pop.request(
        host,
        path,
        &["-H", "If-Modified-Since: Sun, 31 Dec 2023 00:00:00 GMT"],
    )?;
    assert_eq!((before.status, before.body.len()), (200, 1000));

    let head = pop.request(host, path, &["-I"])?;
    assert_eq!((head.status, head.cache()), (200, "hit"));
    assert_eq!(head.header("content-length"), Some("1000"));
    assert!(head.body.is_empty());

    // The origin was asked once; everything else was answered from the cache.
    assert_eq!(pop.origin.count(path), 1);
    // A range on a cold object is answered once the object is in.
    let cold = "/cold-range?size=100&cc=max-age%3D600";
    let reply = pop.request(host, cold, &["-H", "Range: bytes=0-3"])?;
    assert_eq!((reply.status, reply.cache()), (206, "miss"));
    assert_eq!(reply.body, b"0123");
    Ok(())
}

#[test]
fn eviction_keeps_the_directory_under_its_capacity() -> Result<()> {
    let capacity = 300_000;
    let pop = Pop::start(
        "http-evict",
        &format!("cache_capacity = {capacity}\nmax_object_size = 100000\n"),
    )?;
    let paths: Vec<String> = (0..20)
        .map(|n| format!("/e{n}?size=50000&cc=max-age%3D600"))
        .collect();
    for path in &paths {
        assert_eq!(pop.get(path)?.cache(), "miss");
        let used = disk_usage(&pop.cache_dir().join("objects"));
        assert!(used <= capacity, "{used} bytes stored, capacity {capacity}");
    }
    assert_eq!(pop.get(&paths[19])?.cache(), "hit");
    assert_eq!(
        pop.get(&paths[0])?.cache(),
        "miss",
        "the oldest was evicted"
    );

    // Larger than max_object_size: served, not stored, with or without Content-Length.
    for path in [
        "/huge?size=150000&cc=max-age%3D600",
        "/huge?size=150000&chunked=1&cc=max-age%3D600",
    ] {
        for _ in 0..2 {
            let reply = pop.get(path)?;
            assert_eq!(
                (reply.cache(), reply.body.len()),
                ("miss", 150000),
                "{path}"
            );
        }
        assert_eq!(pop.origin.count(path), 2, "{path}");
    }
    Ok(())
}

#[test]
fn purge_and_unsafe_methods_invalidate() -> Result<()> {
    let pop = Pop::start("http-purge", "")?;
    let path = "/p.css?cc=max-age%3D600";
    pop.get(path)?;
    assert_eq!(pop.get(path)?.cache(), "hit");
    let answer = pop.purge(&format!("http://static.example.com{path}"))?;
    assert!(answer.contains("purged 1"), "{answer}");
    assert_eq!(pop.get(path)?.cache(), "miss");
    assert_eq!(pop.origin.count(path), 2);

    // The admin server (default admin.listen, 127.0.0.1:9081) is not on the service address.
    let purge_url = format!("/purge?url=http://static.example.com{path}");
    let reply = pop.request("static.example.com", &purge_url, &["-X", "POST"])?;
    assert_eq!(reply.cache(), "pass", "handed to the origin like any POST");
    assert_eq!(pop.get(path)?.cache(), "hit");
    let admin_on_service = connect(
        &pop.topology.client,
        SocketAddr::from((Topology::POP_V4, 9081)),
    );
    assert!(
        admin_on_service.is_err(),
        "admin port reachable from the client"
    );

    // A successful POST to a URL invalidates what is stored for it.
    let post = pop.request("static.example.com", path, &["-X", "POST", "-d", "x=1"])?;
    assert_eq!((post.status, post.cache()), (200, "pass"));
    assert_eq!(pop.origin.seen().last().unwrap().method, "POST");
    assert_eq!(pop.get(path)?.cache(), "miss");
    Ok(())
}

#[test]
fn single_hostname_mode_caches_only_static_paths() -> Result<()> {
    let pop = Pop::start("http-single", "")?;
    let host = "www.example.com";
    for path in [
        "/assets/logo.png?cc=max-age%3D600",
        "/theme/site.css?cc=max-age%3D600",
    ] {
        assert_eq!(pop.request(host, path, &[])?.cache(), "miss");
        assert_eq!(pop.request(host, path, &[])?.cache(), "hit");
        assert_eq!(pop.origin.count(path), 1, "{path}");
    }
    let page = "/cart?cc=max-age%3D600";
    assert_eq!(pop.request(host, page, &[])?.cache(), "pass");
    assert_eq!(pop.request(host, page, &[])?.cache(), "pass");
    assert_eq!(pop.origin.count(page), 2);
    assert!(
        pop.origin
            .seen()
            .iter()
            .all(|seen| seen.headers["host"] != "static.example.com" || seen.target != page)
    );
    Ok(())
}

#[test]
fn origin_failures_and_timeouts() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let pop = Pop::start("http-origin-fail", "")?;
    // A listener with a full accept queue: SYNs go unanswered, so connecting times out.
    let blackhole =
        pop.topology
            .client
            .run_inside(|| -> Result<(TcpListener, std::net::TcpStream)> {
                let listener = TcpListener::bind((Topology::CLIENT_V4, BLACKHOLE_PORT))?;
                // SAFETY: listen(2) on a socket we own, to shrink its backlog.
                let listened = unsafe { libc::listen(listener.as_raw_fd(), 0) };
                ensure!(listened == 0, "listen");
                let filler = std::net::TcpStream::connect((Topology::CLIENT_V4, BLACKHOLE_PORT))?;
                Ok((listener, filler))
            })??;

    let timeout = pop.request("blackhole.example.com", "/x", &[])?;
    assert_eq!(timeout.status, 504);
    let refused = pop.request("refusing.example.com", "/x", &[])?;
    assert_eq!(refused.status, 502);
    // The origin answers after origin_read_timeout, twice over.
    let delay_ms = 2_000 * ORIGIN_READ_TIMEOUT_SECS * slowdown()?;
    let slow = pop.get(&format!("/late?delay={delay_ms}"))?;
    assert_eq!(slow.status, 504);
    drop(blackhole);
    Ok(())
}

#[test]
fn malformed_requests_and_client_limits() -> Result<()> {
    let pop = Pop::start("http-limits", "")?;
    let service = SocketAddr::from((Topology::POP_V4, 80));

    assert_eq!(pop.request("unknown.example.com", "/", &[])?.status, 421);
    assert_eq!(
        pop.request("static.example.com", "/", &["-H", "Host:"])?
            .status,
        400
    );
    assert_eq!(
        pop.request("static.example.com", "/", &["-H", "Host: bad host"])?
            .status,
        400
    );
    assert_eq!(
        pop.request(
            "static.example.com",
            "/",
            &["-H", "Host: a@static.example.com"]
        )?
        .status,
        400
    );
    let big = format!("X-Big: {}", "a".repeat(20_000));
    assert_eq!(
        pop.request("static.example.com", "/", &["-H", &big])?
            .status,
        431
    );

    // Dot segments, raw or encoded, cannot climb out: both name the same object in the cache.
    let cached = "/etc/passwd?cc=max-age%3D600";
    let raw = pop.request(
        "static.example.com",
        "/a/../../../etc/passwd?cc=max-age%3D600",
        &["--path-as-is"],
    )?;
    assert_eq!((raw.status, raw.cache()), (200, "miss"));
    let encoded = pop.request(
        "static.example.com",
        "/%2e%2e/%2E%2E/etc/passwd?cc=max-age%3D600",
        &["--path-as-is"],
    )?;
    assert_eq!((encoded.status, encoded.cache()), (200, "hit"));
    assert_eq!(pop.origin.count(cached), 1);
    assert!(
        pop.origin
            .seen()
            .iter()
            .all(|seen| !seen.target.contains("..")),
        "{:?}",
        pop.origin.seen()
    );

    // A garbage request line gets 400.
    let mut garbage = connect(&pop.topology.client, service)?;
    garbage.write_all(b"GARBAGE\r\n\r\n")?;
    assert!(read_all(&mut garbage)?.starts_with("HTTP/1.1 400"));

    // Slowloris: a head that never completes is cut off after client_timeout (2 s).
    let mut slow = connect(&pop.topology.client, service)?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: static.example.com\r\n")?;
    let answer = read_all(&mut slow)?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // An idle keep-alive connection is closed after client_timeout too.
    let mut idle = connect(&pop.topology.client, service)?;
    idle.write_all(b"GET /k?cc=max-age%3D60 HTTP/1.1\r\nHost: static.example.com\r\n\r\n")?;
    let answer = read_all(&mut idle)?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok(())
}

/// Reads until the server closes the connection; fails if it has not within 10 s.
fn read_all(stream: &mut std::net::TcpStream) -> Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = Vec::new();
    stream
        .read_to_end(&mut text)
        .context("the server kept the connection open")?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Polls `condition` for up to 10 s.
fn wait_until(mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("condition not met within 10 s")
}
