//! `kura network create|ls|inspect|rm`.

use super::{st, Client};
use anyhow::Result;
use clap::Subcommand;
use kura_proto::v1 as pb;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// A bridge network (CNI bridge + host-local IPAM, NAT, published ports).
    Create {
        /// CIDR, like 10.90.0.0/24 (default: the first free /24 of 10.89.0.0/16).
        #[arg(long, default_value = "")]
        subnet: String,
        /// Default: the subnet's first address.
        #[arg(long, default_value = "")]
        gateway: String,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Networks as JSON, with the running containers attached.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (none may have containers attached).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn json(n: &pb::Network) -> serde_json::Value {
    serde_json::json!({
        "Name": n.name,
        "Driver": n.driver,
        "Bridge": n.bridge,
        "Subnet": n.subnet,
        "Gateway": n.gateway,
        "ConfigPath": n.config_path,
        "Containers": n.containers.iter().map(|e| serde_json::json!({
            "Namespace": e.namespace, "Id": e.id, "IPAddress": e.ip_address, "MacAddress": e.mac_address,
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(c: &Client, cmd: NetworkCmd) -> Result<()> {
    let mut n = c.networks();
    match cmd {
        NetworkCmd::Create {
            subnet,
            gateway,
            name,
        } => {
            n.create(c.req(pb::CreateNetworkRequest {
                name: name.clone(),
                subnet,
                gateway,
            }))
            .await
            .map_err(st)?;
            println!("{name}");
        }
        NetworkCmd::Ls { quiet } => {
            let l = n.list(c.req(pb::Empty {})).await.map_err(st)?.into_inner();
            if !quiet {
                println!(
                    "{:<20} {:<8} {:<16} {:<18} {:<15} CONTAINERS",
                    "NAME", "DRIVER", "BRIDGE", "SUBNET", "GATEWAY"
                );
            }
            for x in l.networks {
                if quiet {
                    println!("{}", x.name);
                } else {
                    println!(
                        "{:<20} {:<8} {:<16} {:<18} {:<15} {}",
                        x.name,
                        x.driver,
                        x.bridge,
                        x.subnet,
                        x.gateway,
                        x.containers.len()
                    );
                }
            }
        }
        NetworkCmd::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let x = n
                    .inspect(c.req(pb::NetworkRequest { name }))
                    .await
                    .map_err(st)?
                    .into_inner();
                out.push(json(&x));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCmd::Rm { names } => {
            let mut failed = None;
            for name in names {
                match n
                    .remove(c.req(pb::NetworkRequest { name: name.clone() }))
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("Error: {}", st(e));
                        failed = Some(());
                    }
                }
            }
            if failed.is_some() {
                anyhow::bail!("some networks were not removed");
            }
        }
    }
    Ok(())
}
