//! Artifact archives, pure and synchronous: which files of the project directory an
//! `artifacts:` entry selects (upstream's `paths` globs with `**`, `exclude`, `untracked`), the
//! conversion of the tar stream the helper container sends into GitLab's formats (`zip`, the
//! `gzip` of reports, `raw`), and of a downloaded zip into the tar stream the helper extracts.
//!
//! Nothing here runs in the pod or talks to GitLab ([`crate::transfer`] does); every function
//! streams, so an archive is never held in memory.

use std::collections::BTreeSet;
use std::io::{self, Read, Seek, Write};

use globset::{GlobBuilder, GlobMatcher};

/// The entries of the project directory, as the helper's `find` (and `git ls-files -o`) list
/// them: paths relative to the project directory, without `./`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Directories.
    pub dirs: BTreeSet<String>,
    /// Everything else (files, symlinks).
    pub others: BTreeSet<String>,
    /// `git ls-files -o` (untracked files), when asked.
    pub untracked: Vec<String>,
}

/// The token between the sections of a listing (no `find` output is a bare `|`).
pub const LISTING_SEPARATOR: &str = "|";

impl Listing {
    /// Parses the listing program's output: NUL-terminated directories, `|`, the other
    /// entries, `|`, the untracked files.
    pub fn parse(output: &[u8]) -> Self {
        let mut listing = Self::default();
        let mut section = 0;
        let mut tokens: Vec<&[u8]> = output.split(|b| *b == 0).collect();
        if tokens.last().is_some_and(|t| t.is_empty()) {
            tokens.pop();
        }
        for token in tokens {
            let text = String::from_utf8_lossy(token);
            if section < 2 && text == LISTING_SEPARATOR {
                section += 1;
                continue;
            }
            let path = text.strip_prefix("./").unwrap_or(&text).to_owned();
            if path.is_empty() || path == "." {
                continue;
            }
            match section {
                0 => listing.dirs.insert(path),
                1 => listing.others.insert(path),
                _ => {
                    listing.untracked.push(path);
                    true
                }
            };
        }
        listing
    }

    fn contains(&self, path: &str) -> bool {
        self.dirs.contains(path) || self.others.contains(path)
    }

    /// `path` and everything below it, in order.
    fn walk<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = format!("{path}/");
        let below = move |set: &'a BTreeSet<String>| {
            let prefix = prefix.clone();
            set.range(prefix.clone()..).take_while(move |p| p.starts_with(&prefix))
        };
        self.dirs
            .get(path)
            .into_iter()
            .chain(self.others.get(path))
            .chain(below(&self.dirs))
            .chain(below(&self.others))
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.dirs.iter().chain(self.others.iter())
    }
}

/// One line the selection has for the job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `<path>: found N matching artifact files and directories`.
    Found { pattern: String, count: usize },
    /// A warning (no match, a path outside the project, a bad pattern, no untracked files).
    Warning(String),
    /// `<pattern>: excluded N files`, `untracked: found N files`.
    Info(String),
}

/// What an `artifacts:` (or `cache:`) entry selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The selected paths (directories included), sorted, each once.
    pub paths: BTreeSet<String>,
    /// The lines for the job log, in upstream's order.
    pub notes: Vec<Note>,
}

impl Selection {
    /// The NUL-terminated list the archive program reads (each path starting with `./`, so no
    /// name is taken for an option).
    pub fn nul_list(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for path in &self.paths {
            out.extend_from_slice(b"./");
            out.extend_from_slice(path.as_bytes());
            out.push(0);
        }
        out
    }
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// `pattern` relative to the project directory, or why it is outside of it.
fn relative(pattern: &str, project_dir: &str) -> Result<String, String> {
    let project = project_dir.trim_end_matches('/');
    let mut rel = if let Some(rest) = pattern.strip_prefix(project) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(format!("artifact path is not a subpath of project directory: {pattern}"));
        }
        rest.trim_start_matches('/').to_owned()
    } else if pattern.starts_with('/') {
        return Err(format!("artifact path is not a subpath of project directory: {pattern}"));
    } else {
        pattern.to_owned()
    };
    // Clean `.` and `..` as filepath.Clean does, refusing to leave the project.
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "artifact path is not a subpath of project directory: {pattern}"
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    rel = parts.join("/");
    Ok(rel)
}

