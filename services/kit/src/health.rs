//! `/healthz` (the process runs) and `/readyz` (every component is ready).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

/// Readiness of the components of one process.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
    /// NATS connections the process needs: while one is not connected, nothing
    /// the process answers can be true, so it is not ready.
    connections: Arc<Mutex<BTreeMap<String, async_nats::Client>>>,
}

/// One component's readiness switch.
#[derive(Clone)]
pub struct Ready {
    health: Health,
    name: String,
}

impl Health {
    /// Registers a component, not yet ready.
    pub fn component(&self, name: &str) -> Ready {
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), false);
        Ready {
            health: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Counts `client`'s connection as the component `nats:<name>`: ready only
    /// while it is connected.
    pub fn watch_connection(&self, name: &str, client: async_nats::Client) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(format!("nats:{name}"), client);
    }

    /// Whether every registered component is ready.
    pub fn is_ready(&self) -> bool {
        self.snapshot().values().all(|ready| *ready)
    }

    /// Components and their readiness, the NATS connections included.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        let mut snapshot = self
            .components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (name, client) in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            snapshot.insert(name.clone(), connected);
        }
        snapshot
    }

    /// Routes for `/healthz` and `/readyz`.
    pub fn router(&self) -> Router {
        let health = self.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let health = health.clone();
                    async move {
                        let snapshot = health.snapshot();
                        let status = if health.is_ready() {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (status, axum::Json(snapshot)).into_response()
                    }
                }),
            )
    }
}

impl Ready {
    /// Marks the component ready or not.
    pub fn set(&self, ready: bool) {
        self.health
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.name.clone(), ready);
    }
}
