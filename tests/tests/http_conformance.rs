//! RFC 9111 and RFC 9213 behaviours of the PoP's cache, end to end: curl in the client
//! namespace asks the real `edge` binary, which fetches from the counting origin
//! (tests/src/origin.rs). Each test names the rule it checks; the query string tells the
//! origin how to answer (`h=Name: value` adds a response header).

use std::{process::Stdio, thread, time::Duration};

use anyhow::Result;
use edge_tests::{
    edge::slowdown,
    origin::pattern,
    pop::{ORIGIN_READ_TIMEOUT_SECS, Pop},
    topology::Topology,
};

/// `path` with `query` pairs, percent-encoded.
fn target(path: &str, query: &[(&str, &str)]) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    format!("{path}?{query}")
}

/// Requests `path` twice and returns both x-cache values and how often the origin was asked.
fn twice(pop: &Pop, path: &str) -> Result<(String, String, usize)> {
    let first = pop.get(path)?;
    let second = pop.get(path)?;
    Ok((
        first.cache().to_string(),
        second.cache().to_string(),
        pop.origin.count(path),
    ))
}

/// RFC 9111 §4.3.3/§4.3.4: a 304 to the cache's own conditional request updates the response
/// it validated, whether or not it repeats the validator; one naming another validator is not
/// about it, and the cache asks again without conditions. Never a 502.
#[test]
fn a_304_without_validators_updates_the_stored_response() -> Result<()> {
    let pop = Pop::start("httpc-304", "")?;
    let bare = target(
        "/bare",
        &[("cc", "max-age=1"), ("etag", "b1"), ("nm", "bare")],
    );
    let other = target(
        "/other",
        &[("cc", "max-age=1"), ("etag", "o1"), ("nm", "other")],
    );
    let lm = target("/lm", &[("cc", "max-age=1"), ("lm", "1"), ("nm", "bare")]);
    for path in [&bare, &other, &lm] {
        assert_eq!(pop.get(path)?.cache(), "miss");
    }
    thread::sleep(Duration::from_millis(2100));

    let revalidated = pop.get(&bare)?;
    assert_eq!(
        (revalidated.status, revalidated.cache()),
        (200, "revalidated")
    );
    assert_eq!(revalidated.body, pattern(16));
    assert_eq!(
        revalidated.header("etag"),
        Some("\"b1\""),
        "stored headers kept"
    );
    let conditional = pop.origin.seen().last().unwrap().clone();
    assert_eq!(conditional.headers["if-none-match"], "\"b1\"");
    // The 304's max-age=1 made it fresh again.
    assert_eq!(pop.get(&bare)?.cache(), "hit");
    assert_eq!(pop.origin.count(&bare), 2);

    let revalidated = pop.get(&lm)?;
    assert_eq!(
        (revalidated.status, revalidated.cache()),
        (200, "revalidated")
    );

    let refetched = pop.get(&other)?;
    assert_eq!((refetched.status, refetched.cache()), (200, "miss"));
    assert_eq!(refetched.body, pattern(16));
    let last = pop.origin.seen().last().unwrap().clone();
    assert!(
        !last.headers.contains_key("if-none-match"),
        "asked again without conditions"
    );
    assert_eq!(pop.origin.count(&other), 3);
    Ok(())
}

/// RFC 9111 §3: any final status is stored when explicit freshness allows it; with
/// `must-understand`, no-store yields only for a status the cache knows (§5.2.2.3).
#[test]
fn any_final_status_with_explicit_freshness_is_stored() -> Result<()> {
    let pop = Pop::start("httpc-status", "")?;
    for status in [299, 400, 499, 500, 502, 503, 504, 599] {
        let status_text = status.to_string();
        let path = target("/s", &[("status", &status_text), ("cc", "max-age=600")]);
        let first = pop.get(&path)?;
        let second = pop.get(&path)?;
        assert_eq!((first.status, first.cache()), (status, "miss"));
        assert_eq!((second.status, second.cache()), (status, "hit"), "{status}");
        assert_eq!(second.body, pattern(16));
        assert_eq!(pop.origin.count(&path), 1, "{status}");
        // Without explicit freshness, such a status is not stored.
        let plain = target("/p", &[("status", &status_text), ("etag", "x")]);
        assert_eq!(twice(&pop, &plain)?.2, 2, "{status}");
    }
    let understood = "max-age=600, no-store, must-understand";
    let known = target("/mu", &[("cc", understood)]);
    assert_eq!(twice(&pop, &known)?, ("miss".into(), "hit".into(), 1));
    let unknown = target("/mu", &[("status", "599"), ("cc", understood)]);
    assert_eq!(twice(&pop, &unknown)?.2, 2);
    Ok(())
}

