//! edge-dataplane: loading, attaching, pinning and adopting the XDP program, and every access to
//! its maps ([`maps`]; [`rrl`] for the rate limiter's), kept in step with the zones the daemon
//! serves ([`publish`]).
//!
//! The only crate with aya and the embedded XDP object ([`EBPF_OBJECT`], compiled from edge-ebpf
//! by the build script: so the only one that needs nightly and bpf-linker to build). It writes
//! what it is given (edge-dns's fast-path entries, the service addresses) and decides nothing
//! about answers; it must not parse DNS, probe, or serve.
//!
//! Maps and the link are pinned under `<pin_root>/<interface>/`, so the data plane keeps
//! answering while no daemon runs. A daemon that finds pins there adopts them: it reuses the
//! pinned maps and swaps its freshly loaded program into the pinned link in one step
//! (`bpf_link_update`), so there is no moment without a program on the interface.

pub mod dump;
pub mod maps;
#[cfg(test)]
mod old_kernels;
pub mod publish;
pub mod rrl;

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use edge_common::{map_name, pin, program_name};
use edge_config::{self as config, XdpConfig};
use tracing::{debug, info, warn};

use crate::{
    maps::{AnswerMap, AnswerMaps, Counters, SelectionMap, ServiceMap},
    rrl::RrlMaps,
};

/// The XDP program (edge-ebpf), compiled by the build script and embedded so that the binary is
/// self-contained.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge-xdp"));

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The attached program and its maps.
pub struct DataPlane {
    pin_dir: PathBuf,
    pub answers: AnswerMaps,
    pub services: ServiceMap,
    pub counters: Counters,
    pub rrl: RrlMaps,
    /// Whether pins of an earlier run were found and adopted.
    pub adopted: bool,
    /// Holds the program until we stop; the pinned link keeps it attached after that.
    _ebpf: Ebpf,
}

/// The program loaded into the kernel with its maps (the pinned ones opened, the others
/// created and pinned), not attached, and no map written: the costly part of
/// [`DataPlane::start`] (the kernel allocates and clears the maps and verifies the program),
/// which the daemon does while it builds its zones.
pub struct Prepared {
    xdp: XdpConfig,
    pin_dir: PathBuf,
    ebpf: Ebpf,
    /// The pins, and the pin directory, that were not there before: what
    /// [`Prepared::abandon`] removes.
    created: Vec<PathBuf>,
    created_dir: bool,
}

impl DataPlane {
    /// Loads the program with the pinned maps (creating and pinning them if absent) and attaches
    /// it, or swaps it into the pinned link of an earlier run.
    pub fn start(xdp: &XdpConfig) -> Result<Self> {
        Self::prepare(xdp)?.attach()
    }

