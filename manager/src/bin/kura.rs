//! kura: the command line client of kurad.

use clap::Parser;

fn main() {
    let cli = kura_manager::cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = rt.block_on(kura_manager::cli::run(cli));
    // Attach threads may still block on stdin: exit without waiting for them.
    rt.shutdown_background();
    if let Err(e) = res {
        if let Some(c) = e.downcast_ref::<kura_manager::cli::containers::ExitCode>() {
            std::process::exit(c.0);
        }
        eprintln!("kura: {e:#}");
        std::process::exit(1);
    }
}
