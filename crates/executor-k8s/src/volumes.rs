//! Volumes and mounts, in gitlab-runner's order (`gitlab-runner.md` §3.5).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        CSIVolumeSource, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource,
        KeyToPath, NFSVolumeSource, PersistentVolumeClaimVolumeSource, SecretVolumeSource, Volume,
        VolumeMount,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use podrunner_config::raw::RawVolumes;

use podrunner_config::quantity::value as quantity_value;

use crate::vars::Variables;

/// The directories the pod shares between containers.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub(crate) scripts: String,
    pub(crate) logs: String,
    pub(crate) builds: String,
}

/// Mounts (the same for every container) and pod volumes.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub(crate) mounts: Vec<VolumeMount>,
    pub(crate) volumes: Vec<Volume>,
}

fn mount(
    name: &str,
    path: String,
    sub_path: Option<&String>,
    read_only: Option<bool>,
    propagation: Option<&String>,
    vars: &Variables,
) -> VolumeMount {
    VolumeMount {
        name: volume_name(name),
        mount_path: path,
        sub_path: sub_path.map(|s| vars.expand(s)).filter(|s| !s.is_empty()),
        read_only: read_only.filter(|r| *r),
        mount_propagation: propagation.filter(|p| !p.is_empty()).cloned(),
        ..VolumeMount::default()
    }
}

fn items(map: &BTreeMap<String, String>) -> Option<Vec<KeyToPath>> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(key, path)| KeyToPath {
                key: key.clone(),
                path: path.clone(),
                ..KeyToPath::default()
            })
            .collect()
    })
}

fn volume(name: &str) -> Volume {
    Volume { name: volume_name(name), ..Volume::default() }
}

/// A volume's name in the pod: the configured name as a DNS-1123 label, which Kubernetes
/// requires (`empty_dir` becomes `empty-dir`; the loader warns about it). The name is internal
/// to the pod (mounts refer to it), so the change costs nothing; the objects a volume refers to
/// (a Secret, a ConfigMap, a claim) keep their configured names.
fn volume_name(name: &str) -> String {
    podrunner_config::api_rules::to_dns1123_label(name)
}

/// Whether a mount path is the builds dir (trailing slashes aside).
fn is_builds_dir(path: &str, builds: &str) -> bool {
    path.trim_end_matches('/') == builds.trim_end_matches('/')
}

/// Whether a configured volume other than an emptyDir is mounted at the builds dir (mount paths
/// expanded without job variables). Then the project directory gets the runner token and
/// concurrency prefix, as the builds dir may be shared between jobs.
pub(crate) fn shared_builds_dir(config: Option<&RawVolumes>, builds: &str) -> bool {
    let Some(v) = config else { return false };
    let vars = Variables::default();
    let at_builds = |path: &str| is_builds_dir(&vars.expand(path), builds);
    v.host_path.iter().any(|h| at_builds(&h.mount_path))
        || v.secret.iter().any(|s| at_builds(&s.mount_path))
        || v.pvc.iter().any(|p| at_builds(&p.mount_path))
        || v.config_map.iter().any(|c| at_builds(&c.mount_path))
        || v.csi.iter().any(|c| at_builds(&c.mount_path))
        || v.nfs.iter().any(|n| at_builds(n.mount_path.as_deref().unwrap_or_default()))
}

