//! The job's stage scripts: what runs in the pod for `get_sources`, each step, `after_script`
//! and the file-variable cleanup.
//!
//! Scripts are POSIX shell, so the same text runs under bash (upstream's default for
//! Kubernetes) and any `sh`. As upstream's shell writer: every variable is exported (file
//! variables written to files under `<project>.tmp`), `$GITLAB_ENV` lines of earlier stages
//! are re-exported, each user command is echoed in bold green as `$ command` before it runs,
//! and the first failing command ends the script with its exit status. Pure: no I/O.

use std::fmt::Write as _;

use podrunner_coordinator::Section;
use podrunner_coordinator::wire::{Job, StepName};

use crate::{JobLayout, ScriptVariable};

/// The stages this executor runs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Fetch and check out the repository (helper).
    GetSources,
    /// The job's `script` (build).
    StepScript,
    /// The job's `after_script` (build).
    AfterScript,
    /// Download and extract the cache (runner and helper: no script).
    RestoreCache,
    /// Download and extract the dependencies' artifacts (runner and helper: no script).
    DownloadArtifacts,
    /// Collect and upload the cache of a successful job (runner and helper: no script).
    ArchiveCache,
    /// Collect and upload the cache of a failed job (runner and helper: no script).
    ArchiveCacheOnFailure,
    /// Collect and upload the artifacts of a successful job (runner and helper: no script).
    UploadArtifactsOnSuccess,
    /// Collect and upload the artifacts of a failed job (runner and helper: no script).
    UploadArtifactsOnFailure,
    /// Remove file variables and the runner's state files (helper).
    CleanupFileVariables,
}

impl Stage {
    /// The job-log section of the stage (its name and header).
    pub fn section(self) -> Section {
        match self {
            Self::GetSources => Section::GetSources,
            Self::StepScript => Section::StepScript,
            Self::AfterScript => Section::AfterScript,
            Self::RestoreCache => Section::RestoreCache,
            Self::DownloadArtifacts => Section::DownloadArtifacts,
            Self::ArchiveCache => Section::ArchiveCache,
            Self::ArchiveCacheOnFailure => Section::ArchiveCacheOnFailure,
            Self::UploadArtifactsOnSuccess => Section::UploadArtifactsOnSuccess,
            Self::UploadArtifactsOnFailure => Section::UploadArtifactsOnFailure,
            Self::CleanupFileVariables => Section::CleanupFileVariables,
        }
    }

    /// The stage's name: its section name and its file names in the pod.
    pub fn name(self) -> &'static str {
        self.section().name()
    }

    /// Whether the runner moves files for the stage ([`crate::transfer`]) instead of running a
    /// script.
    pub fn is_transfer(self) -> bool {
        matches!(
            self,
            Self::RestoreCache
                | Self::DownloadArtifacts
                | Self::ArchiveCache
                | Self::ArchiveCacheOnFailure
                | Self::UploadArtifactsOnSuccess
                | Self::UploadArtifactsOnFailure
        )
    }

    /// The container the stage runs in.
    pub fn container(self) -> &'static str {
        match self {
            Self::GetSources
            | Self::RestoreCache
            | Self::DownloadArtifacts
            | Self::ArchiveCache
            | Self::ArchiveCacheOnFailure
            | Self::UploadArtifactsOnSuccess
            | Self::UploadArtifactsOnFailure
            | Self::CleanupFileVariables => "helper",
            Self::StepScript | Self::AfterScript => "build",
        }
    }
}

