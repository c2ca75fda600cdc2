//! The daemon's tracing subscriber: text or JSON lines on stderr, filtered by a level that a
//! config reload can change.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::cli::{LogFormatArg, LogLevelArg};

/// Changes the level of the installed subscriber.
#[derive(Debug)]
pub(crate) struct Logging {
    handle: reload::Handle<EnvFilter, Registry>,
    level: String,
}

/// The filter for `level`. Below debug, kube's request builder is silenced: it logs an ERROR
/// for every request that fails, which the runner reports itself, once and with context (the
/// job log, the runner that stops requesting jobs, the failed job).
fn filter(level: &str) -> anyhow::Result<EnvFilter> {
    let directives = if matches!(level, "debug" | "trace") {
        level.to_owned()
    } else {
        format!("{level},kube_client::client::builder=off")
    };
    EnvFilter::builder().parse(&directives).with_context(|| format!("invalid log level {level:?}"))
}

impl Logging {
    /// Installs the global subscriber.
    pub(crate) fn init(format: LogFormatArg, level: &str) -> anyhow::Result<Self> {
        let (layer, handle) = reload::Layer::new(filter(level)?);
        let (text, json) = match format {
            LogFormatArg::Text => (
                Some(
                    fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                ),
                None,
            ),
            LogFormatArg::Json => (
                None,
                Some(
                    fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_writer(std::io::stderr),
                ),
            ),
        };
        tracing_subscriber::registry()
            .with(layer)
            .with(text)
            .with(json)
            .try_init()
            .context("failed to install the log subscriber")?;
        Ok(Self { handle, level: level.to_owned() })
    }

    /// Applies `level` if it differs from the current one.
    pub(crate) fn set_level(&mut self, level: &str) -> anyhow::Result<()> {
        if level == self.level {
            return Ok(());
        }
        self.handle.reload(filter(level)?).context("failed to change the log level")?;
        self.level = level.to_owned();
        Ok(())
    }
}

/// The log level: the command-line flag, else the config's `log_level`, else `info`.
pub(crate) fn level(flag: Option<LogLevelArg>, config: Option<&str>) -> String {
    match flag {
        Some(level) => level.as_str().to_owned(),
        None => config.unwrap_or("info").to_owned(),
    }
}

/// The log format: the command-line flag, else the config's `log_format` (`runner` is text).
pub(crate) fn format(
    flag: Option<LogFormatArg>,
    config: podrunner_config::model::LogFormat,
) -> LogFormatArg {
    flag.unwrap_or(match config {
        podrunner_config::model::LogFormat::Json => LogFormatArg::Json,
        podrunner_config::model::LogFormat::Runner | podrunner_config::model::LogFormat::Text => {
            LogFormatArg::Text
        }
    })
}
