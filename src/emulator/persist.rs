//! Optional persistence of the standalone emulator (`--data DIR`): collections as JSON Lines
//! under `DIR/db/<env>/<collection>.jsonl`, the storage index as `DIR/storage.json` (blobs stay
//! in `DIR/blobs`). Saved on shutdown, loaded at start.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::storage::StoredFile;
use super::world::Core;

pub fn save(core: &Core, dir: &Path) -> Result<(), String> {
    let w = core.world();
    let db = dir.join("db");
    let mut index: BTreeMap<String, BTreeMap<String, (PathBuf, u64)>> = BTreeMap::new();
    for (env, state) in &w.envs {
        let env_dir = db.join(hex::encode(env));
        std::fs::create_dir_all(&env_dir).map_err(|e| e.to_string())?;
        for (name, coll) in &state.collections {
            if coll.synthetic_spec().is_some() {
                // Regenerated from the seed at start.
                continue;
            }
            let path = env_dir.join(format!("{}.jsonl", hex::encode(name)));
            let tmp = path.with_extension("tmp");
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
            for doc in coll.iter() {
                serde_json::to_writer(&mut out, &*doc).map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
            }
            out.flush().map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        }
        let files = state
            .files
            .iter()
            .map(|(p, f)| (p.clone(), (f.blob.clone(), f.size)))
            .collect();
        index.insert(env.clone(), files);
    }
    let text = serde_json::to_string_pretty(&index).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("storage.json"), text).map_err(|e| e.to_string())
}

pub fn load(core: &Core, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut w = core.world();
    let db = dir.join("db");
    let env_ids: Vec<String> = w.envs.keys().cloned().collect();
    for env in env_ids {
        let env_dir = db.join(hex::encode(&env));
        let Ok(entries) = std::fs::read_dir(&env_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            let Some(name) = hex::decode(stem)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let Some(state) = w.envs.get_mut(&env) else {
                continue;
            };
            let coll = state.collections.entry(name).or_default();
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let doc = serde_json::from_str(&line)
                    .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
                coll.put(doc)
                    .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
            }
        }
    }
    let index_path = dir.join("storage.json");
    if let Ok(text) = std::fs::read_to_string(&index_path) {
        let index: BTreeMap<String, BTreeMap<String, (PathBuf, u64)>> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index_path.display()))?;
        for (env, files) in index {
            if let Some(state) = w.envs.get_mut(&env) {
                for (p, (blob, size)) in files {
                    if blob.exists() {
                        state.files.insert(p, StoredFile { blob, size });
                    }
                }
            }
        }
    }
    Ok(())
}
