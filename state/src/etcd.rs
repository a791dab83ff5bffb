//! The state store on etcd (v3 API, `etcd-client`). Every unary call gives
//! up after [`CALL_TIMEOUT`]: with every endpoint down, the client's
//! balanced channel would otherwise wait forever. HTTP/2 keep-alives notice
//! a silent connection, so a watch on a dead etcd ends instead of hanging.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::store::{
    Created, Event, EventKind, EventStream, KeyValue, LeaseId, Listing, Revision, StateError,
    StateStore,
};

/// The longest one call to etcd may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Cluster state in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A client for `endpoints` (`http://host:port`). Connects lazily: an
    /// etcd that is down now is not an error here, only in the calls.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StateError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StateError::Unavailable(format!("cannot use {endpoints:?}: {e}")))?;
        Ok(Self {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs one call under [`CALL_TIMEOUT`].
    async fn call<T, F>(&self, what: &str, f: impl FnOnce(Client) -> F) -> Result<T, StateError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(CALL_TIMEOUT, f(self.client.clone())).await {
            Ok(result) => result.map_err(|e| unavailable(what, &e)),
            Err(_) => Err(StateError::Unavailable(format!(
                "etcd {what}: no answer within {CALL_TIMEOUT:?}"
            ))),
        }
    }
}

fn unavailable(what: &str, error: &etcd_client::Error) -> StateError {
    StateError::Unavailable(format!("etcd {what}: {error}"))
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StateError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?;
        Ok(LeaseId(granted.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StateError> {
        let result = tokio::time::timeout(CALL_TIMEOUT, {
            let mut client = self.client.clone();
            // Opening the keep-alive stream sends one renewal and reads its
            // answer (a lease that is gone is an error).
            async move { client.lease_keep_alive(lease.0).await }
        })
        .await;
        match result {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_lease_missing(&e) => Ok(false),
            Ok(Err(e)) => Err(unavailable("lease keep-alive", &e)),
            Err(_) => Err(StateError::Unavailable(
                "etcd lease keep-alive timed out".into(),
            )),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StateError> {
        let result = tokio::time::timeout(CALL_TIMEOUT, {
            let mut client = self.client.clone();
            async move { client.lease_revoke(lease.0).await }
        })
        .await;
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_missing(&e) => Err(StateError::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(unavailable("lease revoke", &e)),
            Err(_) => Err(StateError::Unavailable(
                "etcd lease revoke timed out".into(),
            )),
        }
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StateError> {
        let options = lease.map(|l| PutOptions::new().with_lease(l.0));
        let key = key.to_owned();
        let result = tokio::time::timeout(CALL_TIMEOUT, {
            let mut client = self.client.clone();
            async move { client.put(key, value, options).await }
        })
        .await;
        match result {
            Ok(Ok(put)) => Ok(put.header().map_or(0, |h| h.revision())),
            Ok(Err(e)) if is_lease_missing(&e) => {
                Err(StateError::LeaseNotFound(lease.unwrap_or(LeaseId(0))))
            }
            Ok(Err(e)) => Err(unavailable("put", &e)),
            Err(_) => Err(StateError::Unavailable("etcd put timed out".into())),
        }
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Created, StateError> {
        let options = lease.map(|l| PutOptions::new().with_lease(l.0));
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, options)])
            .or_else([TxnOp::get(key, None)]);
        let result = tokio::time::timeout(CALL_TIMEOUT, {
            let mut client = self.client.clone();
            async move { client.txn(txn).await }
        })
        .await;
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if is_lease_missing(&e) => {
                return Err(StateError::LeaseNotFound(lease.unwrap_or(LeaseId(0))));
            }
            Ok(Err(e)) => return Err(unavailable("txn", &e)),
            Err(_) => return Err(StateError::Unavailable("etcd txn timed out".into())),
        };
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            return Ok(Created::Created(revision));
        }
        let held = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(key_value),
            _ => None,
        });
        match held {
            Some(kv) => Ok(Created::Exists(kv)),
            // Deleted between the compare and the get: it was ours to take,
            // but this transaction did not take it. Report it as held by
            // nobody; the caller tries again later.
            None => Ok(Created::Exists(KeyValue {
                key: key.to_owned(),
                value: Vec::new(),
                mod_revision: revision,
                lease: None,
            })),
        }
    }

    async fn delete(&self, key: &str) -> Result<Revision, StateError> {
        let key = key.to_owned();
        let deleted = self
            .call("delete", |mut c| async move { c.delete(key, None).await })
            .await?;
        Ok(deleted.header().map_or(0, |h| h.revision()))
    }

    async fn delete_at(&self, key: &str, revision: Revision) -> Result<bool, StateError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
            .and_then([TxnOp::delete(key, None)]);
        let response = self
            .call("txn", |mut c| async move { c.txn(txn).await })
            .await?;
        Ok(response.succeeded())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StateError> {
        let prefix = prefix.to_owned();
        let response = self
            .call("get", |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        Ok(Listing {
            items: response.kvs().iter().map(key_value).collect(),
            revision: response.header().map_or(0, |h| h.revision()),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<EventStream, StateError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let prefix = prefix.to_owned();
        let stream = self
            .call("watch", |mut c| async move {
                c.watch(prefix, Some(options)).await
            })
            .await?;
        let events = futures::stream::unfold(Some(stream), move |stream| async move {
            let mut stream = stream?;
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(unavailable("watch", &e)), None)),
                };
                if response.canceled() {
                    let error = if response.compact_revision() > 0 {
                        StateError::Compacted {
                            requested: from,
                            oldest: response.compact_revision(),
                        }
                    } else {
                        StateError::Unavailable(format!(
                            "etcd watch cancelled: {}",
                            response.cancel_reason()
                        ))
                    };
                    return Some((Err(error), None));
                }
                let batch: Vec<Event> = response
                    .events()
                    .iter()
                    .filter_map(|event| {
                        let kv = event.kv()?;
                        let kind = match event.event_type() {
                            EventType::Put => EventKind::Put,
                            EventType::Delete => EventKind::Delete,
                        };
                        Some(Event {
                            kind,
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: kv.value().to_vec(),
                            revision: kv.mod_revision(),
                        })
                    })
                    .collect();
                if !batch.is_empty() {
                    return Some((Ok(batch), Some(stream)));
                }
            }
        });
        Ok(Box::pin(events))
    }
}

/// etcd's answer to a call naming a lease it does not have (a status from
/// the server, or the client's own keep-alive error).
fn is_lease_missing(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}
