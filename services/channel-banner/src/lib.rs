//! krisbud channel-banner.
