//! The real Vtiger 8.2 installations `scripts/test` starts (`../shared/peers/vtiger/up`), and a
//! plain webservice client that seeds and inspects them the way any integration would: the
//! tests never reach into crmhub to set up a CRM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

/// `CRMHUB_TEST_VTIGER_PEERS`: comma-separated `up --dir` folders, each with its `env` file.
const PEERS_VAR: &str = "CRMHUB_TEST_VTIGER_PEERS";

/// What a test uses a peer for. The two conformance kits each need an installation of their
/// own (the kit searches for fixed names); every other test shares the third, one at a time, so
/// that logins of unrelated tests for the same user never race Vtiger's one challenge token.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    NativeKit = 0,
    TemplateKit = 1,
    Shared = 2,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub url: String,
    pub username: String,
    pub access_key: String,
    /// Where its PHP keeps the session files (deleting them expires every session).
    pub sessions: PathBuf,
    /// Its MariaDB database (for what the webservice cannot do, such as a mass edit's shared
    /// `modifiedtime`).
    pub database: String,
}

/// The peers, or why there are none (each test then fails with that reason).
static PEERS: LazyLock<Result<Vec<Peer>, String>> = LazyLock::new(|| {
    let list = std::env::var(PEERS_VAR).map_err(|_| {
        format!(
            "{PEERS_VAR} is not set: these tests need real Vtiger 8.2 installations. `scripts/test` starts three \
             (../shared/peers/vtiger/up) and sets it."
        )
    })?;
    Ok(list.split(',').filter(|d| !d.trim().is_empty()).map(|dir| load(PathBuf::from(dir.trim()))).collect())
});

fn load(dir: PathBuf) -> Peer {
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_else(|e| panic!("{}/env: {e}", dir.display()));
    let vars: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |name: &str| vars.get(name).unwrap_or_else(|| panic!("{}/env has no {name}", dir.display())).to_string();
    let url = var("VTIGER_URL");
    let port = url.rsplit(':').next().unwrap_or_default().to_owned();
    Peer {
        url,
        username: var("VTIGER_USERNAME"),
        access_key: var("VTIGER_ACCESS_KEY"),
        sessions: dir.join("sessions"),
        database: format!("vtiger_{port}"),
    }
}

static TURNS: LazyLock<Vec<Arc<tokio::sync::Mutex<()>>>> =
    LazyLock::new(|| (0..3).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect());

/// The peer for `role`, held for the caller's test alone until the guard drops.
pub async fn take(role: Role) -> (Peer, tokio::sync::OwnedMutexGuard<()>) {
    let index = role as usize;
    let peers = PEERS.as_ref().unwrap_or_else(|reason| panic!("{reason}"));
    let peer = peers.get(index).unwrap_or_else(|| panic!("{PEERS_VAR} names fewer than {} peers", index + 1)).clone();
    let turn = TURNS[index].clone().lock_owned().await;
    (peer, turn)
}

/// A short random tag that keeps one test's records apart from another's.
pub fn tag() -> String {
    let id = crmhub_core::TenantId::new().to_string();
    let letters: String = id.chars().filter(char::is_ascii_alphabetic).collect();
    // A v4 uuid has at least a few hex letters; pad the rare short draw.
    format!("{letters}qzqzqzqz").chars().take(8).collect()
}

/// Some digits, for phone numbers no other test uses.
pub fn digits(n: usize) -> String {
    let id = crmhub_core::TenantId::new().to_string();
    let number = u128::from_str_radix(&id.replace('-', ""), 16).expect("hex");
    format!("{number:040}").chars().rev().take(n).collect()
}

impl Peer {
    /// Expires every session, as the host's PHP session GC would.
    pub fn expire_sessions(&self) {
        for entry in std::fs::read_dir(&self.sessions).expect("sessions dir").flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }

