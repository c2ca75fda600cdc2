//! Small OCI images built without a registry, and their import into containerd.
//!
//! Each image is one uncompressed layer written by [`tar`] with fixed ownership and times, so the
//! same inputs give the same bytes. The archive (an OCI image layout in a tar: `oci-layout`,
//! `index.json` and `blobs/sha256/…`, the image name in the `io.containerd.image.name`
//! annotation) is cached under the caller's directory, named by its manifest digest. An index
//! file named by a digest of the inputs' metadata (path, size, mtime, inode) lets a second
//! [`build_images`] with unchanged inputs skip reading and hashing them altogether.
//!
//! - [`BUSYBOX_IMAGE`]: the static busybox with its applet links, `/etc/passwd` and `/etc/group`
//!   (root, user 1000, nobody 65534), `/tmp`, `PATH`.
//! - [`PAUSE_IMAGE`]: the same rootfs running `sleep 2147483647`, the sandbox image.
//! - [`HELPER_IMAGE`]: busybox plus `git` (with `git-remote-http(s)`), the shared libraries `ldd`
//!   lists for them, and the CA bundle: what a GitLab helper stage needs to fetch sources.
//!
//! [`import_images`] loads archives into the `k8s.io` namespace with `ctr images import`.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{Error, Result};

/// The general-purpose image (build, service and test containers).
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";
/// The sandbox ("pause") image named in the containerd config.
pub const PAUSE_IMAGE: &str = "localhost/pause:latest";
/// The helper image: busybox plus git.
pub const HELPER_IMAGE: &str = "localhost/helper:latest";

/// Bump when the layout of the built images changes, so cached archives are not reused.
const FORMAT: &str = "podrunner-local-cluster-images/1";

const GIT: &str = "/usr/bin/git";
const GIT_REMOTE_HTTP: &str = "/usr/lib/git-core/git-remote-http";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An image archive ready for import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The image reference (`localhost/busybox:latest`).
    pub name: String,
    /// The OCI layout tar.
    pub archive: PathBuf,
    /// The manifest digest (`sha256:…`).
    pub manifest_digest: String,
    /// Whether the archive was reused from the cache.
    pub cached: bool,
}

/// Builds (or reuses from `dir`) the busybox, pause and helper images.
///
/// Needs the static busybox (`busybox-static`) and, for the helper image, `/usr/bin/git`.
pub fn build_images(dir: &Path) -> Result<Vec<BuiltImage>> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create the image directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let key = inputs_key()?;
    let index = dir.join(format!("images-{}.json", &key[..16]));
    if let Some(built) = read_index(dir, &index) {
        return Ok(built);
    }
    let busybox = find_busybox()?;
    let base = base_rootfs(&busybox)?;
    let mut helper = base.clone();
    add_git(&mut helper)?;
    let sh = |cmd: &[&str]| cmd.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let built = vec![
        write_image(dir, BUSYBOX_IMAGE, &base, &sh(&["/bin/sh"]), &json!({}))?,
        write_image(dir, PAUSE_IMAGE, &base, &sh(&["/bin/sleep", "2147483647"]), &json!({}))?,
        write_image(dir, HELPER_IMAGE, &helper, &sh(&["/bin/sh"]), &json!({}))?,
    ];
    write_index(dir, &index, &built)?;
    Ok(built)
}

/// The uid and gid the runner image runs as (distroless' `nonroot`).
pub const RUNNER_UID: u32 = 65532;

