//! Hot swap: [`Bindings`] maps names (or flow bindings) to the loaded connector that new calls
//! get. A call resolves its `Arc` once, at its start, so a rebind changes what later calls run
//! while calls in flight finish on the version they started on; when nothing binds or runs a
//! connector any more, its last `Arc` drops and it is unloaded.

use crate::call::{CallError, CallOutput};
use crate::capability::CallContext;
use crate::connector::Connector;
use crate::runtime::Runtime;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// An atomically swappable table from name to loaded connector.
#[derive(Debug, Default)]
pub struct Bindings {
    table: RwLock<HashMap<String, Arc<Connector>>>,
}

/// A call through a name that is not bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundCallError {
    #[error("nothing is bound to `{0}`")]
    Unbound(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bind `name` to `connector` (replacing any previous binding, which is returned). Calls
    /// that already resolved the name keep what they resolved.
    pub fn bind(
        &self,
        name: impl Into<String>,
        connector: Arc<Connector>,
    ) -> Option<Arc<Connector>> {
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), connector)
    }

    /// Remove the binding of `name`.
    pub fn unbind(&self, name: &str) -> Option<Arc<Connector>> {
        self.table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
    }

    /// What a call through `name` would run now.
    pub fn resolve(&self, name: &str) -> Option<Arc<Connector>> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Resolve `name` once and run `operation` on what it is bound to.
    pub async fn invoke(
        &self,
        runtime: &Runtime,
        name: &str,
        operation: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, BoundCallError> {
        let connector = self
            .resolve(name)
            .ok_or_else(|| BoundCallError::Unbound(name.to_string()))?;
        Ok(runtime.invoke(&connector, operation, input, ctx).await?)
    }
}
