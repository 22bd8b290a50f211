//! krisbud audit.
