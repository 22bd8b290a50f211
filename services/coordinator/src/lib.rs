//! krisbud coordinator.
