//! Snapshots written straight to disk for the tests of what reads them (check, retention,
//! copies): the data file through the real archive writer and its manifest, as a backup would
//! leave them, without running a backup.

use std::path::Path;

use bytes::Bytes;
use tcb_backup::archive::{write_snapshot, ArchiveOptions};
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::manifest::{write_manifest, Manifest, SnapshotInfo};
use tcb_backup::naming::snapshot_paths;
use time::OffsetDateTime;

/// Stores `body` (JSON lines) as snapshot `job` of prod/`collection` (app wx1) made `at`,
/// under `root`; returns its catalog entry.
pub async fn store_snapshot(
    root: &Path,
    collection: &str,
    job: u64,
    at: OffsetDateTime,
    body: String,
) -> CatalogEntry {
    let paths = snapshot_paths(root, "prod", collection, at, job).unwrap();
    let summary = write_snapshot(
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(body))]),
        &paths,
        ArchiveOptions::default(),
    )
    .await
    .unwrap();
    let m = Manifest::for_snapshot(
        SnapshotInfo {
            appid: "wx1".into(),
            env: "prod".into(),
            collection: collection.into(),
            query: String::new(),
            file_type: Default::default(),
            export_job_id: job,
            started_at: at,
            export_ready_at: None,
            export_created_at: None,
        },
        &summary,
        &paths,
        at,
    );
    write_manifest(&paths.manifest, &m).unwrap();
    CatalogEntry::new(m, &paths.manifest)
}
