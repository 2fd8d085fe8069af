//! Compiles the vendored OIP v2 gRPC definition (proto/grpc_predict_v2.proto) into Rust with protox, a
//! protobuf compiler written in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let files = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".inference")
        .compile_fds(files)?;
    Ok(())
}
