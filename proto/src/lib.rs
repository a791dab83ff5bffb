//! Herd's wire contract between gateway and worker: the `.proto` files under
//! `proto/` and the tonic code generated from them, plus the typed error
//! details both sides put on and read off gRPC statuses ([`error`]).

/// `herd.worker.v1`: generation, embeddings, status, model placement and the
/// model store, served by every worker.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod worker {
    pub mod v1 {
        tonic::include_proto!("herd.worker.v1");
    }
}

pub mod error;

pub use worker::v1;
