//! Real `rdp-doctor` processes: spawned with their log (stderr) read as it comes, so a full pipe
//! never stalls them, kept for the assertions, and searched for the address they listen on.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

/// How long a process may take to log what [`Logged::spawn`] looks for.
const START_WAIT: Duration = Duration::from_secs(20);

/// A child process and its log so far.
pub struct Logged {
    pub child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Logged {
    /// Spawn `command` with its stderr piped, and read its log until `find` finds something in
    /// a line (an address, say); the process and what was found. Panics, with the log so far,
    /// if the process exits or stays silent for 20 s first.
    pub async fn spawn(
        name: &str,
        mut command: tokio::process::Command,
        find: impl Fn(&str) -> Option<String>,
    ) -> (Logged, String) {
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = String::new();
        let found = loop {
            let line = tokio::time::timeout(START_WAIT, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("{name} logged nothing it was expected to: {seen}"))
                .expect("stderr")
                .unwrap_or_else(|| panic!("{name} exited: {seen}"));
            seen.push_str(&line);
            seen.push('\n');
            if let Some(found) = find(&line) {
                break found;
            }
        };
        let log = Arc::new(Mutex::new(seen));
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        (
            Logged {
                child,
                log,
                reader: Some(reader),
            },
            found,
        )
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The whole log, once the process closed its stderr (it exited).
    pub async fn log_to_end(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(START_WAIT, reader)
                .await
                .expect("the log ends")
                .expect("the log reader");
        }
        self.log()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// The `http://127.0.0.1:PORT` of a line that names a URL ending in `path` (e.g. `/interactions`).
pub fn base_url_before(line: &str, path: &str) -> Option<String> {
    let at = line.find("http://127.0.0.1:")?;
    let rest = &line[at..];
    Some(rest[..rest.find(path)?].to_string())
}

/// The `http://…` address a line names (up to the first character that cannot be in one).
pub fn url_in(line: &str) -> Option<String> {
    let at = line.find("http://")?;
    Some(
        line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ":/.".contains(*c))
            .collect(),
    )
}
