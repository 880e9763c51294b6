use which::which;

/// The object is linked by `bpf-linker`, which cargo does not know about: rebuild when it changes.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
