//! Where things live in the store, under one prefix (default `/herd/`).
//! See docs/cluster.md for the layout and what each value holds.

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/herd/";

/// The key layout under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix` (a `/` is added at its end if missing).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}workers/`: one key per registered worker.
    pub fn workers(&self) -> String {
        format!("{}workers/", self.prefix)
    }

    /// `{prefix}workers/{id}`: a [`crate::WorkerRecord`], bound to the
    /// worker's lease.
    pub fn worker(&self, id: &str) -> String {
        format!("{}{id}", self.workers())
    }

    /// The worker id of a key under [`Keys::workers`].
    pub fn worker_id<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.workers().as_str())
            .filter(|id| !id.is_empty())
    }

    /// `{prefix}gateways/`: one key per running gateway.
    pub fn gateways(&self) -> String {
        format!("{}gateways/", self.prefix)
    }

    /// `{prefix}gateways/{id}`: a [`crate::GatewayRecord`], bound to the
    /// gateway's lease.
    pub fn gateway(&self, id: &str) -> String {
        format!("{}{id}", self.gateways())
    }

    /// `{prefix}apikeys/`: the gateways' API keys in cluster mode, one
    /// per key name (`herd keys … --etcd`).
    pub fn api_keys(&self) -> String {
        format!("{}apikeys/", self.prefix)
    }

    /// `{prefix}apikeys/{name}`: the key's record (its digest, role, models
    /// and limits; never the key), JSON, bound to no lease.
    pub fn api_key(&self, name: &str) -> String {
        format!("{}{name}", self.api_keys())
    }

    /// `{prefix}placements/`: loads in progress, cluster-wide.
    pub fn placements(&self) -> String {
        format!("{}placements/", self.prefix)
    }

    /// `{prefix}placements/{model}`: a [`crate::PlacementClaim`] while one
    /// gateway loads `model` (its pool-wide key), bound to that gateway's
    /// lease.
    pub fn placement(&self, model: &str) -> String {
        format!("{}{model}", self.placements())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix() {
        let keys = Keys::new("/team-a");
        assert_eq!(keys.worker("w1"), "/team-a/workers/w1");
        assert_eq!(keys.worker_id("/team-a/workers/w1"), Some("w1"));
        assert_eq!(keys.worker_id("/team-a/workers/"), None);
        assert_eq!(keys.worker_id("/team-b/workers/w1"), None);
        assert_eq!(
            Keys::default().placement("sha256:ab"),
            "/herd/placements/sha256:ab"
        );
        assert_eq!(Keys::default().gateway("g"), "/herd/gateways/g");
    }
}