/// Builds mounts and volumes. `attach` adds the scripts and logs directories.
pub(crate) fn layout(
    config: Option<&RawVolumes>,
    vars: &Variables,
    dirs: &Dirs,
    attach: bool,
    log: &mut Vec<String>,
) -> Layout {
    // `Volume` is a large struct: reserve once rather than grow (and copy) per volume.
    let configured = config.map_or(0, |v| {
        v.host_path.len()
            + v.secret.len()
            + v.pvc.len()
            + v.config_map.len()
            + v.empty_dir.len()
            + v.csi.len()
            + v.nfs.len()
    });
    let mut out = Layout {
        mounts: Vec::with_capacity(configured + 3),
        volumes: Vec::with_capacity(configured + 3),
    };
    if attach {
        for (name, path) in [("scripts", &dirs.scripts), ("logs", &dirs.logs)] {
            out.mounts.push(VolumeMount {
                name: name.to_owned(),
                mount_path: path.clone(),
                ..VolumeMount::default()
            });
        }
    }
    let mut builds_mounted = false;
    let mut note_builds = |path: &str| {
        if is_builds_dir(path, &dirs.builds) {
            builds_mounted = true;
        }
    };
    if let Some(v) = config {
        for h in &v.host_path {
            let path = vars.expand(&h.mount_path);
            note_builds(&path);
            out.mounts.push(mount(
                &h.name,
                path.clone(),
                h.sub_path.as_ref(),
                h.read_only,
                h.mount_propagation.as_ref(),
                vars,
            ));
            let host = h.host_path.as_ref().filter(|p| !p.is_empty()).cloned().unwrap_or(path);
            out.volumes.push(Volume {
                host_path: Some(HostPathVolumeSource { path: host, type_: None }),
                ..volume(&h.name)
            });
        }
        for s in &v.secret {
            let path = vars.expand(&s.mount_path);
            note_builds(&path);
            out.mounts.push(mount(&s.name, path, s.sub_path.as_ref(), s.read_only, None, vars));
            out.volumes.push(Volume {
                secret: Some(SecretVolumeSource {
                    secret_name: Some(s.name.clone()),
                    items: items(&s.items),
                    ..SecretVolumeSource::default()
                }),
                ..volume(&s.name)
            });
        }
        let mut pvc_seen: Vec<String> = Vec::new();
        for p in &v.pvc {
            let name = vars.expand(&p.name);
            let path = vars.expand(&p.mount_path);
            note_builds(&path);
            out.mounts.push(mount(
                &name,
                path,
                p.sub_path.as_ref(),
                p.read_only,
                p.mount_propagation.as_ref(),
                vars,
            ));
            if !pvc_seen.contains(&name) {
                out.volumes.push(Volume {
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: name.clone(),
                        read_only: p.read_only.filter(|r| *r),
                    }),
                    ..volume(&name)
                });
                pvc_seen.push(name);
            }
        }
        for c in &v.config_map {
            let path = vars.expand(&c.mount_path);
            note_builds(&path);
            out.mounts.push(mount(&c.name, path, c.sub_path.as_ref(), c.read_only, None, vars));
            out.volumes.push(Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: c.name.clone(),
                    items: items(&c.items),
                    ..ConfigMapVolumeSource::default()
                }),
                ..volume(&c.name)
            });
        }
        for e in &v.empty_dir {
            let path = vars.expand(&e.mount_path);
            note_builds(&path);
            out.mounts.push(mount(
                &e.name,
                path,
                e.sub_path.as_ref(),
                None,
                e.mount_propagation.as_ref(),
                vars,
            ));
            let size_limit = e.size_limit.as_ref().map(|s| s.trim()).filter(|s| !s.is_empty());
            let size_limit = match size_limit {
                Some(s) if quantity_value(s).is_some() => Some(Quantity(s.to_owned())),
                Some(s) => {
                    log.push(format!(
                        "invalid size_limit {s:?} of emptyDir volume {:?}; no limit is set",
                        e.name
                    ));
                    None
                }
                None => None,
            };
            out.volumes.push(Volume {
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: e.medium.clone().filter(|m| !m.is_empty()),
                    size_limit,
                    ..EmptyDirVolumeSource::default()
                }),
                ..volume(&e.name)
            });
        }
        for c in &v.csi {
            let path = vars.expand(&c.mount_path);
            note_builds(&path);
            out.mounts.push(mount(&c.name, path, c.sub_path.as_ref(), c.read_only, None, vars));
            out.volumes.push(Volume {
                csi: Some(CSIVolumeSource {
                    driver: c.driver.clone(),
                    fs_type: Some(c.fs_type.clone().unwrap_or_default()),
                    read_only: Some(c.read_only.unwrap_or(false)),
                    volume_attributes: (!c.volume_attributes.is_empty())
                        .then(|| c.volume_attributes.clone()),
                    node_publish_secret_ref: None,
                }),
                ..volume(&c.name)
            });
        }
        for n in &v.nfs {
            let name = n.name.clone().unwrap_or_default();
            let path = vars.expand(n.mount_path.as_deref().unwrap_or_default());
            note_builds(&path);
            out.mounts.push(mount(&name, path, n.sub_path.as_ref(), n.read_only, None, vars));
            out.volumes.push(Volume {
                nfs: Some(NFSVolumeSource {
                    server: n.server.clone().unwrap_or_default(),
                    path: n.path.clone().unwrap_or_default(),
                    read_only: n.read_only.filter(|r| *r),
                }),
                ..volume(&name)
            });
        }
    }
    if !builds_mounted {
        out.mounts.push(VolumeMount {
            name: "repo".to_owned(),
            mount_path: dirs.builds.clone(),
            ..VolumeMount::default()
        });
        out.volumes
            .push(Volume { empty_dir: Some(EmptyDirVolumeSource::default()), ..volume("repo") });
    }
    if attach {
        for name in ["scripts", "logs"] {
            out.volumes
                .push(Volume { empty_dir: Some(EmptyDirVolumeSource::default()), ..volume(name) });
        }
    }
    out
}
