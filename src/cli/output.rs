//! How commands talk to the user: text for humans, or `--json` for scripts.
//!
//! Conventions (documented in `docs/cli.md`): a command that produces one result prints one JSON
//! document on stdout; a command that streams (`backup`, `demo`) prints JSON lines, each an object
//! with a `message_type` field (`progress`, `summary`, `error`, ...). Errors in `--json` mode are
//! a JSON object with `message_type: "error"`, the exit code and the message, on stdout, so a
//! script reading stdout always gets a parsable last line. Logs never go to stdout.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::exit::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// One JSON document (only in `--json` mode).
    pub fn document<T: Serialize>(&self, value: &T) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => print_stdout(&s),
                Err(e) => eprintln!("error: cannot serialise output: {e}"),
            }
        }
    }

    /// One JSON line tagged with `message_type` (only in `--json` mode). A non-object value is
    /// wrapped as `{"message_type": ..., "data": value}`.
    pub fn message<T: Serialize>(&self, message_type: &str, value: &T) {
        if self.json {
            print_stdout(&tagged_line(message_type, value));
        }
    }

    /// Human text on stdout (only in text mode).
    pub fn text(&self, text: &str) {
        if !self.json {
            print_stdout(text.trim_end_matches('\n'));
        }
    }

    /// Reports the error that ends the command.
    pub fn error(&self, err: &CliError) {
        if self.json {
            #[derive(Serialize)]
            struct ErrorMessage<'a> {
                exit_code: i32,
                status: super::exit::ExitStatus,
                message: &'a str,
            }
            print_stdout(&tagged_line(
                "error",
                &ErrorMessage {
                    exit_code: err.status.code(),
                    status: err.status,
                    message: &err.message,
                },
            ));
        } else {
            eprintln!("tcb-backup: {}", err.message);
        }
    }
}

/// Serialises `value` as one line with `message_type` as its first key.
pub fn tagged_line<T: Serialize>(message_type: &str, value: &T) -> String {
    let tag = Value::String(message_type.into()).to_string();
    match serde_json::to_value(value) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("message_type");
            if fields.is_empty() {
                return format!("{{\"message_type\":{tag}}}");
            }
            let rest = Value::Object(fields).to_string();
            // `rest` is "{...}": splice the tag in after the opening brace.
            format!("{{\"message_type\":{tag},{}", rest.get(1..).unwrap_or("}"))
        }
        Ok(other) => format!("{{\"message_type\":{tag},\"data\":{other}}}"),
        Err(e) => {
            let err = Value::String(e.to_string());
            format!("{{\"message_type\":{tag},\"serialisation_error\":{err}}}")
        }
    }
}

fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not worth a panic.
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_lines_are_objects_with_message_type_first() {
        #[derive(Serialize)]
        struct S {
            a: u32,
        }
        let line = tagged_line("summary", &S { a: 1 });
        assert_eq!(line, r#"{"message_type":"summary","a":1}"#);
        let v: Value = serde_json::from_str(&tagged_line("x", &5)).unwrap();
        assert_eq!(v["data"], 5);
    }
}
