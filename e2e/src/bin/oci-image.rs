//! `oci-image OUT.tar NAME ENTRYPOINT ENTRY...`: writes a one-layer OCI image archive for `ctr images import`.
//! ENTRYPOINT is a comma-separated argv; each ENTRY is `path=host-file`, `path->symlink-target` or `dir/`.

#![forbid(unsafe_code)]

use plexus_e2e::oci::{Entry, Image, write_archive};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: oci-image OUT.tar NAME ENTRYPOINT(comma-separated) ENTRY...");
        return std::process::ExitCode::from(2);
    }
    let entries: Result<Vec<Entry>, String> = args[3..].iter().map(|s| Entry::parse(s)).collect();
    let image = match entries {
        Ok(entries) => Image {
            name: args[1].clone(),
            entrypoint: args[2].split(',').map(String::from).collect(),
            entries,
        },
        Err(e) => {
            eprintln!("oci-image: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match write_archive(&image, std::path::Path::new(&args[0])) {
        Ok(digest) => {
            println!("{digest}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oci-image: {}: {e}", args[0]);
            std::process::ExitCode::FAILURE
        }
    }
}
