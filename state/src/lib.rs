//! tcb-state: a durable workflow engine on sled. It knows nothing of WeChat or backups.
