//! Container networking end to end, through kurad, `kura` and the real CNI plugins:
//! two containers on a user network reach each other by address and by name, a port
//! published with `-p` answers on 127.0.0.1, `--network none` has only `lo`,
//! `container:ID` shares a namespace, published ports survive kill -9 of kurad and go
//! with `rm`, and bad input fails clearly leaving nothing behind.

use kura_integration::images::{free_port, kurad_with_busybox, Kurad};
use kura_integration::net::{
    http_get, iptables_rules, leases, link_exists, missing_network_tools, stable_interfaces,
    unique_net, unique_subnet,
};
use kura_integration::shim::wait_for;
use kura_integration::{require_root, skip};
use std::time::Duration;

const IMG: &str = "docker.io/kura/busybox:net";

fn kurad() -> Option<Kurad> {
    if let Some(m) = missing_network_tools() {
        eprintln!("SKIPPED: {m}");
        return None;
    }
    kurad_with_busybox(IMG)
}

fn inspect(k: &Kurad, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", id])).unwrap();
    v["NetworkSettings"].clone()
}

/// Once a container is removed: its DNAT rule, its record, the port's answer gone
/// (DEL runs in the background after the task).
fn released(k: &Kurad, port: u16) {
    let dport = format!("--dport {port}");
    wait_for("the network released", Duration::from_secs(10), || {
        k.attachment_records() == 0 && !iptables_rules().iter().any(|r| r.contains(&dport))
    });
    assert!(http_get(&format!("127.0.0.1:{port}"), "/", Duration::ZERO).is_err());
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn network_two_containers_reach_each_other_by_ip_and_name() {
    require_root!();
    let Some(k) = kurad() else { return };
    let net = unique_net("n");
    let subnet = unique_subnet();
    k.ok(&["network", "create", "--subnet", &subnet, &net]);
    let ls = k.ok(&["network", "ls"]);
    assert!(ls.contains(&net) && ls.contains(&subnet), "{ls}");
    let (a, b) = (unique_net("a"), unique_net("b"));
    k.ok(&[
        "run",
        "-d",
        "--name",
        &a,
        "--network",
        &net,
        IMG,
        "sh",
        "-c",
        HTTPD,
    ]);
    k.ok(&[
        "run",
        "-d",
        "--name",
        &b,
        "--network",
        &net,
        IMG,
        "sleep",
        "300",
    ]);
    let ip_a = inspect(&k, &a)["IPAddress"].as_str().unwrap().to_string();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(ip_a.starts_with(prefix), "{ip_a} not in {subnet}");
    // By address, by name (both ways: the first one's hosts file learnt the second).
    let so = k.ok(&["exec", &b, "ping", "-c1", "-W2", &ip_a]);
    assert!(so.contains("1 packets received"), "{so}");
    let so = k.ok(&[
        "exec",
        &b,
        "wget",
        "-q",
        "-O-",
        &format!("http://{a}/index.html"),
    ]);
    assert!(so.contains(&format!("hello-{}", &a)), "{so}");
    let so = k.ok(&["exec", &a, "ping", "-c1", "-W2", &b]);
    assert!(so.contains("1 packets received"), "{so}");
    // The gateway is the bridge; the default route leads there.
    let so = k.ok(&["exec", &a, "ip", "route"]);
    assert!(so.contains(&format!("default via {prefix}1")), "{so}");
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["network", "inspect", &net])).unwrap();
    assert_eq!(v[0]["Containers"].as_array().unwrap().len(), 2, "{v}");
    let bridge = v[0]["Bridge"].as_str().unwrap().to_string();
    assert!(link_exists(&bridge));
    // Not removable while in use; then removable, and its bridge goes.
    let e = k.fails(&["network", "rm", &net]);
    assert!(e.contains("has containers attached"), "{e}");
    // A stopped container leaves the network (its address is free again).
    k.ok(&["stop", "-t", "1", &b]);
    let so = k.ok(&["exec", &a, "cat", "/etc/hosts"]);
    assert!(!so.contains(&b), "{b} still in {so}");
    k.ok(&["rm", "-f", &a, &b]);
    // DEL runs in the background once the task is gone; `network rm` waits for it.
    wait_for("the leases released", Duration::from_secs(10), || {
        leases(&net).is_empty()
    });
    k.ok(&["network", "rm", &net]);
    assert!(!link_exists(&bridge), "bridge {bridge} left");
    assert!(!k.ok(&["network", "ls"]).contains(&net));
}

