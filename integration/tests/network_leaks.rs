//! A hundred create/remove cycles on a user network with failures injected — a plugin
//! failing in the middle of ADD (after bridge and portmap did their work), a process
//! that does not exist (start fails after the network is up), a taken address — and
//! the host holds exactly what it held before: veths, iptables rules, IP leases,
//! netns mounts, attachment records. Its own test binary: it counts host-wide things,
//! so nothing else may run beside it.

use kura_integration::images::{free_port, missing_tools, Kurad};
use kura_integration::net::{
    iptables_rules, leases, missing_network_tools, unique_net, unique_subnet, veths,
};
use kura_integration::{require_root, skip, Scratch};
use std::os::unix::fs::PermissionsExt;

const IMG: &str = "docker.io/kura/busybox:leak";

fn netns_mounts(k: &Kurad) -> usize {
    let m = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let d = k.dir.path().display().to_string();
    m.lines()
        .filter(|l| l.contains(&d) && l.contains("/netns/"))
        .count()
}

#[test]
fn network_hundred_cycles_with_failures_leak_nothing() {
    require_root!();
    if let Some(m) = missing_network_tools().or_else(missing_tools) {
        skip!("{m}");
    }
    // A firewall plugin that fails on demand: the real one otherwise.
    let faults = Scratch::new("cni-faults");
    let flag = faults.join("fail");
    let wrapper = faults.join("firewall");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ] && [ -e {} ]; then\n  \
             echo '{{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\"}}'\n  exit 1\nfi\n\
             exec /usr/lib/cni/firewall\n",
            flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = Kurad::start(&format!(
        "[network]\ncni_path = [\"{}\", \"/usr/lib/cni\"]\n",
        faults.path().display()
    ));
    k.load_busybox(IMG);
    let net = unique_net("leak");
    let subnet = unique_subnet();
    k.ok(&["network", "create", "--subnet", &subnet, &net]);
    let fixed = subnet.replace("0/24", "200");
    // Warm up: the bridge and the plugins' shared chains exist from here on.
    k.ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "-p",
        &format!("{}:80", free_port()),
        IMG,
        "true",
    ]);
    kura_integration::shim::wait_for(
        "the warm-up's release",
        std::time::Duration::from_secs(30),
        || k.attachment_records() == 0,
    );
    let before = (veths(), iptables_rules(), leases(&net));
    assert!(before.2.is_empty());

    let mut failures = 0;
    for i in 0..100 {
        let port = free_port().to_string();
        let map = format!("127.0.0.1:{port}:80");
        let name = format!("c{i}");
        match i % 5 {
            0 => {
                std::fs::write(&flag, "").unwrap();
                let e = k.fails(&[
                    "run",
                    "--rm",
                    "--name",
                    &name,
                    "--network",
                    &net,
                    "-p",
                    &map,
                    IMG,
                    "true",
                ]);
                std::fs::remove_file(&flag).unwrap();
                assert!(e.contains("injected failure"), "{e}");
                failures += 1;
            }
            1 => {
                let e = k.fails(&[
                    "run",
                    "--rm",
                    "--name",
                    &name,
                    "--network",
                    &net,
                    "-p",
                    &map,
                    IMG,
                    "/no/such/binary",
                ]);
                assert!(e.contains("/no/such/binary"), "{e}");
                failures += 1;
            }
            2 => {
                k.ok(&[
                    "run",
                    "--rm",
                    "--name",
                    &name,
                    "--network",
                    &net,
                    "-p",
                    &map,
                    IMG,
                    "true",
                ]);
            }
            3 => {
                k.ok(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "--network",
                    &net,
                    "--ip",
                    &fixed,
                    IMG,
                    "sleep",
                    "100",
                ]);
                // The address is taken: the second one fails before any plugin runs.
                let e = k.fails(&[
                    "run",
                    "--rm",
                    "--name",
                    "taken",
                    "--network",
                    &net,
                    "--ip",
                    &fixed,
                    IMG,
                    "true",
                ]);
                assert!(e.contains("taken by container"), "{e}");
                failures += 1;
                k.ok(&["rm", "-f", &name]);
            }
            _ => {
                k.run_published(&name, &net, &map, IMG);
                k.ok(&["stop", "-t", "0", &name]);
                k.ok(&["rm", &name]);
            }
        }
    }
    assert_eq!(failures, 60);
    assert_eq!(k.ok(&["ps", "-a", "-q"]).trim(), "", "containers left");
    // The last removals' DEL may still be running (it is not waited for).
    kura_integration::shim::wait_for(
        "the last releases",
        std::time::Duration::from_secs(30),
        || k.attachment_records() == 0,
    );
    let after = (veths(), iptables_rules(), leases(&net));
    assert_eq!(after.0, before.0, "veths");
    let added: Vec<_> = after.1.iter().filter(|r| !before.1.contains(r)).collect();
    assert!(added.is_empty(), "iptables rules left: {added:#?}");
    assert_eq!(after.2, before.2, "IP leases");
    assert_eq!(netns_mounts(&k), 0, "netns mounts");
    assert_eq!(k.attachment_records(), 0, "attachment records");
}