/// Builds the image of the `runner` binary at `binary` as `name` in `dir`: the binary as
/// `/usr/local/bin/runner` (the entrypoint; `run` by default), the shared libraries `ldd` lists
/// for it, the CA bundle, `/etc/passwd` and `/etc/group` with `nonroot` (65532, the user it runs
/// as), `/tmp` and `/var/lib/podrunner` (the state directory); nothing else, no shell.
///
/// # Errors
///
/// The binary or a library cannot be read, `ldd` fails, or the archive cannot be written.
pub fn build_runner_image(dir: &Path, binary: &Path, name: &str) -> Result<BuiltImage> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create the image directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut rootfs: Rootfs = BTreeMap::new();
    let dir_of = |mode, uid| Entry::Dir { mode, uid };
    for d in
        ["etc", "usr", "usr/local", "usr/local/bin", "var", "var/lib", "home", "proc", "sys", "dev"]
    {
        rootfs.insert(d.to_owned(), dir_of(0o755, 0));
    }
    rootfs.insert("tmp".to_owned(), dir_of(0o1777, 0));
    rootfs.insert("home/nonroot".to_owned(), dir_of(0o755, u64::from(RUNNER_UID)));
    rootfs.insert("var/lib/podrunner".to_owned(), dir_of(0o700, u64::from(RUNNER_UID)));
    let text = |text: String| Entry::File { mode: 0o644, data: text.into_bytes() };
    rootfs.insert(
        "etc/passwd".to_owned(),
        text(format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{RUNNER_UID}:{RUNNER_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
        )),
    );
    rootfs.insert("etc/group".to_owned(), text(format!("root:x:0:\nnonroot:x:{RUNNER_UID}:\n")));
    let data = fs::read(binary).map_err(|source| Error::Io {
        action: "read the runner binary",
        path: binary.to_path_buf(),
        source,
    })?;
    rootfs.insert("usr/local/bin/runner".to_owned(), Entry::File { mode: 0o755, data });
    for library in shared_libraries(binary)? {
        add_host_file(&mut rootfs, &library, 0o755)?;
    }
    if Path::new(CA_BUNDLE).exists() {
        add_host_file(&mut rootfs, Path::new(CA_BUNDLE), 0o644)?;
    }
    let extra = json!({
        "Entrypoint": ["/usr/local/bin/runner"],
        "User": format!("{RUNNER_UID}:{RUNNER_UID}"),
        "Env": [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            format!("SSL_CERT_FILE={CA_BUNDLE}"),
        ],
    });
    write_image(dir, name, &rootfs, &["run".to_owned()], &extra)
}

/// The host files the images are built from: busybox, git, `git-remote-http`, their shared
/// libraries and the CA bundle (those that exist).
fn input_files() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .take(1)
        .collect();
    for binary in [GIT, GIT_REMOTE_HTTP] {
        let binary = Path::new(binary);
        if binary.exists() {
            files.push(binary.to_path_buf());
            files.extend(shared_libraries(binary)?);
        }
    }
    files.push(PathBuf::from(CA_BUNDLE));
    files.sort();
    files.dedup();
    Ok(files)
}

/// A digest of [`FORMAT`] and the path, size, modification time and inode of every input file:
/// it changes whenever a package upgrade replaces an input, so a cached build is never stale.
fn inputs_key() -> Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut text = format!("{FORMAT}\n");
    for path in input_files()? {
        match fs::metadata(&path) {
            Ok(m) => text.push_str(&format!(
                "{} {} {}.{} {}\n",
                path.display(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino()
            )),
            Err(_) => text.push_str(&format!("{} absent\n", path.display())),
        }
    }
    Ok(sha256(text.as_bytes()))
}

/// The images recorded by an earlier build with the same inputs, if all their archives exist.
fn read_index(dir: &Path, index: &Path) -> Option<Vec<BuiltImage>> {
    let text = fs::read(index).ok()?;
    let entries: Vec<(String, String, String)> = serde_json::from_slice(&text).ok()?;
    let built: Vec<BuiltImage> = entries
        .into_iter()
        .map(|(name, file, manifest_digest)| BuiltImage {
            name,
            archive: dir.join(file),
            manifest_digest,
            cached: true,
        })
        .collect();
    (built.len() == 3 && built.iter().all(|b| b.archive.is_file())).then_some(built)
}

fn write_index(dir: &Path, index: &Path, built: &[BuiltImage]) -> Result<()> {
    let entries: Vec<(&str, String, &str)> = built
        .iter()
        .map(|b| {
            let file = b.archive.file_name().map(|f| f.to_string_lossy().into_owned());
            (b.name.as_str(), file.unwrap_or_default(), b.manifest_digest.as_str())
        })
        .collect();
    let json = serde_json::to_vec(&entries).map_err(|source| Error::Json { source })?;
    let tmp = dir.join(format!(".images.{}.tmp", unique_suffix()));
    fs::write(&tmp, json).and_then(|()| fs::rename(&tmp, index)).map_err(|source| Error::Io {
        action: "write the image index",
        path: index.to_path_buf(),
        source,
    })
}

