fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=kura/v1/kura.proto");
    tonic_build::configure().compile_protos(&["kura/v1/kura.proto"], &["."])?;
    Ok(())
}
