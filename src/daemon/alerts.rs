//! Alerts and the heartbeat: webhook payloads (generic JSON and the WeCom group-robot markdown
//! message) for failed, partially failed and stale backups, and a heartbeat URL called only
//! after a fully successful run (a dead-man's switch for an external monitor).
//!
//! Webhook and heartbeat URLs often carry a key (`...?key=`), so neither the URL nor reqwest's
//! errors (which include it) are ever logged or returned.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::scheduler::{fmt_ms, to_ms};
use super::settings::{AlertEvent, AlertFormat, AlertSettings, SecretUrl};

/// WeCom rejects markdown content above 4096 bytes.
const WECOM_MAX_CONTENT: usize = 4000;

/// One collection mentioned in an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertItem {
    pub env: String,
    pub collection: String,
    pub status: String,
    /// Error text, or the age for staleness.
    pub detail: Option<String>,
}

/// Something worth telling a human about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub event: AlertEvent,
    /// What failed: `backup`, `check` or `forget` (the schedule's task).
    pub task: String,
    pub summary: String,
    pub schedule: Option<String>,
    pub run: Option<u64>,
    #[serde(skip)]
    pub time: SystemTime,
    pub items: Vec<AlertItem>,
}

impl Alert {
    pub fn title(&self) -> &'static str {
        match (self.event, self.task.as_str()) {
            (AlertEvent::Failure | AlertEvent::Partial, "check") => "scheduled check failed",
            (AlertEvent::Failure | AlertEvent::Partial, "forget") => "scheduled forget failed",
            (AlertEvent::Failure, _) => "backup failed",
            (AlertEvent::Partial, _) => "backup partially failed",
            (AlertEvent::Stale, _) => "backups are stale",
        }
    }

    /// The generic JSON payload.
    pub fn json_payload(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "tcb-backup",
            "event": self.event,
            "task": self.task,
            "title": self.title(),
            "summary": self.summary,
            "schedule": self.schedule,
            "run": self.run,
            "time": fmt_ms(to_ms(self.time)),
            "items": self.items,
        })
    }

    /// The WeCom group-robot payload (markdown message).
    pub fn wecom_payload(&self) -> serde_json::Value {
        let colour = match self.event {
            AlertEvent::Failure => "warning",
            AlertEvent::Partial | AlertEvent::Stale => "comment",
        };
        let mut content = format!(
            "**tcb-backup: <font color=\"{colour}\">{}</font>**\n> {}\n",
            self.title(),
            md_escape(&self.summary)
        );
        if let Some(s) = &self.schedule {
            content.push_str(&format!("> schedule: {}\n", md_escape(s)));
        }
        if let Some(r) = self.run {
            content.push_str(&format!("> run: {r}\n"));
        }
        content.push_str(&format!("> time: {}\n", fmt_ms(to_ms(self.time))));
        for (i, item) in self.items.iter().enumerate() {
            let line = format!(
                "- {}/{}: {}{}\n",
                md_escape(&item.env),
                md_escape(&item.collection),
                md_escape(&item.status),
                item.detail
                    .as_deref()
                    .map(|d| format!(" ({})", md_escape(d)))
                    .unwrap_or_default()
            );
            if content.len() + line.len() > WECOM_MAX_CONTENT {
                content.push_str(&format!("- … and {} more\n", self.items.len() - i));
                break;
            }
            content.push_str(&line);
        }
        serde_json::json!({ "msgtype": "markdown", "markdown": { "content": content } })
    }

    pub fn payload(&self, format: AlertFormat) -> serde_json::Value {
        match format {
            AlertFormat::Json => self.json_payload(),
            AlertFormat::Wecom => self.wecom_payload(),
        }
    }
}

/// Keeps error text from breaking the markdown layout (and long texts from drowning it).
fn md_escape(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = one_line.chars().take(300).collect();
    if one_line.chars().count() > 300 {
        out.push('…');
    }
    out.replace('<', "&lt;").replace('>', "&gt;")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("{what}: {detail} (after {attempts} attempts)")]
    Delivery {
        what: &'static str,
        detail: String,
        attempts: u32,
    },
}

/// Sends alerts and heartbeats over HTTP with a few quick retries.
#[derive(Clone)]
pub struct Notifier {
    settings: AlertSettings,
    http: reqwest::Client,
    attempts: u32,
    retry_delay: Duration,
}

impl Notifier {
    pub fn new(settings: AlertSettings) -> Result<Notifier, AlertError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| AlertError::Delivery {
                what: "alert client",
                detail: e.without_url().to_string(),
                attempts: 0,
            })?;
        Ok(Notifier {
            settings,
            http,
            attempts: 3,
            retry_delay: Duration::from_secs(2),
        })
    }

    /// Tests shorten the pause between attempts.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// Whether `event` alerts are configured at all.
    pub fn wants(&self, event: AlertEvent) -> bool {
        self.settings.webhook.is_some() && self.settings.on.contains(&event)
    }

    /// Posts the alert if its event is enabled. `Ok(false)`: not configured for it.
    pub async fn send(&self, alert: &Alert) -> Result<bool, AlertError> {
        let Some(url) = &self.settings.webhook else {
            return Ok(false);
        };
        if !self.settings.on.contains(&alert.event) {
            return Ok(false);
        }
        let payload = alert.payload(self.settings.format);
        let wecom = self.settings.format == AlertFormat::Wecom;
        self.deliver("alert webhook", url, Some(&payload), wecom)
            .await
            .map(|()| true)
    }

    /// Calls the heartbeat URL (GET). `Ok(false)`: none configured.
    pub async fn heartbeat(&self) -> Result<bool, AlertError> {
        let Some(url) = &self.settings.heartbeat else {
            return Ok(false);
        };
        self.deliver("heartbeat", url, None, false)
            .await
            .map(|()| true)
    }

    async fn deliver(
        &self,
        what: &'static str,
        url: &SecretUrl,
        payload: Option<&serde_json::Value>,
        wecom: bool,
    ) -> Result<(), AlertError> {
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            if attempt > 1 && !self.retry_delay.is_zero() {
                tokio::time::sleep(self.retry_delay).await;
            }
            let request = match payload {
                Some(p) => self.http.post(&url.0).json(p),
                None => self.http.get(&url.0),
            };
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    if !wecom {
                        return Ok(());
                    }
                    // The robot answers 200 with an errcode for bad keys or payloads.
                    match resp.json::<serde_json::Value>().await {
                        Ok(body) => match body.get("errcode").and_then(|c| c.as_i64()) {
                            Some(0) | None => return Ok(()),
                            Some(code) => {
                                let msg = body.get("errmsg").and_then(|m| m.as_str()).unwrap_or("");
                                last =
                                    format!("WeCom answered errcode {code}: {}", crate_redact(msg));
                                // A wrong key or payload does not get better by retrying.
                                break;
                            }
                        },
                        Err(e) => last = format!("unreadable answer: {}", e.without_url()),
                    }
                }
                Ok(resp) => last = format!("HTTP status {}", resp.status().as_u16()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(AlertError::Delivery {
            what,
            detail: last,
            attempts: self.attempts,
        })
    }
}

/// WeCom error messages can quote the request URL (with its key): cut anything URL-like.
fn crate_redact(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            if w.contains("key=") || w.starts_with("http") {
                "[redacted]"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
