//! krisbud channel-email.