/// Imports archives into containerd's `k8s.io` namespace (where CRI looks) with one
/// `ctr images import` of one combined archive (cached next to the others): parallel imports of the
/// separate archives contend for containerd's ingest locks (`tar-index.json`, the layer the
/// busybox and pause images share) and took 2 to 4 s, one combined import takes about 1 s.
///
/// It does not block the runtime, and `ctr` is killed when the returned future is dropped, so an
/// aborted import never outlives its node (a `ctr` whose containerd went away can otherwise wait
/// for it indefinitely).
pub async fn import_images(socket: &Path, images: &[BuiltImage]) -> Result<()> {
    import_images_with(Path::new("ctr"), socket, images).await
}

/// As [`import_images`], with the `ctr` program at `ctr` (the one built with containerd 2.x).
pub async fn import_images_with(ctr: &Path, socket: &Path, images: &[BuiltImage]) -> Result<()> {
    if images.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let names = || images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let owned = images.to_vec();
    let archive = tokio::task::spawn_blocking(move || combined_archive(&owned))
        .await
        .map_err(|_| Error::ImportPanicked)??;
    let output = tokio::process::Command::new(ctr)
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&archive)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Spawn { program: ctr.display().to_string(), source })?;
    if !output.status.success() {
        return Err(Error::ImageImport {
            image: names(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    tracing::debug!(
        images = %names(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "images imported"
    );
    Ok(())
}

/// One OCI layout holding every image of `images` (their index entries, each blob once), cached
/// next to the first archive under a name derived from the manifest digests.
fn combined_archive(images: &[BuiltImage]) -> Result<PathBuf> {
    let key: String =
        images.iter().map(|i| format!("{}={}\n", i.name, i.manifest_digest)).collect();
    let key = sha256(key.as_bytes());
    let dir = images[0].archive.parent().unwrap_or_else(|| Path::new("."));
    let path = dir.join(format!("combined-{}.tar", &key[..16]));
    if path.exists() {
        return Ok(path);
    }
    let mut manifests = Vec::new();
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for image in images {
        let read_err = |source| Error::Io {
            action: "read the image archive",
            path: image.archive.clone(),
            source,
        };
        let file = fs::File::open(&image.archive).map_err(read_err)?;
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let name = entry.path().map_err(read_err)?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(read_err)?;
            if name == "index.json" {
                let index: serde_json::Value =
                    serde_json::from_slice(&data).map_err(|source| Error::Json { source })?;
                manifests.extend(index["manifests"].as_array().cloned().unwrap_or_default());
            } else if name.starts_with("blobs/") {
                blobs.insert(name, data);
            }
        }
    }
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests}))
        .map_err(|source| Error::Json { source })?;
    let to_err = |source| Error::Io {
        action: "write the combined image archive",
        path: path.clone(),
        source,
    };
    let mut outer = tar::Builder::new(Vec::new());
    let layout: [(&str, &[u8]); 2] =
        [("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#), ("index.json", &index)];
    let entries = layout.into_iter().chain(blobs.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    for (name, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        outer.append_data(&mut header, name, data).map_err(to_err)?;
    }
    let bytes = outer.into_inner().map_err(to_err)?;
    // A unique temporary name, then rename: concurrent importers never see half a file.
    let tmp = dir.join(format!(".combined-{}.{}.tmp", &key[..16], unique_suffix()));
    let mut file = fs::File::create(&tmp).map_err(to_err)?;
    file.write_all(&bytes).map_err(to_err)?;
    fs::rename(&tmp, &path).map_err(to_err)?;
    Ok(path)
}

/// A root file system held in memory: path (no leading `/`) to entry. Ordered, so the tar is
/// deterministic.
type Rootfs = BTreeMap<String, Entry>;

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32, uid: u64 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

fn find_busybox() -> Result<Vec<u8>> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let Ok(data) = fs::read(candidate) else {
            continue;
        };
        if has_interpreter(&data) {
            return Err(Error::Prerequisite {
                what: format!("{candidate} is dynamically linked; install busybox-static"),
            });
        }
        return Ok(data);
    }
    Err(Error::Prerequisite { what: "busybox not found; install busybox-static".to_owned() })
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (is dynamic).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a) as usize
        })
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(3))
}

