//! What ships for operators is checked: the systemd service and timer (their keys, and
//! `systemd-analyze verify` where it is installed), the Kubernetes manifests (parsed as YAML,
//! their config parsed as framesync's), and the README documenting every operator view and
//! ready-made query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

/// The repository's root: deploy/, README.md and crontab.example live there, beside crates/.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- systemd -------------------------------------------------------------------------------

/// A unit file as section → key → values (a key may repeat), comments and blanks left out.
fn unit(path: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for line in read(path).lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{path}: not key=value: {line}"));
        let section = current.clone().unwrap_or_else(|| panic!("{path}: {line} before any section"));
        sections.entry(section).or_default().entry(key.trim().to_owned()).or_default().push(value.trim().to_owned());
    }
    sections
}

fn one<'a>(unit: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>, section: &str, key: &str) -> &'a str {
    match unit.get(section).and_then(|s| s.get(key)).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("[{section}] {key}: {other:?}"),
    }
}

#[test]
fn the_systemd_service_runs_one_pipeline_per_instance_and_the_timer_starts_it_every_minute() {
    let service = unit("deploy/systemd/framesync@.service");
    assert_eq!(one(&service, "Service", "Type"), "oneshot");
    assert_eq!(one(&service, "Service", "ExecStart"), "/usr/local/bin/framesync --config /etc/framesync/%i.toml run");
    assert_eq!(one(&service, "Service", "EnvironmentFile"), "/etc/framesync/%i.env", "secrets from the environment");
    assert_eq!(one(&service, "Service", "SuccessExitStatus"), "75", "a held lock is not a failure");
    assert_eq!(one(&service, "Service", "StateDirectory"), "framesync");
    assert!(one(&service, "Service", "User") != "root");
    let timer = unit("deploy/systemd/framesync@.timer");
    assert_eq!(one(&timer, "Timer", "OnCalendar"), "*-*-* *:*:00");
    assert_eq!(one(&timer, "Timer", "Unit"), "framesync@%i.service");
    assert_eq!(one(&timer, "Install", "WantedBy"), "timers.target");
}

#[test]
fn the_systemd_service_for_all_pipelines_runs_every_config_in_etc_framesync_every_minute() {
    let service = unit("deploy/systemd/framesync-all.service");
    assert_eq!(one(&service, "Service", "Type"), "oneshot");
    assert_eq!(one(&service, "Service", "ExecStart"), "/usr/local/bin/framesync run --all /etc/framesync");
    let env = one(&service, "Service", "EnvironmentFile");
    assert!(!env.ends_with(".toml") && env.starts_with("/etc/framesync/"), "one env file, not a pipeline: {env}");
    assert_eq!(one(&service, "Service", "StateDirectory"), "framesync");
    assert_eq!(one(&service, "Service", "ProtectSystem"), "strict");
    assert!(one(&service, "Service", "User") != "root");
    let timer = unit("deploy/systemd/framesync-all.timer");
    assert_eq!(one(&timer, "Timer", "OnCalendar"), "*-*-* *:*:00");
    assert_eq!(one(&timer, "Timer", "Unit"), "framesync-all.service");
    assert_eq!(one(&timer, "Install", "WantedBy"), "timers.target");
}

/// `systemd-analyze verify` on every unit, the templates as an instance (scripts/check-deploy
/// installs it). ExecStart must name an existing program, so the copy verified runs the binary
/// just built.
#[test]
fn systemd_analyze_verify_accepts_every_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("skipped: systemd-analyze is not installed (scripts/check-deploy installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/systemd")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let text = read(&format!("deploy/systemd/{name}"))
            .replace("/usr/local/bin/framesync", env!("CARGO_BIN_EXE_framesync"));
        std::fs::write(dir.path().join(&name), text).unwrap();
        units.push(dir.path().join(name.replace("@.", "@orders.")));
    }
    assert!(units.len() >= 4, "{units:?}");
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&units).output().unwrap();
    // verify exits 0 on settings it ignores, but says so: any output is a finding.
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

// ---- Kubernetes ----------------------------------------------------------------------------

