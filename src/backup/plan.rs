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

    /// Checks a command-line selection against the configuration before anything runs (and
    /// before any secret is fetched). An unknown env, or `--collection` names none of which
    /// any selected env lists, is an error naming what is configured. Names that match nothing
    /// while others match come back as warnings: the run goes ahead without them. Envs that
    /// discover their collections cannot be checked here; [`BackupPlan::unmatched`] reports
    /// on them once the run has listed their collections.
    pub fn check_selection(&self, selection: &RunSelection) -> Result<Vec<String>, String> {
        let envs = self.envs(selection)?;
        if selection.collections.is_empty() || envs.iter().any(|(_, e)| e.needs_discovery()) {
            return Ok(Vec::new());
        }
        let configured: BTreeSet<&str> = envs
            .iter()
            .flat_map(|(_, e)| match &e.collections {
                CollectionSelection::Explicit(names) => names.as_slice(),
                CollectionSelection::Discover { .. } => &[],
            })
            .map(String::as_str)
            .collect();
        let unknown: Vec<&str> = selection
            .collections
            .iter()
            .map(String::as_str)
            .filter(|c| !configured.contains(c))
            .collect();
        let listed = || configured.iter().copied().collect::<Vec<_>>().join(", ");
        if unknown.len() == selection.collections.len() {
            return Err(format!(
                "--collection {} matches no configured collection of the selected env(s) (configured: {})",
                unknown.join(", "),
                listed()
            ));
        }
        Ok(unknown
            .iter()
            .map(|c| {
                format!(
                    "--collection {c} matches no configured collection of the selected env(s) (configured: {}); skipped",
                    listed()
                )
            })
            .collect())
    }

    /// The `--collection` names that none of `specs` (what a run resolved) backs up.
    pub fn unmatched<'a>(selection: &'a RunSelection, specs: &[CollectionSpec]) -> Vec<&'a str> {
        selection
            .collections
            .iter()
            .map(String::as_str)
            .filter(|c| !specs.iter().any(|s| s.target.collection == *c))
            .collect()
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

    fn two_envs() -> BackupPlan {
        let mut test = env(CollectionSelection::Explicit(vec!["users".into()]));
        test.id = "test".into();
        BackupPlan {
            apps: vec![PlanApp {
                appid: "wx".into(),
                envs: vec![
                    env(CollectionSelection::Explicit(vec![
                        "orders".into(),
                        "users".into(),
                    ])),
                    test,
                ],
            }],
        }
    }

    fn sel(envs: &[&str], collections: &[&str]) -> RunSelection {
        RunSelection {
            envs: envs.iter().map(|s| s.to_string()).collect(),
            collections: collections.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn selection_check_names_what_is_configured() {
        let plan = two_envs();
        let err = plan.check_selection(&sel(&["nope"], &[])).unwrap_err();
        assert!(
            err.contains("\"nope\"") && err.contains("prod, test"),
            "{err}"
        );
        assert_eq!(plan.check_selection(&sel(&[], &["orders"])), Ok(vec![]));
        // Every name unknown (in the selected envs) is an error...
        let err = plan
            .check_selection(&sel(&["test"], &["orders"]))
            .unwrap_err();
        assert!(
            err.contains("--collection orders") && err.contains("configured: users"),
            "{err}"
        );
        // ...some unknown is a warning naming each.
        let warnings = plan
            .check_selection(&sel(&[], &["users", "ordres"]))
            .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("--collection ordres"), "{warnings:?}");
    }

    #[test]
    fn discovering_envs_are_checked_after_listing() {
        let mut plan = two_envs();
        plan.apps[0].envs[1].collections = CollectionSelection::Discover {
            include: vec![],
            exclude: vec![],
        };
        // Cannot be known before listing: no error, no warning yet.
        assert_eq!(plan.check_selection(&sel(&[], &["zzz"])), Ok(vec![]));
        let selection = sel(&[], &["orders", "zzz"]);
        let specs = vec![plan.apps[0].envs[0].spec("wx", "orders")];
        assert_eq!(BackupPlan::unmatched(&selection, &specs), vec!["zzz"]);
    }
}
