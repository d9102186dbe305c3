//! The Mesos v1 protobuf types generated from `proto/` by prost (plus serde
//! impls with Mesos JSON field names, from pbjson), and small constructors that
//! keep call sites short. No logic lives here.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `mesos`.
pub mod mesos {
    /// Package `mesos.v1`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.serde.rs"));
        /// Package `mesos.v1.executor`.
        pub mod executor {
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.rs"));
            include!(concat!(env!("OUT_DIR"), "/mesos.v1.executor.serde.rs"));
        }
    }
}

pub use mesos::v1;
pub use mesos::v1::executor;