/// Quotes `value` for a POSIX shell: bare when it has only safe characters, else in single
/// quotes (a `'` inside becomes `'\''`).
pub fn quote(value: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b",-./@_:=+%".contains(&b);
    if !value.is_empty() && value.bytes().all(safe) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A line that prints `text` in bold green (upstream's `Infoln` colours).
fn notice(out: &mut String, text: &str) {
    let _ = writeln!(out, "printf '\\033[32;1m%s\\033[0;m\\n' {}", quote(text));
}

/// A line that prints `text` in yellow (upstream's script warnings).
fn warning(out: &mut String, text: &str) {
    let _ = writeln!(out, "printf '\\033[0;33m%s\\033[0;m\\n' {}", quote(text));
}

/// The shell options upstream sets: TERM ends the script with 1, errexit, pipefail where the
/// shell has it, no noclobber.
fn preamble(out: &mut String) {
    out.push_str("trap 'exit 1' TERM\n");
    out.push_str("case \"$(set -o)\" in *pipefail*) set -o pipefail ;; esac\n");
    out.push_str("set -o errexit\nset +o noclobber\n");
}

/// Exports every variable, writes file variables, and re-exports `$GITLAB_ENV`. Creates the
/// `.tmp` directory only where it is missing (a build container's seccomp profile may deny
/// `mkdir`; `get_sources` creates it in the helper first).
fn exports(out: &mut String, layout: &JobLayout, extra: &[(&str, &str)]) {
    let tmp = layout.tmp_dir();
    let qtmp = quote(&tmp);
    let _ = writeln!(out, "[ -d {qtmp} ] || mkdir -p {qtmp}");
    for ScriptVariable { key, value, file_content } in &layout.variables {
        if !is_shell_name(key) {
            continue;
        }
        if let Some(content) = file_content {
            let _ = writeln!(out, "printf '%s' {} > {}", quote(content), quote(value));
        }
        let _ = writeln!(out, "export {key}={}", quote(value));
    }
    for (key, value) in extra {
        let _ = writeln!(out, "export {key}={}", quote(value));
    }
    let env_file = quote(&format!("{tmp}/gitlab_runner_env"));
    let _ = writeln!(out, "export GITLAB_ENV={env_file}");
    let _ = writeln!(out, "[ -f {env_file} ] || : > {env_file}");
    let _ = writeln!(out, "while read -r line; do export \"$line\"; done < {env_file}");
}

/// Whether `key` can be exported by a POSIX shell.
fn is_shell_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Echoes and runs each command as upstream's `writeCommands`: an empty command prints an empty
/// line; a multi-line one is echoed by its first line with `# collapsed multi-line command`.
fn commands(out: &mut String, lines: &[String]) {
    for command in lines {
        let command = command.trim();
        if command.is_empty() {
            out.push_str("echo\n");
            continue;
        }
        match command.split_once('\n') {
            None => notice(out, &format!("$ {command}")),
            Some((first, _)) => notice(out, &format!("$ {first} # collapsed multi-line command")),
        }
        out.push_str(command);
        out.push('\n');
    }
}

fn config_script_lines(script: Option<&String>) -> Vec<String> {
    script.filter(|s| !s.trim().is_empty()).map(|s| vec![s.clone()]).unwrap_or_default()
}

/// What a stage script needs beside the job and its layout.
#[derive(Debug, Clone, Default)]
pub struct ScriptOptions {
    /// `[[runners]] pre_build_script`.
    pub pre_build_script: Option<String>,
    /// `[[runners]] post_build_script`.
    pub post_build_script: Option<String>,
    /// `CI_JOB_STATUS` for `after_script`: `success`, `failed`, `canceled` or `timedout`.
    pub job_status: String,
}

/// The script of `stage`, or `None` when the stage has nothing to do (the job has no
/// `after_script`): upstream then prints nothing for it.
pub fn stage_script(
    stage: Stage,
    job: &Job,
    layout: &JobLayout,
    options: &ScriptOptions,
) -> Option<String> {
    let mut out = String::with_capacity(4096);
    preamble(&mut out);
    let project = quote(&layout.project_dir);
    match stage {
        Stage::GetSources => {
            exports(&mut out, layout, &[]);
            get_sources(&mut out, job, layout);
        }
        Stage::StepScript => {
            let step = job.step(&StepName::Script)?;
            exports(&mut out, layout, &[]);
            let _ = writeln!(out, "cd {project}");
            commands(&mut out, &config_script_lines(options.pre_build_script.as_ref()));
            commands(&mut out, &step.script);
            commands(&mut out, &config_script_lines(options.post_build_script.as_ref()));
        }
        Stage::AfterScript => {
            let step = job.step(&StepName::AfterScript).filter(|s| !s.script.is_empty())?;
            exports(&mut out, layout, &[("CI_JOB_STATUS", options.job_status.as_str())]);
            let _ = writeln!(out, "cd {project}");
            notice(&mut out, "Running after script...");
            commands(&mut out, &step.script);
        }
        Stage::RestoreCache
        | Stage::DownloadArtifacts
        | Stage::ArchiveCache
        | Stage::ArchiveCacheOnFailure
        | Stage::UploadArtifactsOnSuccess
        | Stage::UploadArtifactsOnFailure => return None,
        Stage::CleanupFileVariables => {
            let tmp = layout.tmp_dir();
            let mut files = vec![format!("{tmp}/gitlab_runner_env")];
            files.extend(
                layout
                    .variables
                    .iter()
                    .filter(|v| v.file_content.is_some())
                    .map(|v| v.value.clone()),
            );
            for file in files {
                let _ = writeln!(out, "rm -f {}", quote(&file));
            }
        }
    }
    Some(out)
}

/// The `GIT_STRATEGY` of the job: `fetch` (the default), `clone`, `none` or `empty`.
fn git_strategy(layout: &JobLayout) -> &str {
    match layout.variables.iter().rev().find(|v| v.key == "GIT_STRATEGY") {
        Some(v) if matches!(v.value.as_str(), "clone" | "none" | "empty" | "fetch") => &v.value,
        _ => "fetch",
    }
}

fn get_sources(out: &mut String, job: &Job, layout: &JobLayout) {
    let project = quote(&layout.project_dir);
    let strategy = git_strategy(layout);
    if matches!(strategy, "none" | "empty") {
        if strategy == "none" {
            notice(out, "Skipping Git repository setup");
        } else {
            notice(out, "Skipping Git repository setup and creating an empty build directory");
            let _ = writeln!(out, "rm -rf {project}");
        }
        let _ = writeln!(out, "mkdir -p {project}");
        notice(out, "Skipping Git checkout");
        notice(out, "Skipping Git submodules setup");
        return;
    }
    let git = &job.git_info;
    let depth = git.depth;
    if depth > 0 {
        notice(out, &format!("Fetching changes with git depth set to {depth}..."));
    } else {
        notice(out, "Fetching changes...");
    }
    if strategy == "clone" {
        let _ = writeln!(out, "rm -rf {project}");
    }
    let _ = writeln!(out, "created=; [ -d {project}/.git ] || created=1");
    // An empty template directory of our own, as upstream uses: no hooks from the image, and
    // no warning where the image has no git templates.
    let template = quote(&format!("{}/git-template", layout.tmp_dir()));
    let _ = writeln!(out, "[ -d {template} ] || mkdir -p {template}");
    let _ = writeln!(out, "git -c init.defaultBranch=main init --template={template} {project}");
    let _ = writeln!(out, "cd {project}");
    let _ = writeln!(out, "[ -z \"$created\" ] || echo 'Created fresh repository.'");
    let url = quote(&git.repo_url);
    let _ =
        writeln!(out, "git remote set-url origin {url} 2>/dev/null || git remote add origin {url}");
    let mut fetch = String::from("git fetch origin --no-recurse-submodules");
    let refspecs: Vec<String> = if git.refspecs.is_empty() {
        vec![format!("+{}:refs/pipelines/job", git.sha)]
    } else {
        git.refspecs.clone()
    };
    for refspec in &refspecs {
        fetch.push(' ');
        fetch.push_str(&quote(refspec));
    }
    if depth > 0 {
        let _ = write!(fetch, " --depth {depth}");
    }
    out.push_str(&fetch);
    out.push('\n');
    let short = git.sha.get(..8).unwrap_or(&git.sha);
    notice(out, &format!("Checking out {short} as detached HEAD (ref is {})...", git.ref_name));
    let _ = writeln!(out, "git -c submodule.recurse=false checkout -f -q {}", quote(&git.sha));
    out.push_str("git clean -ffdx\n");
    out.push_str("echo\n");
    notice(out, "Skipping Git submodules setup");
    if git.sha.is_empty() {
        warning(out, "GitLab sent no commit SHA");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(vars: &[(&str, &str, Option<&str>)]) -> JobLayout {
        JobLayout {
            scripts_dir: "/scripts-1-2".to_owned(),
            logs_dir: "/logs-1-2".to_owned(),
            builds_dir: "/builds".to_owned(),
            project_dir: "/builds/group/project".to_owned(),
            build_image: "busybox".to_owned(),
            variables: vars
                .iter()
                .map(|(k, v, f)| ScriptVariable {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                    file_content: f.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn job(script: &[&str], after: &[&str]) -> Job {
        let steps = serde_json::json!([
            {"name": "script", "script": script, "timeout": 3600, "when": "on_success"},
            {"name": "after_script", "script": after, "timeout": 3600, "when": "always"},
        ]);
        serde_json::from_value(serde_json::json!({
            "id": 2, "token": "t", "steps": steps,
            "git_info": {"repo_url": "http://gitlab-ci-token:t@localhost/g/p.git", "sha": "0123456789abcdef",
                         "ref": "main", "depth": 20, "refspecs": ["+refs/heads/main:refs/remotes/origin/main"]}
        }))
        .expect("job")
    }

    #[test]
    fn quoting_keeps_safe_words_bare_and_single_quotes_the_rest() {
        assert_eq!(quote("abc/d.e-f_1"), "abc/d.e-f_1");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $HOME"), "'it'\\''s $HOME'");
    }

    #[test]
    fn step_script_echoes_each_command_in_green_and_runs_it_verbatim() {
        let script = stage_script(
            Stage::StepScript,
            &job(&["echo hi", "", "for i in 1 2\ndo echo $i; done"], &[]),
            &layout(&[("A", "x y", None)]),
            &ScriptOptions::default(),
        )
        .expect("script");
        assert!(script.contains("export A='x y'\n"), "{script}");
        assert!(script.contains("cd /builds/group/project\n"));
        assert!(script.contains("printf '\\033[32;1m%s\\033[0;m\\n' '$ echo hi'\necho hi\n"));
        assert!(script.contains("echo\n"));
        assert!(script.contains(
            "'$ for i in 1 2 # collapsed multi-line command'\nfor i in 1 2\ndo echo $i; done\n"
        ));
        assert!(script.contains("set -o errexit\n"));
    }

    #[test]
    fn file_variables_are_written_before_they_are_exported() {
        let script = stage_script(
            Stage::StepScript,
            &job(&["cat $F"], &[]),
            &layout(&[("F", "/builds/group/project.tmp/F", Some("line 1\nit's"))]),
            &ScriptOptions::default(),
        )
        .expect("script");
        assert!(script.contains(
            "printf '%s' 'line 1\nit'\\''s' > /builds/group/project.tmp/F\nexport F=/builds/group/project.tmp/F\n"
        ));
    }

    #[test]
    fn after_script_is_skipped_without_commands_and_sees_the_job_status() {
        let options = ScriptOptions { job_status: "failed".to_owned(), ..ScriptOptions::default() };
        assert!(
            stage_script(Stage::AfterScript, &job(&["x"], &[]), &layout(&[]), &options).is_none()
        );
        let script =
            stage_script(Stage::AfterScript, &job(&["x"], &["echo done"]), &layout(&[]), &options)
                .expect("script");
        assert!(script.contains("export CI_JOB_STATUS=failed\n"));
        assert!(script.contains("'Running after script...'"));
    }

    #[test]
    fn get_sources_fetches_the_refspecs_at_the_depth_and_checks_out_the_sha() {
        let script = stage_script(
            Stage::GetSources,
            &job(&[], &[]),
            &layout(&[]),
            &ScriptOptions::default(),
        )
        .expect("script");
        assert!(script.contains("'Fetching changes with git depth set to 20...'"));
        assert!(script.contains(
            "git fetch origin --no-recurse-submodules +refs/heads/main:refs/remotes/origin/main --depth 20\n"
        ));
        assert!(script.contains("'Checking out 01234567 as detached HEAD (ref is main)...'"));
        assert!(script.contains("checkout -f -q 0123456789abcdef\n"));
    }

    #[test]
    fn git_strategy_none_skips_the_repository() {
        let script = stage_script(
            Stage::GetSources,
            &job(&[], &[]),
            &layout(&[("GIT_STRATEGY", "none", None)]),
            &ScriptOptions::default(),
        )
        .expect("script");
        assert!(script.contains("'Skipping Git repository setup'"));
        assert!(!script.contains("git fetch"));
    }
}
