//! Durable application records in named namespaces (the backup catalog lives here). Values are
//! serde JSON; every write is committed and flushed before it returns.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::EngineError;
use crate::store::JobStore;

/// A handle on one namespace; cheap to clone.
#[derive(Clone)]
pub struct KvNamespace {
    store: Arc<dyn JobStore>,
    namespace: String,
}

impl KvNamespace {
    pub(crate) fn new(store: Arc<dyn JobStore>, namespace: &str) -> Self {
        KvNamespace {
            store,
            namespace: namespace.to_string(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Stores `value` under `key`, durably.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec(value).map_err(|e| EngineError::Serialize {
            kind: format!("kv/{}", self.namespace),
            message: e.to_string(),
        })?;
        Ok(self.store.kv_put(&self.namespace, key, bytes)?)
    }

    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, EngineError> {
        match self.store.kv_get(&self.namespace, key)? {
            None => Ok(None),
            Some(bytes) => self.decode(key, &bytes).map(Some),
        }
    }

    /// Removes `key`; true when it existed.
    pub fn remove(&self, key: &str) -> Result<bool, EngineError> {
        Ok(self.store.kv_remove(&self.namespace, key)?)
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn scan_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, EngineError> {
        self.store
            .kv_scan_prefix(&self.namespace, prefix)?
            .into_iter()
            .map(|(k, v)| {
                let value = self.decode(&k, &v)?;
                Ok((k, value))
            })
            .collect()
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, EngineError> {
        serde_json::from_slice(bytes).map_err(|e| EngineError::KvDecode {
            namespace: self.namespace.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }
}
