//! Stopping the cluster so that nothing is left: the kubelet first (it starts nothing more),
//! then every container with its shim, containerd, the control plane and etcd; then the mount
//! namespace (its mounts go with it), the CNI bridge and the kubelet's cgroups.

use std::{path::Path, process::Command, time::Duration};

use super::{CGROUP_CONTROLLERS, KubernetesCluster, config::BRIDGE, process};

/// What stopping found left behind and could not remove (empty when clean).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers(pub Vec<String>);

impl KubernetesCluster {
    /// Stops everything it started and removes what the components left on the machine.
    /// Idempotent; also run on drop.
    pub fn stop(&mut self) -> Leftovers {
        if self.components.is_empty() && self.namespace.is_none() {
            return Leftovers::default();
        }
        let containerd_dir = self.info.dir.join("containerd");
        while let Some(mut component) = self.components.pop() {
            if component.name == "containerd" {
                kill_containers(&containerd_dir);
            }
            component.stop(Duration::from_secs(5));
        }
        // A shim that outlived its daemon would keep the namespace (and its mounts) alive.
        kill_containers(&containerd_dir);
        if let Some(mut namespace) = self.namespace.take() {
            namespace.stop();
        }
        let mut left = Vec::new();
        delete_bridge(&mut left);
        remove_kube_chains(&mut left);
        remove_cgroups(&self.cgroup_root, &mut left);
        if !left.is_empty() {
            tracing::warn!(left = ?left, "the cluster left something behind");
        }
        Leftovers(left)
    }
}

/// What `local-cluster down` runs after the cluster's process ended (also when it was killed
/// and stopped nothing): kills any process that still names the cluster directory, removes
/// the bridge, the `KUBE-*` chains and the kubelet's cgroups, then checks that none of them,
/// and no mount under the directory, is left. Returns what is.
pub fn clean_machine(dir: &Path, node_name: &str) -> Leftovers {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let named: Vec<u32> = crate::node::processes()
        .into_iter()
        .filter(|(pid, cmdline)| *pid != me && cmdline.contains(&needle))
        .map(|(pid, _)| pid)
        .collect();
    let mut victims = crate::node::descendants(&named);
    victims.extend(&named);
    process::signal("KILL", &victims);
    process::pause(Duration::from_millis(300));
    let mut left = Vec::new();
    delete_bridge(&mut left);
    remove_kube_chains(&mut left);
    let cgroup_root = format!("podrunner-{node_name}");
    remove_cgroups(&cgroup_root, &mut left);
    for (pid, cmdline) in crate::node::processes() {
        if pid != me && cmdline.contains(&needle) {
            left.push(format!("process {pid}: {}", cmdline.replace('\0', " ")));
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
        left.extend(mounts.lines().filter(|l| l.contains(&needle)).map(|l| format!("mount {l}")));
    }
    if iptables_has_kube_chains() {
        left.push("KUBE-* iptables chains".to_owned());
    }
    Leftovers(left)
}

fn iptables_has_kube_chains() -> bool {
    ["iptables-save", "ip6tables-save"].iter().any(|save| {
        Command::new(save)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("KUBE-"))
    })
}

impl Drop for KubernetesCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kills every process whose command line names `containerd_dir` (containerd's shims) and all
/// their descendants (the containers).
fn kill_containers(containerd_dir: &Path) {
    let needle = containerd_dir.to_string_lossy().into_owned();
    let shims: Vec<u32> = crate::node::processes()
        .into_iter()
        .filter(|(_, cmdline)| {
            cmdline.split('\0').next().is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && cmdline.contains(&needle)
        })
        .map(|(pid, _)| pid)
        .collect();
    if shims.is_empty() {
        return;
    }
    let mut victims = crate::node::descendants(&shims);
    victims.extend(&shims);
    process::signal("KILL", &victims);
    for _ in 0..250 {
        if victims.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            break;
        }
        process::pause(Duration::from_millis(20));
    }
}

fn delete_bridge(left: &mut Vec<String>) {
    if !Path::new("/sys/class/net").join(BRIDGE).exists() {
        return;
    }
    let deleted = Command::new("ip").args(["link", "delete", BRIDGE]).status();
    if !deleted.is_ok_and(|s| s.success()) {
        left.push(format!("network link {BRIDGE}"));
    }
}

/// Removes the `KUBE-*` chains and the rules that jump to them (the kubelet's canary and
/// firewall chains, kube-proxy's service chains), in every table of both families, keeping every
/// other rule.
fn remove_kube_chains(left: &mut Vec<String>) {
    for (save, restore) in
        [("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")]
    {
        let Ok(output) = Command::new(save).output() else { continue };
        let rules = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !rules.contains("KUBE-") {
            continue;
        }
        let kept: String = rules
            .lines()
            .filter(|line| !line.contains("KUBE-"))
            .map(|line| format!("{line}\n"))
            .collect();
        let restored = Command::new(restore).stdin(std::process::Stdio::piped()).spawn().and_then(
            |mut child| {
                use std::io::Write as _;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(kept.as_bytes())?;
                }
                child.wait()
            },
        );
        if !restored.is_ok_and(|s| s.success()) {
            left.push(format!("KUBE-* chains in {save}"));
        }
    }
}

/// Removes the kubelet's cgroup tree (children first) in every controller.
fn remove_cgroups(root: &str, left: &mut Vec<String>) {
    for controller in CGROUP_CONTROLLERS {
        let top = Path::new("/sys/fs/cgroup").join(controller).join(root);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        // Deepest first; a cgroup whose processes are still exiting needs a moment.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let mut removed = false;
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    removed = true;
                    break;
                }
                process::pause(Duration::from_millis(20));
            }
            if !removed {
                left.push(format!("cgroup {}", dir.display()));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}
