//! `edge`: the PoP daemon and its command line (see `edge::cli`).

fn main() -> std::process::ExitCode {
    edge::cli::main()
}
