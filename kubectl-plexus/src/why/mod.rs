//! `kubectl plexus why POD`: per requested network, attached or not, and the reason and the fix.
//! [`gather`] reads the cluster, [`diagnose`] decides, [`render`] prints.

pub mod diagnose;
pub mod gather;
pub mod render;

pub use diagnose::{Facts, Report, diagnose};
pub use gather::gather;
pub use render::render;
