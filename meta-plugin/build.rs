//! Names the commit Plexus is built from (`PLEXUS_COMMIT`, for every binary's `--version`; the daemon's and the
//! controller's packages use this script too): `git rev-parse` in the
//! source tree, or "unknown" outside a git checkout (a source tarball, an image build without `.git`).

#![forbid(unsafe_code)]

fn main() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PLEXUS_COMMIT={commit}");
    // Built again when HEAD moves (a commit, a checkout): the reflog of HEAD changes with each.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
