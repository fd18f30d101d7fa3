fn main() { eprintln!("kurad: not built yet (see the kurad issue)"); std::process::exit(2); }
