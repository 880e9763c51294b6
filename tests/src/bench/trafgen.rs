//! trafgen (netsniff-ng) as the DNS load generator: it sends prebuilt query frames, one packet
//! definition per name, through an AF_PACKET socket on the client end of the veth pair. Nothing
//! of its own is loaded into the kernel, so it runs where AF_XDP generators (kxdpgun) cannot load
//! their XDP program. What it sent and what came back are read from the client end's interface
//! counters, never from trafgen: the replies land in [`super::reply_sink`], which drops them
//! after the veth has counted them.

use std::{
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{topology::Netns, xdp::udp_frame};

/// trafgen's source port for every query.
pub const CLIENT_PORT: u16 = 40_000;
/// Frames trafgen sends before the measured window starts (its config is parsed by then).
const WARM_UP: Duration = Duration::from_millis(500);
/// How long the replies to the last queries sent may take to arrive.
const SETTLE: Duration = Duration::from_secs(2);
/// How long trafgen may take to parse a million packet definitions and start sending.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the frames go.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
    pub client: [u8; 4],
    pub server: [u8; 4],
}

/// The A query for `name` (ID 0, RD clear), as an Ethernet frame from the client to the server.
pub fn query_frame(addresses: &Addresses, name: &str) -> Vec<u8> {
    let mut dns = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    udp_frame(
        addresses.client_mac,
        addresses.server_mac,
        addresses.client,
        addresses.server,
        CLIENT_PORT,
        53,
        &dns,
    )
}

/// A trafgen packet configuration: one packet definition per frame, sent round robin. Runs of
/// three or more letters and digits are written as strings, which keeps a million-name
/// configuration to about half the size of plain hex.
pub fn config(frames: impl IntoIterator<Item = Vec<u8>>) -> String {
    let mut text = String::new();
    for frame in frames {
        text.push('{');
        let mut i = 0;
        let mut first = true;
        while i < frame.len() {
            if !first {
                text.push(',');
            }
            first = false;
            let run = frame[i..]
                .iter()
                .take_while(|byte| byte.is_ascii_alphanumeric())
                .count();
            if run >= 3 {
                text.push('"');
                text.push_str(std::str::from_utf8(&frame[i..i + run]).expect("ASCII"));
                text.push('"');
                i += run;
            } else {
                let _ = write!(text, "0x{:02x}", frame[i]);
                i += 1;
            }
        }
        text.push_str("}\n");
    }
    text
}

/// Packets and bytes an interface has received and sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames the veth dropped instead of sending: the peer's receive ring was full.
    pub tx_dropped: u64,
}

impl LinkCounters {
    /// `interface`'s counters in `netns`, from `ip -s -j link`.
    pub fn read(netns: &Netns, interface: &str) -> Result<Self> {
        let output = netns.run("ip", &["-s", "-j", "link", "show", "dev", interface])?;
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let stats = &json[0]["stats64"];
        let number = |direction: &str, what: &str| {
            stats[direction][what]
                .as_u64()
                .with_context(|| format!("no {direction} {what} in `ip -s -j link`"))
        };
        Ok(Self {
            rx_packets: number("rx", "packets")?,
            tx_packets: number("tx", "packets")?,
            tx_dropped: number("tx", "dropped")?,
        })
    }
}

/// One trafgen run.
#[derive(Debug, Clone)]
pub struct TrafgenRun<'a> {
    pub config: &'a Path,
    pub interface: &'a str,
    /// Packets per second (trafgen's slow mode, one sendto per packet), or as fast as its
    /// transmit ring goes.
    pub rate: Option<u64>,
    /// The measured window, after [`WARM_UP`].
    pub seconds: f64,
    pub cpu: usize,
}

/// What the client end's counters saw during the measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafgenReport {
    /// Queries sent per second (the client end's transmit counter).
    pub sent_qps: f64,
    /// Replies received per second (its receive counter).
    pub answered_qps: f64,
    pub sent: u64,
    pub answered: u64,
    /// Frames the client end dropped instead of sending (the PoP end's receive ring full):
    /// not in `sent`.
    pub dropped: u64,
    /// trafgen stopped on its own before the window ended (it gives up when the veth pushes
    /// back on its transmit ring): what it said.
    pub aborted: Option<String>,
}

impl TrafgenReport {
    pub fn answered_share(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.answered as f64 / self.sent as f64
        }
    }
}

/// A running trafgen, interrupted (SIGINT, as it expects) and reaped when dropped.
pub struct Trafgen {
    child: Child,
    log: std::path::PathBuf,
}

