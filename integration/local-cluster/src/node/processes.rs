//! The machine's processes, read from `/proc`: who runs, with what command line, and whose
//! child it is (to stop a cluster's containers with their shims).

use std::{
    collections::{HashMap, HashSet},
    fs,
};

/// Every process with its NUL-separated command line.
pub(crate) fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).into_owned()))
        })
        .collect()
}

/// The parent PID from `/proc/<pid>/stat` (the field after the parenthesised command name).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// All descendants of `roots` (not the roots themselves).
pub(crate) fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, _) in processes() {
        if let Some(ppid) = parent_pid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_of_this_process_is_read_from_proc() {
        let me = std::process::id();
        let parent = parent_pid(me).expect("a parent");
        assert!(parent > 0 && parent != me);
    }

    #[test]
    fn this_process_is_among_the_descendants_of_its_parent() {
        let me = std::process::id();
        let parent = parent_pid(me).expect("a parent");
        assert!(descendants(&[parent]).contains(&me));
        assert!(processes().iter().any(|(pid, _)| *pid == me));
    }
}