fn base_rootfs(busybox: &[u8]) -> Result<Rootfs> {
    let mut fs_: Rootfs = BTreeMap::new();
    let dir = |mode| Entry::Dir { mode, uid: 0 };
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var",
        "home", "lib", "lib64",
    ] {
        fs_.insert(d.to_owned(), dir(0o755));
    }
    fs_.insert("root".to_owned(), dir(0o700));
    fs_.insert("tmp".to_owned(), dir(0o1777));
    fs_.insert("var/tmp".to_owned(), dir(0o1777));
    fs_.insert("home/user".to_owned(), Entry::Dir { mode: 0o755, uid: 1000 });
    fs_.insert("bin/busybox".to_owned(), Entry::File { mode: 0o755, data: busybox.to_vec() });
    for applet in applets()? {
        if applet != "bin/busybox" {
            fs_.insert(applet, Entry::Symlink { target: "/bin/busybox".to_owned() });
        }
    }
    let file = |text: &str| Entry::File { mode: 0o644, data: text.as_bytes().to_vec() };
    fs_.insert(
        "etc/passwd".to_owned(),
        file(
            "root:x:0:0:root:/root:/bin/sh\n\
             user:x:1000:1000:user:/home/user:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
    );
    fs_.insert("etc/group".to_owned(), file("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"));
    Ok(fs_)
}

/// The applet paths (`bin/sh`, `usr/bin/awk`, …) as the static busybox lists them.
fn applets() -> Result<Vec<String>> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("busybox");
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Spawn { program: busybox.to_owned(), source })?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

/// Adds git, `git-remote-http(s)`, their shared libraries and the CA bundle.
fn add_git(rootfs: &mut Rootfs) -> Result<()> {
    let git = Path::new(GIT);
    if !git.exists() {
        return Err(Error::Prerequisite { what: "/usr/bin/git not found; install git".to_owned() });
    }
    let mut binaries = vec![git.to_path_buf()];
    let remote = Path::new(GIT_REMOTE_HTTP);
    if remote.exists() {
        binaries.push(remote.to_path_buf());
    }
    let mut libs = std::collections::BTreeSet::new();
    for binary in &binaries {
        add_host_file(rootfs, binary, 0o755)?;
        libs.extend(shared_libraries(binary)?);
    }
    for lib in &libs {
        add_host_file(rootfs, lib, 0o755)?;
    }
    if remote.exists() {
        rootfs.insert(
            "usr/lib/git-core/git-remote-https".to_owned(),
            Entry::Symlink { target: "git-remote-http".to_owned() },
        );
    }
    let ca = Path::new(CA_BUNDLE);
    if ca.exists() {
        add_host_file(rootfs, ca, 0o644)?;
    }
    Ok(())
}

/// The absolute library paths `ldd` prints for a binary (including the dynamic loader).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn { program: "ldd".to_owned(), source })?;
    if !output.status.success() {
        return Err(Error::Prerequisite {
            what: format!(
                "ldd {} failed: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Copies a host file (following symlinks) to the same path in the rootfs, creating parents.
fn add_host_file(rootfs: &mut Rootfs, path: &Path, mode: u32) -> Result<()> {
    let data = fs::read(path).map_err(|source| Error::Io {
        action: "read an image input",
        path: path.to_path_buf(),
        source,
    })?;
    let rel = path.to_string_lossy().trim_start_matches('/').to_owned();
    let mut parent = Path::new(&rel).parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        rootfs
            .entry(p.to_string_lossy().into_owned())
            .or_insert(Entry::Dir { mode: 0o755, uid: 0 });
        parent = p.parent();
    }
    rootfs.insert(rel, Entry::File { mode, data });
    Ok(())
}

/// The rootfs as an uncompressed, deterministic tar layer.
fn layer_tar(rootfs: &Rootfs) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let to_err = |source| Error::Io {
        action: "write the image layer",
        path: PathBuf::from("<memory>"),
        source,
    };
    for (path, entry) in rootfs {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir { mode, uid } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(*uid);
                header.set_gid(*uid);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .map_err(to_err)?;
            }
            Entry::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice()).map_err(to_err)?;
            }
            Entry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).map_err(to_err)?;
            }
        }
    }
    builder.into_inner().map_err(to_err)
}