    /// The first half of [`Self::start`]: the program loaded with its maps, not attached.
    pub fn prepare(xdp: &XdpConfig) -> Result<Prepared> {
        let pin_dir = xdp.pin_dir();
        ensure_bpffs(&xdp.pin_root)?;
        let created_dir = !pin_dir.exists();
        fs::create_dir_all(&pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;

        let names_pin = pin_dir.join(pin::NAMES);
        let long_answers_pin = pin_dir.join(pin::LONG_ANSWERS);
        let counters_pin = pin_dir.join(pin::COUNTERS);
        let services_pin = pin_dir.join(pin::SERVICES);
        let selections_pin = pin_dir.join(pin::SELECTIONS);
        let state_pin = pin_dir.join(pin::STATE);
        let created = [
            &names_pin,
            &long_answers_pin,
            &counters_pin,
            &services_pin,
            &selections_pin,
            &state_pin,
        ]
        .into_iter()
        .filter(|pin| !pin.exists())
        .cloned()
        .collect();
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(map_name::NAMES, names_pin.as_path())
            .map_pin_path(map_name::LONG_ANSWERS, long_answers_pin.as_path())
            .map_max_entries(
                map_name::LONG_ANSWERS,
                maps::long_entries(xdp.max_long_answers, xdp.max_answers),
            )
            .map_pin_path(map_name::SERVICES, services_pin.as_path())
            .map_pin_path(map_name::SELECTIONS, selections_pin.as_path())
            .map_pin_path(map_name::STATE, state_pin.as_path())
            .map_max_entries(map_name::SELECTIONS, 2 * u32::from(xdp.max_steered))
            .map_pin_path(map_name::COUNTERS, counters_pin.as_path())
            .map_max_entries(map_name::NAMES, maps::table_slots(xdp.max_answers))
            .map_max_entries(map_name::RRL_BUCKETS, rrl::table_size(xdp.rrl.as_ref()))
            .load(EBPF_OBJECT)
            .context("loading the XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(program_name::DNS)
            .context("XDP program missing from the object")?
            .try_into()?;
        program.load().context("loading the XDP program")?;
        Ok(Prepared {
            xdp: xdp.clone(),
            pin_dir,
            ebpf,
            created,
            created_dir,
        })
    }
}

impl Prepared {
    /// The second half of [`DataPlane::start`]: attaches the program, or swaps it into the
    /// pinned link of an earlier run, and sets up the maps.
    pub fn attach(self) -> Result<DataPlane> {
        let Self {
            xdp,
            pin_dir,
            mut ebpf,
            ..
        } = self;
        let xdp = &xdp;
        let program: &mut Xdp = ebpf
            .program_mut(program_name::DNS)
            .context("XDP program missing from the object")?
            .try_into()?;
        let link_pin = pin_dir.join(pin::LINK);
        let adopted = match adopt_link(program, &link_pin) {
            Ok(adopted) => adopted,
            Err(error) => {
                warn!(%error, "pinned link unusable; attaching anew");
                remove_if_present(&link_pin)?;
                false
            }
        };
        if !adopted {
            let mode = match xdp.mode {
                config::XdpMode::Native => XdpMode::Driver,
                config::XdpMode::Generic => XdpMode::Skb,
            };
            let id = program.attach(&xdp.interface, mode).with_context(|| {
                format!("attaching XDP ({:?} mode) to {}", xdp.mode, xdp.interface)
            })?;
            let link = FdLink::try_from(program.take_link(id)?)
                .context("the kernel attached XDP without a bpf_link; cannot pin it")?;
            link.pin(&link_pin)
                .with_context(|| format!("pinning {}", link_pin.display()))?;
        }
        info!(
            interface = %xdp.interface,
            pins = %pin_dir.display(),
            adopted,
            "XDP program attached"
        );

        let state = take_map(&mut ebpf, map_name::STATE)?;
        let services = ServiceMap::new(
            take_map(&mut ebpf, map_name::SERVICES)?,
            maps::second_handle(&state)?,
        )?;
        let answers = AnswerMaps {
            answers: AnswerMap::new(
                take_map(&mut ebpf, map_name::NAMES)?,
                take_map(&mut ebpf, map_name::LONG_ANSWERS)?,
                maps::second_handle(&state)?,
            )?,
            selections: SelectionMap::new(
                take_map(&mut ebpf, map_name::SELECTIONS)?,
                state,
                xdp.max_steered,
            )?,
        };
        let counters = Counters::new(take_map(&mut ebpf, map_name::COUNTERS)?)?;
        let mut rrl = RrlMaps::new(
            take_map(&mut ebpf, map_name::RRL_SETTINGS)?,
            take_map(&mut ebpf, map_name::RRL_EXEMPT)?,
            ebpf.map(map_name::RRL_BUCKETS)
                .context("map edge_rrl_buckets missing from the object")?,
        )?;
        rrl.apply(xdp.rrl.as_ref())?;
        Ok(DataPlane {
            pin_dir,
            answers,
            services,
            counters,
            rrl,
            adopted,
            _ebpf: ebpf,
        })
    }

    /// Leaves things as they were before [`DataPlane::prepare`] (the daemon does not start):
    /// unloads the program and removes the pins it created, and the pin directory if it
    /// created that; the maps of an earlier run stay as they are.
    pub fn abandon(self) {
        let Self {
            pin_dir,
            ebpf,
            created,
            created_dir,
            ..
        } = self;
        drop(ebpf);
        for pin in created {
            if let Err(error) = remove_if_present(&pin) {
                warn!("{error:#}");
            }
        }
        if created_dir && fs::remove_dir(&pin_dir).is_ok() {
            remove_pin_root(&pin_dir);
        }
    }
}

impl DataPlane {
    /// Stops the daemon's hold on the data plane. With `keep`, the program stays attached and
    /// keeps answering from the pinned maps; otherwise it is detached and the pins removed.
    pub fn stop(self, keep: bool) -> Result<()> {
        if keep {
            info!(pins = %self.pin_dir.display(), "leaving the data plane running");
            return Ok(());
        }
        let pin_dir = self.pin_dir.clone();
        drop(self);
        detach(&pin_dir)
    }
}

/// Detaches the program pinned in `pin_dir` and removes the pins.
pub fn detach(pin_dir: &Path) -> Result<()> {
    let link_pin = pin_dir.join(pin::LINK);
    match PinnedLink::from_pin(&link_pin) {
        // Dropping the last reference to the unpinned link detaches the program.
        Ok(link) => drop(link.unpin().context("unpinning the XDP link")?),
        Err(error) => warn!(%error, path = %link_pin.display(), "no pinned link"),
    }
    for name in [
        pin::NAMES,
        pin::FORMER_ANSWERS,
        pin::LONG_ANSWERS,
        pin::SERVICES,
        pin::SELECTIONS,
        pin::STATE,
        pin::COUNTERS,
    ] {
        remove_if_present(&pin_dir.join(name))?;
    }
    match fs::remove_dir(pin_dir) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", pin_dir.display()))
        }
        _ => {
            info!(pins = %pin_dir.display(), "XDP program detached");
            remove_pin_root(pin_dir);
            Ok(())
        }
    }
}