#[test]
fn network_published_port_answers_on_localhost() {
    require_root!();
    let Some(k) = kurad() else { return };
    let port = free_port();
    let web = unique_net("web");
    let map = format!("127.0.0.1:{port}:80");
    // The default network (kura0) as `kura run` gives it.
    k.ok(&[
        "run", "-d", "--name", &web, "-p", &map, IMG, "sh", "-c", HTTPD,
    ]);
    let n = inspect(&k, &web);
    assert_eq!(n["Network"], "kura", "{n}");
    assert!(
        n["IPAddress"].as_str().unwrap().starts_with("10.88."),
        "{n}"
    );
    let body = http_get(
        &format!("127.0.0.1:{port}"),
        "/index.html",
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(body.contains("hello-"), "{body}");
    let ps = k.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    // The same host port again: refused at start, the container and its netns gone.
    let again = unique_net("again");
    let e = k.fails(&["run", "--rm", "--name", &again, "-p", &map, IMG, "true"]);
    assert!(e.contains("already published by container"), "{e}");
    assert!(!k.ok(&["ps", "-a"]).contains(&again));
    assert_eq!(k.attachment_records(), 1);
    k.ok(&["rm", "-f", &web]);
    released(&k, port);
}

#[test]
fn network_none_host_and_container_modes() {
    require_root!();
    let Some(k) = kurad() else { return };
    let so = k.ok(&["run", "--rm", "--network", "none", IMG, "ip", "-o", "link"]);
    assert_eq!(so.lines().count(), 1, "{so}");
    assert!(so.contains("lo:") && so.contains("UP"), "lo is up: {so}");
    let so = k.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMG,
        "cat",
        "/proc/net/dev",
    ]);
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(stable_interfaces(&so), stable_interfaces(&host), "{so}");
    // container:ID joins the other's namespace: the same address, its server on lo.
    let a = unique_net("srv");
    k.ok(&["run", "-d", "--name", &a, IMG, "sh", "-c", HTTPD]);
    let ip = inspect(&k, &a)["IPAddress"].as_str().unwrap().to_string();
    let so = k.ok(&[
        "run",
        "--rm",
        "--network",
        &format!("container:{a}"),
        IMG,
        "sh",
        "-c",
        "ip -o -4 addr show eth0; sleep 0.3; wget -q -O- http://127.0.0.1/index.html",
    ]);
    assert!(so.contains(&ip) && so.contains("hello-"), "{so}");
    k.ok(&["stop", "-t", "1", &a]);
    let e = k.fails(&[
        "run",
        "--rm",
        "--network",
        &format!("container:{a}"),
        IMG,
        "true",
    ]);
    assert!(e.contains("is not running"), "{e}");
}

#[test]
fn network_published_ports_survive_kurad_kill9() {
    require_root!();
    let Some(mut k) = kurad() else { return };
    let net = unique_net("surv");
    k.ok(&["network", "create", "--subnet", &unique_subnet(), &net]);
    let port = free_port();
    let web = unique_net("web");
    let map = format!("127.0.0.1:{port}:80");
    k.ok(&[
        "run",
        "-d",
        "--name",
        &web,
        "--network",
        &net,
        "-p",
        &map,
        IMG,
        "sh",
        "-c",
        HTTPD,
    ]);
    let addr = format!("127.0.0.1:{port}");
    http_get(&addr, "/index.html", Duration::from_secs(10)).unwrap();
    k.kill9();
    let body = http_get(&addr, "/index.html", Duration::from_secs(5)).unwrap();
    assert!(body.contains("hello-"), "with kurad dead: {body}");
    k.spawn();
    let body = http_get(&addr, "/index.html", Duration::from_secs(5)).unwrap();
    assert!(body.contains("hello-"), "after the restart: {body}");
    assert_eq!(leases(&net).len(), 1);
    k.ok(&["rm", "-f", &web]);
    released(&k, port);
    assert!(leases(&net).is_empty(), "{:?}", leases(&net));

    // A container that dies while kurad is down is released at kurad's next start.
    let port2 = free_port();
    let map2 = format!("127.0.0.1:{port2}:80");
    k.ok(&[
        "run",
        "-d",
        "--name",
        "dies",
        "--network",
        &net,
        "-p",
        &map2,
        IMG,
        "sh",
        "-c",
        "sleep 1",
    ]);
    k.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    k.spawn();
    kura_integration::shim::wait_for(
        "the dead container's network released",
        Duration::from_secs(10),
        || leases(&net).is_empty() && k.attachment_records() == 0,
    );
    assert!(!iptables_rules()
        .iter()
        .any(|r| r.contains(&format!("--dport {port2}"))));
    assert_eq!(k.attachment_records(), 0);
}

