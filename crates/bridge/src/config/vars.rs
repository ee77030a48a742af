//! Where the variables come from (the process environment over a `.env` file), the
//! project the metadata server tells, and the [`Reader`] every area reads them through.

use super::error::{ConfigError, Place, Problem};
use crate::gcp_metadata::{self, MetadataError};
use std::collections::HashMap;
use std::path::Path;

/// Where variables come from: the process environment over a `.env` file.
pub type Vars = HashMap<String, String>;

/// The process environment, over the `.env` file in `dir` if there is one. A variable
/// that is set but empty in the environment does not hide the `.env` file's value: the
/// image sets `GCP_PROJECT` from a build argument that may be empty.
pub fn load_vars(dir: &Path) -> Result<Vars, String> {
    let mut vars = Vars::new();
    let dotenv = dir.join(".env");
    if dotenv.is_file() {
        let entries =
            dotenvy::from_path_iter(&dotenv).map_err(|e| format!("{}: {e}", dotenv.display()))?;
        for entry in entries {
            let (key, value) = entry.map_err(|e| format!("{}: {e}", dotenv.display()))?;
            vars.insert(key, value);
        }
    }
    for (key, value) in std::env::vars() {
        if !value.trim().is_empty() || !vars.contains_key(&key) {
            vars.insert(key, value);
        }
    }
    Ok(vars)
}

/// Where the agent's project id comes from.
#[derive(Debug)]
pub enum ProjectLookup {
    /// `GCP_PROJECT` or `GOOGLE_CLOUD_PROJECT`.
    Configured,
    /// Neither is set; the metadata server told it (and it is now in the variables).
    FromMetadata,
    /// Neither is set, and the metadata server could not tell it.
    Failed(MetadataError),
}

/// Fills in the project from the metadata server when the variables name none, as on
/// Google Cloud with the Node sample's `.env`; says where the project comes from.
pub async fn complete_project(vars: &mut Vars) -> ProjectLookup {
    if project_of(vars).is_some() {
        return ProjectLookup::Configured;
    }
    let host = vars
        .get("GCE_METADATA_HOST")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .unwrap_or(gcp_metadata::DEFAULT_HOST);
    match gcp_metadata::project_id(host).await {
        Ok(project) => {
            vars.insert("GOOGLE_CLOUD_PROJECT".to_owned(), project);
            ProjectLookup::FromMetadata
        }
        Err(error) => ProjectLookup::Failed(error),
    }
}

/// The project named by the variables: `GCP_PROJECT`, else `GOOGLE_CLOUD_PROJECT`.
pub fn project_of(vars: &Vars) -> Option<&str> {
    ["GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"]
        .iter()
        .filter_map(|name| vars.get(*name))
        .map(|v| v.trim())
        .find(|v| !v.is_empty())
}

/// A Cloud Run service (`K_SERVICE`), or a Cloud Run job (`CLOUD_RUN_JOB`): a `check`
/// job reads the service's configuration with the service's defaults.
pub fn on_cloud_run(vars: &Vars) -> bool {
    ["K_SERVICE", "CLOUD_RUN_JOB"]
        .iter()
        .any(|name| vars.get(*name).is_some_and(|v| !v.trim().is_empty()))
}

/// Reads variables, each through one parser, and collects every problem instead of
/// stopping at the first. A blank variable is an unset one.
pub(super) struct Reader<'a> {
    pub vars: &'a Vars,
    pub errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub fn new(vars: &'a Vars) -> Self {
        Self {
            vars,
            errors: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn fail(&mut self, place: Place, problem: Problem) {
        self.errors.push(ConfigError::new(place, problem));
    }

    /// A problem with the variable `name`.
    pub fn fail_var(&mut self, name: &str, problem: Problem) {
        self.fail(Place::var(name), problem);
    }

    pub fn required(&mut self, name: &str) -> Option<&'a str> {
        let value = self.get(name);
        if value.is_none() {
            self.fail_var(name, Problem::missing());
        }
        value
    }

    /// The variable through `parse`, whose error says what the value must be; the value
    /// is shown with it.
    pub fn parsed<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parsed_with(name, parse, Problem::invalid)
    }

    /// As [`Reader::parsed`], its default when unset or invalid (an invalid value is
    /// still reported).
    pub fn parsed_or<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        default: T,
    ) -> T {
        self.parsed(name, parse).unwrap_or(default)
    }

    /// As [`Reader::parsed`], for a value that may hold a secret: never shown.
    pub fn parsed_secret<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parsed_with(name, parse, |expected, _| Problem::invalid_secret(expected))
    }

    /// The variable through `parse`; its error, with the raw value, made into the
    /// problem reported by `problem`.
    fn parsed_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        problem: impl FnOnce(String, &str) -> Problem,
    ) -> Option<T> {
        let raw = self.get(name)?;
        parse(raw)
            .map_err(|expected| self.fail_var(name, problem(expected, raw)))
            .ok()
    }

    /// A text that is its default when unset.
    pub fn text_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    /// Variables whose name starts with `prefix`, sorted, so that problems are listed
    /// in the same order every time.
    pub fn names_starting(&self, prefix: &str) -> Vec<&'a str> {
        let mut names: Vec<&'a str> = self
            .vars
            .keys()
            .map(String::as_str)
            .filter(|name| name.starts_with(prefix))
            .collect();
        names.sort_unstable();
        names
    }
}
