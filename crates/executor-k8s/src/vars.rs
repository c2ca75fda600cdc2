//! The job's variables as the builder sees them: predefined runner variables, the runner's
//! `environment` and the job's own variables (last one wins), with `$VAR`/`${VAR}` expansion,
//! the container environment and feature flags.

use k8s_openapi::api::core::v1::EnvVar;
use podrunner_config::{RunnerConfig, upstream::FeatureFlag, values::parse_go_bool};
use podrunner_coordinator::wire::JobVariable;
use secrecy::ExposeSecret;

/// One variable, after file variables were turned into their path.
#[derive(Debug, Clone)]
pub(crate) struct Var {
    pub(crate) key: String,
    pub(crate) value: String,
    /// Public (GitLab's flag) or internal (made by the runner): may go into the pod spec.
    pub(crate) exposable: bool,
    pub(crate) masked: bool,
    /// The content of a file variable (its `value` is then the file's path).
    pub(crate) file_content: Option<String>,
}

/// An ordered, deduplicated variable set. A job has at most a few hundred variables (GitLab's
/// predefined ones included), so a linear scan, mostly failing on the length, costs less than
/// hashing every key and cloning it into an index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Variables {
    list: Vec<Var>,
}

impl Variables {
    /// An empty set with room for `capacity` variables (one allocation for the whole job).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { list: Vec::with_capacity(capacity) }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.list.iter().position(|v| v.key == key)
    }

    pub(crate) fn push(&mut self, var: Var) {
        match self.position(&var.key) {
            Some(i) => self.list[i] = var,
            None => self.list.push(var),
        }
    }

    /// An internal variable made by the runner.
    pub(crate) fn internal(&mut self, key: &str, value: impl Into<String>) {
        self.push(Var {
            key: key.to_owned(),
            value: value.into(),
            exposable: true,
            masked: false,
            file_content: None,
        });
    }

    /// A variable sent by GitLab. File variables become the path of their file in `file_dir`.
    pub(crate) fn job(&mut self, v: &JobVariable, file_dir: &str) {
        let value = if v.file {
            format!("{file_dir}/{}", v.key)
        } else {
            v.value.expose_secret().to_owned()
        };
        self.push(Var {
            key: v.key.clone(),
            value,
            exposable: v.public && !v.masked,
            masked: v.masked,
            file_content: v.file.then(|| v.value.expose_secret().to_owned()),
        });
    }

    /// `KEY=VALUE` entries of the runner's `environment` (internal variables).
    pub(crate) fn environment(&mut self, entries: &[String]) {
        for entry in entries {
            if let Some((k, v)) = entry.split_once('=') {
                self.internal(k, v);
            }
        }
    }

    /// The value of a variable that may be used for expansion (masked ones never are).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        let var = &self.list[self.position(key)?];
        (!var.masked).then_some(var.value.as_str())
    }

    /// Every variable, in order, for the job's scripts (masked ones included: scripts reach the
    /// pod through an exec's stdin, never through its spec).
    pub(crate) fn script_variables(&self) -> Vec<crate::ScriptVariable> {
        self.list
            .iter()
            .map(|v| crate::ScriptVariable {
                key: v.key.clone(),
                value: v.value.clone(),
                file_content: v.file_content.clone(),
            })
            .collect()
    }

    /// Variables whose key starts with `prefix`, in order.
    pub(crate) fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Var> + 'a {
        self.list.iter().filter(move |v| v.key.starts_with(prefix) && !v.masked)
    }

    /// Expands `$VAR` and `${VAR}` (unknown and masked variables expand to nothing), as Go's
    /// `os.Expand` does.
    pub(crate) fn expand(&self, text: &str) -> String {
        podrunner_config::expand::expand_variables(text, |name| self.get(name))
    }

    /// The container environment: exposable variables only, `$` escaped as `$$` so Kubernetes
    /// does not expand `$(VAR)` references.
    pub(crate) fn env(&self) -> Vec<EnvVar> {
        self.list
            .iter()
            .filter(|v| v.exposable)
            .map(|v| EnvVar {
                name: v.key.clone(),
                value: Some(v.value.replace('$', "$$")),
                value_from: None,
            })
            .collect()
    }

    /// A feature flag: the runner's `[runners.feature_flags]` first, then the variables, then
    /// the flag's default. Values parse as Go's `strconv.ParseBool`; an unparsable value keeps the
    /// default.
    pub(crate) fn feature_flag(&self, runner: &RunnerConfig, flag: &FeatureFlag) -> bool {
        if let Some(v) = runner.raw.feature_flags.get(flag.name) {
            return *v;
        }
        self.get(flag.name).and_then(parse_go_bool).unwrap_or(flag.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        let mut v = Variables::default();
        for (k, val) in pairs {
            v.internal(k, *val);
        }
        v
    }

    #[test]
    fn expansion_follows_go_os_expand() {
        let v = vars(&[("A", "x"), ("CI_CONCURRENT_ID", "54")]);
        assert_eq!(v.expand("PVC-${CI_CONCURRENT_ID}"), "PVC-54");
        assert_eq!(v.expand("$A/$B/end"), "x//end");
        assert_eq!(v.expand("cost: 5$"), "cost: 5$");
        assert_eq!(v.expand("a $ b"), "a $ b");
        assert_eq!(v.expand("${A}${A}"), "xx");
        assert_eq!(v.expand("no vars"), "no vars");
    }

    // upstream: util_test TestBuildVariables (dedup, the last one wins)
    #[test]
    fn duplicate_variables_keep_the_last_value() {
        let v = vars(&[("A", "1"), ("B", "2"), ("A", "3")]);
        let env = v.env();
        assert_eq!(env.len(), 2);
        assert_eq!(env[0].value.as_deref(), Some("3"));
    }

    // upstream: util_test TestBuildVariablesDollarEscaping
    #[test]
    fn dollars_are_escaped_in_the_environment() {
        let v = vars(&[("A", "$FOO"), ("B", "$$")]);
        let env = v.env();
        assert_eq!(env[0].value.as_deref(), Some("$$FOO"));
        assert_eq!(env[1].value.as_deref(), Some("$$$$"));
    }
}
