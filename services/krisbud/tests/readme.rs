//! The README's configuration table names every key the code reads, so a
//! newcomer never has to read the source to find one.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names a struct's `Deserialize` asks for: a deserializer that
/// records them and stops.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

fn fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    assert!(
        !names.is_empty(),
        "{} has fields",
        std::any::type_name::<T>()
    );
    names
}

/// The README's table row of `section` (`[sms]`, or `top level`).
fn row<'a>(readme: &'a str, section: &str) -> &'a str {
    readme
        .lines()
        .find(|l| {
            l.starts_with(&format!("| `{section}` |")) || l.starts_with(&format!("| {section} |"))
        })
        .unwrap_or_else(|| panic!("the README's configuration table has no row for {section}"))
}

#[test]
fn every_configuration_key_is_in_the_readme() {
    let readme = include_str!("../../../README.md");
    let sections: Vec<(&str, Vec<&'static str>)> = vec![
        ("top level", vec!["data_dir", "health_listen"]),
        ("[nats]", fields::<krisbud_kit::NatsConfig>()),
        ("[local_nats]", fields::<krisbud::config::LocalNats>()),
        ("[privacy]", fields::<krisbud_kit::service::PrivacyConfig>()),
        (
            "[commands]",
            fields::<krisbud_kit::config::CommandsConfig>(),
        ),
        ("[telemetry]", fields::<krisbud_kit::TelemetryConfig>()),
        ("[gateway]", fields::<krisbud_gateway::Config>()),
        ("[gateway.oidc]", fields::<krisbud_gateway::OidcConfig>()),
        ("[coordinator]", fields::<krisbud_coordinator::Config>()),
        (
            "[coordinator.confirmation]",
            fields::<krisbud_coordinator::crisis::deadlines::ConfirmationConfig>(),
        ),
        ("[sms]", fields::<krisbud_channel_sms::Config>()),
        ("[email]", fields::<krisbud_channel_email::Config>()),
        ("[intranet]", fields::<krisbud_channel_intranet::Config>()),
        ("[banner]", fields::<krisbud_channel_banner::Config>()),
        ("[audit]", fields::<krisbud_audit::Config>()),
    ];
    let mut missing = Vec::new();
    for (section, keys) in &sections {
        let row = row(readme, section);
        for key in keys {
            // A nested section has a row of its own.
            if (*key == "confirmation" && *section == "[coordinator]")
                || (*key == "oidc" && *section == "[gateway]")
            {
                continue;
            }
            // An array of tables is named as such (`[[gateway.users]]`).
            if !row.contains(&format!("`{key}`")) && !row.contains(&format!("`[[gateway.{key}]]`"))
            {
                missing.push(format!("{section} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's configuration table: {missing:?}"
    );
}
