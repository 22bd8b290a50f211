//! krisbud channel-sms.
