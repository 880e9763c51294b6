use anyhow::Result;
use edge_tests::{edge::EdgeProcess, topology::Topology};
fn main() -> Result<()> {
    let topology = Topology::client_and_pop("dbg")?;
    let text = format!(
        "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.10\", \"192.0.2.11\"]\n",
        topology.pin_root().display()
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
