//! A fleet: real `rdp-doctor serve` replicas on one PostgreSQL database, with the Azure
//! simulator and the fake Discord (signing the interactions it delivers to each replica, as
//! Discord does to an HTTP endpoint). The replica tests and the benchmark's `replicas` section
//! start it.

use super::discord::signed::{Endpoint, Front, Signer};
use super::discord::{FakeDiscord, User, GUILD_ID, TOKEN};
use super::process::{base_url_before, Logged};
use rdp_doctor::sim::{SimOptions, Simulator, World};
use std::path::PathBuf;
use std::time::Duration;

/// How long a replica may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(20);

/// One `rdp-doctor serve` process: its signed endpoint and its log.
pub struct Replica {
    pub process: Logged,
    pub endpoint: Endpoint,
}

impl Replica {
    pub fn log(&self) -> String {
        self.process.log()
    }
}

pub struct Fleet {
    pub sim: Simulator,
    pub discord: FakeDiscord,
    /// Discord's REST as the replicas reach it.
    pub front: Front,
    pub signer: Signer,
    /// The fleet's PostgreSQL database (a fresh one).
    pub database: String,
    pub dir: PathBuf,
    pub replicas: Vec<Replica>,
    secret: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // As the benchmark's bots: with RDP_BENCH_LOG=DIR each replica's log is kept there.
        if let Some(dir) = std::env::var_os("RDP_BENCH_LOG") {
            for (n, replica) in self.replicas.iter().enumerate() {
                let fleet = self.dir.file_name().unwrap_or_default().to_string_lossy();
                let path = std::path::Path::new(&dir).join(format!("{fleet}-replica-{n}.log"));
                let _ = std::fs::write(path, replica.log());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fleet {
    /// The world on the simulator, the fake Discord, a fresh database and `n` replicas with
    /// `config` as their `rdp-doctor.toml`, each ready (`/readyz` 200) before this returns.
    pub async fn start(world: World, options: SimOptions, config: &str, n: usize) -> Fleet {
        let secret = world.client_secret.clone();
        let sim = Simulator::start("127.0.0.1:0", world, super::quick(options))
            .await
            .expect("simulator");
        let discord = FakeDiscord::start().await;
        let front = Front::start(&discord).await;
        let database = rdp_doctor::store::testing::postgres_database().await;
        let dir = std::env::temp_dir().join(format!(
            "rdp-doctor-fleet-{}-{}",
            std::process::id(),
            database.rsplit('/').next().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rdp-doctor.toml"), config).unwrap();
        let mut fleet = Fleet {
            sim,
            discord,
            front,
            signer: Signer::generate(),
            database,
            dir,
            replicas: Vec::new(),
            secret,
        };
        let database = fleet.database.clone();
        let names: Vec<String> = (0..n).map(|i| format!("replica {i}")).collect();
        let replicas =
            futures::future::join_all(names.iter().map(|name| fleet.replica(name, &database)))
                .await;
        fleet.replicas = replicas;
        fleet
    }

    /// A replica more on `database` (the fleet's, or a way to it), ready before this returns.
    pub async fn replica(&self, name: &str, database: &str) -> Replica {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rdp-doctor"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_API_URL", &self.front.url)
            .env("DISCORD_GUILD_ID", GUILD_ID.to_string())
            .env("DISCORD_PUBLIC_KEY", self.signer.public_hex())
            .env("RDP_DOCTOR_LISTEN", "127.0.0.1:0")
            .env("AZURE_RESOURCE_MANAGER_URL", self.sim.url())
            .env("AZURE_AUTHORITY_HOST", self.sim.url())
            .env("AZURE_TENANT_ID", super::TENANT)
            .env("AZURE_CLIENT_ID", super::CLIENT)
            .env("AZURE_CLIENT_SECRET", &self.secret)
            .env(
                "AZURE_SUBSCRIPTION_ID",
                rdp_doctor::sim::DEFAULT_SUBSCRIPTION,
            )
            .env("RDP_DOCTOR_CONFIG", self.dir.join("rdp-doctor.toml"))
            .env("RDP_DOCTOR_DATABASE_URL", database)
            .env(
                "RUST_LOG",
                std::env::var("RDP_FLEET_LOG").unwrap_or_else(|_| "info".into()),
            );
        let (process, url) =
            Logged::spawn(name, command, |line| base_url_before(line, "/interactions")).await;
        let endpoint = Endpoint::new(url, self.signer.clone());
        // Ready: the commands registered and the database answering. A probe, not a sleep:
        // `/readyz` is how a load balancer learns it too.
        endpoint
            .readyz_until(
                READY_WAIT,
                || format!("{name}'s log:\n{}", process.log()),
                |status, _| status == 200,
            )
            .await;
        Replica { process, endpoint }
    }

    pub async fn store(&self) -> rdp_doctor::store::Store {
        rdp_doctor::store::Store::open(&self.database)
            .await
            .expect("the fleet's database")
    }

    /// `/rdp <action> vm:<vm>` by `user` delivered to `replica`: the prompt's message and its
    /// Confirm button's custom id.
    pub async fn prompt(
        &self,
        replica: &Replica,
        user: &User,
        action: &str,
        vm: &str,
    ) -> (u64, String) {
        let i = self
            .discord
            .slash(
                user,
                "rdp",
                &[action],
                serde_json::json!([{"name": "vm", "type": 3, "value": vm}]),
            )
            .await;
        let answer = replica
            .endpoint
            .deliver(&self.discord, &self.front, &i)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        loop {
            let edit = self
                .discord
                .next_edit(&i, READY_WAIT)
                .await
                .expect("the prompt");
            if let Some(confirm) = super::discord::custom_ids(edit.body())
                .into_iter()
                .find(|b| b.starts_with("rdp:confirm:"))
            {
                return (edit.message_id.expect("the prompt's message"), confirm);
            }
        }
    }

    /// POSTs to the simulator whose path ends with `suffix` (before the query).
    pub fn posts(&self, suffix: &str) -> usize {
        super::requests_to(&self.sim, "POST", suffix)
    }
}
