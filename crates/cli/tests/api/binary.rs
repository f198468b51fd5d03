//! The `crmhub` binary: help, configuration errors, the master key, the admin token.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub fn crmhub() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crmhub"));
    // The test environment's own CRMHUB_* variables must not leak into the process under test.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("CRMHUB_")) {
        command.env_remove(name);
    }
    command.env_remove("RUST_LOG");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run crmhub")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["demo"],
        &["migrate"],
        &["config", "check"],
        &["tenant"],
        &["tenant", "create"],
        &["tenant", "list"],
        &["tenant", "show"],
        &["tenant", "update"],
        &["tenant", "delete"],
        &["calls"],
        &["calls", "list"],
        &["calls", "show"],
        &["calls", "simulate"],
        &["call", "simulate"],
        &["channel-key"],
        &["channel-key", "create"],
        &["channel-key", "list"],
        &["channel-key", "revoke"],
        &["connection"],
        &["connection", "create"],
        &["connection", "list"],
        &["connection", "show"],
        &["connection", "update"],
        &["connection", "rotate-credentials"],
        &["connection", "requests"],
        &["connection", "delete"],
        &["connection", "connect"],
        &["jobs"],
        &["jobs", "list"],
        &["jobs", "redrive"],
        &["jobs", "discard"],
        &["sync"],
        &["sync", "pipeline", "create"],
        &["sync", "pipeline", "list"],
        &["sync", "pipeline", "show"],
        &["sync", "pipeline", "delete"],
        &["sync", "run"],
        &["sync", "status"],
        &["keys"],
        &["keys", "rotate"],
        &["admin-token"],
        &["admin-token", "reset"],
    ];
    for args in commands {
        let output = run(crmhub().args(*args).arg("--help"));
        assert!(output.status.success(), "{args:?} --help failed: {}", stderr(&output));
        assert!(stdout(&output).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("crmhub.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = \"oops\"\n").unwrap();
    let output = run(crmhub().arg("--config").arg(&file).args(["config", "check"]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("unknown key \"server.lisen\""), "{}", stderr(&output));

    let output = run(crmhub().env("CRMHUB_JOBS__CONCURENCY", "2").args(["config", "check"]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("jobs.concurency"), "{}", stderr(&output));
}

#[test]
fn the_demo_refuses_a_config_file_it_would_not_read() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("crmhub.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let output = run(crmhub().arg("--config").arg(&file).args(["demo", "--listen", "127.0.0.1:0"]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("does not read --config"), "{}", stderr(&output));
}

#[test]
fn malformed_toml_is_refused() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("crmhub.toml");
    std::fs::write(&file, "[server\nlisten = ").unwrap();
    let output = run(crmhub().arg("--config").arg(&file).args(["config", "check"]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("invalid configuration"), "{}", stderr(&output));
}

#[test]
fn a_database_url_with_an_unknown_scheme_is_refused() {
    let dir = TempDir::new().unwrap();
    let output = run(crmhub()
        .env("CRMHUB_DATA_DIR", dir.path())
        .env("CRMHUB_DATABASE_URL", "mysql://root@127.0.0.1/crm")
        .args(["tenant", "list"]));
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("database.url") && err.contains("unknown scheme \"mysql\""), "{err}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created");
}

#[test]
fn an_emptied_database_next_to_its_key_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let in_dir = || {
        let mut c = crmhub();
        c.env("CRMHUB_DATA_DIR", dir.path());
        c
    };
    assert!(run(in_dir().args(["tenant", "create", "--slug", "acme", "--name", "Acme"])).status.success());
    let database = dir.path().join("crmhub.db");
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.path().join(format!("crmhub.db{suffix}"));
        if path.exists() {
            std::fs::write(&path, b"").unwrap();
        }
    }
    let refused = run(in_dir().args(["tenant", "list"]));
    assert!(!refused.status.success());
    let err = stderr(&refused);
    let key = dir.path().join("master.key");
    assert!(err.contains(&key.display().to_string()) && err.contains(&database.display().to_string()), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // Nothing was initialised: asked again, it still refuses.
    assert!(!run(in_dir().args(["tenant", "list"])).status.success(), "the refusal holds");

    // Told to, it starts a new installation with the existing key.
    let output = run(in_dir().env("CRMHUB_VAULT__ALLOW_NEW_DATABASE", "true").args(["tenant", "list"]));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_wrong_master_key_is_refused_and_nothing_is_overwritten() {
    let dir = TempDir::new().unwrap();
    let key_a = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let key_b = "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    let with_key = |key: &str| {
        let mut c = crmhub();
        c.env("CRMHUB_DATA_DIR", dir.path()).env("CRMHUB_MASTER_KEY", key);
        c
    };
    assert!(run(with_key(key_a).args(["tenant", "create", "--slug", "acme", "--name", "Acme"])).status.success());
    let created = run(with_key(key_a).args([
        "connection",
        "create",
        "--tenant",
        "acme",
        "--name",
        "Main",
        "--kind",
        "vtiger",
        "--host",
        "crm.example.com",
        "--field",
        "username=admin",
        "--credential",
        "access_key=precious",
    ]));
    assert!(created.status.success(), "{}", stderr(&created));
    let id = serde_json::from_slice::<serde_json::Value>(&created.stdout).unwrap()["id"].as_str().unwrap().to_owned();

    let refused = run(with_key(key_b).args(["tenant", "list"]));
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("does not match this database") && err.contains("nothing was changed"), "{err}");

    // A missing key file next to a sealed database is refused too, rather than replaced.
    let refused = run(crmhub().env("CRMHUB_DATA_DIR", dir.path()).args(["tenant", "list"]));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("no master key was found"), "{}", stderr(&refused));
    assert!(!dir.path().join("master.key").exists());

    let shown = run(with_key(key_a).args(["connection", "show", "--tenant", "acme", &id]));
    assert!(shown.status.success(), "the right key still opens everything: {}", stderr(&shown));
    assert!(!stdout(&shown).contains("precious"), "show never prints credentials");
}

