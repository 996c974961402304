//! `tunekit search --storage postgresql://…` on a real PostgreSQL: a throw-away cluster started
//! by the test (Debian's `postgresql` server binaries), two worker processes joining one
//! 6-trial study, a worker killed with `kill -9` mid-trial whose trial the other takes over,
//! claims from many connections at once, and the errors for a bad or unreachable store.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tunekit::search::store::postgres::PostgresStore;
use tunekit::search::store::{Claim, ClaimRequest, StudyStore};

/// The directory of `initdb` and `pg_ctl`: `$TUNEKIT_PG_BIN`, else `initdb` on `PATH`, else the
/// newest `/usr/lib/postgresql/*/bin`. Fails (never skips) when there is none.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("TUNEKIT_PG_BIN") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(real) = std::fs::canonicalize(&p)
            && let Some(dir) = real.parent()
        {
            return dir.to_path_buf();
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` \
             package (apt-get install -y postgresql) or set TUNEKIT_PG_BIN to their directory"
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throw-away PostgreSQL cluster on loopback (its socket in its own temporary directory),
/// stopped when dropped. As root, it runs as the `postgres` user (initdb refuses root).
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(None)
    }

    /// Start a cluster; with `tls` (a directory holding `server.crt`, `server.key` and `ca.crt`)
    /// it takes TLS connections only on loopback (`hostnossl … reject`), trusts `tunekit`, and
    /// lets `certuser` in by client certificate alone (`cert`, CN = role); the unix socket stays
    /// open to everyone, for the test's own set-up.
    fn start_with(tls: Option<&Path>) -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = running_as_root();
        let chown = |path: &Path| {
            if as_postgres {
                let ok = Command::new("chown")
                    .args(["-R", "postgres", path.to_str().unwrap()])
                    .status()
                    .unwrap();
                assert!(ok.success(), "chown of {} failed", path.display());
            }
        };
        chown(dir.path());
        let data = dir.path().join("data");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster {
            bin,
            data,
            as_postgres,
            port,
            _dir: dir,
        };
        let data = cluster.data.to_str().unwrap().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "tunekit",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let socket = cluster.data.parent().unwrap().to_str().unwrap().to_string();
        let log = format!("{socket}/server.log");
        let mut options = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off",
            port = cluster.port
        );
        if let Some(certs) = tls {
            for f in ["server.crt", "server.key", "ca.crt"] {
                std::fs::copy(certs.join(f), cluster.data.join(f)).unwrap();
            }
            std::fs::write(
                cluster.data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n\
                 hostssl all certuser 127.0.0.1/32 cert\n\
                 hostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            chown(&cluster.data);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                cluster.data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            options.push_str(
                " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
                 -c ssl_ca_file=ca.crt",
            );
        }
        cluster.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        cluster
    }

    /// Run one of the server binaries (as `postgres` when root); fails with its output.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.data.parent().unwrap())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    fn url(&self) -> String {
        format!("postgresql://tunekit@127.0.0.1:{}/postgres", self.port)
    }

    /// A connection over the cluster's unix socket (open to every role, TLS or not).
    fn client(&self) -> postgres::Client {
        let socket = self.data.parent().unwrap().display();
        postgres::Client::connect(
            &format!(
                "host={socket} port={} user=tunekit dbname=postgres",
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .current_dir(self.data.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A tiny search config: 6 TPE trials (2 random start-up ones), fast heartbeats.
fn search_config(dir: &Path, train_extra: &str) -> PathBuf {
    let model = tiny_model(&dir.join("tiny-model"));
    let base = tiny_config(dir, &model, train_extra);
    let text = std::fs::read_to_string(&base).unwrap();
    let path = dir.join("search.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[search]\ntrials = 6\nsampler = \"tpe\"\nseed = 5\nheartbeat_interval = 0.5\ngrace_period = 5.0\n\n[search.params]\n\"train.learning_rate\" = \"loguniform(1e-4, 3e-3)\"\n"
        ),
    )
    .unwrap();
    path
}

fn worker(cfg: &Path, run_dir: &Path, url: &str, study: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tunekit"))
        .args([
            "search",
            cfg.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--storage",
            url,
            "--study",
            study,
            "--quiet",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
}

/// `(number, state, objective, worker)` of every trial of `study`, by number.
type TrialRow = (i32, String, Option<f64>, Option<String>);

fn trials(client: &mut postgres::Client, study: &str) -> Vec<TrialRow> {
    client
        .query(
            "SELECT t.number, t.state, t.objective, t.worker FROM tunekit_trials t
             JOIN tunekit_studies s ON s.id = t.study_id WHERE s.name = $1 ORDER BY t.number",
            &[&study],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The best trial by the database (highest validation accuracy, earliest among equals).
fn best_in_db(rows: &[TrialRow]) -> i32 {
    let mut best: Option<(i32, f64)> = None;
    for (n, _, y, _) in rows {
        let y = y.unwrap();
        if best.is_none_or(|(_, b)| y > b) {
            best = Some((*n, y));
        }
    }
    best.unwrap().0
}

/// The trial `results.md` marks **best**.
fn best_in_results_md(study_dir: &Path) -> i32 {
    let table = std::fs::read_to_string(study_dir.join("results.md")).unwrap();
    let line = table
        .lines()
        .find(|l| l.contains("**best**"))
        .unwrap_or_else(|| panic!("no best trial in results.md:\n{table}"));
    line.trim_start_matches('|')
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_six_distinct_complete(rows: &[TrialRow]) {
    let numbers: Vec<i32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(numbers, (0..6).collect::<Vec<_>>(), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.1 == "\"complete\"" && r.2.is_some_and(f64::is_finite)),
        "{rows:?}"
    );
}

#[test]
fn two_workers_on_one_study_finish_six_distinct_complete_trials_and_agree_on_the_best() {
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = search_config(tmp.path(), "epochs = 2");
    // Each worker writes its own run directory (as on two machines without a shared disk).
    let (dir_a, dir_b) = (tmp.path().join("study-a"), tmp.path().join("study-b"));
    let a = worker(&cfg, &dir_a, &cluster.url(), "mr");
    let b = worker(&cfg, &dir_b, &cluster.url(), "mr");
    finish(a, "worker a");
    finish(b, "worker b");

    let rows = trials(&mut cluster.client(), "mr");
    assert_six_distinct_complete(&rows);
    let workers: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r.3.as_deref()).collect();
    assert_eq!(workers.len(), 2, "both workers ran trials: {rows:?}");
    // Every trial's run directory is on the worker that ran it, and no trial ran twice.
    for (n, ..) in &rows {
        let name = format!("trial-{n:03}");
        let here = [&dir_a, &dir_b]
            .iter()
            .filter(|d| d.join(&name).join("metrics.json").is_file())
            .count();
        assert_eq!(here, 1, "trial {n} ran {here} times");
    }
    // Both workers' results list all six and agree with the database on the best.
    let best = best_in_db(&rows);
    for dir in [&dir_a, &dir_b] {
        assert_eq!(best_in_results_md(dir), best, "{}", dir.display());
        let r = json(&dir.join("results.json"));
        assert_eq!(r["trials"].as_array().unwrap().len(), 6);
        assert_eq!(r["best_trial"].as_i64(), Some(i64::from(best)));
    }
    // The shared experiment index lists every trial of both workers, complete.
    let out = tunekit(&["runs", "list", "--index", &cluster.url(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "complete", "{r}");
            r["name"].as_str().unwrap()
        })
        .collect();
    names.sort_unstable();
    let want: Vec<String> = (0..6).map(|n| format!("trial-{n:03}")).collect();
    assert_eq!(names, want);
}

#[test]
fn a_worker_killed_mid_trial_is_taken_over_and_the_study_still_ends_with_six_complete() {
    let cluster = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = search_config(tmp.path(), "epochs = 3\ncheckpoint_every_steps = 6");
    // One shared run directory: the trial taken over continues from its checkpoint.
    let shared = tmp.path().join("study");
    let mut victim = worker(&cfg, &shared, &cluster.url(), "mr");
    let survivor = worker(&cfg, &shared, &cluster.url(), "mr");
    let victim_id = format!(":{}", victim.id());
    let mut client = cluster.client();
    // Kill the victim once one of its trials has reported an evaluation.
    let start = Instant::now();
    let killed_trial = loop {
        let busy: Option<i32> = client
            .query_opt(
                "SELECT number FROM tunekit_trials WHERE worker LIKE '%' || $1
                 AND state = '\"running\"' AND intermediate <> '[]' LIMIT 1",
                &[&victim_id],
            )
            .or_else(|e| {
                // The workers create the tables on first use: until then, nothing is running.
                if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) {
                    Ok(None)
                } else {
                    Err(e)
                }
            })
            .unwrap()
            .map(|r| r.get(0));
        if let Some(n) = busy {
            break n;
        }
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the victim finished before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "never killed");
        std::thread::sleep(Duration::from_millis(20));
    };
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    finish(survivor, "surviving worker");

    let rows = trials(&mut client, "mr");
    if rows.iter().any(|r| r.1 != "\"complete\"") {
        let errors: Vec<(i32, Option<String>)> = client
            .query(
                "SELECT number, error FROM tunekit_trials ORDER BY number",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        panic!("not all trials complete: {rows:?}\nerrors: {errors:?}");
    }
    assert_six_distinct_complete(&rows);
    let taken = rows.iter().find(|r| r.0 == killed_trial).unwrap();
    assert!(
        !taken.3.as_deref().unwrap().ends_with(&victim_id),
        "{taken:?}"
    );
    // The lost attempt is recorded as failed, in the database and in results.md.
    let lost: Vec<(i32, String, String)> = client
        .query(
            "SELECT number, worker, error FROM tunekit_trial_attempts ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        lost.iter().any(|(n, w, e)| *n == killed_trial
            && w.ends_with(&victim_id)
            && e.contains("no heartbeat")),
        "{lost:?}"
    );
    let table = std::fs::read_to_string(shared.join("results.md")).unwrap();
    assert!(
        table.contains("Failed attempts") && table.contains(&format!("trial {killed_trial}:")),
        "{table}"
    );
    assert_eq!(best_in_results_md(&shared), best_in_db(&rows));
    // The trial taken over continued from the victim's checkpoint: three evaluations, each
    // recorded once.
    let r = json(&shared.join("results.json"));
    let t = &r["trials"][killed_trial as usize];
    let evals: Vec<u64> = t["intermediate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(evals, vec![1, 2, 3], "{t}");
}

#[test]
fn claims_from_many_connections_at_once_never_share_a_trial_and_migrations_run_once() {
    let cluster = Cluster::start();
    let url = cluster.url();
    let dir = Path::new("/nonexistent-study-dir");
    let claimed: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let url = &url;
                s.spawn(move || {
                    let mut store = PostgresStore::open(url, "race", "fp").unwrap();
                    let worker = format!("w{i}:1");
                    let req = ClaimRequest {
                        budget: 24,
                        worker: &worker,
                        grace: Duration::from_secs(600),
                        dir,
                    };
                    let mut mine = Vec::new();
                    while let Claim::Trial { number, .. } =
                        store.claim(&req, &mut |_| vec![]).unwrap()
                    {
                        mine.push(number);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = claimed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..24).collect::<Vec<_>>(), "{claimed:?}");
    let mut client = cluster.client();
    let versions: Vec<i32> = client
        .query("SELECT version FROM tunekit_schema_version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
    // The same study name with another config is refused, naming the study.
    let err = PostgresStore::open(&url, "race", "other")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("\"race\"") && err.contains("different config"),
        "{err}"
    );
}

#[test]
fn an_unreachable_or_unsupported_store_is_bad_input_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = search_config(tmp.path(), "epochs = 1");
    // Port 1 on loopback: nothing listens there.
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--storage",
        "postgresql://tk:s3cret-pw@127.0.0.1:1/studies",
    ]);
    assert_bad_input(&out, &["cannot connect", "postgresql://tk:***@127.0.0.1:1"]);
    assert!(!stderr(&out).contains("s3cret-pw"), "{}", stderr(&out));
    let out = tunekit(&[
        "search",
        cfg.to_str().unwrap(),
        "--storage",
        "mysql://tk:s3cret-pw@db/x",
    ]);
    assert_bad_input(&out, &["search.storage", "postgresql://"]);
    assert!(!stderr(&out).contains("s3cret-pw"), "{}", stderr(&out));
}

/// Run `openssl` in `dir`; fails with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl (Debian's `openssl` package) not runnable: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        stderr(&out)
    );
}

/// A throw-away PKI in `dir`: `ca.crt` (test CA), `server.crt`/`.key` (CN and only name
/// `localhost`, signed by the CA), `client.crt`/`.key` (CN `certuser`, signed by the CA), and
/// `other-ca.crt`, a CA that signed nothing here. P-256 keys, valid for three days.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (ca, cn) in [("ca", "tunekit test CA"), ("other-ca", "another test CA")] {
        let cnf = format!("{ca}.cnf");
        std::fs::write(
            dir.join(&cnf),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {cn}\n\
                 [v3]\nbasicConstraints = critical, CA:TRUE\n\
                 keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
            ),
        )
        .unwrap();
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt, "-days", "3"]);
        args.extend(["-config", &cnf, "-extensions", "v3"]);
        openssl(dir, &args);
    }
    for (name, cn, usage, san) in [
        (
            "server",
            "localhost",
            "serverAuth",
            "subjectAltName = DNS:localhost\n",
        ),
        ("client", "certuser", "clientAuth", ""),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "{san}basicConstraints = critical, CA:FALSE\n\
                 keyUsage = critical, digitalSignature\nextendedKeyUsage = {usage}\n"
            ),
        )
        .unwrap();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3",
                "-extfile",
                &ext,
            ],
        );
    }
}

#[test]
fn tls_follows_libpq_sslmode_and_refuses_bad_certificates_by_name() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let cluster = Cluster::start_with(Some(pki.path()));
    cluster
        .client()
        .batch_execute("CREATE ROLE certuser LOGIN SUPERUSER")
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_string();
    // An empty HOME and no PGSSL* variables: only what each URL says counts.
    let env = [
        ("HOME", home_s.as_str()),
        ("PGSSLMODE", ""),
        ("PGSSLROOTCERT", ""),
        ("PGSSLCERT", ""),
        ("PGSSLKEY", ""),
    ];
    let file = |f: &str| pki.path().join(f).to_str().unwrap().to_string();
    let url = |user: &str, host: &str, query: &str| {
        format!(
            "postgresql://{user}@{host}:{}/postgres{query}",
            cluster.port
        )
    };
    let list = |url: &str, env: &[(&str, &str)]| {
        tunekit_env(&["runs", "list", "--index", url, "--json"], env)
    };
    let ok = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: expected success; stderr: {}",
            stderr(out)
        );
    };

    // This server refuses plain connections, so every success below went over TLS.
    let out = list(&url("tunekit", "127.0.0.1", "?sslmode=disable"), &env);
    assert_bad_input(&out, &["cannot connect", "pg_hba.conf", "no encryption"]);
    // libpq's default (prefer): TLS when offered, the certificate unchecked without a root.
    ok(&list(&url("tunekit", "127.0.0.1", ""), &env), "prefer");
    ok(
        &list(&url("tunekit", "127.0.0.1", "?sslmode=require"), &env),
        "require",
    );
    // verify-full: chain and name.
    let ca = file("ca.crt");
    let q = format!("?sslmode=verify-full&sslrootcert={ca}");
    ok(&list(&url("tunekit", "localhost", &q), &env), "verify-full");
    let out = list(&url("tunekit", "127.0.0.1", &q), &env);
    assert_bad_input(
        &out,
        &["cannot connect", "does not name the host", "subjectAltName"],
    );
    // verify-ca: the chain only, so the IP the certificate does not name is accepted.
    let q_ca = format!("?sslmode=verify-ca&sslrootcert={ca}");
    ok(
        &list(&url("tunekit", "127.0.0.1", &q_ca), &env),
        "verify-ca",
    );
    // Another CA: refused, whatever the name.
    let other = file("other-ca.crt");
    let q_other = format!("?sslmode=verify-ca&sslrootcert={other}");
    let out = list(&url("tunekit", "localhost", &q_other), &env);
    assert_bad_input(
        &out,
        &[
            "cannot connect",
            "invalid peer certificate",
            "not signed by a CA",
        ],
    );
    // The operating system's store: verify-full by default, and our test CA is not in it.
    let out = list(&url("tunekit", "localhost", "?sslrootcert=system"), &env);
    assert_bad_input(&out, &["sslrootcert"]);
    let out = list(
        &url(
            "tunekit",
            "localhost",
            "?sslrootcert=system&sslmode=require",
        ),
        &env,
    );
    assert_bad_input(&out, &["weak sslmode=require", "verify-full"]);
    // libpq's default root file: `require` with ~/.postgresql/root.crt checks the chain.
    let home2 = tempfile::tempdir().unwrap();
    std::fs::create_dir(home2.path().join(".postgresql")).unwrap();
    std::fs::copy(&other, home2.path().join(".postgresql/root.crt")).unwrap();
    let home2_s = home2.path().to_str().unwrap().to_string();
    let mut env2 = env;
    env2[0] = ("HOME", home2_s.as_str());
    let out = list(&url("tunekit", "localhost", "?sslmode=require"), &env2);
    assert_bad_input(&out, &["invalid peer certificate"]);
    // …and with the right CA there, the chain is checked but not the name (as verify-ca).
    let home4 = tempfile::tempdir().unwrap();
    std::fs::create_dir(home4.path().join(".postgresql")).unwrap();
    std::fs::copy(&ca, home4.path().join(".postgresql/root.crt")).unwrap();
    let home4_s = home4.path().to_str().unwrap().to_string();
    let mut env4 = env;
    env4[0] = ("HOME", home4_s.as_str());
    ok(
        &list(&url("tunekit", "127.0.0.1", "?sslmode=require"), &env4),
        "require with ~/.postgresql/root.crt",
    );
    // The environment variables, as libpq's: PGSSLROOTCERT beats the default file.
    let mut env3 = env2;
    env3[2] = ("PGSSLROOTCERT", ca.as_str());
    ok(
        &list(&url("tunekit", "localhost", "?sslmode=verify-full"), &env3),
        "PGSSLROOTCERT",
    );
    // A client certificate: certuser gets in by certificate only.
    let out = list(&url("certuser", "localhost", &q), &env);
    assert_bad_input(&out, &["cannot connect", "certificate"]);
    let q_cert = format!(
        "{q}&sslcert={}&sslkey={}",
        file("client.crt"),
        file("client.key")
    );
    ok(
        &list(&url("certuser", "localhost", &q_cert), &env),
        "client certificate",
    );
    // The study store itself (same connect): claims over verify-full.
    let mut store = PostgresStore::open(&url("tunekit", "localhost", &q), "tls", "fp").unwrap();
    let req = ClaimRequest {
        budget: 1,
        worker: "w:1",
        grace: Duration::from_secs(60),
        dir: Path::new("/nonexistent-study-dir"),
    };
    let claim = store.claim(&req, &mut |_| vec![]).unwrap();
    assert!(matches!(claim, Claim::Trial { number: 0, .. }), "{claim:?}");
    // require against a server without TLS: refused, not silently plain.
    let plain = Cluster::start();
    let out = list(
        &format!(
            "postgresql://tunekit@127.0.0.1:{}/postgres?sslmode=require",
            plain.port
        ),
        &env,
    );
    assert_bad_input(&out, &["cannot connect", "TLS"]);
    // …and prefer falls back to plain there.
    ok(
        &list(
            &format!("postgresql://tunekit@127.0.0.1:{}/postgres", plain.port),
            &env,
        ),
        "prefer without TLS on the server",
    );
    // disable reads no certificate file (a broken default root.crt is never opened)…
    let home5 = tempfile::tempdir().unwrap();
    std::fs::create_dir(home5.path().join(".postgresql")).unwrap();
    std::fs::write(home5.path().join(".postgresql/root.crt"), "garbage\n").unwrap();
    let home5_s = home5.path().to_str().unwrap().to_string();
    let mut env5 = env;
    env5[0] = ("HOME", home5_s.as_str());
    let plain_url = |query: &str| {
        format!(
            "postgresql://tunekit@127.0.0.1:{}/postgres{query}",
            plain.port
        )
    };
    ok(
        &list(&plain_url("?sslmode=disable"), &env5),
        "disable with a broken default root.crt",
    );
    // …which any other mode reads and refuses by name.
    let out = list(&plain_url(""), &env5);
    assert_bad_input(&out, &["root.crt", "no PEM certificate"]);
    // A unix socket never uses TLS, whatever sslmode says (as libpq).
    let socket = plain
        .data
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .replace('/', "%2F");
    ok(
        &list(
            &format!(
                "postgresql://tunekit@{socket}:{}/postgres?sslmode=require",
                plain.port
            ),
            &env,
        ),
        "unix socket with sslmode=require",
    );
}