impl Trafgen {
    /// Starts trafgen in `netns`, pinned to `run.cpu` with one sending process, its output to
    /// `log`; returns once it has sent its first frames.
    pub fn start(netns: &Netns, run: &TrafgenRun, log: &Path) -> Result<Self> {
        let before = LinkCounters::read(netns, run.interface)?;
        let log_file = fs::File::create(log)?;
        let mut command = netns.command("taskset");
        command
            .args(["-c", &run.cpu.to_string(), "trafgen", "--cpus", "1"])
            // Leave the machine's IRQ affinities and socket memory defaults alone.
            .args(["--notouch-irq", "--no-sock-mem"])
            .args(["-o", run.interface, "-i"])
            .arg(run.config);
        if let Some(rate) = run.rate {
            command.args(["-b", &format!("{rate}pps")]);
        }
        // A process group of its own: trafgen forks its sending process, and SIGINT must reach
        // both, as a terminal's ^C does.
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting trafgen (netsniff-ng: cargo xtask setup)")?;
        let mut trafgen = Self {
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while LinkCounters::read(netns, run.interface)?.tx_packets < before.tx_packets + 100 {
            crate::interrupt::check()?;
            if let Some(status) = trafgen.child.try_wait()? {
                bail!(
                    "trafgen exited ({status}) before sending:\n{}",
                    trafgen.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "trafgen sent nothing within {START_TIMEOUT:?}:\n{}",
                    trafgen.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(trafgen)
    }

    /// Whether trafgen has exited, with what it said.
    pub fn exited(&mut self) -> Result<Option<String>> {
        Ok(self
            .child
            .try_wait()?
            .map(|status| format!("trafgen exited ({status}): {}", last_line(&self.log()))))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on the process group of our own child (nsenter and taskset exec, so the
        // child is trafgen itself, leading its group).
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("trafgen ignored SIGINT")
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("{error:#}");
        }
    }
}

/// The last line trafgen printed that says what went wrong, or its last line.
fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|line| line.to_ascii_lowercase().contains("fail"))
        .or_else(|| log.lines().rev().find(|line| !line.trim().is_empty()))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs trafgen for [`WARM_UP`] plus `run.seconds` and reads the client end's counters over the
/// window.
pub fn measure(netns: &Netns, run: &TrafgenRun, log: &Path) -> Result<TrafgenReport> {
    let mut trafgen = Trafgen::start(netns, run, log)?;
    thread::sleep(WARM_UP);
    let window = Window::open(netns, run.interface)?;
    let deadline = Instant::now() + Duration::from_secs_f64(run.seconds);
    let mut aborted = None;
    while Instant::now() < deadline {
        crate::interrupt::check()?;
        if let Some(exit) = trafgen.exited()? {
            aborted = Some(exit);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut report = window.close()?;
    drop(trafgen);
    report.aborted = aborted;
    Ok(report)
}

/// The client end's counters from one moment to another.
pub struct Window<'a> {
    netns: &'a Netns,
    interface: &'a str,
    start: LinkCounters,
    since: Instant,
}

impl<'a> Window<'a> {
    pub fn open(netns: &'a Netns, interface: &'a str) -> Result<Self> {
        Ok(Self {
            start: LinkCounters::read(netns, interface)?,
            since: Instant::now(),
            netns,
            interface,
        })
    }

    /// [`Self::close`] once trafgen has stopped: waits up to [`SETTLE`] for the last replies
    /// (on a loaded machine the receiving NAPI thread may wait its turn), not for lost ones.
    pub fn settle(&self) -> Result<TrafgenReport> {
        let deadline = Instant::now() + SETTLE;
        let mut counted = self.close()?;
        while counted.answered < counted.sent && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            counted = self.close()?;
        }
        Ok(counted)
    }

    pub fn close(&self) -> Result<TrafgenReport> {
        let end = LinkCounters::read(self.netns, self.interface)?;
        let seconds = self.since.elapsed().as_secs_f64();
        let sent = end.tx_packets - self.start.tx_packets;
        let answered = end.rx_packets - self.start.rx_packets;
        Ok(TrafgenReport {
            sent_qps: sent as f64 / seconds,
            answered_qps: answered as f64 / seconds,
            sent,
            answered,
            dropped: end.tx_dropped - self.start.tx_dropped,
            aborted: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESSES: Addresses = Addresses {
        client_mac: [2, 0, 0, 0, 0, 1],
        server_mac: [2, 0, 0, 0, 0, 2],
        client: [198, 18, 0, 1],
        server: [198, 18, 0, 2],
    };

    /// The frame parses as the query it stands for, and its configuration line spells the same
    /// bytes.
    #[test]
    fn a_query_frame_is_one_packet_definition_of_its_bytes() {
        let frame = query_frame(&ADDRESSES, "name12.bench.example");
        let dns = &frame[42..];
        let message = hickory_proto::op::Message::from_vec(dns).unwrap();
        assert_eq!(message.queries.len(), 1);
        assert_eq!(
            message.queries[0].name().to_ascii(),
            "name12.bench.example."
        );
        assert_eq!(
            message.queries[0].query_type(),
            hickory_proto::rr::RecordType::A
        );
        let text = config([frame.clone()]);
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"name12\""), "{text}");
        assert!(text.contains("\"bench\",0x07,\"example\""), "{text}");
        // Back to bytes: every element is a hex byte or a string.
        let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
        let mut bytes = Vec::new();
        for element in inner.split(',') {
            match element.strip_prefix("0x") {
                Some(hex) => bytes.push(u8::from_str_radix(hex, 16).unwrap()),
                None => bytes.extend_from_slice(element.trim_matches('"').as_bytes()),
            }
        }
        assert_eq!(bytes, frame);
    }
}