/// RFC 9111 §4.2.4: a stale copy is served when the origin answers 5xx, times out or refuses,
/// unless the response forbids it; each is counted and says `x-cache: stale`.
#[test]
fn stale_is_served_when_the_origin_fails() -> Result<()> {
    let mut pop = Pop::start("httpc-stale", "stale_on_error = \"1h\"")?;
    let plain = target("/plain", &[("cc", "max-age=1")]);
    let forbidding: Vec<String> = [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
    ]
    .iter()
    .map(|cc| target("/forbid", &[("cc", cc)]))
    .chain([target("/forbid", &[("cc", "no-cache"), ("etag", "n")])])
    .collect();
    for path in std::iter::once(&plain).chain(&forbidding) {
        assert_eq!(pop.get(path)?.cache(), "miss");
    }
    thread::sleep(Duration::from_millis(2100));
    let stale = |pop: &Pop| -> Result<()> {
        let reply = pop.get(&plain)?;
        assert_eq!((reply.status, reply.cache()), (200, "stale"));
        assert_eq!(reply.body, pattern(16));
        Ok(())
    };

    // 5xx
    pop.origin.set_failing(true);
    stale(&pop)?;
    for path in &forbidding {
        assert_eq!(pop.get(path)?.status, 503, "{path}");
    }
    pop.origin.set_failing(false);
    // A read timeout: the origin answers after origin_read_timeout and a half.
    pop.origin.set_delay(Duration::from_millis(
        1_500 * u64::from(ORIGIN_READ_TIMEOUT_SECS * slowdown()?),
    ));
    stale(&pop)?;
    pop.origin.set_delay(Duration::ZERO);
    // Refused: the origin is gone.
    pop.origin.stop();
    stale(&pop)?;
    for path in &forbidding {
        assert_eq!(pop.get(path)?.status, 502, "{path}");
    }
    assert_eq!(pop.stats()?["stale_on_error"], 3);
    Ok(())
}

/// `stale_on_error` caps how stale; `stale-if-error` from the origin sets its own limit.
#[test]
fn stale_on_error_has_a_cap() -> Result<()> {
    let pop = Pop::start("httpc-cap", "stale_on_error = \"1s\"")?;
    let capped = target("/capped", &[("cc", "max-age=1")]);
    let allowed = target("/allowed", &[("cc", "max-age=1, stale-if-error=60")]);
    pop.get(&capped)?;
    pop.get(&allowed)?;
    // Stale by more than the cap.
    thread::sleep(Duration::from_millis(3100));
    pop.origin.set_failing(true);
    assert_eq!(pop.get(&capped)?.status, 503);
    let stale = pop.get(&allowed)?;
    assert_eq!((stale.status, stale.cache()), (200, "stale"));
    assert_eq!(pop.stats()?["stale_on_error"], 1);
    Ok(())
}

/// A named case: the origin's answer (query pairs), and what [`twice`] should see.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], (&'a str, &'a str, usize));

