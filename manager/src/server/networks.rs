//! The Networks service: a thin gRPC layer over `network`.

use super::{blocking, Res, Svc};
use crate::network::{Attachment, NetInfo};
use kura_proto::v1 as pb;
use tonic::{Request, Response};

fn to_proto(i: NetInfo, members: &[Attachment]) -> pb::Network {
    pb::Network {
        containers: members
            .iter()
            .filter(|a| a.network == i.name && !a.result.is_null() && !a.releasing)
            .map(|a| pb::NetworkEndpoint {
                namespace: a.ns.clone(),
                id: a.id.clone(),
                ip_address: a.ip.clone(),
                mac_address: a.mac.clone(),
            })
            .collect(),
        name: i.name,
        driver: i.driver,
        bridge: i.bridge,
        subnet: i.subnet,
        gateway: i.gateway,
        config_path: i.config_path.display().to_string(),
    }
}

#[tonic::async_trait]
impl pb::networks_server::Networks for Svc {
    async fn create(&self, r: Request<pb::CreateNetworkRequest>) -> Res<pb::Network> {
        let k = self.0.clone();
        let q = r.into_inner();
        let i = blocking(move || k.networks.create(&q.name, &q.subnet, &q.gateway)).await?;
        Ok(Response::new(to_proto(i, &[])))
    }

    async fn list(&self, _: Request<pb::Empty>) -> Res<pb::ListNetworksResponse> {
        let k = self.0.clone();
        let (list, members) =
            blocking(move || k.networks.list().map(|l| (l, k.networks.attachments()))).await?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: list.into_iter().map(|i| to_proto(i, &members)).collect(),
        }))
    }

    async fn inspect(&self, r: Request<pb::NetworkRequest>) -> Res<pb::Network> {
        let k = self.0.clone();
        let name = r.into_inner().name;
        let (i, members) = blocking(move || {
            k.networks
                .load(&name)
                .map(|(_, i)| (i, k.networks.attachments()))
        })
        .await?;
        Ok(Response::new(to_proto(i, &members)))
    }

    async fn remove(&self, r: Request<pb::NetworkRequest>) -> Res<pb::Empty> {
        let k = self.0.clone();
        let name = r.into_inner().name;
        blocking(move || k.networks.remove(&name)).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
