//! The values kept in the store, as JSON. Readers ignore fields they do not
//! know, so a newer process may add some.

use serde::{Deserialize, Serialize};

use crate::store::StateError;

/// A worker as registered (`{prefix}workers/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerRecord {
    /// Unique in the cluster.
    pub id: String,
    /// Its gRPC endpoint, e.g. `http://10.0.0.5:50051` (from `--advertise`).
    pub endpoint: String,
    /// The memory models may take there (`--memory-limit`).
    pub memory_limit_bytes: u64,
    /// `cpu`, or the GPUs it offloads to (e.g. `CUDA: NVIDIA H100 80GB HBM3`).
    pub accelerator: String,
    /// The worker's Herd version.
    pub version: String,
    /// Set on SIGTERM: gateways send it nothing new while its requests
    /// finish.
    pub draining: bool,
    /// Unix seconds when the worker started.
    pub started_at: u64,
}

/// A gateway (`{prefix}gateways/{id}`): who holds placement claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayRecord {
    pub id: String,
    /// Its HTTP address, as it listens.
    pub listen: String,
    pub version: String,
    pub started_at: u64,
}

/// A load in progress (`{prefix}placements/{model}`): one gateway has
/// claimed the model's load and is loading it on `worker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementClaim {
    pub gateway: String,
    pub worker: String,
    /// Unix milliseconds when the claim was taken.
    pub since_ms: u64,
}

/// JSON bytes of a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// A record read from `key`.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(value).map_err(|e| StateError::Invalid {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Unix time now, in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_fields_are_ignored() {
        let record = WorkerRecord {
            id: "w1".into(),
            endpoint: "http://10.0.0.5:50051".into(),
            memory_limit_bytes: 1 << 30,
            accelerator: "cpu".into(),
            version: "0.1.0".into(),
            draining: false,
            started_at: 1,
        };
        let back: WorkerRecord = decode("k", &encode(&record)).unwrap();
        assert_eq!(back, record);
        let newer: WorkerRecord =
            decode("k", br#"{"id":"w2","endpoint":"http://h:1","zone":"b"}"#).unwrap();
        assert_eq!(newer.id, "w2");
        assert!(matches!(
            decode::<WorkerRecord>("k", b"{"),
            Err(StateError::Invalid { .. })
        ));
    }
}