/// Selects what `paths`, `exclude` and `untracked` name in `listing`, as upstream's file
/// archiver does: each path (a glob, `**` crossing directories) adds each match and everything
/// below it, minus what an exclude glob matches.
pub fn select(
    listing: &Listing,
    project_dir: &str,
    paths: &[String],
    exclude: &[String],
    untracked: bool,
) -> Selection {
    let mut selection = Selection::default();
    let mut excludes = Vec::new();
    for pattern in exclude {
        match relative(pattern, project_dir).and_then(|rel| glob(&rel)) {
            Ok(matcher) => excludes.push((pattern.clone(), matcher, 0usize)),
            Err(e) => selection.notes.push(Note::Warning(format!("isExcluded: {e}"))),
        }
    }
    let mut take = |path: &str, selection: &mut Selection| -> bool {
        if let Some(rule) = excludes.iter_mut().find(|(_, m, _)| m.is_match(path)) {
            rule.2 += 1;
            return false;
        }
        selection.paths.insert(path.to_owned());
        true
    };
    for pattern in paths {
        if pattern.is_empty() {
            selection.notes.push(Note::Warning("No matching files. Path is empty.".to_owned()));
            continue;
        }
        let rel = match relative(pattern, project_dir) {
            Ok(rel) => rel,
            Err(e) => {
                selection.notes.push(Note::Warning(format!("processPath: {e}")));
                continue;
            }
        };
        let matches: Vec<String> = if rel.is_empty() {
            listing.all().cloned().collect()
        } else if has_glob(&rel) {
            match glob(&rel) {
                Ok(m) => listing.all().filter(|p| m.is_match(p.as_str())).cloned().collect(),
                Err(e) => {
                    selection.notes.push(Note::Warning(format!("{pattern}: {e}")));
                    continue;
                }
            }
        } else if listing.contains(&rel) {
            vec![rel.clone()]
        } else {
            Vec::new()
        };
        let mut found = 0;
        let mut seen = BTreeSet::new();
        for m in &matches {
            for path in listing.walk(m) {
                if seen.insert(path.clone()) && take(path, &mut selection) {
                    found += 1;
                }
            }
        }
        if found == 0 {
            selection.notes.push(Note::Warning(format!(
                "{pattern}: no matching files. Ensure that the artifact path is relative to the working directory ({project_dir})"
            )));
        } else {
            selection.notes.push(Note::Found { pattern: pattern.clone(), count: found });
        }
    }
    if untracked {
        let mut found = 0;
        for path in &listing.untracked {
            if listing.contains(path) && take(path, &mut selection) {
                found += 1;
            }
        }
        selection.notes.push(if found == 0 {
            Note::Warning("untracked: no files".to_owned())
        } else {
            Note::Info(format!("untracked: found {found} files"))
        });
    }
    for (pattern, _, count) in excludes {
        if count > 0 {
            selection.notes.push(Note::Info(format!("{pattern}: excluded {count} files")));
        }
    }
    selection
}

/// The archive formats GitLab takes (`artifact_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip (`archive` artifacts), deflated at the level.
    Zip(u32),
    /// One gzip member per file (reports such as `junit`).
    Gzip(u32),
    /// The one selected file as it is.
    Raw,
}

impl Format {
    /// The format GitLab names (`zip` when it names none), at the compression level
    /// `ARTIFACT_COMPRESSION_LEVEL` names (`fastest`, `fast`, `default`, `slow`, `slowest`).
    pub fn from_gitlab(format: Option<&str>, level: Option<&str>) -> Result<Self, String> {
        let level = match level.unwrap_or("default") {
            "fastest" => 1,
            "fast" => 3,
            "" | "default" => 6,
            "slow" => 8,
            "slowest" => 9,
            other => {
                return Err(format!(
                    "unknown ARTIFACT_COMPRESSION_LEVEL {other:?} (fastest, fast, default, slow, slowest)"
                ));
            }
        };
        match format.unwrap_or("zip") {
            "" | "zip" => Ok(Self::Zip(level)),
            "gzip" => Ok(Self::Gzip(level)),
            "raw" => Ok(Self::Raw),
            other => Err(format!("unsupported artifact format {other:?} (zip, gzip, raw)")),
        }
    }

    /// The uploaded file's name for the artifact `name` (upstream: the base name, `artifacts`
    /// when unnamed, plus `.zip` or `.gz`).
    pub fn file_name(self, name: Option<&str>) -> String {
        let base = name
            .map(|n| n.trim_end_matches('/').rsplit('/').next().unwrap_or(n))
            .filter(|n| !n.is_empty() && *n != ".")
            .unwrap_or("artifacts");
        match self {
            Self::Zip(_) => format!("{base}.zip"),
            Self::Gzip(_) => format!("{base}.gz"),
            Self::Raw => base.to_owned(),
        }
    }
}

