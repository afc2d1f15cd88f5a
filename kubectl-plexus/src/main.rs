//! `kubectl-plexus`: see the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubectl_plexus::main()
}
