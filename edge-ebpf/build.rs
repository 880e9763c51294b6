use which::which;

/// The object is linked by `bpf-linker`, which cargo does not know about: rebuild when it changes.
/// The linker generates the code, so code generation options go to it: the reply is written in
/// words at unaligned frame offsets, which the kernel allows on the architectures with
/// efficient unaligned access (x86-64, arm64); without the feature every such word becomes
/// eight byte stores.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