#[test]
fn key_rotation_reseals_and_keeps_the_file_private() {
    let dir = TempDir::new().unwrap();
    let cmd = || {
        let mut c = crmhub();
        c.env("CRMHUB_DATA_DIR", dir.path());
        c
    };
    assert!(run(cmd().args(["tenant", "create", "--slug", "acme", "--name", "Acme"])).status.success());
    assert!(
        run(cmd().args([
            "connection",
            "create",
            "--tenant",
            "acme",
            "--name",
            "Main",
            "--kind",
            "vtiger",
            "--host",
            "crm.example.com",
            "--field",
            "username=admin",
            "--credential",
            "access_key=k"
        ]))
        .status
        .success()
    );
    let before = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let rotated = run(cmd().args(["keys", "rotate"]));
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(stdout(&rotated).contains("1 values re-encrypted"), "{}", stdout(&rotated));
    let after = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    assert_ne!(before, after);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(run(cmd().args(["connection", "list", "--tenant", "acme"])).status.success());
}

/// A running `crmhub serve` whose output goes to a file.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub log: std::path::PathBuf,
}

/// A running `crmhub demo` and what it printed up to "Press Ctrl-C"; stopped (SIGTERM, as
/// Ctrl-C would) however the test ends.
pub struct RunningDemo {
    pub printed: Vec<String>,
    child: Child,
}

impl RunningDemo {
    /// The line that contains `label`.
    pub fn line(&self, label: &str) -> &str {
        self.printed.iter().find(|l| l.contains(label)).unwrap_or_else(|| panic!("{label}: {:?}", self.printed))
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Starts `crmhub demo` on a free port with its data in `dir`, and reads what it prints.
pub async fn start_demo(dir: &Path) -> RunningDemo {
    let listen = format!("127.0.0.1:{}", free_port());
    let child = crmhub()
        .args(["demo", "--listen", &listen, "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("demo-{listen}.err"))).unwrap()))
        .spawn()
        .unwrap();
    let mut demo = RunningDemo { printed: Vec::new(), child };
    let stdout = demo.child.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("Press Ctrl-C"))
            .collect::<Vec<_>>()
    });
    demo.printed = tokio::time::timeout(Duration::from_secs(60), printed).await.expect("the demo starts").unwrap();
    demo
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn serve(dir: &Path, extra_env: &[(&str, &str)]) -> Served {
    let port = free_port();
    let log = dir.join(format!("serve-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut command = crmhub();
    command
        .args(["--log-format", "json", "serve"])
        .env("CRMHUB_DATA_DIR", dir)
        .env("CRMHUB_LISTEN", format!("127.0.0.1:{port}"))
        .envs(extra_env.iter().copied())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    let mut child = command.spawn().expect("spawn crmhub serve");
    let base = format!("http://127.0.0.1:{port}");
    let started = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !started {
        let _ = child.kill();
        let _ = child.wait();
        panic!("crmhub serve did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    Served { child, base, log }
}

impl Served {
    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("wait");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "crmhub serve exited with {status}: {log}");
        log
    }
}

#[tokio::test]
async fn the_generated_admin_token_is_printed_once_and_works() {
    let dir = TempDir::new().unwrap();
    let log = serve(dir.path(), &[]).stop();
    let token = log
        .lines()
        .skip_while(|l| !l.contains("admin token"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("token printed: {log}"))
        .to_owned();
    assert_eq!(token.len(), 43, "{log}");

    let second = serve(dir.path(), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/admin/v1/tenants", second.base);
    let with_token = client.get(&url).bearer_auth(&token).send().await.unwrap().status();
    let without = client.get(&url).bearer_auth("guess").send().await.unwrap().status();
    let log = second.stop();
    assert!(!log.contains(&token), "printed only at the first start");
    assert_eq!((with_token.as_u16(), without.as_u16()), (200, 403), "the printed token is the stored one");
}
