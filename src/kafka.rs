//! The Kafka client settings that sources and sinks (and the tools) share: one place for what
//! every librdkafka client of Eddy gets.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

/// Builds a librdkafka configuration from verbatim properties over our defaults.
pub fn client_config(defaults: &[(&str, &str)], properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    config
}