#[test]
fn network_bad_input_is_refused_and_leaves_nothing() {
    require_root!();
    let Some(k) = kurad() else { return };
    let net = unique_net("bad");
    let subnet = unique_subnet();
    k.ok(&["network", "create", "--subnet", &subnet, &net]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", &subnet, "x-overlap"],
            "overlaps network",
        ),
        (
            &["network", "create", "--subnet", "10.88.7.0/24", "x-ov2"],
            "overlaps network \"kura\"",
        ),
        (
            &["network", "create", "--subnet", "10.1.2.3/24", "x-host"],
            "host bits",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.201.0.0/24",
                "--gateway",
                "10.9.9.9",
                "x-gw",
            ],
            "not a host address",
        ),
        (&["network", "create", "host"], "reserved"),
        (&["network", "create", &net], "already exists"),
        (&["network", "rm", "kura"], "cannot be removed"),
        (&["network", "rm", "no-such-net"], "not found"),
    ];
    for (args, want) in cases {
        let e = k.fails(args);
        assert!(e.contains(want), "{args:?}: want {want:?} in {e}");
    }
    assert_eq!(k.ok(&["network", "ls", "-q"]).lines().count(), 2);
    let runs: &[(&[&str], &str)] = &[
        (
            &["--network", "no-such-net"],
            "network \"no-such-net\" not found",
        ),
        (
            &["--network", "none", "-p", "8080:80"],
            "-p needs a bridge network",
        ),
        (
            &["--network", &net, "--ip", "10.99.99.99"],
            "not a free host address",
        ),
        (&["-p", "8080"], "give the host port"),
        (&["-p", "99999:80"], "not 1..=65535"),
        (&["--network", "container:no-such"], "no-such"),
    ];
    for (i, (flags, want)) in runs.iter().enumerate() {
        let name = format!("badrun{i}");
        let mut a = vec!["run", "--rm", "--name", &name];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[IMG, "true"]);
        let e = k.fails(&a);
        assert!(e.contains(want), "{flags:?}: want {want:?} in {e}");
        assert!(!k.ok(&["ps", "-a"]).contains(&name));
    }
    assert_eq!(k.attachment_records(), 0);
}

#[test]
fn network_missing_plugin_is_named_and_nothing_is_made() {
    require_root!();
    if let Some(m) = missing_network_tools().or_else(kura_integration::images::missing_tools) {
        skip!("{m}");
    }
    let k = Kurad::start("[network]\ncni_path = [\"/nonexistent-cni\"]\n");
    k.load_busybox(IMG);
    let e = k.fails(&["run", "--rm", "--name", "noplug", IMG, "true"]);
    assert!(
        e.contains("CNI plugin \"bridge\" not found in /nonexistent-cni"),
        "{e}"
    );
    assert!(!k.ok(&["ps", "-a"]).contains("noplug"));
    assert_eq!(k.attachment_records(), 0);
    // --network none needs no plugin.
    k.ok(&["run", "--rm", "--network", "none", IMG, "true"]);
}

#[test]
fn network_clean_shutdown_finishes_releases() {
    require_root!();
    let Some(mut k) = kurad() else { return };
    let net = unique_net("shut");
    k.ok(&["network", "create", "--subnet", &unique_subnet(), &net]);
    let c = unique_net("c");
    let port = free_port();
    let map = format!("127.0.0.1:{port}:80");
    k.run_published(&c, &net, &map, IMG);
    assert_eq!(leases(&net).len(), 1);
    // DEL runs in the background after `rm`; a SIGTERM right after must not cut it off.
    k.ok(&["rm", "-f", &c]);
    assert!(k.stop(), "kurad did not stop cleanly");
    assert!(leases(&net).is_empty(), "{:?}", leases(&net));
    let dport = format!("--dport {port}");
    assert!(!iptables_rules().iter().any(|r| r.contains(&dport)));
    k.spawn();
}
