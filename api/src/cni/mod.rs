//! The CNI specification (1.1.0 and every earlier result version), as data.

pub mod config;
pub mod error;
pub mod result;
pub mod version;

pub use config::{NetworkConfigList, PluginConfig};
pub use error::{CniError, ErrorCode};
pub use result::CniResult;
