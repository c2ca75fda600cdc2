//! Pod status as a kubelet reports it, computed from the node's model of the pod: phase
//! (`restartPolicy: Never` rules), conditions, container and init container statuses.

use std::collections::HashMap;

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

/// A container's state as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Option<Timestamp>,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Option<Timestamp>,
    },
}

impl CState {
    pub(crate) fn waiting(reason: &str, message: Option<String>) -> Self {
        Self::Waiting { reason: reason.to_owned(), message }
    }

    pub(crate) fn is_terminated(&self) -> bool {
        matches!(self, Self::Terminated { .. })
    }

    pub(crate) fn succeeded(&self) -> bool {
        matches!(self, Self::Terminated { exit_code: 0, .. })
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Self::Terminated { exit_code, .. } if *exit_code != 0)
    }
}

/// One container of the pod.
#[derive(Debug, Clone)]
pub(crate) struct CModel {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) image_id: String,
    pub(crate) container_id: Option<String>,
    pub(crate) state: CState,
}

/// The node's view of a pod.
#[derive(Debug, Clone)]
pub(crate) struct PodModel {
    pub(crate) init: Vec<CModel>,
    pub(crate) main: Vec<CModel>,
    pub(crate) start_time: Timestamp,
    pub(crate) sandbox_ready: bool,
    /// Set when the pod was rejected at admission: (reason, message).
    pub(crate) rejected: Option<(String, String)>,
    pub(crate) node_ip: String,
    pub(crate) qos_class: String,
    /// Condition type → (status, last transition).
    transitions: HashMap<&'static str, (&'static str, Timestamp)>,
}

fn now() -> Timestamp {
    // The API's `Time` has second precision.
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A CRI time (nanoseconds since the epoch; 0 = unset) at second precision.
pub(crate) fn cri_time(nanos: i64) -> Option<Timestamp> {
    (nanos > 0).then(|| Timestamp::from_second(nanos / 1_000_000_000).ok()).flatten()
}

impl PodModel {
    pub(crate) fn new(
        init: Vec<CModel>,
        main: Vec<CModel>,
        node_ip: &str,
        qos_class: &str,
    ) -> Self {
        Self {
            init,
            main,
            start_time: now(),
            sandbox_ready: false,
            rejected: None,
            node_ip: node_ip.to_owned(),
            qos_class: qos_class.to_owned(),
            transitions: HashMap::new(),
        }
    }

    /// Whether an init container failed (the pod is over, `restartPolicy: Never`).
    pub(crate) fn init_failed(&self) -> bool {
        self.init.iter().any(|c| c.state.failed())
    }

    pub(crate) fn initialized(&self) -> bool {
        self.init.iter().all(|c| c.state.succeeded())
    }

    /// The kubelet's `getPhase` for `restartPolicy: Never`.
    pub(crate) fn phase(&self) -> &'static str {
        if self.rejected.is_some() || self.init_failed() {
            return "Failed";
        }
        if !self.initialized() {
            return "Pending";
        }
        let waiting =
            self.main.iter().filter(|c| matches!(c.state, CState::Waiting { .. })).count();
        let running =
            self.main.iter().filter(|c| matches!(c.state, CState::Running { .. })).count();
        let failed = self.main.iter().filter(|c| c.state.failed()).count();
        if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if failed > 0 {
            "Failed"
        } else if self.main.is_empty() {
            "Pending"
        } else {
            "Succeeded"
        }
    }

    fn condition(
        &mut self,
        type_: &'static str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self.transitions.entry(type_).or_insert((status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            message,
            last_transition_time: Some(Time(entry.1)),
            ..Default::default()
        }
    }

    /// The `status` subresource for the current model.
    pub(crate) fn status(&mut self) -> PodStatus {
        let phase = self.phase();
        if let Some((reason, message)) = self.rejected.clone() {
            return PodStatus {
                phase: Some(phase.to_owned()),
                reason: Some(reason),
                message: Some(format!("Pod was rejected: {message}")),
                start_time: Some(Time(self.start_time)),
                ..Default::default()
            };
        }
        let completed = matches!(phase, "Succeeded" | "Failed");
        let names = |cs: &[CModel], pred: &dyn Fn(&CModel) -> bool| {
            let list: Vec<&str> = cs.iter().filter(|c| pred(c)).map(|c| c.name.as_str()).collect();
            format!("[{}]", list.join(" "))
        };
        let incomplete = names(&self.init, &|c| !c.state.succeeded());
        let unready = names(&self.main, &|c| !matches!(c.state, CState::Running { .. }));
        let initialized = self.initialized();
        let ready = !self.main.is_empty()
            && self.main.iter().all(|c| matches!(c.state, CState::Running { .. }));
        let mut conditions =
            vec![self.condition("PodReadyToStartContainers", self.sandbox_ready, None, None)];
        conditions.push(if initialized {
            self.condition("Initialized", true, None, None)
        } else {
            self.condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!("containers with incomplete status: {incomplete}")),
            )
        });
        let (reason, message) = if ready {
            (None, None)
        } else if phase == "Succeeded" {
            (Some("PodCompleted"), None)
        } else {
            (Some("ContainersNotReady"), Some(format!("containers with unready status: {unready}")))
        };
        conditions.push(self.condition("Ready", ready, reason, message.clone()));
        conditions.push(self.condition("ContainersReady", ready, reason, message));
        conditions.push(self.condition("PodScheduled", true, None, None));
        let _ = completed;

        let default_waiting =
            if self.init.is_empty() { "ContainerCreating" } else { "PodInitializing" };
        let mut main: Vec<ContainerStatus> =
            self.main.iter().map(|c| container_status(c, default_waiting)).collect();
        main.sort_by(|a, b| a.name.cmp(&b.name));
        let init: Vec<ContainerStatus> =
            self.init.iter().map(|c| container_status(c, default_waiting)).collect();
        PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(conditions),
            host_ip: Some(self.node_ip.clone()),
            host_ips: Some(vec![HostIP { ip: self.node_ip.clone() }]),
            pod_ip: Some(self.node_ip.clone()),
            pod_ips: Some(vec![PodIP { ip: self.node_ip.clone() }]),
            start_time: Some(Time(self.start_time)),
            qos_class: Some(self.qos_class.clone()),
            container_statuses: Some(main),
            init_container_statuses: (!init.is_empty()).then_some(init),
            ..Default::default()
        }
    }
}

