//! kura: the command line client of kurad.

use clap::Parser;

fn main() {
    let cli = kura_manager::cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(kura_manager::cli::run(cli)) {
        eprintln!("kura: {e:#}");
        std::process::exit(1);
    }
}
