//! Where a job stands in its lifecycle, as the executor marks it in the job log
//! ([`podrunner_coordinator::LogWriter::mark`]): the explicit state a runner process started
//! after a killed one resumes from. Each mark says what the log already holds (the prepare
//! lines, the pod's creation, each stage's section, exit code and output up to a byte offset of
//! its log file), so a resumed run writes none of it twice and takes every step after it again;
//! the steps themselves are idempotent (a deterministic pod name with adoption, the launch
//! marker), so taking one again never runs anything twice.

use serde_json::{Value, json};

use crate::script::Stage;

/// The format of a saved position (a position of another format is not resumed).
const FORMAT: u64 = 1;

const STAGES: [Stage; 10] = [
    Stage::GetSources,
    Stage::RestoreCache,
    Stage::DownloadArtifacts,
    Stage::StepScript,
    Stage::AfterScript,
    Stage::ArchiveCache,
    Stage::ArchiveCacheOnFailure,
    Stage::UploadArtifactsOnSuccess,
    Stage::UploadArtifactsOnFailure,
    Stage::CleanupFileVariables,
];

fn stage_named(name: &str) -> Option<Stage> {
    STAGES.into_iter().find(|s| s.name() == name)
}

/// The job's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The `prepare_executor` section (the image, the effective security) is in the log.
    pub prepared: bool,
    /// The pod was created or adopted: from here on it is found, never created.
    pub pod_created: bool,
    /// The pod ran and the `prepare_script` section is closed.
    pub pod_running: bool,
    /// Stages that ended, in order, with their exit code (`None`: nothing to run).
    pub ended: Vec<(Stage, Option<i32>)>,
    /// The stage whose section is open, and how many bytes of its log file are in the log.
    pub current: Option<(Stage, u64)>,
}

impl Progress {
    /// The exit code of `stage` if it ended (`Some(None)`: it had nothing to run).
    pub fn ended(&self, stage: Stage) -> Option<Option<i32>> {
        self.ended.iter().find(|(s, _)| *s == stage).map(|(_, code)| *code)
    }

    /// The log offset to resume `stage` at, when its section is open.
    pub fn resumes(&self, stage: Stage) -> Option<u64> {
        self.current.filter(|(s, _)| *s == stage).map(|(_, offset)| offset)
    }

    /// Whether every stage ended (only the pod's deletion can be left).
    pub fn all_stages_ended(&self) -> bool {
        self.ended(Stage::CleanupFileVariables).is_some()
    }

    /// The position as marked in the log.
    pub fn to_json(&self) -> Value {
        let ended: Vec<Value> = self
            .ended
            .iter()
            .map(|(s, code)| json!({"stage": s.name(), "exit_code": code}))
            .collect();
        json!({
            "kubernetes": FORMAT,
            "prepared": self.prepared,
            "pod_created": self.pod_created,
            "pod_running": self.pod_running,
            "ended": ended,
            "current": self.current.map(|(s, offset)| json!({"stage": s.name(), "offset": offset})),
        })
    }

    /// A position marked by [`Progress::to_json`]; `None` for anything else.
    pub fn from_json(value: &Value) -> Option<Self> {
        if value["kubernetes"].as_u64() != Some(FORMAT) {
            return None;
        }
        let ended = value["ended"]
            .as_array()?
            .iter()
            .map(|e| {
                let stage = stage_named(e["stage"].as_str()?)?;
                let code = match &e["exit_code"] {
                    Value::Null => None,
                    code => Some(i32::try_from(code.as_i64()?).ok()?),
                };
                Some((stage, code))
            })
            .collect::<Option<Vec<_>>>()?;
        let current = match &value["current"] {
            Value::Null => None,
            c => Some((stage_named(c["stage"].as_str()?)?, c["offset"].as_u64()?)),
        };
        Some(Self {
            prepared: value["prepared"].as_bool()?,
            pod_created: value["pod_created"].as_bool()?,
            pod_running: value["pod_running"].as_bool()?,
            ended,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_a_round_trip_and_answers_for_each_stage() {
        let progress = Progress {
            prepared: true,
            pod_created: true,
            pod_running: true,
            ended: vec![(Stage::GetSources, Some(0))],
            current: Some((Stage::StepScript, 1234)),
        };
        let back = Progress::from_json(&progress.to_json()).expect("decodes");
        assert_eq!(back, progress);
        assert_eq!(back.ended(Stage::GetSources), Some(Some(0)));
        assert_eq!(back.ended(Stage::StepScript), None);
        assert_eq!(back.resumes(Stage::StepScript), Some(1234));
        assert_eq!(back.resumes(Stage::AfterScript), None);
        assert!(!back.all_stages_ended());
        let done = Progress {
            ended: vec![(Stage::GetSources, None), (Stage::CleanupFileVariables, None)],
            current: None,
            ..progress
        };
        let back = Progress::from_json(&done.to_json()).expect("decodes");
        assert!(back.all_stages_ended());
        assert_eq!(back.ended(Stage::GetSources), Some(None));
    }

    #[test]
    fn a_position_of_another_kind_is_not_taken() {
        assert_eq!(Progress::from_json(&json!({"line": 3})), None);
        assert_eq!(Progress::from_json(&json!({"kubernetes": 2})), None);
        let mut value = Progress::default().to_json();
        value["current"] = json!({"stage": "no_such_stage", "offset": 1});
        assert_eq!(Progress::from_json(&value), None);
    }
}
