//! `cargo xtask demo`: a client and a PoP in two network namespaces; `edge run` on the PoP with
//! examples/demo.toml; kdig queries from the client answered by XDP; the counters that prove it.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result};
use edge_tests::{
    dig::kdig,
    edge::{EdgeProcess, counters},
    topology::Topology,
};

fn main() -> Result<()> {
    let topology = Topology::client_and_pop("demo")?;
    println!(
        "topology: {} ({}) <-veth-> {} ({}); XDP_PASS on the client end so XDP_TX replies arrive",
        topology.client.name,
        Topology::CLIENT_V4,
        topology.pop.name,
        Topology::POP_V4
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml");
    let text = std::fs::read_to_string(&example).context("reading examples/demo.toml")?;
    let config = topology.write_file("demo.toml", &text)?;

    println!(
        "\n$ edge run --config examples/demo.toml   (in {})",
        topology.pop.name
    );
    let edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    print!("{}", edge.log());

    let server = format!("@{}", Topology::POP_V4);
    for (name, qtype, what) in [
        ("www.cdn.example.net", "A", "answered by XDP"),
        ("WWW.cdn.Example.NET", "AAAA", "answered by XDP"),
        (
            "shop.cdn.example.net",
            "A",
            "a CNAME: passed to the userspace server",
        ),
        (
            "nope.cdn.example.net",
            "A",
            "NXDOMAIN with the SOA, from the userspace server",
        ),
    ] {
        println!("\n$ kdig {server} {name} {qtype}   ({what})");
        print!("{}", kdig(&topology.client, &[&server, name, qtype])?.text);
    }

    println!("\n$ edge stats --config examples/demo.toml");
    for (counter, count) in counters(&config)? {
        if count > 0 {
            println!("{counter:<16} {count}");
        }
    }
    let pins = edge_config::Config::load(&config)?
        .xdp
        .context("the demo config has [xdp]")?
        .pin_dir();
    println!("\n$ bpftool map show pinned {}/answers", pins.display());
    let shown = Command::new("bpftool")
        .args(["map", "show", "pinned"])
        .arg(pins.join("answers"))
        .output()?;
    print!("{}", String::from_utf8_lossy(&shown.stdout));

    println!("\nstopping edge (SIGTERM): it detaches and removes its pins");
    edge.stop()?;
    println!("demo done: the namespaces go with the topology");
    Ok(())
}