/// RFC 9213: a targeted field, parsed as a Structured Field Dictionary, replaces
/// Cache-Control and Expires; the configured list sets the precedence; an invalid one is
/// ignored. The field itself is passed on.
#[test]
fn cdn_cache_control() -> Result<()> {
    let pop = Pop::start(
        "httpc-cdn",
        "targeted_cache_control = [\"Edge-Cache-Control\", \"CDN-Cache-Control\"]",
    )?;
    let past = "Expires: Thu, 01 Jan 2015 00:00:00 GMT";
    let cases: [Case; 10] = [
        (
            "max-age over no-store",
            &[("cc", "no-store"), ("h", "CDN-Cache-Control: max-age=600")],
            ("miss", "hit", 1),
        ),
        (
            "max-age over a past Expires",
            &[("h", past), ("h", "CDN-Cache-Control: max-age=600")],
            ("miss", "hit", 1),
        ),
        (
            "private",
            &[("cc", "max-age=600"), ("h", "CDN-Cache-Control: private")],
            ("miss", "miss", 2),
        ),
        (
            "no-store",
            &[("cc", "max-age=600"), ("h", "CDN-Cache-Control: no-store")],
            ("miss", "miss", 2),
        ),
        (
            "no-cache",
            &[
                ("cc", "max-age=600"),
                ("etag", "c"),
                ("h", "CDN-Cache-Control: no-cache"),
            ],
            ("miss", "revalidated", 2),
        ),
        (
            "max-age=0",
            &[("cc", "max-age=600"), ("h", "CDN-Cache-Control: max-age=0")],
            ("miss", "miss", 2),
        ),
        (
            "s-maxage",
            &[("cc", "no-store"), ("h", "CDN-Cache-Control: s-maxage=600")],
            ("miss", "hit", 1),
        ),
        (
            "a wrong type: the field is ignored",
            &[
                ("cc", "no-store"),
                ("h", "CDN-Cache-Control: max-age=\"600\""),
            ],
            ("miss", "miss", 2),
        ),
        (
            "not a dictionary: the field is ignored",
            &[
                ("cc", "no-store"),
                ("h", "CDN-Cache-Control: max-age=600, &&"),
            ],
            ("miss", "miss", 2),
        ),
        (
            "the first configured field wins",
            &[
                ("h", "CDN-Cache-Control: no-store"),
                ("h", "Edge-Cache-Control: max-age=600"),
            ],
            ("miss", "hit", 1),
        ),
    ];
    for (n, (case, query, expected)) in cases.iter().enumerate() {
        let path = target(&format!("/cdn{n}"), query);
        let (first, second, count) = twice(&pop, &path)?;
        assert_eq!(
            (first.as_str(), second.as_str(), count),
            *expected,
            "{case}"
        );
    }
    let passed = pop.get(&target(
        "/cdn-passed",
        &[("h", "CDN-Cache-Control: max-age=600")],
    ))?;
    assert_eq!(passed.header("cdn-cache-control"), Some("max-age=600"));
    Ok(())
}

/// Directive names are case-insensitive (RFC 9111 §5.2), a list-valued Age counts by its
/// first member (§5.1), and an HTTP-date is IMF-fixdate or one of the two obsolete forms, with
/// single spaces (RFC 9110 §5.6.7): anything else is invalid, so the response is stale.
#[test]
fn fields_are_parsed_strictly() -> Result<()> {
    let pop = Pop::start("httpc-parse", "")?;
    let cases: [(&str, &str, (&str, &str, usize)); 8] = [
        ("cc", "MAX-AGE=600", ("miss", "hit", 1)),
        ("cc", "No-StOrE, max-age=600", ("miss", "miss", 2)),
        ("h", "Age: 1000, 10", ("miss", "miss", 2)),
        ("h", "Age: 10, 1000", ("miss", "hit", 1)),
        (
            "h",
            "Expires: Thu, 01 Jan 2032 00:00:00 GMT",
            ("miss", "hit", 1),
        ),
        (
            "h",
            "Expires: Thursday, 01-Jan-32 00:00:00 GMT",
            ("miss", "hit", 1),
        ),
        ("h", "Expires: Thu Jan  1 00:00:00 2032", ("miss", "hit", 1)),
        (
            "h",
            "Expires: Thu, 01 Jan 2032  00:00:00 GMT",
            ("miss", "miss", 2),
        ),
    ];
    for (n, (name, value, expected)) in cases.iter().enumerate() {
        let mut query = vec![(*name, *value)];
        if value.starts_with("Age") {
            query.push(("cc", "max-age=600"));
        }
        let path = target(&format!("/parse{n}"), &query);
        let (first, second, count) = twice(&pop, &path)?;
        assert_eq!(
            (first.as_str(), second.as_str(), count),
            *expected,
            "{value}"
        );
    }
    Ok(())
}

