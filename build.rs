//! Generates the gRPC code of seawall's own tonic tests and examples, only
//! with the `tonic-examples` feature: users of the crate build nothing here.
//! protox compiles the proto in pure Rust, so no `protoc` is needed.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tonic-examples")]
    {
        println!("cargo:rerun-if-changed=proto/echo.proto");
        let descriptors =
            protox::compile(["proto/echo.proto"], ["proto"]).expect("proto/echo.proto compiles");
        tonic_prost_build::configure()
            .compile_fds(descriptors)
            .expect("the gRPC code is generated");
    }
}
