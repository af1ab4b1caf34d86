//! placeholder until the config loader lands (field names as agreed).
#[derive(Debug, Clone)]
pub struct EventorConfig {
    pub max_concurrent: i64,
    pub stop_on_exception: bool,
    pub envvar_prefix: String,
}
impl Default for EventorConfig {
    fn default() -> Self {
        EventorConfig {
            max_concurrent: -1,
            stop_on_exception: true,
            envvar_prefix: "EVENTOR_".into(),
        }
    }
}