/// What went into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// The files' bytes, uncompressed.
    pub bytes: u64,
    /// Files stored without compression (their start did not compress).
    pub stored: u64,
}

/// How much of a file's start tells whether it compresses.
const SNIFF_BYTES: u64 = 256 * 1024;
/// Files up to this size are deflated without looking.
const SMALL_FILE: usize = 64 * 1024;

/// Whether `head` (a file's first bytes) shrinks by at least a tenth at the fastest level.
fn compresses(head: &[u8]) -> bool {
    if head.len() <= SMALL_FILE {
        return true;
    }
    let mut encoder =
        flate2::write::DeflateEncoder::new(Counter::default(), flate2::Compression::fast());
    if encoder.write_all(head).is_err() {
        return true;
    }
    encoder.finish().map_or(true, |counted| counted.0 * 10 < head.len() as u64 * 9)
}

fn unix_mode(header: &tar::Header) -> u32 {
    header.mode().unwrap_or(0o644) & 0o7777
}

fn zip_time(mtime: u64) -> zip::DateTime {
    let at = i64::try_from(mtime).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0));
    at.and_then(|t| {
        use chrono::{Datelike, Timelike};
        zip::DateTime::from_date_and_time(
            u16::try_from(t.year()).ok()?,
            u8::try_from(t.month()).ok()?,
            u8::try_from(t.day()).ok()?,
            u8::try_from(t.hour()).ok()?,
            u8::try_from(t.minute()).ok()?,
            u8::try_from(t.second()).ok()?,
        )
        .ok()
    })
    .unwrap_or_default()
}

fn tar_path(entry: &tar::Entry<'_, impl Read>) -> io::Result<String> {
    let path = entry.path()?.to_string_lossy().into_owned();
    let path = path.strip_prefix("./").unwrap_or(&path).trim_end_matches('/').to_owned();
    Ok(path)
}