    /// Runs SQL on the peer's own database.
    pub fn sql(&self, statement: &str) {
        let out = std::process::Command::new("mariadb")
            .args(["-uroot", &self.database, "-e", statement])
            .output()
            .expect("mariadb client");
        assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub async fn ws(&self) -> Ws {
        Ws::login(self).await
    }
}

/// A logged-in webservice session.
#[derive(Clone)]
pub struct Ws {
    endpoint: String,
    session: String,
    pub user_id: String,
    client: reqwest::Client,
}

impl Ws {
    async fn login(peer: &Peer) -> Self {
        let client = reqwest::Client::new();
        let endpoint = format!("{}/webservice.php", peer.url);
        let challenge: Value = client
            .get(&endpoint)
            .query(&[("operation", "getchallenge"), ("username", &peer.username)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = challenge["result"]["token"].as_str().expect("challenge token");
        let key = hex::encode(Md5::digest(format!("{token}{}", peer.access_key)));
        let login: Value = client
            .post(&endpoint)
            .form(&[("operation", "login"), ("username", &peer.username), ("accessKey", &key)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let result = &login["result"];
        Self {
            endpoint,
            session: result["sessionName"].as_str().expect("session").to_owned(),
            user_id: result["userId"].as_str().expect("user id").to_owned(),
            client,
        }
    }

    fn unwrap(answer: Value, what: &str) -> Value {
        assert_eq!(answer["success"], true, "{what}: {answer}");
        answer["result"].clone()
    }

    /// A GET operation with the session (the answer envelope, whatever it says).
    async fn get(&self, params: &[(&str, &str)]) -> Value {
        let mut query = vec![("sessionName", self.session.as_str())];
        query.extend_from_slice(params);
        self.client.get(&self.endpoint).query(&query).send().await.unwrap().json().await.unwrap()
    }

    /// A POST operation with the session.
    async fn post(&self, params: &[(&str, &str)]) -> Value {
        let mut form = vec![("sessionName", self.session.as_str())];
        form.extend_from_slice(params);
        self.client.post(&self.endpoint).form(&form).send().await.unwrap().json().await.unwrap()
    }

    pub async fn query(&self, vtql: &str) -> Vec<Map<String, Value>> {
        let rows = Self::unwrap(self.get(&[("operation", "query"), ("query", vtql)]).await, vtql);
        rows.as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect()
    }

    /// Creates a record (assigned to the logged-in user unless `element` says otherwise).
    pub async fn create(&self, module: &str, element: Value) -> String {
        let mut element = element.as_object().unwrap().clone();
        element.entry("assigned_user_id").or_insert_with(|| json!(self.user_id));
        let element = Value::Object(element).to_string();
        let answer = self.post(&[("operation", "create"), ("elementType", module), ("element", &element)]).await;
        Self::unwrap(answer, module)["id"].as_str().unwrap().to_owned()
    }

    pub async fn contact(&self, first: &str, last: &str, more: Value) -> String {
        let mut element = json!({"firstname": first, "lastname": last});
        element.as_object_mut().unwrap().extend(more.as_object().cloned().unwrap_or_default());
        self.create("Contacts", element).await
    }

    /// Creates `count` contacts four at a time (the peer serves four PHP workers).
    pub async fn contacts(&self, count: usize, make: impl Fn(usize) -> (String, String, Value)) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        let specs: Vec<_> = (0..count).map(make).collect();
        for chunk in specs.chunks(4) {
            let mut batch = tokio::task::JoinSet::new();
            for (i, (first, last, more)) in chunk.iter().cloned().enumerate() {
                let ws = self.clone();
                batch.spawn(async move { (i, ws.contact(&first, &last, more).await) });
            }
            let mut made = batch.join_all().await;
            made.sort();
            ids.extend(made.into_iter().map(|(_, id)| id));
        }
        ids
    }

    /// Changes some fields of a record, as a person editing it in Vtiger would.
    pub async fn revise(&self, element: Value) {
        let element = element.to_string();
        Self::unwrap(self.post(&[("operation", "revise"), ("element", &element)]).await, "revise");
    }

    pub async fn delete(&self, id: &str) {
        let answer = self.post(&[("operation", "delete"), ("id", id)]).await;
        Self::unwrap(answer, "delete");
    }

    pub async fn retrieve(&self, id: &str) -> Option<Map<String, Value>> {
        let answer = self.get(&[("operation", "retrieve"), ("id", id)]).await;
        (answer["success"] == true).then(|| answer["result"].as_object().unwrap().clone())
    }
}
