//! The PoP network end to end through a real resolver. A customer's own DNS (Knot DNS) serves
//! `shop.example`, whose zone hands `www.shop.example` and `static.shop.example` to the CDN by
//! CNAME; three PoPs run `edge run` with `[mesh]` and serve `cdn.example`: `shop` from the
//! origin pool (the origin all PoPs agree on) and `shop-static` from the PoP pool (the best PoP
//! from the PoP asked). unbound is the client's recursive resolver, with stub zones pointing at
//! the customer's DNS and at the PoPs. The client resolves both names through unbound (dig),
//! fetches the page from the origin it got and the static object from the PoP it got, twice
//! (a miss, then a hit), with curl.

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use edge_tests::{
    agent::Agent,
    curl::curl,
    dig::dig,
    edge::scaled,
    mesh::{self, AGENT_PORT, CDN_ZONE, Member, Network},
    origin::Origin,
    resolver::{start_knot, start_unbound},
    topology::{Host, Lan},
};

/// The probe interval, times the slowdown (`EDGE_TEST_SLOWDOWN`) as every bound here.
const INTERVAL: Duration = Duration::from_millis(200);
/// Process scheduling, kdig start-up and jitter on a busy 2-core machine.
const ALLOWANCE: Duration = Duration::from_millis(1500);
const POPS: [&str; 3] = ["pop1", "pop2", "pop3"];
const ORIGINS: [&str; 2] = ["origin1", "origin2"];
/// A cacheable object: the test origin sets Cache-Control from `cc`.
const STATIC_PATH: &str = "/logo.css?size=1000&cc=max-age=600";

fn ip(host: &Host) -> IpAddr {
    host.v4.into()
}

#[test]
fn a_client_resolves_through_unbound_and_fetches_from_the_origin_and_the_pop_it_got() -> Result<()>
{
    let _timing = edge_tests::serial::timing_sensitive();
    let (interval, allowance) = (scaled(INTERVAL), scaled(ALLOWANCE));
    let mut net = Network::new(
        Lan::new(
            "mesh-resolver",
            &[
                "pop1", "pop2", "pop3", "origin1", "origin2", "customer", "resolver", "client",
            ],
        )?,
        "client",
    );
    let lan = &net.lan;
    let origins: Vec<Origin> = ORIGINS
        .iter()
        .map(|origin| {
            let host = lan.host(origin);
            Origin::start(&host.netns, SocketAddr::new(ip(host), 80))
        })
        .collect::<Result<_>>()?;
    // origin2 is the least loaded.
    let _agents: Vec<Agent> = ORIGINS
        .iter()
        .zip([60, 20])
        .map(|(origin, cpu)| {
            let host = lan.host(origin);
            Agent::start(
                &host.netns,
                SocketAddr::new(ip(host), AGENT_PORT),
                &lan.work_dir().join(format!("proc-{origin}")),
                cpu,
            )
        })
        .collect::<Result<_>>()?;
    let customer = lan.host("customer").clone();
    let resolver = lan.host("resolver").clone();
    net.start_pops(&POPS, |lan, pop| {
        let origins: Vec<Member> = ORIGINS
            .iter()
            .map(|origin| Member::http(lan.host(origin), 80).with_agent())
            .collect();
        let pops: Vec<Member> = POPS
            .iter()
            .map(|peer| Member::http(lan.host(peer), 80))
            .collect();
        mesh::cdn_pop(lan, pop, interval, &origins, &pops, "/")
    })?;
    let lan = &net.lan;
    let mut knot = start_knot(
        &customer,
        &lan.work_dir().join("knot"),
        "shop.example",
        &mesh::customer_zone(&customer),
    )?;
    let pops: Vec<IpAddr> = net.all().into_iter().map(|i| net.ip(i)).collect();
    let mut unbound = start_unbound(
        &resolver,
        &lan.work_dir().join("unbound"),
        &[
            ("shop.example", vec![customer.v4]),
            (
                CDN_ZONE,
                net.all().into_iter().map(|i| net.pop(i).v4).collect(),
            ),
        ],
    )?;
    let client = &lan.host("client").netns;
    let origin2 = ip(lan.host("origin2"));

    // Before asking through the resolver (which caches), every PoP must answer from the
    // converged mesh: the agreed origin, and a healthy PoP for the static name.
    net.wait_for_everyone(scaled(Duration::from_secs(5)))?;
    let start = Instant::now();
    loop {
        let mut ready = true;
        for i in net.all() {
            let stat = net.answer(i, "shop-static.cdn.example")?;
            ready &= net.answer(i, "shop.cdn.example")? == [origin2]
                && stat.len() == 1
                && pops.contains(&stat[0]);
        }
        if ready {
            break;
        }
        if start.elapsed() > 20 * interval + allowance {
            let state = net.status(0).ok();
            bail!("the PoPs did not converge\n{state:#?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    knot.check_running()?;
    unbound.check_running()?;

    // The page: www.shop.example → (customer's CNAME) shop.cdn.example → the agreed origin.
    let resolver = format!("@{}", resolver.v4);
    let www = dig(
        client,
        &[&resolver, "www.shop.example", "A", "+tries=1", "+time=5"],
    )?;
    let cname = www.section("ANSWER").into_iter().any(|fields| {
        fields.get(3).map(String::as_str) == Some("CNAME") && fields[4] == "shop.cdn.example."
    });
    assert!(cname, "{}", www.text);
    assert_eq!(www.a_records(), [origin2], "{}", www.text);
    let resolve = format!("www.shop.example:80:{origin2}");
    let page = curl(
        client,
        &["--resolve", &resolve, "http://www.shop.example/index.html"],
    )?;
    assert_eq!(page.status, 200);
    assert_eq!(
        origins[1].count("/index.html"),
        1,
        "the page came from origin2"
    );
    assert_eq!(origins[0].count("/index.html"), 0);

    // The static object: static.shop.example → shop-static.cdn.example → a PoP, whose cache
    // fetches it from the agreed origin once (a miss) and serves it again itself (a hit).
    let stat = dig(
        client,
        &[&resolver, "static.shop.example", "A", "+tries=1", "+time=5"],
    )?;
    let got: Vec<IpAddr> = stat.a_records().into_iter().map(IpAddr::from).collect();
    assert!(
        got.len() == 1 && pops.contains(&got[0]),
        "not one PoP: {}",
        stat.text
    );
    let resolve = format!("static.shop.example:80:{}", got[0]);
    let url = format!("http://static.shop.example{STATIC_PATH}");
    let first = curl(client, &["--resolve", &resolve, &url])?;
    assert_eq!((first.status, first.cache()), (200, "miss"), "{first:?}");
    let second = curl(client, &["--resolve", &resolve, &url])?;
    assert_eq!((second.status, second.cache()), (200, "hit"), "{second:?}");
    assert_eq!(second.body, first.body);
    let fetched: usize = origins.iter().map(|origin| origin.count(STATIC_PATH)).sum();
    assert_eq!(fetched, 1, "the origins saw the static object once");
    assert_eq!(origins[1].count(STATIC_PATH), 1, "from the agreed origin");
    eprintln!(
        "www.shop.example → {origin2} (page 200); static.shop.example → {} (miss, then hit)",
        got[0]
    );
    knot.check_running()?;
    unbound.check_running()?;
    Ok(())
}
