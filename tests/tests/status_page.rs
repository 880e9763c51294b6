//! The status page on the admin address, rendered by a real browser: two PoPs in a mesh on one
//! LAN (`Lan`), an origin with the real `edge agent` beside it, each PoP with an agent and a
//! service to probe; the first PoP serves DNS (XDP and userspace) and HTTP to a client that
//! sends it real traffic (kdig, curl). Headless Chromium from Debian's package loads the page
//! inside that PoP's namespace, takes a screenshot, and dumps the DOM it rendered, on which the
//! test asserts: the tables of PoPs, origins and selections, and every plot drawn with data.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use edge_tests::{
    agent::Agent,
    curl::curl,
    dig::kdig,
    edge::{EdgeProcess, scaled},
    mesh,
    origin::Origin,
    topology::{Host, Lan, Netns},
};

const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9100;
const PLOTS: [&str; 5] = [
    "plot-origin-load",
    "plot-pop-rtt",
    "plot-pop-load",
    "plot-dns-qps",
    "plot-cache-hit-ratio",
];

fn ip(host: &Host) -> IpAddr {
    host.v4.into()
}

/// The PoPs' `admin.history_interval`. The page reloads itself every sampling interval: it
/// must outlast a page load and a screenshot, which on an emulated CPU (`cargo xtask vm-test`)
/// take seconds; at 1 s Chromium reloaded it for ever there and never took the screenshot.
fn sampling_interval() -> Duration {
    (scaled(Duration::from_secs(1)) * 3).min(Duration::from_secs(60))
}

fn config(lan: &Lan, pop: &str) -> String {
    let host = lan.host(pop);
    let origin = lan.host("origin1");
    let interval = sampling_interval();
    let mut text = format!(
        "[admin]\nhistory_interval = \"{}s\"\n[dns]\nlisten = [\"{}:53\"]\n[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n",
        interval.as_secs(),
        host.v4,
        lan.pin_root().join(pop).display(),
    );
    if pop == "pop1" {
        text += &format!(
            "[http]\nlisten = \"{}:80\"\ncache_dir = \"{}\"\ncache_capacity = \"16 MiB\"\n[[http.sites]]\nhost = \"static.example.com\"\npool = \"shop\"\n",
            host.v4,
            lan.work_dir().join("cache").display(),
        );
    }
    // Times the slowdown (`EDGE_TEST_SLOWDOWN`): on an emulated CPU a probe alone can take
    // longer than 150 ms, and every PoP and origin would be down.
    let probe = format!(
        "[pools.probe]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\n",
        scaled(Duration::from_millis(200)).as_millis(),
        scaled(Duration::from_millis(150)).as_millis()
    );
    text += &format!(
        "[[pools]]\nname = \"shop\"\nkind = \"origin\"\n{probe}[[pools.members]]\nname = \"origin1\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\nagent_port = {AGENT_PORT}\n",
        origin.v4
    );
    text += &format!("[[pools]]\nname = \"pops\"\nkind = \"pop\"\n{probe}");
    for peer in ["pop1", "pop2"] {
        text += &format!(
            "[[pools.members]]\nname = \"{peer}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\nagent_port = {AGENT_PORT}\n",
            lan.host(peer).v4
        );
    }
    text += "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.10\"]\n[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n";
    text + &mesh::mesh(lan, pop, "pop1")
}

/// The page as curl gets it from inside `netns`.
fn page(netns: &Netns) -> Result<String> {
    let output = netns.run("curl", &["-sf", "http://127.0.0.1:9081/"])?;
    Ok(String::from_utf8(output.stdout)?)
}

/// The element `<tag … id="id" …>…</tag>` of `html` (tags of that name do not nest here).
fn element<'a>(html: &'a str, tag: &str, id: &str) -> Option<&'a str> {
    let open = format!("<{tag} ");
    let start = html.match_indices(&open).map(|(at, _)| at).find(|&at| {
        html[at..]
            .split('>')
            .next()
            .is_some_and(|head| head.contains(&format!("id=\"{id}\"")))
    })?;
    let end = start + html[start..].find(&format!("</{tag}>"))?;
    Some(&html[start..end])
}

/// The least `data-points` of the lines in a plot; 0 without any.
fn fewest_points(svg: &str) -> usize {
    svg.match_indices("<polyline ")
        .filter_map(|(at, _)| {
            let tag = svg[at..].split('>').next()?;
            let count = tag.split("data-points=\"").nth(1)?.split('"').next()?;
            count.parse().ok()
        })
        .min()
        .unwrap_or(0)
}