fn container_status(c: &CModel, default_waiting: &str) -> ContainerStatus {
    let state = match &c.state {
        CState::Waiting { reason, message } => {
            // A container not yet tried shows the pod-wide default reason.
            let reason = if reason.is_empty() { default_waiting } else { reason.as_str() };
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.to_owned()),
                    message: message.clone(),
                }),
                ..Default::default()
            }
        }
        CState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning { started_at: started_at.map(Time) }),
            ..Default::default()
        },
        CState::Terminated { exit_code, reason, message, started_at, finished_at } => {
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: finished_at.map(Time),
                    container_id: c.container_id.as_ref().map(|id| format!("containerd://{id}")),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    };
    let running = matches!(c.state, CState::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: Some(ContainerState::default()),
        ready: running,
        restart_count: 0,
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.as_ref().map(|id| format!("containerd://{id}")),
        started: Some(running),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, state: CState) -> CModel {
        CModel {
            name: name.to_owned(),
            image: "img".to_owned(),
            image_id: String::new(),
            container_id: None,
            state,
        }
    }

    fn done(code: i32) -> CState {
        CState::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.to_owned(),
            message: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn phase_follows_the_kubelet_rules_for_restart_policy_never() {
        let running = CState::Running { started_at: None };
        let waiting = CState::waiting("", None);
        let cases: Vec<(Vec<CState>, Vec<CState>, &str)> = vec![
            (vec![], vec![waiting.clone()], "Pending"),
            (vec![], vec![running.clone()], "Running"),
            (vec![], vec![running.clone(), waiting.clone()], "Pending"),
            (vec![], vec![running.clone(), done(1)], "Running"),
            (vec![], vec![done(0), done(0)], "Succeeded"),
            (vec![], vec![done(0), done(2)], "Failed"),
            (vec![running.clone()], vec![waiting.clone()], "Pending"),
            (vec![done(1)], vec![waiting.clone()], "Failed"),
            (vec![done(0)], vec![running.clone()], "Running"),
        ];
        for (init, main, expected) in cases {
            let model = PodModel::new(
                init.into_iter().map(|s| c("i", s)).collect(),
                main.into_iter().map(|s| c("m", s)).collect(),
                "127.0.0.1",
                "BestEffort",
            );
            assert_eq!(model.phase(), expected, "{model:?}");
        }
    }

    #[test]
    fn pending_init_shows_pod_initializing_and_incomplete_condition() {
        let mut model = PodModel::new(
            vec![c("setup", CState::Running { started_at: None })],
            vec![c("main", CState::waiting("", None))],
            "127.0.0.1",
            "BestEffort",
        );
        let status = model.status();
        let main = &status.container_statuses.as_ref().expect("statuses")[0];
        let waiting = main.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some("PodInitializing"));
        let init = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Initialized")
            .expect("Initialized condition");
        assert_eq!(init.status, "False");
        assert_eq!(init.message.as_deref(), Some("containers with incomplete status: [setup]"));
    }
}