/// Whether a tar entry is a regular file (reports and raw artifacts take files only).
fn is_file(entry: &tar::Entry<'_, impl Read>) -> bool {
    matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Writes the tar stream `input` (one or more archives back to back, as `xargs tar` makes
/// them) to `out` in `format`.
///
/// # Errors
///
/// A broken tar stream, a full disk, or `raw` with other than one file.
pub fn write_archive<W: Write + Seek>(
    input: impl Read,
    out: W,
    format: Format,
) -> io::Result<Summary> {
    let mut archive = tar::Archive::new(input);
    archive.set_ignore_zeros(true);
    let mut summary = Summary::default();
    match format {
        Format::Zip(level) => {
            let mut zip = zip::ZipWriter::new(out);
            for entry in archive.entries()? {
                let mut entry = entry?;
                let path = tar_path(&entry)?;
                if path.is_empty() {
                    continue;
                }
                let header = entry.header();
                let options = zip::write::SimpleFileOptions::default()
                    .unix_permissions(unix_mode(header))
                    .last_modified_time(zip_time(header.mtime().unwrap_or(0)))
                    .large_file(header.size().unwrap_or(0) >= u64::from(u32::MAX));
                match header.entry_type() {
                    tar::EntryType::Directory => {
                        zip.add_directory(format!("{path}/"), options).map_err(io::Error::other)?;
                        summary.dirs += 1;
                    }
                    tar::EntryType::Symlink => {
                        let target = entry
                            .link_name()?
                            .map(|t| t.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        zip.add_symlink(path, target, options).map_err(io::Error::other)?;
                        summary.symlinks += 1;
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        // What does not compress (archives, images, binaries) is stored: deflate
                        // would spend the runner's CPU to make it larger.
                        let mut head = Vec::new();
                        (&mut entry).take(SNIFF_BYTES).read_to_end(&mut head)?;
                        let options = if compresses(&head) {
                            options
                                .compression_method(zip::CompressionMethod::Deflated)
                                .compression_level(Some(i64::from(level)))
                        } else {
                            summary.stored += 1;
                            options.compression_method(zip::CompressionMethod::Stored)
                        };
                        zip.start_file(path, options).map_err(io::Error::other)?;
                        zip.write_all(&head)?;
                        summary.bytes += head.len() as u64 + io::copy(&mut entry, &mut zip)?;
                        summary.files += 1;
                    }
                    // Hard links, devices and fifos are not artifacts.
                    _ => {}
                }
            }
            zip.finish().map_err(io::Error::other)?;
        }
        Format::Gzip(level) => {
            let mut out = out;
            for entry in archive.entries()? {
                let mut entry = entry?;
                if !is_file(&entry) {
                    continue;
                }
                let path = tar_path(&entry)?;
                let mtime = entry.header().mtime().unwrap_or(0);
                let mut gz = flate2::GzBuilder::new()
                    .filename(path.as_bytes())
                    .mtime(u32::try_from(mtime).unwrap_or(0))
                    .write(&mut out, flate2::Compression::new(level));
                summary.bytes += io::copy(&mut entry, &mut gz)?;
                gz.finish()?;
                summary.files += 1;
            }
        }
        Format::Raw => {
            let mut out = out;
            for entry in archive.entries()? {
                let mut entry = entry?;
                if !is_file(&entry) {
                    continue;
                }
                if summary.files == 1 {
                    return Err(invalid(
                        "the raw artifact format takes exactly one file".to_owned(),
                    ));
                }
                summary.bytes += io::copy(&mut entry, &mut out)?;
                summary.files += 1;
            }
        }
    }
    Ok(summary)
}

/// Writes the zip `input` as a tar stream to `out`; with `sizing`, no file is decompressed
/// (the data are zeros of the same length), which gives the stream's exact length cheaply.
/// Entries that would leave the directory (`..`, absolute) are refused.
///
/// # Errors
///
/// A broken zip, an unsafe entry name, or a failed write.
pub fn zip_to_tar<R: Read + Seek>(input: R, out: impl Write, sizing: bool) -> io::Result<Summary> {
    let mut zip =
        zip::ZipArchive::new(input).map_err(|e| invalid(format!("not a zip archive: {e}")))?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut summary = Summary::default();
    for index in 0..zip.len() {
        let mut file = zip.by_index(index).map_err(|e| invalid(e.to_string()))?;
        let Some(name) = file.enclosed_name() else {
            let name = String::from_utf8_lossy(file.name_raw()).into_owned();
            return Err(invalid(format!("the archive entry {name:?} leaves the directory")));
        };
        let name = name.to_string_lossy().into_owned();
        let mode = file.unix_mode().unwrap_or(if file.is_dir() { 0o755 } else { 0o644 });
        let mtime = file
            .last_modified()
            .and_then(|t| {
                chrono::NaiveDate::from_ymd_opt(t.year().into(), t.month().into(), t.day().into())?
                    .and_hms_opt(t.hour().into(), t.minute().into(), t.second().into())
            })
            .and_then(|t| u64::try_from(t.and_utc().timestamp()).ok())
            .unwrap_or(0);
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode & 0o7777);
        header.set_mtime(mtime);
        if file.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, format!("{}/", name.trim_end_matches('/')), io::empty())?;
            summary.dirs += 1;
        } else if file.is_symlink() {
            let mut target = String::new();
            file.read_to_string(&mut target)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, &name, &target)?;
            summary.symlinks += 1;
        } else {
            let size = file.size();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            if sizing {
                tar.append_data(&mut header, &name, io::repeat(0).take(size))?;
            } else {
                tar.append_data(&mut header, &name, &mut file)?;
            }
            summary.files += 1;
            summary.bytes += size;
        }
    }
    tar.into_inner()?.flush()?;
    Ok(summary)
}