/// Headless Chromium inside `netns` with `args`, the page last.
fn chromium(netns: &Netns, profile: &Path, args: &[&str]) -> Result<Output> {
    let output = netns
        .command("timeout")
        .arg(scaled(Duration::from_secs(120)).as_secs().to_string())
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg("http://127.0.0.1:9081/")
        .output()
        .context("running chromium (cargo xtask setup installs it)")?;
    ensure!(
        output.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

#[test]
fn the_status_page_renders_tables_and_plots_in_chromium() -> Result<()> {
    let lan = Lan::new("status-page", &["pop1", "pop2", "client", "origin1"])?;
    let mut servers = Vec::new();
    let mut agents = Vec::new();
    for (role, cpu) in [("origin1", 30), ("pop1", 20), ("pop2", 60)] {
        let host = lan.host(role);
        servers.push(Origin::start(
            &host.netns,
            SocketAddr::new(ip(host), HTTP_PORT),
        )?);
        let proc_dir = lan.work_dir().join(format!("proc-{role}"));
        agents.push(Agent::start(
            &host.netns,
            SocketAddr::new(ip(host), AGENT_PORT),
            &proc_dir,
            cpu,
        )?);
    }
    let mut edges = Vec::new();
    for pop in ["pop1", "pop2"] {
        let path = lan.write_file(&format!("{pop}.toml"), &config(&lan, pop))?;
        edges.push(EdgeProcess::start(&lan.host(pop).netns, &path, &[])?);
    }
    let (pop1, client) = (&lan.host("pop1").netns, &lan.host("client").netns);

    // Traffic over two sampling intervals and a second, so that every rate has two samples: an
    // XDP answer, a userspace one (no such name) and a cache hit (after the first miss) each
    // round.
    let server = format!("@{}", lan.host("pop1").v4);
    let resolve = format!("static.example.com:80:{}", lan.host("pop1").v4);
    let url = "http://static.example.com/page?cc=max-age=600&size=2000";
    let mut misses = 0;
    let start = Instant::now();
    while start.elapsed() < sampling_interval() * 2 + Duration::from_secs(1) {
        let xdp = kdig(client, &[&server, "www.example.com", "A"])?;
        ensure!(xdp.status().as_deref() == Some("NOERROR"), "{}", xdp.text);
        let userspace = kdig(client, &[&server, "nope.example.com", "A"])?;
        ensure!(
            userspace.status().as_deref() == Some("NXDOMAIN"),
            "{}",
            userspace.text
        );
        let reply = curl(client, &["--resolve", &resolve, url])?;
        ensure!(reply.status == 200, "curl: {}", reply.status);
        misses += usize::from(reply.cache() == "miss");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(misses, 1);

    // The page as served, until every plot has two points a line, pop2 is live and the origin
    // pool's answer rests on both PoPs' reports.
    let deadline = Instant::now() + sampling_interval() * 3 + scaled(Duration::from_secs(20));
    loop {
        let html = page(pop1)?;
        let ready = PLOTS
            .iter()
            .all(|id| element(&html, "svg", id).is_some_and(|svg| fewest_points(svg) >= 2))
            && element(&html, "table", "mesh")
                .is_some_and(|table| table.matches(">live<").count() == 2)
            && element(&html, "table", "selections")
                .is_some_and(|table| table.contains("mesh: agreed over 2 PoPs"));
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the page never had every plot, both PoPs live and their agreement:\n{html}");
        }
        thread::sleep(Duration::from_millis(200));
    }

    let profile = lan.work_dir().join("chromium");
    let screenshot = lan.work_dir().join("status-page.png");
    chromium(
        pop1,
        &profile,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1400,1500",
        ],
    )?;
    let png = std::fs::read(&screenshot).context("the screenshot")?;
    ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into()?);
    let height = u32::from_be_bytes(png[20..24].try_into()?);
    assert_eq!((width, height), (1400, 1500));
    // A blank page compresses to a few kilobytes; tables, text and plots do not.
    assert!(png.len() > 40_000, "screenshot of {} bytes", png.len());
    // Kept for people to look at (in a `vm-test` guest the directory is not made by cargo).
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let kept = tmp.join("status-page.png");
    std::fs::copy(&screenshot, &kept).with_context(|| format!("copying to {}", kept.display()))?;

    let dom = String::from_utf8(chromium(pop1, &profile, &["--dump-dom"])?.stdout)?;
    let mesh = element(&dom, "table", "mesh").context("the PoPs table")?;
    assert!(
        mesh.contains("pop1 (this PoP)") && mesh.contains("pop2"),
        "{mesh}"
    );
    assert_eq!(mesh.matches("class=\"live\"").count(), 2, "{mesh}");
    let origins = element(&dom, "table", "origin-pools").context("the origins table")?;
    assert!(
        origins.contains("origin1") && origins.contains("class=\"up\""),
        "{origins}"
    );
    // Its agent's CPU, smoothed towards 30 %.
    assert!(
        origins.contains(&lan.host("origin1").v4.to_string()),
        "{origins}"
    );
    let pops = element(&dom, "table", "pop-pools").context("the PoPs measured table")?;
    assert_eq!(
        pops.matches("<tr>").count(),
        3,
        "a header and two PoPs: {pops}"
    );
    let selections = element(&dom, "table", "selections").context("the selections table")?;
    assert!(
        selections.contains(&format!(
            "<td>shop</td><td>origin</td><td>{}</td>",
            lan.host("origin1").v4
        )),
        "{selections}"
    );
    assert!(
        selections.contains("mesh: agreed over 2 PoPs"),
        "why: {selections}"
    );
    for id in PLOTS {
        let svg = element(&dom, "svg", id).with_context(|| format!("plot {id}"))?;
        assert!(fewest_points(svg) >= 2, "{id}: {svg}");
    }
    let dns = element(&dom, "svg", "plot-dns-qps").context("dns plot")?;
    assert!(
        dns.contains("data-name=\"XDP\"") && dns.contains("data-name=\"userspace\""),
        "{dns}"
    );
    for edge in edges {
        ensure!(edge.stop()?, "edge did not stop cleanly");
    }
    drop((servers, agents));
    Ok(())
}