fn manifests(file: &str) -> Vec<Value> {
    let text = read(&format!("deploy/kubernetes/{file}"));
    serde_norway::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifest"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// Checks the pod that runs `framesync --config <config> ...` from the manifests in `file`: its
/// config comes from a ConfigMap there and is a valid framesync config whose secrets come from
/// the Secret in secret.example.yaml (never in `file`, which `kubectl apply` applies again and
/// again); the ledger sits on a PersistentVolumeClaim, SQLite's temp files on a writable /tmp
/// beside a read-only root, and the metrics go to a Pushgateway. Returns the claim.
fn check_pod<'a>(file: &str, docs: &'a [Value], pod: &Value, config_path: &str) -> &'a Value {
    assert!(!docs.iter().any(|d| d["kind"].as_str() == Some("Secret")), "{file}: a Secret would overwrite real tokens");
    let container = &pod["containers"][0];
    let volumes: BTreeMap<&str, &Value> =
        pod["volumes"].as_sequence().unwrap().iter().map(|v| (text(&v["name"]), v)).collect();
    let mount = |path: &str| -> &Value {
        let m = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|m| Path::new(path).starts_with(text(&m["mountPath"])))
            .max_by_key(|m| text(&m["mountPath"]).len());
        volumes[text(&m.unwrap_or_else(|| panic!("{file}: nothing mounted at {path}"))["name"])]
    };
    // The config file comes from a ConfigMap in the manifest, and it is a valid framesync config.
    let config_volume = mount(config_path);
    let config_map = find(docs, "ConfigMap", text(&config_volume["configMap"]["name"]));
    let name = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    let config_text = text(&config_map["data"][name]);

    // Every ${VAR} the config needs is a key of the Secret given to the container as environment.
    let secret_name = text(&container["envFrom"][0]["secretRef"]["name"]);
    let secrets = manifests("secret.example.yaml");
    let secret = find(&secrets, "Secret", secret_name);
    let keys: BTreeSet<String> =
        secret["stringData"].as_mapping().unwrap().keys().map(|k| text(k).to_owned()).collect();
    let env = |name: &str| keys.contains(name).then(|| format!("value-of-{name}"));
    let config = framesync::config::Config::parse(config_text, Path::new("/etc/framesync"), &env)
        .unwrap_or_else(|e| panic!("{file}: the ConfigMap's config: {e:#}"));
    assert!(
        config_text.contains("${SS_TOKEN}") && config_text.contains("${RS_TOKEN}"),
        "{file}: secrets stay out of the ConfigMap"
    );
    let pushgateway = config.run.pushgateway.as_deref().unwrap_or_else(|| panic!("{file}: no run.pushgateway"));
    assert!(pushgateway.starts_with("http://pushgateway."), "{file}: {pushgateway}");
    assert!(config.run.metrics_file.is_none(), "{file}: a metrics file inside a pod reaches nobody");

    // A read-only root, and a writable emptyDir at /tmp that SQLite's temp files go to.
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
    assert!(mount("/tmp/x")["emptyDir"].is_mapping(), "{file}: /tmp is an emptyDir");
    let tmpdir = container["env"].as_sequence().unwrap().iter().find(|e| text(&e["name"]) == "TMPDIR");
    assert_eq!(tmpdir.map(|e| text(&e["value"])), Some("/tmp"), "{file}");

    // The ledger (and its lock files beside it) sit on the PersistentVolumeClaim.
    let ledger_volume = mount(config.ledger.to_str().unwrap());
    find(docs, "PersistentVolumeClaim", text(&ledger_volume["persistentVolumeClaim"]["claimName"]))
}

#[test]
fn the_kubernetes_cronjob_forbids_overlap_keeps_the_ledger_on_a_volume_and_takes_secrets_from_the_environment() {
    let docs = manifests("cronjob.yaml");
    let cron = docs.iter().find(|d| d["kind"].as_str() == Some("CronJob")).expect("a CronJob");
    assert_eq!(text(&cron["apiVersion"]), "batch/v1");
    assert_eq!(text(&cron["spec"]["schedule"]), "* * * * *");
    assert_eq!(text(&cron["spec"]["concurrencyPolicy"]), "Forbid");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(text(&pod["restartPolicy"]), "Never");
    let args: Vec<&str> = pod["containers"][0]["args"].as_sequence().unwrap().iter().map(text).collect();
    assert_eq!(args[0], "--config");
    assert_eq!(args.last(), Some(&"run"));
    let claim = check_pod("cronjob.yaml", &docs, pod, args[1]);
    assert_eq!(text(&claim["spec"]["accessModes"][0]), "ReadWriteOnce");
}

#[test]
fn the_kubernetes_deployment_runs_one_pod_that_runs_framesync_every_minute_on_one_volume() {
    let docs = manifests("deployment.yaml");
    let deployment = find(&docs, "Deployment", "framesync-orders");
    assert_eq!(text(&deployment["apiVersion"]), "apps/v1");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(text(&deployment["spec"]["strategy"]["type"]), "Recreate", "never two pods on the volume");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let command: Vec<&str> = container["command"].as_sequence().unwrap().iter().map(text).collect();
    assert_eq!(command, ["/bin/sh", "-c"]);
    let script = text(&container["args"][0]);
    let run = script.lines().map(str::trim).find(|l| l.starts_with("framesync ")).expect("a framesync line");
    let words: Vec<&str> = run.split_whitespace().collect();
    assert_eq!(words, ["framesync", "--config", words[2], "run"], "{run}");
    assert!(script.contains("0|1|75) ;; *) exit $code"), "2 and 3 end the pod, the rest go on: {script}");
    let sh = Command::new("sh").args(["-n", "-c", script]).output().unwrap();
    assert!(sh.status.success(), "sh -n: {}", String::from_utf8_lossy(&sh.stderr));
    let claim = check_pod("deployment.yaml", &docs, pod, words[2]);
    assert_eq!(text(&claim["spec"]["accessModes"][0]), "ReadWriteOnce");
}

// ---- the README ----------------------------------------------------------------------------

#[test]
fn the_readme_documents_every_operator_view_and_every_ready_made_query() {
    let readme = read("README.md");
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        framesync::ledger::Ledger::open(&dir.path().join("l.db"), framesync::ledger::Synchronous::Normal).unwrap();
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('view', 'table') AND name NOT LIKE 'sqlite_%'")
        .unwrap();
    let names: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    for name in &names {
        assert!(readme.contains(&format!("`{name}`")), "README.md does not document `{name}`");
    }
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/queries")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(readme.contains(&format!("sql/queries/{file}")), "README.md does not document sql/queries/{file}");
    }
}
