//! A Postgres server owned by one test, started from the binaries on PATH, so that the test can
//! stop and start it (database outages, crashes).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    /// When the tests run as root, the server runs as `postgres` (it refuses to run as root).
    as_user: Option<&'static str>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("vp-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let as_user = is_root().then_some("postgres");
        if let Some(user) = as_user {
            let ok = Command::new("chown")
                .args(["-R", user, dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the private cluster's folder");
        }
        let pg = Self {
            port: free_port(),
            dir,
            as_user,
        };
        pg.run(&[
            "initdb",
            "-D",
            pg.data().to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        pg.start_server();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, args: &[&str]) {
        let mut cmd = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]);
                c
            }
            None => Command::new(args[0]),
        };
        let args = if self.as_user.is_some() {
            args
        } else {
            &args[1..]
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run a Postgres tool");
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-o",
            &opts,
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
    }

    pub fn stop_server(&self) {
        self.run(&[
            "pg_ctl",
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap();
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new(if self.as_user.is_some() {
            "runuser"
        } else {
            "pg_ctl"
        })
        .args(if self.as_user.is_some() {
            vec!["-u", "postgres", "--", "pg_ctl"]
        } else {
            vec![]
        })
        .args([
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ])
        .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
