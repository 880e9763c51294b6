//! The PoP network end to end through a real resolver. A customer's own DNS (Knot DNS) serves
//! `shop.example`, whose zone hands `www.shop.example` and `static.shop.example` to the CDN by
//! CNAME; three PoPs run `edge run` with `[mesh]` and serve `cdn.example`: `shop` from the
//! origin pool (the origin all PoPs agree on) and `shop-static` from the PoP pool (the best PoP
//! from the PoP asked). unbound is the client's recursive resolver, with stub zones pointing at
//! the customer's DNS and at the PoPs. The client resolves both names through unbound (dig),
//! fetches the page from the origin it got and the static object from the PoP it got, twice
//! (a miss, then a hit), with curl.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use edge_tests::{
    agent::Agent,
    bench::peers::Daemon,
    curl::curl,
    dig::{dig, kdig},
    edge::{EdgeProcess, status},
    origin::Origin,
    topology::{Host, Lan},
};

const AGENT_PORT: u16 = 9100;
const GOSSIP_PORT: u16 = 7946;
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

/// The A records of `name` in a dig or kdig reply (the CNAMEs before them left out).
fn addresses(reply: &edge_tests::dig::DigOutput) -> Vec<IpAddr> {
    reply
        .section("ANSWER")
        .into_iter()
        .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
        .map(|fields| fields[4].parse().unwrap())
        .collect()
}

/// `edge.toml` of PoP `pop`: the origin pool, the PoP pool (every PoP's HTTP service, probed
/// with its address as Host, so each PoP serves a site of that name), the CDN's zone, the
/// cache and the mesh.
fn pop_config(lan: &Lan, pop: &str) -> String {
    let host = lan.host(pop);
    let mut text = format!(
        "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n",
        lan.pin_root().join(pop).display(),
        host.v4
    );
    text += "[[pools]]\nname = \"shop\"\nkind = \"origin\"\n[pools.probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
    for origin in ORIGINS {
        text += &format!(
            "[[pools.members]]\nname = \"{origin}\"\naddress = \"{}\"\nhttp_port = 80\nagent_port = {AGENT_PORT}\n",
            lan.host(origin).v4
        );
    }
    text += "[[pools]]\nname = \"pops\"\nkind = \"pop\"\n[pools.probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
    for peer in POPS {
        text += &format!(
            "[[pools.members]]\nname = \"{peer}\"\naddress = \"{}\"\nhttp_port = 80\n",
            lan.host(peer).v4
        );
    }
    text += &format!(
        "[[zones]]\napex = \"cdn.example\"\nttl = 30\n[[zones.nameservers]]\nname = \"{pop}\"\naddresses = [\"{}\"]\n",
        host.v4
    );
    text += "[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n[[zones.names]]\nname = \"shop-static\"\npool = \"pops\"\n";
    text += &format!(
        "[http]\nlisten = \"{}:80\"\ncache_dir = \"{}\"\ncache_capacity = \"16 MiB\"\n",
        host.v4,
        lan.work_dir().join(format!("cache-{pop}")).display()
    );
    for site in ["static.shop.example".to_string(), host.v4.to_string()] {
        text += &format!("[[http.sites]]\nhost = \"{site}\"\npool = \"shop\"\n");
    }
    text += &format!(
        "[mesh]\nname = \"{pop}\"\nlisten = \"{}:{GOSSIP_PORT}\"\nseeds = [\"{}:{GOSSIP_PORT}\"]\ncluster_id = \"test-cdn\"\nsecret = \"a test secret of 32 bytes, fine.\"\n",
        host.v4,
        lan.host("pop1").v4
    );
    text
}

/// Knot DNS serving the customer's zone on `customer`.
fn start_knot(lan: &Lan) -> Result<Daemon> {
    let host = lan.host("customer");
    let dir = lan.work_dir().join("knot");
    fs::create_dir_all(&dir)?;
    let zone = dir.join("shop.example.zone");
    fs::write(
        &zone,
        format!(
            "$ORIGIN shop.example.\n$TTL 300\n\
             @ SOA ns hostmaster 1 3600 600 86400 300\n\
             @ NS ns\n\
             ns A {}\n\
             www CNAME shop.cdn.example.\n\
             static CNAME shop-static.cdn.example.\n",
            host.v4
        ),
    )?;
    let config = dir.join("knot.conf");
    fs::write(
        &config,
        format!(
            "server:\n    rundir: {dir}\n    listen: {ip}@53\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: {dir}\n\
             log:\n  - target: stderr\n    any: notice\n\
             zone:\n  - domain: shop.example\n    file: {zone}\n    journal-content: none\n",
            dir = dir.display(),
            ip = host.v4,
            zone = zone.display(),
        ),
    )?;
    let mut command = host.netns.command("knotd");
    command.arg("-c").arg(&config);
    Daemon::spawn("knotd", command, &dir.join("knot.log"))
}