/// RFC 9111 §5.2.1.7: `only-if-cached` gets 504 without the origin being asked when nothing
/// usable is stored.
#[test]
fn only_if_cached_never_asks_the_origin() -> Result<()> {
    let pop = Pop::start("httpc-ooc", "")?;
    let host = "static.example.com";
    let only = ["-H", "Cache-Control: only-if-cached"];
    let fresh = target("/ooc", &[("cc", "max-age=600")]);
    assert_eq!(pop.request(host, &fresh, &only)?.status, 504);
    assert_eq!(pop.origin.count(&fresh), 0);
    pop.get(&fresh)?;
    let hit = pop.request(host, &fresh, &only)?;
    assert_eq!((hit.status, hit.cache()), (200, "hit"));
    // Stored but stale, needing revalidation: not usable either.
    let stale = target("/ooc-stale", &[("cc", "no-cache"), ("etag", "s")]);
    pop.get(&stale)?;
    assert_eq!(pop.request(host, &stale, &only)?.status, 504);
    assert_eq!(pop.origin.count(&stale), 1);
    Ok(())
}

/// RFC 9111 §4: a request that joins a fetch in flight takes its response only if it may
/// reuse it. One stale on arrival (no-cache) goes to the origin for each request; a fresh
/// one is shared.
#[test]
fn joined_requests_share_only_reusable_responses() -> Result<()> {
    let pop = Pop::start("httpc-join", "")?;
    let run = |path: &str| -> Result<Vec<String>> {
        let resolve = format!("static.example.com:80:{}", Topology::POP_V4);
        let url = format!("http://static.example.com{path}");
        let mut command = pop.topology.client.command("curl");
        command.args([
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--max-time",
            "30",
            "--resolve",
            &resolve,
        ]);
        for _ in 0..4 {
            command.args(["-o", "/dev/null", "-w", "%{http_code}\\n", &url]);
        }
        let output = command.stderr(Stdio::null()).output()?;
        Ok(String::from_utf8(output.stdout)?
            .lines()
            .map(str::to_string)
            .collect())
    };
    // The origin takes 1 s to answer: all four requests arrive during the first fetch.
    let stale = target(
        "/join",
        &[("cc", "no-cache"), ("etag", "j"), ("delay", "1000")],
    );
    assert_eq!(run(&stale)?, ["200"; 4]);
    assert_eq!(pop.origin.count(&stale), 4);
    let fresh = target("/join", &[("cc", "max-age=600"), ("delay", "1000")]);
    assert_eq!(run(&fresh)?, ["200"; 4]);
    assert_eq!(pop.origin.count(&fresh), 1);
    Ok(())
}

/// `forward_request_headers` adds client headers to what a cache fill sends, and so to what a
/// response may vary on; other client headers still do not reach the origin.
#[test]
fn configured_request_headers_reach_the_origin_and_vary() -> Result<()> {
    let pop = Pop::start("httpc-fwd", "forward_request_headers = [\"X-Api\"]")?;
    let host = "static.example.com";
    let path = target("/fwd", &[("cc", "max-age=600"), ("vary", "X-Api")]);
    let one = ["-H", "X-Api: 1", "-H", "X-Other: 1"];
    assert_eq!(pop.request(host, &path, &one)?.cache(), "miss");
    let seen = pop.origin.seen().last().unwrap().clone();
    assert_eq!(seen.headers["x-api"], "1");
    assert!(!seen.headers.contains_key("x-other"));
    assert_eq!(
        pop.request(host, &path, &["-H", "X-Api: 2"])?.cache(),
        "miss"
    );
    assert_eq!(pop.request(host, &path, &one)?.cache(), "hit");
    assert_eq!(pop.origin.count(&path), 2);
    Ok(())
}

/// Responses with Set-Cookie are handed through unless `store_set_cookie` is set; then they
/// are stored and served with it.
#[test]
fn set_cookie_is_stored_only_when_configured() -> Result<()> {
    let path = target(
        "/cookie",
        &[("cc", "max-age=600"), ("h", "Set-Cookie: a=1")],
    );
    let pop = Pop::start("httpc-cookie", "")?;
    assert_eq!(twice(&pop, &path)?, ("miss".into(), "miss".into(), 2));
    assert_eq!(pop.get(&path)?.header("set-cookie"), Some("a=1"));
    drop(pop);
    let pop = Pop::start("httpc-cookies", "store_set_cookie = true")?;
    assert_eq!(twice(&pop, &path)?, ("miss".into(), "hit".into(), 1));
    assert_eq!(pop.get(&path)?.header("set-cookie"), Some("a=1"));
    Ok(())
}
