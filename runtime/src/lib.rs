//! kura-runtime: the library behind the `kura-runtime` CLI.
//!
//! One bundle (config.json + rootfs) in, one container out. The process model —
//! who forks whom and which namespaces each step enters — lives in [`process`].

pub mod cgroups;
pub mod container;
pub mod features;
pub mod hooks;
pub mod log;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sys;
pub mod template;
pub mod terminal;

/// The runtime-spec version this runtime implements and reports.
pub const OCI_VERSION: &str = "1.3.0";
