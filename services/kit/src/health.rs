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
            .expect("health lock")
            .insert(name.to_owned(), false);
        Ready {
            health: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Whether every registered component is ready.
    pub fn is_ready(&self) -> bool {
        self.components
            .lock()
            .expect("health lock")
            .values()
            .all(|ready| *ready)
    }

    /// Components and their readiness.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        self.components.lock().expect("health lock").clone()
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
            .expect("health lock")
            .insert(self.name.clone(), ready);
    }
}
