//! Mosquitto's `acl_file` for Wasp's authorizer plugin.
//!
//! [`AclFile::parse`] reads the file, [`AclFile::check`] decides one access, [`Config`] is the plugin's
//! configuration. Host-independent: no I/O here.

mod acl;
mod config;
mod topic;

pub use acl::{Access, AclFile, ParseError};
pub use config::Config;
pub use topic::{filter_covers, filter_matches, filters_overlap, valid_filter, valid_topic};
