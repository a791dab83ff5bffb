//! Generates the tonic client and server for Herd's gRPC contract.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/herd/worker/v1/worker.proto"], &["proto"])?;
    Ok(())
}
