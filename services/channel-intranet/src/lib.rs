//! krisbud channel-intranet.
