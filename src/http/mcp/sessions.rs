//! MCP sessions in PostgreSQL, so that any instance behind a load balancer serves any session:
//! an instance that does not hold a session in memory restores it from its `initialize`
//! parameters (rmcp replays the handshake) instead of answering 404.

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::store::Store;

pub struct PgSessions {
    store: Store,
}

impl PgSessions {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait::async_trait]
impl SessionStore for PgSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        match self.store.load_mcp_session(session_id).await? {
            Some(params) => Ok(Some(SessionState::new(serde_json::from_value(params)?))),
            None => Ok(None),
        }
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let params = serde_json::to_value(&state.initialize_params)?;
        Ok(self.store.save_mcp_session(session_id, &params).await?)
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        Ok(self.store.delete_mcp_session(session_id).await?)
    }
}
