//! krisbud gateway.
