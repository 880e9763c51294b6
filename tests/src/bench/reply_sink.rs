//! The client end's receive side during a load run: an XDP program that drops every frame, so
//! that the replies cost the client no more than one XDP run each (no socket lookup, no ICMP port
//! unreachable sent back to the server), while the veth still counts each in its receive
//! counter, which is where the benchmark reads how many queries were answered. The program is two
//! instructions (`r0 = XDP_DROP; exit`), loaded with bpf(2) directly: edge's XDP object has no
//! such program, and this one must not depend on it.

use std::{ffi::CString, os::fd::FromRawFd as _, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// bpf(2) commands and the program type (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_DROP: i32 = 1;

/// `union bpf_attr` as BPF_PROG_LOAD reads it, up to `prog_name`; the rest stays zero.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u8; 64],
}

/// `union bpf_attr` as BPF_OBJ_PIN reads it.
#[repr(C)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    rest: [u8; 44],
}

/// The sink attached to an interface; detached (and its pin removed) when dropped.
pub struct ReplySink {
    netns: Netns,
    interface: String,
    pin: PathBuf,
}

impl ReplySink {
    /// Loads the program, pins it at `pin` and attaches it in driver mode to `interface` of
    /// `netns` (`ip link set … xdpdrv pinned`).
    pub fn attach(netns: &Netns, interface: &str, pin: PathBuf) -> Result<Self> {
        // The pin root may be gone: edge removes its own when it stops.
        if let Some(parent) = pin.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let fd = load_drop_program()?;
        let path = CString::new(pin.as_os_str().as_encoded_bytes())?;
        let attr = ObjPin {
            pathname: path.as_ptr() as u64,
            bpf_fd: fd as u32,
            file_flags: 0,
            path_fd: 0,
            rest: [0; 44],
        };
        // SAFETY: bpf(2) reads `attr` (valid for its size) and the NUL-terminated path it points
        // to, both alive for the call.
        let pinned = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_PIN,
                &attr as *const ObjPin,
                size_of::<ObjPin>(),
            )
        };
        // SAFETY: `fd` is the program fd bpf(2) returned to us and nothing else owns it.
        drop(unsafe { std::fs::File::from_raw_fd(fd) });
        if pinned != 0 {
            bail!(
                "pinning the reply sink at {}: {}",
                pin.display(),
                std::io::Error::last_os_error()
            );
        }
        let sink = Self {
            netns: netns.clone(),
            interface: interface.to_string(),
            pin,
        };
        let pin_text = sink.pin.display().to_string();
        netns
            .run(
                "ip",
                &[
                    "link", "set", "dev", interface, "xdpdrv", "pinned", &pin_text,
                ],
            )
            .context("attaching the reply sink")?;
        Ok(sink)
    }
}

impl Drop for ReplySink {
    fn drop(&mut self) {
        let _ = self.netns.detach_xdp(&self.interface);
        let _ = std::fs::remove_file(&self.pin);
    }
}

/// `r0 = XDP_DROP; exit`, loaded; returns the program's fd.
fn load_drop_program() -> Result<i32> {
    // struct bpf_insn: code, dst_reg:4 | src_reg:4, off, imm.
    let instruction =
        |code: u8, imm: i32| -> u64 { u64::from(code) | (u64::from(imm as u32) << 32) };
    let program = [
        instruction(0xb7, XDP_DROP), // BPF_ALU64 | BPF_MOV | BPF_K: r0 = XDP_DROP
        instruction(0x95, 0),        // BPF_JMP | BPF_EXIT
    ];
    let license = c"GPL";
    let mut name = [0_u8; 16];
    name[..10].copy_from_slice(b"reply_sink");
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        rest: [0; 64],
    };
    // SAFETY: bpf(2) reads `attr` (valid for its size), the instructions and the license it
    // points to, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            size_of::<ProgLoad>(),
        )
    };
    if fd < 0 {
        bail!(
            "loading the reply sink: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(fd as i32)
}
