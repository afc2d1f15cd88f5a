//! The Plexus CNI meta-plugin as a library; `main.rs` is a thin shell over [`run`].
