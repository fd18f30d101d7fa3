//! kura-runtime: the library behind the `kura-runtime` CLI.
