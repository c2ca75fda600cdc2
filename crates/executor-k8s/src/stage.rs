//! How a stage runs in the pod: a small protocol of POSIX shell programs, each passed whole in
//! an exec's arguments (no program is installed in the images), and the stage's explicit state.
//!
//! Per stage, two execs (`k8s-lifecycle-failures.md` §6):
//!
//! 1. **write and follow**, in the helper: reads exactly `len` bytes of script from stdin (so
//!    secrets never appear in a URL or the pod spec), writes them to `<scripts>/<stage>.tmp`
//!    and renames that to `<scripts>/<stage>`, says `written` on stderr, then copies
//!    `<logs>/<stage>.log` from byte `offset` to stdout until `<logs>/<stage>.exit` exists and
//!    the log is drained, and ends by printing `exit=<status>` on stderr. The status travels
//!    out of band: nothing the script prints is ever interpreted.
//! 2. **launch**, in the stage's container: takes the marker `<logs>/<stage>.started` with
//!    `O_EXCL` (noclobber), so a second launch after a lost response is a no-op, then starts the
//!    script detached in its own session with its output going straight to the log file, and
//!    its exit status written to `<stage>.exit` by rename once it ends.
//!
//! The wrapper also counts the kernel's OOM kills in the container's memory cgroup
//! (`memory.events` on cgroup v2, `memory.oom_control` on v1) around the script; when the
//! script's processes were OOM-killed it writes the count to `<stage>.exit.oom` and the follower
//! says `oom=<n>` before the status, so the job log can say the memory limit was reached.
//!
//! While the stage is quiet the follower says `alive` on stderr every few seconds, so a stream
//! that went silent is known to be dead. A follow that is cut (a dropped connection) is started again from the byte offset the
//! runner has received, without writing the script again (`len` = 0). Cancel sends SIGTERM to
//! the stage's process group (its pid is in `<logs>/<stage>.pid`): the small wrapper that
//! writes the exit status catches it (`trap : TERM`, which the script does not inherit: a
//! handled signal is reset by `exec`), so the status of a canceled script is still written.

use crate::script::Stage;

/// The program behind every exec: `sh -c PROGRAM podrunner <op> <args>...`.
///
/// - `write-follow <scripts> <logs> <stage> <len> <offset>`
/// - `launch <scripts> <logs> <stage>`
/// - `kill <logs> <stage> <signal>`
pub const PROGRAM: &str = r#"op=$1; shift
size_of() { stat -c %s "$1" 2>/dev/null || wc -c < "$1"; }
nap() { sleep 0.2 2>/dev/null || sleep 1; }
case "$op" in
write-follow)
  S=$1 L=$2 s=$3 n=$4 off=$5
  if [ "$n" -gt 0 ]; then
    head -c "$n" > "$S/$s.tmp" && [ "$(size_of "$S/$s.tmp")" -eq "$n" ] && mv -f "$S/$s.tmp" "$S/$s" ||
      { echo "error=failed to write the script $S/$s" >&2; exit 2; }
  fi
  echo written >&2
  log="$L/$s.log" ex="$L/$s.exit" quiet=0
  while :; do
    if [ -f "$log" ]; then
      size=$(size_of "$log")
      if [ "$size" -gt "$off" ]; then
        tail -c +"$((off + 1))" "$log" | head -c "$((size - off))"
        off=$size quiet=0
        continue
      fi
      if [ -f "$ex" ]; then
        [ "$(size_of "$log")" -gt "$off" ] && continue
        [ -f "$ex.oom" ] && echo "oom=$(cat "$ex.oom")" >&2
        echo "exit=$(cat "$ex")" >&2
        exit 0
      fi
    elif [ -f "$ex" ]; then
      echo "error=the stage log $log was removed" >&2
      exit 3
    fi
    nap
    quiet=$((quiet + 1))
    if [ "$quiet" -ge 15 ]; then
      echo alive >&2
      quiet=0
    fi
  done ;;
launch)
  S=$1 L=$2 s=$3
  if ! ( set -C; : > "$L/$s.started" ) 2>/dev/null; then
    echo already-started
    exit 0
  fi
  : > "$L/$s.log"
  shell=sh
  for c in /usr/local/bin/bash /usr/bin/bash /bin/bash; do [ -x "$c" ] && { shell=$c; break; }; done
  run='trap : TERM
k() { for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
  [ -r "$f" ] && { sed -n "s/^oom_kill //p" "$f"; return; }; done; }
o=$(k); "$0" "$1" > "$2" 2>&1 < /dev/null; c=$?; a=$(k)
[ "${a:-0}" -gt "${o:-0}" ] 2>/dev/null && echo $((a - o)) > "$3.oom"
echo $c > "$3.tmp"; mv -f "$3.tmp" "$3"'
  if command -v setsid > /dev/null 2>&1; then
    setsid sh -c "$run" "$shell" "$S/$s" "$L/$s.log" "$L/$s.exit" < /dev/null > /dev/null 2>&1 &
  else
    sh -c "$run" "$shell" "$S/$s" "$L/$s.log" "$L/$s.exit" < /dev/null > /dev/null 2>&1 &
  fi
  echo $! > "$L/$s.pid"
  echo started ;;
kill)
  L=$1 s=$2 sig=$3
  [ -f "$L/$s.exit" ] && exit 0
  pid=$(cat "$L/$s.pid" 2>/dev/null) || exit 0
  kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null
  exit 0 ;;
