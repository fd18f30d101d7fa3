//! kura-manager: the daemon `kurad` (content store, registries, images, snapshots,
//! leases and GC behind a gRPC API on a unix socket) and its CLI `kura`.
//!
//! Module map: `content` (blobs), `registry` (distribution client, credentials),
//! `images` (formats, pull, push, save/load, layer pipeline), `unpack` (tar apply),
//! `snapshots` (overlayfs/native), `metadata` (redb), `gc`, `daemon` (shared state),
//! `server` (gRPC), `cli` (the `kura` command).

pub mod cli;
pub mod config;
pub mod containers;
pub mod content;
pub mod daemon;
pub mod gc;
pub mod images;
pub mod metadata;
pub mod network;
pub mod registry;
pub mod server;
pub mod snapshots;
pub mod unpack;