/// unbound on `resolver`: recursion for the client, stub zones for the customer's zone and
/// the CDN's; no DNSSEC validation (the zones are unsigned and have no trust anchor).
fn start_unbound(lan: &Lan) -> Result<Daemon> {
    let host = lan.host("resolver");
    let dir = lan.work_dir().join("unbound");
    fs::create_dir_all(&dir)?;
    let mut text = format!(
        "server:\n    interface: {ip}\n    port: 53\n    access-control: 198.18.0.0/24 allow\n    \
         username: \"\"\n    chroot: \"\"\n    directory: \"{dir}\"\n    pidfile: \"{dir}/unbound.pid\"\n    \
         do-daemonize: no\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    \
         num-threads: 1\n    do-ip6: no\n    module-config: \"iterator\"\n\
         remote-control:\n    control-enable: no\n\
         stub-zone:\n    name: \"shop.example\"\n    stub-addr: {customer}\n\
         stub-zone:\n    name: \"cdn.example\"\n",
        ip = host.v4,
        dir = dir.display(),
        customer = lan.host("customer").v4,
    );
    for pop in POPS {
        text += &format!("    stub-addr: {}\n", lan.host(pop).v4);
    }
    let config = dir.join("unbound.conf");
    fs::write(&config, text)?;
    let check = host
        .netns
        .command("unbound-checkconf")
        .arg(&config)
        .output()?;
    if !check.status.success() {
        bail!(
            "unbound-checkconf: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut command = host.netns.command("unbound");
    command.arg("-d").arg("-c").arg(&config);
    Daemon::spawn("unbound", command, &dir.join("unbound.log"))
}

#[test]
fn a_client_resolves_through_unbound_and_fetches_from_the_origin_and_the_pop_it_got() -> Result<()>
{
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Lan::new(
        "mesh-resolver",
        &[
            "pop1", "pop2", "pop3", "origin1", "origin2", "customer", "resolver", "client",
        ],
    )?;
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
    let mut configs: Vec<PathBuf> = Vec::new();
    let mut edges = Vec::new();
    for pop in POPS {
        let config = lan.write_file(&format!("{pop}.toml"), &pop_config(&lan, pop))?;
        edges.push(EdgeProcess::start(&lan.host(pop).netns, &config, &[])?);
        configs.push(config);
    }
    let mut knot = start_knot(&lan)?;
    let mut unbound = start_unbound(&lan)?;
    let client = &lan.host("client").netns;
    let pops: Vec<IpAddr> = POPS.iter().map(|pop| ip(lan.host(pop))).collect();
    let origin2 = ip(lan.host("origin2"));

    // Before asking through the resolver (which caches), every PoP must answer from the
    // converged mesh: the agreed origin, and a healthy PoP for the static name.
    let start = Instant::now();
    loop {
        let mut ready = true;
        for pop in &pops {
            let server = format!("@{pop}");
            let shop = kdig(
                client,
                &[&server, "shop.cdn.example", "A", "+retry=0", "+time=2"],
            )?;
            let stat = kdig(
                client,
                &[
                    &server,
                    "shop-static.cdn.example",
                    "A",
                    "+retry=0",
                    "+time=2",
                ],
            )?;
            let live = status(&lan.host("pop1").netns, &configs[0])?
                .mesh
                .is_some_and(|mesh| mesh.members.len() == POPS.len());
            ready &= live
                && addresses(&shop) == [origin2]
                && addresses(&stat).len() == 1
                && pops.contains(&addresses(&stat)[0]);
        }
        if ready {
            break;
        }
        if start.elapsed() > 20 * INTERVAL + ALLOWANCE {
            let state = status(&lan.host("pop1").netns, &configs[0]).ok();
            bail!("the PoPs did not converge\n{state:#?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    knot.check_running()?;
    unbound.check_running()?;

    // The page: www.shop.example → (customer's CNAME) shop.cdn.example → the agreed origin.
    let resolver = format!("@{}", lan.host("resolver").v4);
    let www = dig(
        client,
        &[&resolver, "www.shop.example", "A", "+tries=1", "+time=5"],
    )?;
    let cname = www.section("ANSWER").into_iter().any(|fields| {
        fields.get(3).map(String::as_str) == Some("CNAME") && fields[4] == "shop.cdn.example."
    });
    assert!(cname, "{}", www.text);
    assert_eq!(addresses(&www), [origin2], "{}", www.text);
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
    let got = addresses(&stat);
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
    drop(edges);
    Ok(())
}
