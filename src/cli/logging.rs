//! Tracing setup for the binary: logs go to stderr (stdout is reserved for command output and
//! `--json` documents), verbosity from `-v` counts, `RUST_LOG` overrides, text or JSON lines.

use tracing_subscriber::EnvFilter;

use super::args::LogFormat;

/// The filter a `-v` count selects when `RUST_LOG` is not set.
pub fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. Calling it twice (tests) is harmless: the second call is
/// ignored.
pub fn init(verbose: u8, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbose)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_levels() {
        assert_eq!(default_filter(0), "warn");
        assert_eq!(default_filter(1), "info");
        assert_eq!(default_filter(2), "debug");
        assert_eq!(default_filter(7), "trace");
    }
}
