//! A PoP with the shared test zone, left running for poking at by hand: it writes the config
//! path and the topology's name to /tmp/dbg.ready and stops when that file is removed.

use anyhow::Result;
use edge_tests::{edge::EdgeProcess, test_zone, topology::Topology};

fn main() -> Result<()> {
    let topology = Topology::client_and_pop("dbg")?;
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n{}",
        topology.pin_root().display(),
        test_zone::zone()
    );
    let config = topology.write_file("edge.toml", &text)?;
    let _edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    std::fs::write(
        "/tmp/dbg.ready",
        format!("{} {}", config.display(), topology.name),
    )?;
    while std::path::Path::new("/tmp/dbg.ready").exists() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}
