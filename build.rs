//! Compiles our Mesos v1 proto subset with prost (and serde impls with pbjson, for
//! the Mesos JSON field names used by hooks and the agent emulator), using the
//! `protoc` shipped by the `protoc-bin-vendored` crate so a fresh machine needs
//! nothing but the Rust toolchain. Also embeds the git revision for `--version`,
//! and generates the scheduler subset used only by the real-Mesos test suite.

use std::{env, path::PathBuf, process::Command};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("mesos_descriptor.bin");
    let protos = [
        "proto/mesos/v1/mesos.proto",
        "proto/mesos/v1/executor/executor.proto",
    ];
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(&protos, &["proto"])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".mesos"])?;
    // pbjson-build 0.9 spells the enum value `SandboxPath.Type.SELF` as `Self`,
    // which prost generates as `Self_`; patch the generated serde code.
    let serde_path = out_dir.join("mesos.v1.serde.rs");
    let serde_code = std::fs::read_to_string(&serde_path)?
        .replace("Self::Self =>", "Self::Self_ =>")
        .replace("sandbox_path::Type::Self)", "sandbox_path::Type::Self_)");
    std::fs::write(&serde_path, serde_code)?;

    // The framework side (scheduler calls and events), for the real-Mesos test
    // suite only: generated into its own directory and included by
    // tests/mesos/ alone, so neither the library nor the release binaries
    // compile it.
    let scheduler_dir = out_dir.join("scheduler");
    std::fs::create_dir_all(&scheduler_dir)?;
    prost_build::Config::new()
        .out_dir(&scheduler_dir)
        .compile_protos(&["proto/mesos/v1/scheduler/scheduler.proto"], &["proto"])?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=HOOK_EXECUTOR_GIT_REV={rev}");
    Ok(())
}
