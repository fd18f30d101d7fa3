//! One file per command; each parses its flags and calls into the library.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod kill;
pub mod list;
pub mod ps;
pub mod run;
pub mod simple;
pub mod spec;
pub mod update;

use crate::{Cli, Cmd};
use anyhow::Result;

/// Runs the command; the result is the process exit code.
pub fn dispatch(cli: &Cli) -> Result<i32> {
    let root = &cli.root;
    match &cli.cmd {
        Cmd::Create(a) => create::run(cli, a).map(|_| 0),
        Cmd::Start(a) => kura_runtime::container::start(root, &a.id).map(|_| 0),
        Cmd::State(a) => simple::state(root, &a.id).map(|_| 0),
        Cmd::Kill(a) => kill::run(root, a).map(|_| 0),
        Cmd::Delete(a) => delete::run(root, a).map(|_| 0),
        Cmd::Run(a) => run::run(cli, a),
        Cmd::Exec(a) => exec::run(root, a),
        Cmd::Ps(a) => ps::run(root, a).map(|_| 0),
        Cmd::List(a) => list::run(root, a).map(|_| 0),
        Cmd::Pause(a) => kura_runtime::container::pause(root, &a.id).map(|_| 0),
        Cmd::Resume(a) => kura_runtime::container::resume(root, &a.id).map(|_| 0),
        Cmd::Events(a) => events::run(root, a).map(|_| 0),
        Cmd::Update(a) => update::run(root, a).map(|_| 0),
        Cmd::Spec(a) => spec::run(a).map(|_| 0),
        Cmd::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&kura_runtime::features::features())?
            );
            Ok(0)
        }
    }
}

/// Marks the runtime non-dumpable before it forks anything: the container's init
/// inherits it until execve, so nothing in the container can ptrace it or read
/// /proc/<pid>/ of it while it holds host resources. The CVE-2019-5736 guard is
/// chosen once the config is read (`exe_guard::plan`).
pub fn harden() {
    kura_runtime::security::stay_undumpable();
}