*)
  echo "error=unknown operation $op" >&2
  exit 2 ;;
esac
"#;

/// Where one job's stage files live in the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDirs {
    /// The scripts volume's mount path.
    pub scripts: String,
    /// The logs volume's mount path.
    pub logs: String,
}

fn command(op: &str, args: &[String]) -> Vec<String> {
    let mut out =
        vec!["sh".to_owned(), "-c".to_owned(), PROGRAM.to_owned(), "podrunner".to_owned()];
    out.push(op.to_owned());
    out.extend(args.iter().cloned());
    out
}

/// The write-and-follow command: `len` script bytes follow on stdin (0: the script is already
/// there), the log is followed from `offset`.
pub fn write_follow_command(
    dirs: &StageDirs,
    stage: Stage,
    len: usize,
    offset: u64,
) -> Vec<String> {
    command(
        "write-follow",
        &[
            dirs.scripts.clone(),
            dirs.logs.clone(),
            stage.name().to_owned(),
            len.to_string(),
            offset.to_string(),
        ],
    )
}

/// The launch command (idempotent).
pub fn launch_command(dirs: &StageDirs, stage: Stage) -> Vec<String> {
    command("launch", &[dirs.scripts.clone(), dirs.logs.clone(), stage.name().to_owned()])
}

/// The command that signals the stage's process group (a no-op once the stage ended).
pub fn kill_command(dirs: &StageDirs, stage: Stage, signal: &str) -> Vec<String> {
    command("kill", &[dirs.logs.clone(), stage.name().to_owned(), signal.to_owned()])
}

/// The follower says `alive` after this many quiet polls (about 3 s): a stream that brings
/// neither output nor that for [`STREAM_SILENCE_LIMIT`] is dead, even when no FIN arrived (a
/// load balancer's idle cut, a node that went away).
pub const KEEPALIVE_POLLS: u32 = 15;

/// How long a follower stream may stay silent before the runner treats it as cut.
pub const STREAM_SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the follower said on stderr, line by line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerLine {
    /// The script is in place: the stage may be launched.
    Written,
    /// The follower is still there (sent while the stage is quiet).
    Alive,
    /// The stage ended with this status.
    Exit(i32),
    /// The kernel OOM-killed this many of the script's processes (said before `Exit`).
    OomKills(u32),
    /// The follower failed (the message says what).
    Error(String),
    /// Anything else (a shell's own complaint), kept for the error message.
    Other(String),
}

impl FollowerLine {
    /// Parses one stderr line of the follower.
    pub fn parse(line: &str) -> Self {
        let line = line.trim_end();
        if line == "written" {
            return Self::Written;
        }
        if line == "alive" {
            return Self::Alive;
        }
        if let Some(code) = line.strip_prefix("exit=") {
            return match code.trim().parse() {
                Ok(code) => Self::Exit(code),
                Err(_) => Self::Error(format!("the stage's exit status file holds {code:?}")),
            };
        }
        if let Some(count) = line.strip_prefix("oom=") {
            return match count.trim().parse() {
                Ok(count) => Self::OomKills(count),
                Err(_) => Self::Other(line.to_owned()),
            };
        }
        if let Some(message) = line.strip_prefix("error=") {
            return Self::Error(message.to_owned());
        }
        Self::Other(line.to_owned())
    }
}

/// Where a stage stands: everything needed to resume following it after a dropped
/// connection or, saved to disk, after a runner restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageState {
    /// The job.
    pub job_id: u64,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The stage.
    pub stage: Stage,
    /// Whether the script was written and the launch was sent.
    pub launched: bool,
    /// Bytes of the stage log received so far.
    pub offset: u64,
    /// The exit status, once known.
    pub exit_code: Option<i32>,
    /// How many of the stage's processes the kernel OOM-killed (known with the status).
    pub oom_kills: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_lines_parse_out_of_band_status() {
        assert_eq!(FollowerLine::parse("written\n"), FollowerLine::Written);
        assert_eq!(FollowerLine::parse("alive\n"), FollowerLine::Alive);
        assert!(PROGRAM.contains(&format!("-ge {KEEPALIVE_POLLS} ]")));
        assert_eq!(FollowerLine::parse("exit=3\n"), FollowerLine::Exit(3));
        assert_eq!(FollowerLine::parse("oom=2\n"), FollowerLine::OomKills(2));
        assert_eq!(
            FollowerLine::parse("error=the stage log /l/x.log was removed"),
            FollowerLine::Error("the stage log /l/x.log was removed".to_owned())
        );
        assert!(matches!(FollowerLine::parse("exit=x"), FollowerLine::Error(_)));
        assert!(matches!(FollowerLine::parse("sh: oops"), FollowerLine::Other(_)));
    }

    #[test]
    fn commands_carry_the_program_and_their_arguments() {
        let dirs = StageDirs { scripts: "/scripts-1-2".to_owned(), logs: "/logs-1-2".to_owned() };
        let c = write_follow_command(&dirs, Stage::StepScript, 10, 5);
        assert_eq!(&c[..2], ["sh", "-c"]);
        assert_eq!(
            c[3..],
            ["podrunner", "write-follow", "/scripts-1-2", "/logs-1-2", "step_script", "10", "5"]
        );
        let c = launch_command(&dirs, Stage::GetSources);
        assert_eq!(c[3..], ["podrunner", "launch", "/scripts-1-2", "/logs-1-2", "get_sources"]);
    }
}