/// Removes `<pin_root>`, the parent of `pin_dir` (created by [`DataPlane::start`]), once it is
/// empty: not while another interface's pins are there (ENOTEMPTY), never the bpffs mount
/// itself (EBUSY).
fn remove_pin_root(pin_dir: &Path) {
    let Some(root) = pin_dir.parent() else {
        return;
    };
    match fs::remove_dir(root) {
        Ok(()) => info!(pin_root = %root.display(), "removed the empty pin root"),
        Err(error) => debug!(%error, pin_root = %root.display(), "pin root stays"),
    }
}

/// Counters of the data plane pinned in `pin_dir`, whether or not a daemon runs.
pub fn pinned_counters(pin_dir: &Path) -> Result<Counters> {
    Counters::from_pin(&pin_dir.join(pin::COUNTERS))
}

/// Swaps `program` into the link pinned at `path`, if there is one.
fn adopt_link(program: &mut Xdp, path: &Path) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let pinned = PinnedLink::from_pin(path).context("opening the pinned link")?;
    let link = XdpLink::try_from(FdLink::from(pinned)).context("pinned link is not XDP")?;
    program
        .attach_to_link(link)
        .context("replacing the program in the pinned link")?;
    Ok(true)
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the object"))
}

fn ensure_bpffs(pin_root: &Path) -> Result<()> {
    let mut probe = pin_root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let c_path = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes())?;
    // SAFETY: `statfs` is plain old data, for which all-zero bytes are a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and a zeroed out-parameter of the right type.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        bail!(
            "cannot stat {}: {}",
            probe.display(),
            std::io::Error::last_os_error()
        );
    }
    if stat.f_type != BPF_FS_MAGIC {
        bail!(
            "{} is not on a BPF filesystem; mount one with `mount -t bpf bpf /sys/fs/bpf`",
            pin_root.display()
        );
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
