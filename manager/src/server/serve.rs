//! Serving the API on a unix socket, with a clean stop on SIGTERM/SIGINT.

use super::Svc;
use crate::daemon::Kura;
use anyhow::{Context, Result};
use kura_proto::v1 as pb;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub async fn serve(k: Arc<Kura>, address: &Path) -> Result<()> {
    if let Some(d) = address.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    if address.exists() {
        // A socket nobody answers on is left over from a dead kurad.
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            anyhow::bail!("another kurad is serving {}", address.display());
        }
        std::fs::remove_file(address)?;
    }
    let listener = tokio::net::UnixListener::bind(address)
        .with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o660))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let svc = Svc(k.clone());
    let k_nets = k.networks.clone();
    let cs = super::containers::CSvc(crate::containers::Containers::new(
        k,
        std::path::absolute(address)?,
    ));
    {
        // Shims outlived the last kurad: find them again (blocking: they answer over ttrpc).
        let c = cs.0.clone();
        tokio::task::spawn_blocking(move || c.recover());
    }
    tracing::info!(address = %address.display(), "kurad serving");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let max = 64 << 20;
    let server = tonic::transport::Server::builder()
        .add_service(pb::version_server::VersionServer::new(svc.clone()))
        .add_service(
            pb::content_server::ContentServer::new(svc.clone()).max_decoding_message_size(max),
        )
        .add_service(
            pb::images_server::ImagesServer::new(svc.clone()).max_decoding_message_size(max),
        )
        .add_service(pb::registry_server::RegistryServer::new(svc.clone()))
        .add_service(pb::snapshots_server::SnapshotsServer::new(svc.clone()))
        .add_service(pb::leases_server::LeasesServer::new(svc.clone()))
        .add_service(pb::gc_server::GcServer::new(svc.clone()))
        .add_service(pb::networks_server::NetworksServer::new(svc))
        .add_service(pb::containers_server::ContainersServer::new(cs.clone()))
        .add_service(pb::tasks_server::TasksServer::new(cs.clone()))
        .add_service(pb::events_server::EventsServer::new(cs))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = &mut server => r?,
        _ = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        } => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(());
            // Requests in flight get a grace period; a pull cut off here leaves only a
            // temporary lease, dropped (with what it held) at the next start.
            match tokio::time::timeout(std::time::Duration::from_secs(5), &mut server).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!("requests still running after 5s; stopping anyway"),
            }
        }
    }
    // Containers removed just before: their DEL finishes (bounded), so no lease or
    // rule waits for the next start.
    let nets = k_nets.clone();
    let _ =
        tokio::task::spawn_blocking(move || nets.wait_releases(std::time::Duration::from_secs(10)))
            .await;
    let _ = std::fs::remove_file(address);
    Ok(())
}
