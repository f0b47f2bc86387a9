//! Which collections a run backs up: the configured apps/envs/collections, narrowed by the
//! command line, with discovery through the API for envs configured that way.

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::manifest::ExportFileType;
use crate::naming;

use super::progress::Target;
use super::state::{CollectionSpec, RunSelection};

/// How an env's collections are chosen.
#[derive(Debug, Clone)]
pub enum CollectionSelection {
    /// Exactly these collection names.
    Explicit(Vec<String>),
    /// Every collection the API lists, filtered by globs (empty include = everything).
    Discover {
        include: Vec<String>,
        exclude: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct PlanEnv {
    pub id: String,
    pub collections: CollectionSelection,
    /// Query overrides per collection name (default `db.collection("NAME").get()`).
    pub queries: BTreeMap<String, String>,
    /// Fields to export when no query override is set (empty = every field).
    pub fields: Vec<String>,
    pub file_type: ExportFileType,
    pub record_collection: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PlanApp {
    pub appid: String,
    pub envs: Vec<PlanEnv>,
}

/// The configured backup scope.
#[derive(Debug, Clone, Default)]
pub struct BackupPlan {
    pub apps: Vec<PlanApp>,
}

/// The query backing up a whole collection (restricted to `fields` when not empty).
pub fn default_query(collection: &str, fields: &[String]) -> String {
    // JSON string escaping is valid JavaScript string escaping; names are validated anyway.
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut query = format!("db.collection({})", quote(collection));
    if !fields.is_empty() {
        let fields: Vec<String> = fields
            .iter()
            .map(|f| format!("{}:true", quote(f)))
            .collect();
        query.push_str(&format!(".field({{{}}})", fields.join(",")));
    }
    query.push_str(".get()");
    query
}

pub(crate) fn globset(patterns: &[String]) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| format!("invalid glob {p:?}: {e}"))?);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("invalid globs: {e}"))
}

impl PlanEnv {
    /// Applies the env's selection to `available` (the discovered names, for Discover envs).
    pub fn select(&self, available: Option<&[String]>) -> Result<Vec<String>, String> {
        match &self.collections {
            CollectionSelection::Explicit(names) => Ok(names.clone()),
            CollectionSelection::Discover { include, exclude } => {
                let include = globset(include)?;
                let exclude = globset(exclude)?;
                let mut out: Vec<String> = available
                    .unwrap_or(&[])
                    .iter()
                    .filter(|n| {
                        include
                            .as_ref()
                            .map(|g| g.is_match(n.as_str()))
                            .unwrap_or(true)
                    })
                    .filter(|n| {
                        !exclude
                            .as_ref()
                            .map(|g| g.is_match(n.as_str()))
                            .unwrap_or(false)
                    })
                    .cloned()
                    .collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
        }
    }

    pub fn spec(&self, appid: &str, collection: &str) -> CollectionSpec {
        CollectionSpec {
            target: Target {
                appid: appid.to_string(),
                env: self.id.clone(),
                collection: collection.to_string(),
            },
            query: self
                .queries
                .get(collection)
                .cloned()
                .unwrap_or_else(|| default_query(collection, &self.fields)),
            file_type: self.file_type,
            record_collection: self.record_collection.clone(),
        }
    }

    pub fn needs_discovery(&self) -> bool {
        matches!(self.collections, CollectionSelection::Discover { .. })
    }
}

impl BackupPlan {
    /// The (app, env) pairs a selection covers. Unknown env names in the selection are an error.
    pub fn envs<'a>(
        &'a self,
        selection: &RunSelection,
    ) -> Result<Vec<(&'a PlanApp, &'a PlanEnv)>, String> {
        let known: BTreeSet<&str> = self
            .apps
            .iter()
            .flat_map(|a| a.envs.iter().map(|e| e.id.as_str()))
            .collect();
        for env in &selection.envs {
            if !known.contains(env.as_str()) {
                return Err(format!(
                    "env {env:?} is not in the configuration (configured: {})",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(self
            .apps
            .iter()
            .flat_map(|a| a.envs.iter().map(move |e| (a, e)))
            .filter(|(_, e)| selection.envs.is_empty() || selection.envs.contains(&e.id))
            .collect())
    }

    /// Narrows an env's selected collection names by the run's `--collection` filter and
    /// validates them.
    pub fn finish(
        app: &PlanApp,
        env: &PlanEnv,
        names: Vec<String>,
        selection: &RunSelection,
        problems: &mut Vec<String>,
    ) -> Vec<CollectionSpec> {
        let mut out = Vec::new();
        for name in names {
            if !selection.collections.is_empty() && !selection.collections.contains(&name) {
                continue;
            }
            if let Err(e) = naming::validate_collection_name(&name) {
                problems.push(format!("env {}: skipped: {e}", env.id));
                continue;
            }
            out.push(env.spec(&app.appid, &name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(sel: CollectionSelection) -> PlanEnv {
        PlanEnv {
            id: "prod".into(),
            collections: sel,
            queries: BTreeMap::from([(
                "orders".to_string(),
                "db.collection(\"orders\").where({a:1}).get()".to_string(),
            )]),
            fields: vec![],
            file_type: ExportFileType::Json,
            record_collection: None,
        }
    }

    #[test]
    fn discovery_applies_include_and_exclude_globs() {
        let e = env(CollectionSelection::Discover {
            include: vec!["o*".into(), "users".into()],
            exclude: vec!["*_tmp".into()],
        });
        let available: Vec<String> = ["orders", "orders_tmp", "users", "logs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(e.select(Some(&available)).unwrap(), vec!["orders", "users"]);
    }

    #[test]
    fn queries_default_and_override() {
        let e = env(CollectionSelection::Explicit(vec![
            "orders".into(),
            "users".into(),
        ]));
        assert!(e.spec("wx", "orders").query.contains("where"));
        assert_eq!(
            e.spec("wx", "users").query,
            "db.collection(\"users\").get()"
        );
    }

    #[test]
    fn unknown_env_is_refused_and_bad_names_skipped() {
        let plan = BackupPlan {
            apps: vec![PlanApp {
                appid: "wx".into(),
                envs: vec![env(CollectionSelection::Explicit(vec![]))],
            }],
        };
        let sel = RunSelection {
            envs: vec!["nope".into()],
            collections: vec![],
        };
        assert!(plan.envs(&sel).unwrap_err().contains("nope"));
        let mut problems = vec![];
        let app = &plan.apps[0];
        let specs = BackupPlan::finish(
            app,
            &app.envs[0],
            vec!["ok".into(), "../evil".into()],
            &RunSelection {
                envs: vec![],
                collections: vec![],
            },
            &mut problems,
        );
        assert_eq!(specs.len(), 1);
        assert_eq!(problems.len(), 1);
    }
}
