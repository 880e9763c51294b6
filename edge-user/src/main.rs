//! `edge`: the PoP daemon and its command line (see `edge_user::cli`).

fn main() -> std::process::ExitCode {
    edge_user::cli::main()
}
