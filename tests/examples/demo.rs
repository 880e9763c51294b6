//! `cargo xtask demo`: the PoP network, in network namespaces on one bridge. Three PoPs run
//! `edge run` with `[mesh]`; three origins run nginx and `edge agent`; the customer's own DNS
//! (Knot DNS) hands `www.shop.example` and `static.shop.example` to the CDN by CNAME; unbound is
//! the client's resolver. The client resolves both names and fetches the page from the origin
//! it got and a static object from the PoP it got (a miss, then a hit) with curl. Then one
//! origin is loaded and one PoP killed, and the answers move. Every step prints what was asked
//! and what came back. Everything started is stopped and removed at the end, on an error, a
//! panic, Ctrl-C or SIGTERM.
//!
//! The agents read a /proc the demo writes (`--proc-root`), so that it can load an origin on
//! demand: the namespaces share one machine's CPU, so their real /proc would all read alike.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use edge_tests::{
    agent::Agent,
    bench::{peers::Daemon, web::WebSetup},
    curl::{Reply, curl},
    dig::{DigOutput, dig},
    edge::{binary, counters},
    ftp::Vsftpd,
    interrupt,
    mesh::{self, AGENT_PORT, CDN_ZONE, Member, Network, STATIC_SITE},
    resolver::{start_knot, start_unbound},
    topology::{Host, Lan},
};

const POPS: [&str; 3] = ["pop1", "pop2", "pop3"];
const ORIGINS: [&str; 3] = ["origin1", "origin2", "origin3"];
/// Each origin's CPU (%) as its agent reports it: origin2 is the least loaded.
const ORIGIN_CPU: [u64; 3] = [50, 20, 40];
/// Each PoP's CPU (%): pop2 is the least loaded, pop1 next.
const POP_CPU: [u64; 3] = [30, 5, 80];
const INTERVAL: Duration = Duration::from_millis(200);
/// Waits for the network to converge or move; far above what it takes (1–2 s).
const BOUND: Duration = Duration::from_secs(15);
const FTP_PORT: u16 = 21;
const LOGO: &str = "/logo.css";

fn main() -> Result<()> {
    interrupt::catch();
    let result = run();
    // Everything `run` started was stopped and removed as it returned.
    match &result {
        Ok(()) => println!("\ndemo done: every daemon stopped, namespaces, pins and files removed"),
        Err(_) => println!("\ndemo failed: everything it had started is stopped and removed"),
    }
    result
}