/// Counts what passes through.
#[derive(Debug, Default)]
pub struct Counter(pub u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        let mut out = Vec::new();
        for d in ["./out", "./out/nested", "./out/nested/deep", "./src", "./empty"] {
            out.extend_from_slice(d.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(b"|\0");
        for f in [
            "./out/a.txt",
            "./out/with space.txt",
            "./out/skip.log",
            "./out/nested/b.bin",
            "./out/nested/deep/c.txt",
            "./out/link",
            "./src/main.rs",
            "./report.xml",
        ] {
            out.extend_from_slice(f.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(b"|\0report.xml\0out/a.txt\0");
        Listing::parse(&out)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_listing_parses_into_directories_entries_and_untracked_files() {
        let l = listing();
        assert!(l.dirs.contains("out/nested/deep"));
        assert!(l.others.contains("out/with space.txt"));
        assert_eq!(l.untracked, strings(&["report.xml", "out/a.txt"]));
        let without: Listing = Listing::parse(b"./d\0|\0./d/f\0|\0");
        assert_eq!(without.others.len(), 1);
        assert!(without.untracked.is_empty());
        assert_eq!(Listing::parse(b"|\0|\0"), Listing::default());
    }

    #[test]
    fn a_directory_path_takes_everything_below_it_minus_the_excluded() {
        let s =
            select(&listing(), "/builds/g/p", &strings(&["out/"]), &strings(&["out/*.log"]), false);
        let want: BTreeSet<String> = strings(&[
            "out",
            "out/a.txt",
            "out/link",
            "out/nested",
            "out/nested/b.bin",
            "out/nested/deep",
            "out/nested/deep/c.txt",
            "out/with space.txt",
        ])
        .into_iter()
        .collect();
        assert_eq!(s.paths, want);
        assert_eq!(
            s.notes,
            vec![
                Note::Found { pattern: "out/".to_owned(), count: 8 },
                Note::Info("out/*.log: excluded 1 files".to_owned()),
            ]
        );
    }

    #[test]
    fn globs_cross_directories_only_with_a_double_star() {
        let l = listing();
        let s = select(&l, "/p", &strings(&["out/*.txt"]), &[], false);
        assert_eq!(s.paths.len(), 2, "{:?}", s.paths);
        let s = select(&l, "/p", &strings(&["out/**/*.txt"]), &[], false);
        assert!(s.paths.contains("out/nested/deep/c.txt") && s.paths.contains("out/a.txt"));
        assert!(!s.paths.contains("out/nested/b.bin"));
        let s =
            select(&l, "/p", &strings(&["**/c.txt", "/p/src/main.rs", "./report.xml"]), &[], false);
        assert_eq!(s.paths.len(), 3, "{:?}", s.paths);
    }

    #[test]
    fn paths_that_match_nothing_or_leave_the_project_are_warnings() {
        let s = select(
            &listing(),
            "/builds/g/p",
            &strings(&["missing/", "../x", "/etc/passwd", ""]),
            &[],
            false,
        );
        assert!(s.paths.is_empty());
        assert_eq!(
            s.notes,
            vec![
                Note::Warning("missing/: no matching files. Ensure that the artifact path is relative to the working directory (/builds/g/p)".to_owned()),
                Note::Warning("processPath: artifact path is not a subpath of project directory: ../x".to_owned()),
                Note::Warning("processPath: artifact path is not a subpath of project directory: /etc/passwd".to_owned()),
                Note::Warning("No matching files. Path is empty.".to_owned()),
            ]
        );
    }

    #[test]
    fn untracked_adds_gits_untracked_files() {
        let s = select(&listing(), "/p", &[], &[], true);
        assert_eq!(s.paths.len(), 2);
        assert_eq!(s.notes, vec![Note::Info("untracked: found 2 files".to_owned())]);
        assert_eq!(s.nul_list(), b"./out/a.txt\0./report.xml\0");
    }

    /// A tar entry: its name, a file's data, or a symlink's target (neither: a directory).
    type Item<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

    fn tar_of(entries: &[Item<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            match (data, link) {
                (Some(data), _) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, *data).expect("append");
                }
                (None, Some(target)) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).expect("link");
                }
                (None, None) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty()).expect("dir");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_tar_stream_becomes_a_zip_and_the_zip_a_tar_of_the_same_entries() {
        let stream = tar_of(&[
            ("./out/", None, None),
            ("./out/with space.txt", Some(b"spaced"), None),
            ("./out/link", None, Some("with space.txt")),
        ]);
        // Two archives back to back, as two tar processes of one xargs write them.
        let mut twice = stream.clone();
        twice.extend(tar_of(&[("./out/second.bin", Some(&[1, 2, 3]), None)]));
        let mut zip = io::Cursor::new(Vec::new());
        let summary = write_archive(&twice[..], &mut zip, Format::Zip(6)).expect("zip");
        assert_eq!(summary, Summary { files: 2, dirs: 1, symlinks: 1, bytes: 9, stored: 0 });
        let mut archive =
            zip::ZipArchive::new(io::Cursor::new(zip.get_ref().clone())).expect("reads");
        let names: Vec<String> = (0..archive.len())
            .map(|i| archive.by_index(i).expect("entry").name().expect("name").into_owned())
            .collect();
        assert_eq!(names, ["out/", "out/with space.txt", "out/link", "out/second.bin"]);
        let mut text = String::new();
        archive
            .by_name("out/with space.txt")
            .expect("file")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "spaced");
        assert_eq!(
            archive.by_name("out/with space.txt").expect("file").unix_mode(),
            Some(0o100_640)
        );

        let mut sized = Counter::default();
        zip_to_tar(io::Cursor::new(zip.get_ref().clone()), &mut sized, true).expect("sizing");
        let mut back = Vec::new();
        let summary =
            zip_to_tar(io::Cursor::new(zip.get_ref().clone()), &mut back, false).expect("tar");
        assert_eq!(summary.files, 2);
        assert_eq!(sized.0, back.len() as u64, "the sizing pass gives the exact length");
        let mut tar = tar::Archive::new(&back[..]);
        let mut seen = Vec::new();
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let kind = entry.header().entry_type();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            let link = entry.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned());
            seen.push((path, kind, data, link));
        }
        assert_eq!(seen[0].0, "out/");
        assert_eq!(seen[0].1, tar::EntryType::Directory);
        assert_eq!((seen[1].0.as_str(), &seen[1].2[..]), ("out/with space.txt", &b"spaced"[..]));
        assert_eq!(seen[2].1, tar::EntryType::Symlink);
        assert_eq!(seen[2].3.as_deref(), Some("with space.txt"));
    }

    #[test]
    fn what_does_not_compress_is_stored_and_text_is_deflated() {
        let mut noise = vec![0_u8; 1024 * 1024];
        let mut x: u32 = 12345;
        for b in &mut noise {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 24) as u8;
        }
        let text = "a line of a build log that repeats\n".repeat(30_000);
        let stream = tar_of(&[
            ("./noise.bin", Some(&noise), None),
            ("./log.txt", Some(text.as_bytes()), None),
        ]);
        let mut zip = io::Cursor::new(Vec::new());
        let summary = write_archive(&stream[..], &mut zip, Format::Zip(6)).expect("zip");
        assert_eq!((summary.files, summary.stored), (2, 1));
        let mut archive = zip::ZipArchive::new(io::Cursor::new(zip.into_inner())).expect("zip");
        let noise_entry = archive.by_name("noise.bin").expect("noise");
        assert_eq!(noise_entry.compression(), zip::CompressionMethod::Stored);
        drop(noise_entry);
        let mut log = archive.by_name("log.txt").expect("log");
        assert_eq!(log.compression(), zip::CompressionMethod::Deflated);
        let mut back = String::new();
        log.read_to_string(&mut back).expect("inflate");
        assert_eq!(back, text);
    }

    #[test]
    fn reports_are_one_gzip_member_per_file_and_raw_takes_one_file() {
        let stream = tar_of(&[("./report.xml", Some(b"<testsuites/>"), None)]);
        let mut out = io::Cursor::new(Vec::new());
        write_archive(&stream[..], &mut out, Format::Gzip(6)).expect("gzip");
        let mut gz = flate2::read::GzDecoder::new(&out.get_ref()[..]);
        let mut text = String::new();
        gz.read_to_string(&mut text).expect("gunzip");
        assert_eq!(text, "<testsuites/>");
        assert_eq!(gz.header().and_then(|h| h.filename()), Some(&b"report.xml"[..]));
        let two = tar_of(&[("./a", Some(b"1"), None), ("./b", Some(b"2"), None)]);
        assert!(write_archive(&two[..], io::Cursor::new(Vec::new()), Format::Raw).is_err());
    }

    #[test]
    fn a_zip_entry_that_leaves_the_directory_is_refused() {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        zip.start_file("../evil", zip::write::SimpleFileOptions::default()).expect("start");
        zip.write_all(b"x").expect("write");
        let bytes = zip.finish().expect("finish").into_inner();
        let error = zip_to_tar(io::Cursor::new(bytes), io::sink(), false).expect_err("refused");
        assert!(error.to_string().contains("leaves the directory"), "{error}");
    }

    #[test]
    fn gitlab_formats_and_file_names_follow_upstream() {
        assert_eq!(Format::from_gitlab(None, None), Ok(Format::Zip(6)));
        assert_eq!(Format::from_gitlab(Some("gzip"), Some("fastest")), Ok(Format::Gzip(1)));
        assert!(Format::from_gitlab(Some("tar.zst"), None).is_err());
        assert!(Format::from_gitlab(None, Some("max")).is_err());
        assert_eq!(Format::Zip(6).file_name(None), "artifacts.zip");
        assert_eq!(Format::Zip(6).file_name(Some("build/my-app")), "my-app.zip");
        assert_eq!(Format::Gzip(6).file_name(Some("junit")), "junit.gz");
    }
}
