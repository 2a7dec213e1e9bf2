//! The `netsim` binary: see `netsim --help`.

fn main() -> std::process::ExitCode {
    netsim::cli::main()
}
