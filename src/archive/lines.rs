//! Incremental line splitting and record validation over arbitrary chunk boundaries.

use serde::de::IgnoredAny;

use super::ArchiveError;
use crate::manifest::ExportFileType;

/// Splits a byte stream fed in arbitrary chunks into lines, validates each record line and
/// counts records. Memory is bounded by `max_line_bytes` (one partial line at most).
#[derive(Debug)]
pub(crate) struct LineChecker {
    file_type: ExportFileType,
    max_line_bytes: usize,
    partial: Vec<u8>,
    /// 1-based number of the line being assembled (counting empty lines too).
    line_no: u64,
    records: u64,
    /// CSV only: whether the header line has been seen.
    header_seen: bool,
}

impl LineChecker {
    pub(crate) fn new(file_type: ExportFileType, max_line_bytes: usize) -> Self {
        LineChecker {
            file_type,
            max_line_bytes,
            partial: Vec::new(),
            line_no: 1,
            records: 0,
            header_seen: false,
        }
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Feeds the next chunk; complete lines are checked right away.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<(), ArchiveError> {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let (line, rest) = chunk.split_at(pos);
            chunk = rest.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.check_length(line.len())?;
                self.check_line(line)?;
            } else {
                self.check_length(self.partial.len() + line.len())?;
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let result = self.check_line(&whole);
                whole.clear();
                // Keep the allocation for the next long line, but not an outsized one.
                if whole.capacity() <= 1 << 20 {
                    self.partial = whole;
                }
                result?;
            }
            self.line_no += 1;
        }
        if !chunk.is_empty() {
            self.check_length(self.partial.len() + chunk.len())?;
            self.partial.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// Ends the input: a last line without a trailing newline is checked like any other.
    pub(crate) fn finish(&mut self) -> Result<(), ArchiveError> {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            self.check_line(&whole)?;
        }
        Ok(())
    }

    fn check_length(&self, len: usize) -> Result<(), ArchiveError> {
        if len > self.max_line_bytes {
            return Err(ArchiveError::LineTooLong {
                line: self.line_no,
                limit: self.max_line_bytes,
            });
        }
        Ok(())
    }

    fn check_line(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.line_no == 1 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let Some(first) = line.iter().position(|b| !b.is_ascii_whitespace()) else {
            return Ok(()); // blank line: not a record
        };
        match self.file_type {
            ExportFileType::Json => {
                if line.get(first) != Some(&b'{') {
                    return Err(ArchiveError::NotAnObject { line: self.line_no });
                }
                // serde_json skips the content of ignored strings without checking it, and
                // the export format is UTF-8: check the encoding explicitly.
                let text = std::str::from_utf8(line).map_err(|e| ArchiveError::InvalidJson {
                    line: self.line_no,
                    message: format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1),
                })?;
                serde_json::from_str::<IgnoredAny>(text).map_err(|e| {
                    ArchiveError::InvalidJson {
                        line: self.line_no,
                        message: e.to_string().replace(" at line 1 column ", " at column "),
                    }
                })?;
                self.records += 1;
            }
            ExportFileType::Csv => {
                // The first non-empty line is the header; every later line is one record.
                // (Quoted fields containing newlines would be counted twice; the count check
                // against the server's record_success then catches it.)
                if self.header_seen {
                    self.records += 1;
                } else {
                    self.header_seen = true;
                }
            }
        }
        Ok(())
    }
}