/// `<pid>-<n>`, unique per call within this machine: temporary files of concurrent builders
/// (other processes, or other threads of this one, as under `cargo test`) never collide.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn sha256(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Writes the OCI layout tar for one image unless the cache already holds it.
fn write_image(
    dir: &Path,
    name: &str,
    rootfs: &Rootfs,
    cmd: &[String],
    extra: &serde_json::Value,
) -> Result<BuiltImage> {
    let layer = layer_tar(rootfs)?;
    let layer_digest = sha256(&layer);
    let mut image_config = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd,
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.source": FORMAT},
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        image_config[key] = value.clone();
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": FORMAT}],
    }))
    .map_err(|source| Error::Json { source })?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))
    .map_err(|source| Error::Json { source })?;
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name},
        }],
    }))
    .map_err(|source| Error::Json { source })?;

    let stem: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let archive = dir.join(format!("{stem}-{}.tar", &manifest_digest[..16]));
    let built = BuiltImage {
        name: name.to_owned(),
        archive: archive.clone(),
        manifest_digest: format!("sha256:{manifest_digest}"),
        cached: archive.exists(),
    };
    if built.cached {
        return Ok(built);
    }
    let mut outer = tar::Builder::new(Vec::new());
    let blobs: [(&str, &[u8]); 5] = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
        (&format!("blobs/sha256/{layer_digest}"), &layer),
        (&format!("blobs/sha256/{config_digest}"), &config),
        (&format!("blobs/sha256/{manifest_digest}"), &manifest),
    ];
    let to_err =
        |source| Error::Io { action: "write the image archive", path: archive.clone(), source };
    for (path, data) in blobs {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        outer.append_data(&mut header, path, data).map_err(to_err)?;
    }
    let bytes = outer.into_inner().map_err(to_err)?;
    // Write to a unique temporary name, then rename: concurrent builders never see half a file.
    let tmp = dir.join(format!(".{stem}-{}.{}.tmp", &manifest_digest[..16], unique_suffix()));
    let mut file = fs::File::create(&tmp).map_err(to_err)?;
    file.write_all(&bytes).map_err(to_err)?;
    file.sync_all().map_err(to_err)?;
    fs::rename(&tmp, &archive).map_err(to_err)?;
    tracing::info!(image.name = %name, archive = %archive.display(), bytes = bytes.len(), "image archive written");
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_library_paths() {
        let libs = shared_libraries(Path::new("/bin/sh"));
        if let Ok(libs) = libs {
            assert!(libs.iter().all(|p| p.is_absolute()));
        }
    }

    #[test]
    #[allow(clippy::print_stderr, reason = "a test that cannot run says SKIPPED")]
    fn a_second_build_with_unchanged_inputs_reuses_the_archives_without_rebuilding() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = match build_images(dir.path()) {
            Ok(first) => first,
            Err(Error::Prerequisite { what }) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {what}");
                eprintln!("SKIPPED: {what}");
                return;
            }
            Err(error) => panic!("build failed: {error}"),
        };
        assert!(first.iter().all(|b| !b.cached && b.archive.is_file()));
        let second = build_images(dir.path()).expect("second build");
        assert!(second.iter().all(|b| b.cached));
        let digests =
            |v: &[BuiltImage]| v.iter().map(|b| b.manifest_digest.clone()).collect::<Vec<_>>();
        assert_eq!(digests(&first), digests(&second));
        // A lost archive invalidates the index: the next build writes it again.
        fs::remove_file(&first[0].archive).expect("remove");
        let third = build_images(dir.path()).expect("third build");
        assert_eq!(digests(&first), digests(&third));
        assert!(third[0].archive.is_file());
    }

    #[test]
    fn the_same_rootfs_gives_the_same_layer_bytes() {
        let mut rootfs = Rootfs::new();
        rootfs.insert("etc".to_owned(), Entry::Dir { mode: 0o755, uid: 0 });
        rootfs.insert("etc/x".to_owned(), Entry::File { mode: 0o644, data: b"x".to_vec() });
        rootfs.insert("bin/sh".to_owned(), Entry::Symlink { target: "/bin/busybox".to_owned() });
        let a = layer_tar(&rootfs).expect("layer");
        let b = layer_tar(&rootfs).expect("layer");
        assert_eq!(sha256(&a), sha256(&b));
        let mut archive = tar::Archive::new(a.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").display().to_string())
            .collect();
        assert_eq!(names, ["bin/sh", "etc/", "etc/x"]);
    }

    #[test]
    fn a_dynamic_binary_is_detected_by_its_interpreter_header() {
        let sh = fs::read("/bin/ls").unwrap_or_default();
        if !sh.is_empty() {
            assert!(has_interpreter(&sh), "/bin/ls is expected to be dynamic");
        }
        assert!(!has_interpreter(b"not an elf"));
    }
}
