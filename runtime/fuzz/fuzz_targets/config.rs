//! Hostile config.json bytes through parsing and every check `create` makes before
//! touching the system. Any panic, overflow or runaway allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = kura_runtime::spec::parse(data) {
        let _ = kura_runtime::spec::validate(&spec);
        let _ = kura_runtime::spec::resources_with_defaults(&spec);
        if let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            let _ = kura_runtime::seccomp::compile(s);
        }
        for m in spec.mounts().iter().flatten() {
            let _ = kura_runtime::rootfs::options::parse(m.options().as_deref().unwrap_or(&[]));
        }
        if let Some(p) = spec.process() {
            let _ = kura_runtime::security::caps::from_spec(p.capabilities().as_ref());
        }
    }
});