fn run() -> Result<()> {
    let roles: Vec<&str> = POPS
        .iter()
        .chain(&ORIGINS)
        .copied()
        .chain(["customer", "resolver", "client"])
        .collect();
    // First, so that it goes last: every process has stopped when the namespaces go.
    let mut net = Network::new(Lan::new("demo", &roles)?, "client");
    let lan = &net.lan;
    step("the network: one namespace per host, all on one bridge");
    for host in &lan.hosts {
        println!("  {:<9} {:<12} ({})", host.role, host.v4, host.netns.name);
    }

    step("origins: nginx serving shop.example, and `edge agent` reporting the host's load");
    let mut origin_servers = Vec::new();
    let mut origin_agents = Vec::new();
    for (origin, cpu) in ORIGINS.iter().zip(ORIGIN_CPU) {
        let host = lan.host(origin);
        origin_servers.push(start_origin(host, &lan.work_dir().join(origin))?);
        origin_agents.push(start_agent(lan, host, cpu)?);
        println!(
            "  {origin}: nginx on {}:80, edge agent on :{AGENT_PORT} reporting CPU {cpu} %",
            host.v4
        );
    }

    step("PoPs: vsftpd (the FTP metric), `edge agent`, and `edge run` with [mesh]");
    let mut pop_services = Vec::new();
    for (pop, cpu) in POPS.iter().zip(POP_CPU) {
        let host = lan.host(pop);
        let dir = lan.work_dir().join(format!("ftp-{pop}"));
        pop_services.push((
            Vsftpd::start(&host.netns, SocketAddr::new(host.v4.into(), FTP_PORT), &dir)?,
            start_agent(lan, host, cpu)?,
        ));
        println!("  {pop}: vsftpd on {}:{FTP_PORT}, CPU {cpu} %", host.v4);
    }
    let customer = lan.host("customer").clone();
    let resolver = lan.host("resolver").clone();
    let client = lan.host("client").clone();
    let origin_ips: Vec<IpAddr> = ORIGINS
        .iter()
        .map(|origin| IpAddr::from(lan.host(origin).v4))
        .collect();
    net.start_pops(&POPS, |lan, pop| {
        let origins: Vec<Member> = ORIGINS
            .iter()
            .map(|origin| Member::http(lan.host(origin), 80).with_agent())
            .collect();
        let pops: Vec<Member> = POPS
            .iter()
            .map(|peer| Member {
                ftp_port: Some(FTP_PORT),
                ..Member::http(lan.host(peer), 80).with_agent()
            })
            .collect();
        mesh::cdn_pop(lan, pop, INTERVAL, &origins, &pops, "/health.txt")
    })?;
    let mesh_section = fs::read_to_string(&net.configs[0])?;
    let mesh_section = &mesh_section[mesh_section.find("[mesh]").unwrap_or(0)..];
    println!(
        "  each PoP's config: {}, …; pop1's [mesh]:\n{}",
        net.configs[0].display(),
        indent(mesh_section.trim())
    );
    let took = net.wait_for_everyone(BOUND)?;
    println!("  the three PoPs see each other live {took:.1?} after the last started");
    let agreed = net.wait_for_answers(&net.all(), "shop.cdn.example", &[origin_ips[1]], BOUND)?;
    net.wait_for_source(&net.all(), "shop", "mesh: agreed over 3 PoPs", BOUND)?;
    net.wait_for_source(&net.all(), "pops", "mesh: best from here over 3", BOUND)?;
    println!("  and agree on origin2 for shop.cdn.example after {agreed:.1?}");
    show_status(&net, 0)?;

    step("the customer's own DNS (Knot DNS) hands its names to the CDN by CNAME");
    let zone = mesh::customer_zone(&customer);
    let _knot = start_knot(
        &customer,
        &net.lan.work_dir().join("knot"),
        "shop.example",
        &zone,
    )?;
    println!(
        "  knotd on {}, zone shop.example:\n{}",
        customer.v4,
        indent(&zone)
    );
    let pop_ips: Vec<Ipv4Addr> = net.all().into_iter().map(|i| net.pop(i).v4).collect();
    let _unbound = start_unbound(
        &resolver,
        &net.lan.work_dir().join("unbound"),
        &[
            ("shop.example", vec![customer.v4]),
            (CDN_ZONE, pop_ips.clone()),
        ],
    )?;
    println!(
        "  unbound on {}: the client's resolver, stub zones shop.example → {}, {CDN_ZONE} → {}",
        resolver.v4,
        customer.v4,
        pop_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    step("the client resolves the page's name and fetches the page from the origin it got");
    let www = resolve(&client, &resolver, "www.shop.example", |_| true)?;
    let page_from = *www.first().context("no address for www.shop.example")?;
    fetch(&client, "www.shop.example", page_from, "/")?;

    step("the client resolves the static name and fetches an object from the PoP it got");
    let stat = resolve(&client, &resolver, STATIC_SITE, |_| true)?;
    let static_from = *stat.first().context("no address for static.shop.example")?;
    let first = fetch(&client, STATIC_SITE, static_from, LOGO)?;
    let second = fetch(&client, STATIC_SITE, static_from, LOGO)?;
    if (first.cache(), second.cache()) != ("miss", "hit") {
        bail!("expected a miss then a hit");
    }

    step("origin2 gets loaded (its agent now reports 95 % CPU): every PoP moves together");
    origin_agents[1].set_cpu(95);
    let loaded = Instant::now();
    let (moved, _) = net.watch(&net.all(), "shop.cdn.example", loaded, BOUND, |answer| {
        answer.len() == 1 && answer[0] != origin_ips[1]
    })?;
    let now: Vec<Vec<IpAddr>> = net
        .all()
        .into_iter()
        .map(|i| net.answer(i, "shop.cdn.example"))
        .collect::<Result<_>>()?;
    for (i, (when, answer)) in moved.iter().zip(&now).enumerate() {
        println!(
            "  $ kdig @{} shop.cdn.example A   → {}   (moved {when:.1?} after the load)",
            net.pop(i).v4,
            names(answer, &net.lan)
        );
    }
    let new_origin = now[0][0];
    println!("  through the resolver, once its cached answer expires (TTL 5 s):");
    resolve(&client, &resolver, "www.shop.example", |got| {
        got == [new_origin]
    })?;
    fetch(&client, "www.shop.example", new_origin, "/")?;

    let victim = net
        .all()
        .into_iter()
        .find(|&i| net.ip(i) == static_from)
        .context("the static name's PoP is not a PoP")?;
    let others: Vec<usize> = net.all().into_iter().filter(|&i| i != victim).collect();
    step(&format!(
        "{} (the PoP the client got) goes down: edge killed (SIGKILL), its link down; the \
         others stop answering it",
        net.pops[victim]
    ));
    // Each PoP answers the best PoP from where it stands: not all of them the victim.
    let before: Vec<Vec<IpAddr>> = others
        .iter()
        .map(|&i| net.answer(i, "shop-static.cdn.example"))
        .collect::<Result<_>>()?;
    // The link too: a killed daemon leaves its XDP program answering from the maps (so that a
    // restart loses no query), which a resolver would still reach.
    let killed = Instant::now();
    net.kill(victim)?;
    net.pop(victim)
        .netns
        .run("ip", &["link", "set", "eth0", "down"])?;
    let (moved, _) = net.watch(
        &others,
        "shop-static.cdn.example",
        killed,
        BOUND,
        |answer| answer.len() == 1 && answer[0] != static_from,
    )?;
    for ((&i, when), before) in others.iter().zip(&moved).zip(&before) {
        let answer = net.answer(i, "shop-static.cdn.example")?;
        let how = if before.contains(&static_from) {
            format!("moved {when:.1?} after the kill")
        } else {
            format!("it answered {} before", names(before, &net.lan))
        };
        println!(
            "  $ kdig @{} shop-static.cdn.example A   → {}   ({how})",
            net.pop(i).v4,
            names(&answer, &net.lan)
        );
    }
    // The answers can move first on the others' own probes of its HTTP service (fall 2); the
    // mesh declares it dead when its heartbeats stop.
    let victim_name = net.pops[victim].clone();
    let dead = net.wait_for_members(&others, &[(&victim_name, false)], BOUND)?;
    println!(
        "  {} see {victim_name} dead in the mesh {:.1?} after the kill",
        others
            .iter()
            .map(|&i| net.pops[i].as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        killed.elapsed().max(dead)
    );
    println!("  through the resolver, once its cached answer expires:");
    let moved_to = resolve(&client, &resolver, STATIC_SITE, |got| {
        got.len() == 1 && got[0] != static_from
    })?;
    fetch(&client, STATIC_SITE, moved_to[0], LOGO)?;

    step(
        "pop1's XDP counters: DNS answered in XDP, and why other frames went to the kernel \
         (gossip, probes, HTTP, DNS over TCP)",
    );
    let pop1 = net.configs[0].clone();
    println!("  $ edge stats --config {}", pop1.display());
    for (counter, count) in counters(&pop1)? {
        if count > 0 {
            println!("  {counter:<16} {count}");
        }
    }
    step("stopping every daemon, removing the namespaces, pins and files");
    Ok(())
}

/// Prints a step's heading.
fn step(what: &str) {
    println!("\n== {what}");
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// Who has each of `addresses`, by role.
fn names(addresses: &[IpAddr], lan: &Lan) -> String {
    addresses
        .iter()
        .map(|address| {
            let role = lan
                .hosts
                .iter()
                .find(|host| IpAddr::from(host.v4) == *address)
                .map_or("?", |host| host.role.as_str());
            format!("{address} ({role})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// nginx on `host`:80 serving shop.example from `dir`: a page naming the origin, a static object
/// and a health object, both cacheable for 10 minutes.
fn start_origin(host: &Host, dir: &Path) -> Result<Daemon> {
    let root = dir.join("www");
    fs::create_dir_all(&root)?;
    fs::write(
        root.join("index.html"),
        format!("<h1>shop.example</h1> the page, from {}\n", host.role),
    )?;
    fs::write(
        root.join("logo.css"),
        format!("/* shop.example's logo.css, from {} */\n", host.role),
    )?;
    fs::write(root.join("health.txt"), "ok\n")?;
    let setup = WebSetup {
        netns: &host.netns,
        dir,
        listen: SocketAddr::new(host.v4.into(), 80),
        cpu: 0,
    };
    let config = format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 64;
}}
http {{
    access_log {dir}/access.log;
    default_type text/plain;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {listen};
        root {root};
        location ~ \\.(css|txt)$ {{
            add_header Cache-Control \"max-age=600\";
        }}
    }}
}}
",
        dir = dir.display(),
        listen = setup.listen,
        root = root.display(),
    );
    let daemon = edge_tests::bench::web::start_nginx_with(&setup, &config)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge_tests::origin::connect(&host.netns, setup.listen).is_err() {
        if Instant::now() > deadline {
            bail!("nginx on {} did not listen within 10 s", setup.listen);
        }
        interrupt::check()?;
        thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
}

/// `edge agent` on `host`, reading a /proc written under the LAN's work directory at `cpu` %.
fn start_agent(lan: &Lan, host: &Host, cpu: u64) -> Result<Agent> {
    Agent::start(
        &host.netns,
        SocketAddr::new(host.v4.into(), AGENT_PORT),
        &lan.work_dir().join(format!("proc-{}", host.role)),
        cpu,
    )
}

/// `dig @resolver name A` from the client until the addresses satisfy `wanted` (a resolver's
/// cached answer lasts its TTL); prints the question and the answer section; returns the A
/// records.
fn resolve(
    client: &Host,
    resolver: &Host,
    name: &str,
    wanted: impl Fn(&[IpAddr]) -> bool,
) -> Result<Vec<IpAddr>> {
    let server = format!("@{}", resolver.v4);
    let start = Instant::now();
    loop {
        let reply = dig(&client.netns, &[&server, name, "A", "+tries=1", "+time=3"])?;
        let got: Vec<IpAddr> = reply.a_records().into_iter().map(IpAddr::from).collect();
        if !got.is_empty() && wanted(&got) {
            print_dig(&server, name, &reply, start.elapsed());
            return Ok(got);
        }
        if start.elapsed() > BOUND {
            bail!("{name} through the resolver: {}", reply.text);
        }
        interrupt::check()?;
        thread::sleep(Duration::from_millis(250));
    }
}

fn print_dig(server: &str, name: &str, reply: &DigOutput, waited: Duration) {
    let waited = if waited > Duration::from_millis(500) {
        format!("   (after {waited:.1?})")
    } else {
        String::new()
    };
    println!("  $ dig {server} {name} A{waited}");
    for record in reply.section("ANSWER") {
        println!("    {}", record.join("\t"));
    }
}

/// curl for `path` on `host` at `address` (as resolved), from the client; prints the question,
/// the status, the cache's verdict and the body.
fn fetch(client: &Host, host: &str, address: IpAddr, path: &str) -> Result<Reply> {
    let resolve = format!("{host}:80:{address}");
    let url = format!("http://{host}{path}");
    let reply = curl(&client.netns, &["--resolve", &resolve, &url])?;
    println!("  $ curl --resolve {resolve} {url}");
    let cache = reply
        .header("x-cache")
        .map(|verdict| format!(", x-cache: {verdict}"))
        .unwrap_or_default();
    println!(
        "    {}{cache}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body).trim()
    );
    if reply.status != 200 {
        bail!("{url} from {address}: status {}", reply.status);
    }
    Ok(reply)
}

/// `edge status` of PoP `i`, as an operator reads it.
fn show_status(net: &Network, i: usize) -> Result<()> {
    let config = &net.configs[i];
    let output = net
        .pop(i)
        .netns
        .command(binary())
        .args(["status", "--config"])
        .arg(config)
        .output()?;
    println!(
        "  $ edge status --config {}   (on {})",
        config.display(),
        net.pops[i]
    );
    print!("{}", indent(&String::from_utf8_lossy(&output.stdout)));
    println!();
    Ok(())
}
